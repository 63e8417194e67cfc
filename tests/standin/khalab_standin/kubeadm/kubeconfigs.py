"""The kubeconfig phase (k/k cmd/kubeadm/app/phases/kubeconfig/kubeconfig.go).

An existing file is only compared with what kubeadm would write: the CA data must be the
CA's PEM (else an error), a different server URL is a warning (`has an unexpected API Server
URL`); the client certificate inside is trusted as it is.
"""

import datetime
import os

from .. import env, kubeconfig, out, tokens, version, x509util
from ..out import KubeadmError
from . import pki
from .validation import parse_host_port

KUBERNETES_DIR = "/etc/kubernetes"


def control_plane_endpoint(cluster, endpoint):
    """GetControlPlaneEndpoint: the controlPlaneEndpoint (its port, else bindPort), or the
    local advertise address."""
    bind = int(endpoint["bindPort"])
    cpe = cluster.get("controlPlaneEndpoint") or ""
    if cpe:
        host, port = parse_host_port(cpe)
        return "https://%s" % _join(host, port or bind)
    return local_endpoint(endpoint)


def local_endpoint(endpoint):
    return "https://%s" % _join(endpoint["advertiseAddress"], endpoint["bindPort"])


def _join(host, port):
    return "[%s]:%s" % (host, port) if ":" in host else "%s:%s" % (host, port)


class KCSpec:
    def __init__(self, filename, user, orgs, server, phase):
        self.filename, self.user, self.orgs, self.server, self.phase = filename, user, orgs, server, phase


def specs(cluster, node_name, endpoint, init):
    cpe = control_plane_endpoint(cluster, endpoint)
    local = local_endpoint(endpoint)
    out_ = [KCSpec("admin.conf", "kubernetes-admin", ["kubeadm:cluster-admins"], cpe, "admin")]
    if init:
        out_.append(KCSpec("super-admin.conf", "kubernetes-super-admin", ["system:masters"], cpe, "super-admin"))
        kubelet_server = local if version.kubelet_local_mode() else cpe
        out_.append(KCSpec("kubelet.conf", "system:node:" + node_name, ["system:nodes"], kubelet_server, "kubelet"))
    out_.append(KCSpec("controller-manager.conf", "system:kube-controller-manager", [], local, "controller-manager"))
    out_.append(KCSpec("scheduler.conf", "system:kube-scheduler", [], local, "scheduler"))
    return out_


def load_ca(cluster):
    d = cluster.get("certificatesDir", "/etc/kubernetes/pki")
    cert = x509util.load_cert(env.host_path(d + "/ca.crt"))
    key_path = env.host_path(d + "/ca.key")
    key = x509util.load_key(key_path) if os.path.exists(key_path) else None
    return cert, key


def validate_existing(path, spec, ca_pem):
    """validateKubeConfig. Returns True when the file exists (and is acceptable)."""
    host = env.host_path(path)
    if not os.path.exists(host):
        return False
    try:
        kc = kubeconfig.load(path)
    except kubeconfig.KubeconfigError as e:
        raise KubeadmError("failed to load kubeconfig file %s that already exists on disk: %s" % (path, e)) from None
    current = kc.ca_pem().strip()
    if current != ca_pem.strip():
        raise KubeadmError('a kubeconfig file "%s" exists already but has got the wrong CA cert' % path)
    if kc.server != spec.server:
        out.warn('a kubeconfig file "%s" exists already but has an unexpected API Server URL: expected: %s, got: %s'
                 % (path, spec.server, kc.server), "kubeconfig.go:249")
    lint_kubeconfig(spec, kc)
    return True


def lint_kubeconfig(spec, kc):
    if not env.lint_mode():
        return
    pem = kc.client_cert_pem()
    if not pem:
        return
    cert = x509util.certs_from_pem(pem)[0]
    problems = []
    if x509util.subject_cn(cert) != spec.user:
        problems.append("CN is %r, kubeadm %s uses %r" % (x509util.subject_cn(cert), version.current(), spec.user))
    if sorted(x509util.subject_orgs(cert)) != sorted(spec.orgs):
        problems.append("O is %s, kubeadm %s uses %s" % (x509util.subject_orgs(cert), version.current(), spec.orgs))
    pki.lint_report(spec.filename, problems)


def write_kubeconfig(cluster, spec, ca_cert, ca_key):
    path = os.path.join(KUBERNETES_DIR, spec.filename)
    ca_pem = x509util.cert_pem(ca_cert)
    if validate_existing(path, spec, ca_pem):
        out.say('[kubeconfig] Using existing kubeconfig file: "%s"' % path)
        return
    if ca_key is None:
        raise KubeadmError("couldn't create a kubeconfig; the CA files couldn't be loaded: failure loading "
                           "ca certificate authority: couldn't load the private key file")
    key = x509util.new_key(cluster.get("encryptionAlgorithm", "RSA-2048"))
    validity = datetime.timedelta(seconds=tokens.parse_duration(cluster.get("certificateValidityPeriod") or "8760h"))
    cert = x509util.new_signed(ca_cert, ca_key, key, spec.user, spec.orgs, client=True, validity=validity)
    kc = kubeconfig.build(cluster.get("clusterName", "kubernetes"), spec.server, ca_pem, spec.user,
                          cert_pem=x509util.cert_pem(cert), key_pem=x509util.key_pem(key))
    out.say('[kubeconfig] Writing "%s" kubeconfig file' % spec.filename)
    kubeconfig.write(path, kc, 0o600)


def validate_for_external_ca(cluster, node_name, endpoint):
    """ValidateKubeconfigsForExternalCA: every kubeconfig must exist with our CA."""
    ca_cert, _ = load_ca(cluster)
    ca_pem = x509util.cert_pem(ca_cert)
    for spec in specs(cluster, node_name, endpoint, init=True):
        if spec.filename == "super-admin.conf":
            continue
        path = os.path.join(KUBERNETES_DIR, spec.filename)
        if not os.path.exists(env.host_path(path)):
            raise KubeadmError("failed to load kubeconfig: open %s: no such file or directory" % path)
        validate_existing(path, spec, ca_pem)


def kubelet_finalize(kubelet_conf="/etc/kubernetes/kubelet.conf"):
    """Point kubelet.conf at the rotatable client certificate (kubelet-finalize)."""
    current = "/var/lib/kubelet/pki/kubelet-client-current.pem"
    if not os.path.exists(env.host_path(current)):
        out.warn("[kubelet-finalize] WARNING: the kubelet client certificate %s does not exist, skipping "
                 "the kubelet.conf update" % current, "kubeletfinalize.go:112")
        return
    kc = kubeconfig.load(kubelet_conf)
    user = kc.data["users"][0]["user"]
    if user.get("client-certificate") == current:
        return
    out.say('[kubelet-finalize] Updating "%s" to point to a rotatable kubelet client certificate and key' % kubelet_conf)
    kc.data["users"][0]["user"] = {"client-certificate": current, "client-key": current}
    kubeconfig.write(kubelet_conf, kc.data, 0o600)
