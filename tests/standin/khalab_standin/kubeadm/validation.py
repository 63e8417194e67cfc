"""kubeadm's field validation (k/k cmd/kubeadm/app/apis/kubeadm/validation/validation.go),
on the internal (v1beta4-shaped) configuration. Every function returns a list of field error
texts; the caller aggregates them (an aggregate exits 3 before 1.34)."""

import ipaddress
import os
import re
import urllib.parse

from .. import tokens, version
from ..out import field_invalid, field_required, go_fmt

DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN_RE = re.compile(r"^%s(\.%s)*$" % (DNS1123_LABEL, DNS1123_LABEL))
WILDCARD_RE = re.compile(r"^\*\.%s(\.%s)*$" % (DNS1123_LABEL, DNS1123_LABEL))
SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                 "characters, '-' or '.', and must start and end with an alphanumeric character "
                 "(e.g. 'example.com', regex used for validation is "
                 "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
WILDCARD_MSG = ("a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS "
                "subdomain, which must consist of lower case alphanumeric characters, '-' or '.' "
                "and end with an alphanumeric character (e.g. '*.example.com', regex used for "
                "validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
IMAGE_REPO_RE = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$")


def dns1123_subdomain_errors(value):
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not DNS1123_SUBDOMAIN_RE.match(value):
        errs.append(SUBDOMAIN_MSG)
    return errs


def parse_ip(text):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def split_host_port(hostport):
    """Go's net.SplitHostPort: (host, port) or raises ValueError with Go's text."""
    def err(why):
        return ValueError("address %s: %s" % (hostport, why))
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise err("missing ']' in address")
        rest = hostport[end + 1:]
        if rest == "":
            raise err("missing port in address")
        if not rest.startswith(":") or ":" in rest[1:]:
            raise err("too many colons in address" if ":" in rest[1:] else "missing port in address")
        return hostport[1:end], rest[1:]
    i = hostport.rfind(":")
    if i < 0:
        raise err("missing port in address")
    if ":" in hostport[:i]:
        raise err("too many colons in address")
    return hostport[:i], hostport[i + 1:]


def parse_port(port):
    try:
        p = int(port)
    except (TypeError, ValueError):
        return None
    return p if 1 <= p <= 65535 else None


def parse_host_port(hostport):
    """kubeadm's util.ParseHostPort: (host, port) or raises ValueError."""
    try:
        host, port = split_host_port(hostport)
    except ValueError:
        host, port = hostport, ""
    if port and parse_port(port) is None:
        raise ValueError("hostport %s: port %s must be a valid number between 1 and 65535, inclusive"
                         % (hostport, port))
    if parse_ip(host) is not None or not dns1123_subdomain_errors(host):
        return host, port
    raise ValueError("hostport %s: host '%s' must be a valid IP address or a valid RFC-1123 DNS subdomain"
                     % (hostport, host))


def validate_extra_args(args, path):
    return [field_invalid(path, "index %d" % i, "argument has no name")
            for i, a in enumerate(args or []) if not (a or {}).get("name")]


def validate_socket_path(socket, path):
    if not socket:
        return [field_invalid(path, socket or "", "empty CRI socket")]
    scheme = urllib.parse.urlsplit(socket).scheme
    if scheme != "unix":
        return [field_invalid(path, socket, 'only URL scheme "unix" is supported, got "%s"' % scheme)]
    return []


def validate_node_registration(nr, path):
    errs = []
    name = nr.get("name") or ""
    if not name:
        errs.append(field_required(path, "--node-name or .nodeRegistration.name in the config file is a "
                                   "required value. It seems like this value couldn't be automatically "
                                   "detected in your environment, please specify the desired value "
                                   "using the CLI or config file."))
    else:
        errs += [field_invalid(path + ".name", name, e) for e in dns1123_subdomain_errors(name)]
    errs += validate_socket_path(nr.get("criSocket"), path + ".criSocket")
    errs += validate_extra_args(nr.get("kubeletExtraArgs"), path + ".kubeletExtraArgs")
    pol = nr.get("imagePullPolicy")
    if pol and pol not in ("Always", "IfNotPresent", "Never"):
        errs.append(field_invalid(path + ".imagePullPolicy", pol,
                                  'imagePullPolicy must be one of "Always", "IfNotPresent" or "Never"'))
    return errs


def validate_token(token, path):
    if tokens.split(token or "") is None:
        return [field_invalid(path, token or "", "the bootstrap token is invalid")]
    return []


def validate_bootstrap_tokens(bts, path):
    errs = []
    for i, bt in enumerate(bts or []):
        p = "%s[%d]" % (path, i)
        errs += validate_token(bt.get("token"), p + ".token")
        usages = bt.get("usages") or []
        bad = [u for u in usages if u not in tokens.KNOWN_USAGES]
        if bad:
            errs.append(field_invalid(p + ".usages", usages, "invalid bootstrap token usage string: %s, "
                                      "valid usage options: %s" % (",".join(bad), ",".join(tokens.KNOWN_USAGES))))
        groups = bt.get("groups") or []
        if groups and "authentication" not in usages:
            errs.append(field_invalid(p + ".groups", groups,
                                      'token groups cannot be specified unless --usages includes "authentication"'))
        for g in groups:
            if not re.match(r"^system:bootstrappers(:[a-z0-9:-]{0,255}[a-z0-9])?$", g):
                errs.append(field_invalid(p + ".groups", groups,
                                          'bootstrap group "%s" is invalid (must match %s)' % (
                                              g, "\\A(system:bootstrappers:)?[a-z0-9:-]{0,255}[a-z0-9]\\z")))
        if bt.get("expires") and bt.get("ttl"):
            errs.append(field_invalid(p, "", "the BootstrapToken .TTL and .Expires fields are mutually exclusive"))
    return errs


def validate_ip_net(subnet, min_addrs, path):
    errs = []
    parts = subnet.split(",")
    try:
        nets = [ipaddress.ip_network(p.strip(), strict=False) for p in parts]
    except ValueError:
        return [field_invalid(path, subnet, "couldn't parse subnet")], []
    if len(nets) > 2 or (len(nets) == 2 and nets[0].version == nets[1].version):
        errs.append(field_invalid(path, subnet, "expected one (IPv4 or IPv6) CIDR or two CIDRs from each "
                                  "family for dual-stack networking"))
    for n in nets:
        if n.num_addresses < min_addrs:
            errs.append(field_invalid(path, str(n), "subnet with %d address(es) is too small, the minimum is %d"
                                      % (n.num_addresses, min_addrs)))
    return errs, nets


def validate_networking(c, path):
    net = c.get("networking") or {}
    errs = [field_invalid(path + ".dnsDomain", net.get("dnsDomain", ""), e)
            for e in dns1123_subdomain_errors(net.get("dnsDomain", ""))]
    if net.get("serviceSubnet"):
        e, nets = validate_ip_net(net["serviceSubnet"], 10, path + ".serviceSubnet")
        errs += e
        for n in nets:
            bits = n.max_prefixlen
            if bits - n.prefixlen > 20:
                errs.append(field_invalid(path + ".serviceSubnet", str(n),
                                          "specified service subnet is too large; for %d-bit addresses, "
                                          "the mask must be >= %d" % (bits, bits - 20)))
    if net.get("podSubnet"):
        e, nets = validate_ip_net(net["podSubnet"], 2, path + ".podSubnet")
        errs += e
        for n in nets:
            node_mask = 24 if n.version == 4 else 64
            for a in (c.get("controllerManager") or {}).get("extraArgs") or []:
                if a.get("name") == "node-cidr-mask-size-ipv%d" % n.version:
                    try:
                        node_mask = int(a.get("value"))
                    except ValueError:
                        pass
            if n.prefixlen > node_mask:
                errs.append(field_invalid(path + ".podSubnet", str(n),
                                          "the size of pod subnet with mask %d is smaller than the size of "
                                          "node subnet with mask %d" % (n.prefixlen, node_mask)))
            elif node_mask - n.prefixlen > 16:
                errs.append(field_invalid(path + ".podSubnet", str(n),
                                          "pod subnet mask (%d) and node-mask (%d) difference is greater "
                                          "than 16" % (n.prefixlen, node_mask)))
    return errs


def validate_cert_sans(sans, path):
    errs = []
    for s in sans or []:
        e1 = dns1123_subdomain_errors(s)
        if e1 and not WILDCARD_RE.match(s) and parse_ip(s) is None:
            errs.append(field_invalid(path, s, "altname is not a valid IP address, DNS label or a DNS label "
                                      "with subdomain wildcards: %s; %s" % ("; ".join(e1), WILDCARD_MSG)))
    return errs


def validate_abs(p, path):
    return [] if (p or "").startswith("/") else [field_invalid(path, p or "", "path is not absolute")]


def validate_etcd(e, path):
    local, external = e.get("local"), e.get("external")
    if local is None and external is None:
        return [field_invalid(path, "", "either .Etcd.Local or .Etcd.External is required")]
    if local is not None and external is not None:
        return [field_invalid(path, "", ".Etcd.Local and .Etcd.External are mutually exclusive")]
    errs = []
    if local is not None:
        lp = path + ".local"
        errs += validate_abs(local.get("dataDir"), lp + ".dataDir")
        errs += validate_cert_sans(local.get("serverCertSANs"), lp + ".serverCertSANs")
        errs += validate_cert_sans(local.get("peerCertSANs"), lp + ".peerCertSANs")
        if local.get("imageRepository"):
            errs += validate_image_repository(local["imageRepository"], lp + ".imageRepository")
        errs += validate_extra_args(local.get("extraArgs"), lp + ".extraArgs")
    else:
        xp = path + ".external"
        ca, cert, key = external.get("caFile"), external.get("certFile"), external.get("keyFile")
        if bool(cert) != bool(key):
            errs.append(field_invalid(xp, "", "either both or none of .Etcd.External.CertFile and "
                                      ".Etcd.External.KeyFile must be set"))
        if cert and key and not ca:
            errs.append(field_invalid(xp, "", "setting .Etcd.External.CertFile and .Etcd.External.KeyFile "
                                      "requires .Etcd.External.CAFile"))
        https = bool(ca or cert or key)
        for u in external.get("endpoints") or []:
            scheme = urllib.parse.urlsplit(u).scheme
            if https and scheme != "https":
                errs.append(field_invalid(xp + ".endpoints", u, "the URL must be using the HTTPS scheme"))
            if not scheme:
                errs.append(field_invalid(xp + ".endpoints", u, "the URL without scheme is not allowed"))
    return errs


def validate_image_repository(repo, path):
    if not IMAGE_REPO_RE.match(repo or ""):
        return [field_invalid(path, repo or "", "invalid image repository format")]
    return []


class _GoBoolMap:
    """Prints as Go's %#v of a map[string]bool, the way field errors show featureGates."""

    def __init__(self, gates):
        self.gates = gates

    def __str__(self):
        return "map[string]bool{" + ", ".join('"%s":%s' % (k, "true" if v else "false")
                                               for k, v in sorted(self.gates.items())) + "}"


def validate_feature_gates(gates, path):
    known = version.known_feature_gates()
    return [field_invalid(path, _GoBoolMap(gates), "%s is not a valid feature name." % k)
            for k in sorted(gates or {}) if k not in known]


def validate_cluster(c):
    errs = []
    dns = c.get("dns") or {}
    if dns.get("imageRepository"):
        errs += validate_image_repository(dns["imageRepository"], "dns.imageRepository")
    errs += validate_networking(c, "networking")
    api = c.get("apiServer") or {}
    errs += validate_cert_sans(api.get("certSANs"), "apiServer.certSANs")
    errs += validate_extra_args(api.get("extraArgs"), "apiServer.extraArgs")
    errs += validate_extra_args((c.get("controllerManager") or {}).get("extraArgs"), "controllerManager.extraArgs")
    errs += validate_extra_args((c.get("scheduler") or {}).get("extraArgs"), "scheduler.extraArgs")
    errs += validate_abs(c.get("certificatesDir"), "certificatesDir")
    errs += validate_feature_gates(c.get("featureGates"), "featureGates")
    cpe = c.get("controlPlaneEndpoint") or ""
    if cpe:
        try:
            parse_host_port(cpe)
        except ValueError:
            errs.append(field_invalid("controlPlaneEndpoint", cpe, "endpoint is not valid"))
    errs += validate_image_repository(c.get("imageRepository"), "imageRepository")
    errs += validate_etcd(c.get("etcd") or {}, "etcd")
    algo = c.get("encryptionAlgorithm")
    if algo is not None and algo not in version.encryption_algorithms():
        errs.append(field_invalid("encryptionAlgorithm", algo, 'Invalid encryption algorithm "%s". Must be one '
                                  "of [%s]" % (algo, " ".join(sorted(version.encryption_algorithms())))))
    return errs


def validate_api_endpoint(ep, path):
    errs = []
    if parse_ip(ep.get("advertiseAddress") or "") is None:
        errs.append(field_invalid(path + ".advertiseAddress", ep.get("advertiseAddress") or "",
                                  "ip address is not valid"))
    if parse_port(ep.get("bindPort")) is None:
        errs.append(field_invalid(path + ".bindPort", ep.get("bindPort"), "port number is not valid"))
    return errs


def validate_certificate_key(key, path):
    if not key:
        return []
    try:
        raw = bytes.fromhex(key)
    except ValueError:
        return [field_invalid(path, key, "certificate key decoding error: encoding/hex: %s" % _hex_error(key))]
    if len(raw) != 32:
        return [field_invalid(path, key, "invalid certificate key size %d, the key must be an AES key of size 32"
                              % len(raw))]
    return []


def _hex_error(key):
    for i, ch in enumerate(key):
        if ch not in "0123456789abcdefABCDEF":
            return "invalid byte: U+%04X %s" % (ord(ch), go_fmt("'%s'" % ch))
    return "odd length hex string"


def validate_init(init, cluster):
    errs = validate_node_registration(init.get("nodeRegistration") or {}, "nodeRegistration")
    errs += validate_bootstrap_tokens(init.get("bootstrapTokens"), "bootstrapTokens")
    errs += validate_cluster(cluster)
    errs += validate_api_endpoint(init.get("localAPIEndpoint") or {}, "localAPIEndpoint")
    errs += validate_certificate_key(init.get("certificateKey"), "certificateKey")
    return errs


def validate_discovery(d, path):
    errs = []
    bt, f = d.get("bootstrapToken"), d.get("file")
    if bt is None and f is None:
        errs.append(field_invalid(path, "", "bootstrapToken or file must be set"))
    if bt is not None and f is not None:
        errs.append(field_invalid(path, "", "bootstrapToken and file cannot both be set"))
    if bt is not None:
        bp = path + ".bootstrapToken"
        ep = bt.get("apiServerEndpoint") or ""
        if not ep:
            errs.append(field_required(bp, "APIServerEndpoint is not set"))
        if not bt.get("caCertHashes") and not bt.get("unsafeSkipCAVerification"):
            errs.append(field_invalid(bp + ".caCertHashes", "",
                                      "using token-based discovery without caCertHashes can be unsafe. "
                                      "Set unsafeSkipCAVerification as true in your kubeadm config file or "
                                      "pass --discovery-token-unsafe-skip-ca-verification flag to continue"))
        errs += validate_token(bt.get("token"), bp + ".token")
        try:
            split_host_port(ep)
        except ValueError as e:
            errs.append(field_invalid(bp + ".apiServerEndpoint", ep, str(e)))
        errs += validate_token(d.get("tlsBootstrapToken"), path + ".tlsBootstrapToken")
    if f is not None:
        kp = f.get("kubeConfigPath") or ""
        u = urllib.parse.urlsplit(kp)
        if not u.scheme:
            from .. import env
            if not os.path.exists(env.host_path(kp)):
                errs.append(field_invalid(path + ".file.kubeConfigPath", kp, "not a valid HTTPS URL or a file on disk"))
        elif u.scheme != "https":
            errs.append(field_invalid(path + ".file.kubeConfigPath", kp, "if a URL is used, the scheme must be https"))
        if d.get("tlsBootstrapToken"):
            errs += validate_token(d.get("tlsBootstrapToken"), path + ".tlsBootstrapToken")
    return errs


def validate_join(join):
    errs = validate_discovery(join.get("discovery") or {}, "discovery")
    errs += validate_node_registration(join.get("nodeRegistration") or {}, "nodeRegistration")
    cp = join.get("controlPlane")
    if cp is not None:
        errs += validate_api_endpoint(cp.get("localAPIEndpoint") or {}, "controlPlane.localAPIEndpoint")
        errs += validate_certificate_key(cp.get("certificateKey"), "controlPlane.certificateKey")
    ca = join.get("caCertPath") or ""
    if not ca.startswith("/") or not ca.endswith(".crt"):
        errs.append(field_invalid("caCertPath", ca, "the ca certificate path must be an absolute path"))
    return errs


def validate_reset(reset):
    errs = validate_socket_path(reset.get("criSocket"), "criSocket")
    errs += validate_abs(reset.get("certificatesDir"), "certificatesDir")
    for i, f in enumerate(reset.get("unmountFlags") or []):
        if f not in ("MNT_FORCE", "MNT_DETACH", "MNT_EXPIRE", "UMOUNT_NOFOLLOW"):
            errs.append(field_invalid("unmountFlags[%d]" % i, f, "unknown unmount flag"))
    return errs
