"""kubeadm's certs phase against a pre-placed PKI (k/k cmd/kubeadm/app/phases/certs and
cmd/phases/init/certs.go).

- CAs: an existing CA is reused if it is a CA (`IsCA`); nothing else is checked.
- Leaves: an existing leaf must chain to its CA (Go's x509 Verify, which also refuses an
  expired or not-yet-valid certificate; the period is first reported as a warning), and must
  pass VerifyHostname for every SAN kubeadm would generate. (Real `kubeadm init` checks the
  SANs of an existing leaf only on `join --control-plane`; the stand-in checks them on init
  too, so a khactl PKI missing a SAN fails at once; README says so.) CN, O and EKU are not
  checked, unless the opt-in subject lint is on.
- Missing files are generated with kubeadm's subjects, SANs and validity.
- sa.key only has to parse; sa.pub is not validated.
"""

import datetime
import ipaddress
import os

from cryptography.x509.oid import ExtendedKeyUsageOID

from .. import env, out, tokens, version, x509util
from ..out import KubeadmError


class Spec:
    def __init__(self, name, base, ca=None, cn="", orgs=(), server=False, client=False,
                 phase=None, long_name=""):
        self.name, self.base, self.ca = name, base, ca
        self.cn, self.orgs, self.server, self.client = cn, orgs, server, client
        self.phase = phase or name.replace("/", "-")
        self.long_name = long_name

    @property
    def is_ca(self):
        return self.ca is None


def specs(cfg_view):
    """The certificate list (certlist.go), subjects for the emulated version."""
    node = cfg_view.node_name
    return [
        Spec("ca", "ca", cn="kubernetes", long_name="self-signed Kubernetes CA"),
        Spec("apiserver", "apiserver", "ca", "kube-apiserver", server=True),
        Spec("apiserver-kubelet-client", "apiserver-kubelet-client", "ca", "kube-apiserver-kubelet-client",
             (version.apiserver_kubelet_client_org(),), client=True),
        Spec("front-proxy-ca", "front-proxy-ca", cn="front-proxy-ca"),
        Spec("front-proxy-client", "front-proxy-client", "front-proxy-ca", "front-proxy-client", client=True),
        Spec("etcd/ca", "etcd/ca", cn="etcd-ca", phase="etcd-ca"),
        Spec("etcd/server", "etcd/server", "etcd/ca", node, server=True, client=True, phase="etcd-server"),
        Spec("etcd/peer", "etcd/peer", "etcd/ca", node, server=True, client=True, phase="etcd-peer"),
        Spec("etcd/healthcheck-client", "etcd/healthcheck-client", "etcd/ca", "kube-etcd-healthcheck-client",
             client=True, phase="etcd-healthcheck-client"),
        Spec("apiserver-etcd-client", "apiserver-etcd-client", "etcd/ca", "kube-apiserver-etcd-client",
             client=True),
    ]


class CertView:
    """What the certs phase needs from an init or a control-plane join configuration."""

    def __init__(self, cluster, node_name, endpoint):
        self.cluster, self.node_name, self.endpoint = cluster, node_name, endpoint

    @property
    def dir(self):
        return self.cluster.get("certificatesDir", "/etc/kubernetes/pki")

    def path(self, base, ext):
        return env.host_path(os.path.join(self.dir, base + ext))

    def node_path(self, base, ext):
        return os.path.join(self.dir, base + ext)

    def alt_names(self, spec):
        """(dns, ips) kubeadm puts into this certificate."""
        dns, ips = [], []
        c = self.cluster
        if spec.base == "apiserver":
            domain = c["networking"]["dnsDomain"]
            dns = [self.node_name, "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                   "kubernetes.default.svc.%s" % domain]
            for sub in c["networking"]["serviceSubnet"].split(","):
                net = ipaddress.ip_network(sub.strip(), strict=False)
                ips.append(str(net.network_address + 1))
            ips.append(self.endpoint["advertiseAddress"])
            cpe = c.get("controlPlaneEndpoint") or ""
            if cpe:
                from .validation import parse_host_port
                host, _ = parse_host_port(cpe)
                (ips if _is_ip(host) else dns).append(host)
            extra = (c.get("apiServer") or {}).get("certSANs") or []
        elif spec.base in ("etcd/server", "etcd/peer"):
            dns = [self.node_name, "localhost"]
            ips = [self.endpoint["advertiseAddress"], "127.0.0.1", "::1"]
            local = (c.get("etcd") or {}).get("local") or {}
            extra = local.get("serverCertSANs" if spec.base == "etcd/server" else "peerCertSANs") or []
        else:
            return [], []
        for s in extra:
            (ips if _is_ip(s) else dns).append(s)
        return _dedup(dns), _dedup(ips)

    @property
    def algorithm(self):
        return self.cluster.get("encryptionAlgorithm", "RSA-2048")

    def validity(self, is_ca):
        key = "caCertificateValidityPeriod" if is_ca else "certificateValidityPeriod"
        return datetime.timedelta(seconds=tokens.parse_duration(self.cluster.get(key) or
                                                                ("87600h" if is_ca else "8760h")))


def _is_ip(s):
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


def _dedup(items):
    out_, seen = [], set()
    for i in items:
        if i not in seen:
            seen.add(i)
            out_.append(i)
    return out_


def go_time(dt):
    return dt.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


_period_checked = set()


def check_period(base, cert):
    """CheckCertificatePeriodValidity: a warning, once per certificate."""
    if base in _period_checked:
        return
    _period_checked.add(base)
    now = datetime.datetime.utcnow()
    period = "NotBefore: %s, NotAfter: %s" % (go_time(cert.not_valid_before), go_time(cert.not_valid_after))
    if now < cert.not_valid_before:
        out.warn("WARNING: could not validate bounds for certificate %s: the certificate is not valid yet: %s"
                 % (base, period), "certs.go:520")
    elif now > cert.not_valid_after:
        out.warn("WARNING: could not validate bounds for certificate %s: the certificate has expired: %s"
                 % (base, period), "certs.go:520")


def verify_chain(cert, ca):
    """pkiutil.VerifyCertChain: x509 Verify with the CA as the only root, at the current time."""
    err = x509util.check_signature_from(cert, ca)
    if err:
        return err
    now = datetime.datetime.utcnow()
    for c in (cert, ca):
        if now < c.not_valid_before or now > c.not_valid_after:
            return "x509: certificate has expired or is not yet valid: current time %s is after %s" % (
                now.strftime("%Y-%m-%dT%H:%M:%SZ"), c.not_valid_after.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return None


def verify_sans(view, spec, cert):
    dns, ips = view.alt_names(spec)
    for name in dns + ips:
        err = x509util.verify_hostname(cert, name)
        if err:
            return "certificate %s is invalid: %s" % (spec.base, err)
    return None


def exists(view, base):
    return os.path.exists(view.path(base, ".crt")) or os.path.exists(view.path(base, ".key"))


def using_external_ca(view, base="ca", leaves=(("apiserver", "API server"),
                                               ("apiserver-kubelet-client", "API server kubelet client"))):
    """certsphase.UsingExternalCA: ca.crt present and a CA, ca.key absent; then the leaves the
    control plane cannot make itself must exist and be signed by it."""
    try:
        ca = x509util.load_cert(view.path(base, ".crt"))
    except x509util.CertError:
        return False, None
    if not x509util.is_ca(ca) or os.path.exists(view.path(base, ".key")):
        return False, None
    for leaf, ux in leaves:
        try:
            cert = x509util.load_cert(view.path(leaf, ".crt"))
            x509util.load_key(view.path(leaf, ".key"))
        except x509util.CertError as e:
            return True, "failure loading certificate for %s: %s" % (ux, e)
        err = x509util.check_signature_from(cert, ca)
        if err:
            return True, "certificate %s is not signed by corresponding CA: %s" % (ux, err)
    return True, None


class CertsPhase:
    """Runs one certificate (a sub-phase `certs/<name>`) for init or a control-plane join."""

    def __init__(self, view, check_sans=True):
        self.view, self.check_sans = view, check_sans
        self._cas = {}

    def ca(self, base):
        if base not in self._cas:
            try:
                cert = x509util.load_cert(self.view.path(base, ".crt"))
            except x509util.CertError as e:
                raise KubeadmError("couldn't load CA certificate %s: %s" % (base, e)) from None
            key = None
            if os.path.exists(self.view.path(base, ".key")):
                try:
                    key = x509util.load_key(self.view.path(base, ".key"))
                except x509util.CertError as e:
                    raise KubeadmError("failure loading %s certificate authority: %s" % (base, e)) from None
            self._cas[base] = (cert, key)
        return self._cas[base]

    def _existing(self, base, what):
        """The certificate at `base` if there is one (its period checked), else None."""
        path = self.view.path(base, ".crt")
        if not os.path.exists(path):
            return None
        try:
            cert = x509util.load_cert(path)
        except x509util.CertError as e:
            raise KubeadmError("failure loading %s %s: %s" % (base, what, e)) from None
        check_period(base, cert)
        return cert

    def run_ca(self, spec):
        v = self.view
        cert = self._existing(spec.base, "certificate authority")
        if cert is not None:
            if not x509util.is_ca(cert):
                raise KubeadmError("certificate %s is not a CA" % spec.base)
            if os.path.exists(v.path(spec.base, ".key")):
                self.ca(spec.base)
                out.say("[certs] Using existing %s certificate authority" % spec.base)
            else:
                out.say("[certs] Using existing %s keyless certificate authority" % spec.base)
            return
        if os.path.exists(v.path(spec.base, ".key")):
            raise KubeadmError("failure loading %s certificate authority: couldn't load the certificate file %s: "
                               "open %s: no such file or directory" % (spec.base, v.node_path(spec.base, ".crt"),
                                                                       v.node_path(spec.base, ".crt")))
        key = x509util.new_key(v.algorithm)
        cert = x509util.new_ca(spec.cn, key, validity=v.validity(True))
        self._write(spec.base, cert, key)
        out.say('[certs] Generating "%s" certificate and key' % spec.base)

    def run_leaf(self, spec):
        v = self.view
        ca_cert, ca_key = self.ca(spec.ca)
        cert = self._existing(spec.base, "certificate")
        if cert is not None:
            check_period(spec.ca, ca_cert)
            if verify_chain(cert, ca_cert):
                raise KubeadmError("certificate %s is not signed by corresponding CA" % spec.base)
            if not os.path.exists(v.path(spec.base, ".key")):
                raise KubeadmError("failure loading %s key: couldn't load the private key file %s: open %s: "
                                   "no such file or directory" % (spec.base, v.node_path(spec.base, ".key"),
                                                                  v.node_path(spec.base, ".key")))
            try:
                x509util.load_key(v.path(spec.base, ".key"))
            except x509util.CertError as e:
                raise KubeadmError("failure loading %s key: %s" % (spec.base, e)) from None
            if self.check_sans:
                err = verify_sans(v, spec, cert)
                if err:
                    raise KubeadmError(err)
            lint_cert(spec, cert)
            out.say('[certs] Using the existing "%s" certificate and key' % spec.base)
            return
        if ca_key is None:
            raise KubeadmError("could not load expected certificate \"%s\" or validate the existence of key \"%s\" for it"
                               % (spec.name, spec.ca))
        dns, ips = v.alt_names(spec)
        key = x509util.new_key(v.algorithm)
        cert = x509util.new_signed(ca_cert, ca_key, key, spec.cn, spec.orgs, dns, ips,
                                   server=spec.server, client=spec.client, validity=v.validity(False))
        self._write(spec.base, cert, key)
        out.say('[certs] Generating "%s" certificate and key' % spec.base)
        if spec.server:
            out.say("[certs] %s serving cert is signed for DNS names [%s] and IPs [%s]" % (
                spec.base, " ".join(dns), " ".join(ips)))

    def run_sa(self):
        v = self.view
        path = v.path("sa", ".key")
        if os.path.exists(path):
            try:
                x509util.load_key(path)
            except x509util.CertError as e:
                raise KubeadmError("file sa.key existed but it could not be loaded properly: %s" % e) from None
            out.say('[certs] Using the existing "sa" key')
            return
        out.say('[certs] Generating "sa" key and public key')
        key = x509util.new_key("RSA-2048" if v.algorithm.startswith("RSA") else v.algorithm)
        x509util.write_atomic(path, x509util.key_pem(key), 0o600)
        x509util.write_atomic(v.path("sa", ".pub"), x509util.public_key_pem(key.public_key()), 0o600)

    def _write(self, base, cert, key):
        x509util.write_atomic(self.view.path(base, ".key"), x509util.key_pem(key), 0o600)
        x509util.write_atomic(self.view.path(base, ".crt"), x509util.cert_pem(cert), 0o644)
        if base in ("ca", "front-proxy-ca", "etcd/ca"):
            self._cas[base] = (cert, key)


# The opt-in subject lint (contract section 2 table, per emulated version).

EKU_NAMES = {ExtendedKeyUsageOID.SERVER_AUTH: "server", ExtendedKeyUsageOID.CLIENT_AUTH: "client"}


def lint_findings(spec, cert, algorithm=None):
    problems = []
    cn, orgs = x509util.subject_cn(cert), x509util.subject_orgs(cert)
    if cn != spec.cn:
        problems.append("CN is %r, kubeadm %s uses %r" % (cn, version.current(), spec.cn))
    if sorted(orgs) != sorted(spec.orgs):
        problems.append("O is %s, kubeadm %s uses %s" % (orgs, version.current(), list(spec.orgs)))
    if not spec.is_ca:
        ekus = {EKU_NAMES.get(e, str(e)) for e in x509util.ext_key_usages(cert)}
        want = ({"server"} if spec.server else set()) | ({"client"} if spec.client else set())
        if not want <= ekus:
            problems.append("EKU is %s, kubeadm needs %s" % (sorted(ekus), sorted(want)))
    if algorithm and x509util.key_algorithm(cert) != algorithm:
        problems.append("key is %s, encryptionAlgorithm is %s" % (x509util.key_algorithm(cert), algorithm))
    return problems


def lint_report(name, problems):
    mode = env.lint_mode()
    if not mode or not problems:
        return
    msg = "[khalab-lint] certificate %s: %s" % (name, "; ".join(problems))
    if mode == "error":
        raise KubeadmError(msg + " (khalab stand-in subject lint; real kubeadm does not check this)")
    out.warn(msg, "khalab-lint.go:1")


def lint_cert(spec, cert):
    if env.lint_mode():
        lint_report(spec.base, lint_findings(spec, cert))


# certs check-expiration / renew

RENEWABLE = ["admin.conf", "apiserver", "apiserver-etcd-client", "apiserver-kubelet-client",
             "controller-manager.conf", "etcd-healthcheck-client", "etcd-peer", "etcd-server",
             "front-proxy-client", "scheduler.conf", "super-admin.conf"]
CERT_FILES = {"apiserver": ("apiserver", "ca"), "apiserver-etcd-client": ("apiserver-etcd-client", "etcd-ca"),
              "apiserver-kubelet-client": ("apiserver-kubelet-client", "ca"),
              "etcd-healthcheck-client": ("etcd/healthcheck-client", "etcd-ca"),
              "etcd-peer": ("etcd/peer", "etcd-ca"), "etcd-server": ("etcd/server", "etcd-ca"),
              "front-proxy-client": ("front-proxy-client", "front-proxy-ca")}
CA_FILES = {"ca": "ca", "etcd-ca": "etcd/ca", "front-proxy-ca": "front-proxy-ca"}
