"""Loading kubeadm configuration files as kubeadm does (k/k cmd/kubeadm/app/util/config):
split the documents, check API versions, verify strictly (warnings for init/join, errors
for `config validate`), decode (type errors are fatal), convert v1beta3 to the internal
v1beta4 shape, apply static and dynamic defaults, validate.
"""

import copy
import re
import socket
import subprocess

from .. import env, out, tokens, version, yamlio
from ..out import KubeadmError
from . import schema, validation

DEFAULT_CRI = "unix:///var/run/containerd/containerd.sock"
KUBEADM_GROUP = "kubeadm.k8s.io"
SCHEME_FILE = "k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/scheme/scheme.go:31"
OLD_APIS = {"v1alpha1": "v1.11", "v1alpha2": "v1.12", "v1alpha3": "v1.14", "v1beta1": "v1.15",
            "v1beta2": "v1.22"}
CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
DEFAULT_TIMEOUTS = {"controlPlaneComponentHealthCheck": "4m0s", "kubeletHealthCheck": "4m0s",
                    "kubernetesAPICall": "1m0s", "etcdAPICall": "2m0s", "tlsBootstrap": "5m0s",
                    "discovery": "5m0s", "upgradeManifests": "5m0s"}


class Doc:
    def __init__(self, text, obj, dups):
        self.text, self.obj, self.dups = text, obj, dups
        api = obj.get("apiVersion") if isinstance(obj.get("apiVersion"), str) else ""
        self.kind = obj.get("kind") if isinstance(obj.get("kind"), str) else ""
        self.group, _, self.version = api.rpartition("/")

    @property
    def api_version(self):
        return "%s/%s" % (self.group, self.version) if self.group else self.version

    def gvk(self):
        return "%s/%s, Kind=%s" % (self.group, self.version, self.kind)

    def gvk_go(self):
        return 'schema.GroupVersionKind{Group:"%s", Version:"%s", Kind:"%s"}' % (
            self.group, self.version, self.kind)


def split_documents(text):
    """kubeadmutil.SplitConfigDocuments."""
    docs, kinds, errs = [], set(), []
    for raw in yamlio.split_documents(text):
        try:
            obj, dups = yamlio.load(raw)
        except yamlio.YAMLError as e:
            raise KubeadmError(str(e)) from None
        if not isinstance(obj, dict):
            obj = {}
        d = Doc(raw, obj, dups)
        if not d.group or not d.version or not d.kind:
            raise KubeadmError("invalid configuration for GroupVersionKind %s: kind and apiVersion is "
                               "mandatory information that must be specified" % d.gvk())
        if d.kind in kinds:
            errs.append('invalid configuration: kind "%s" is specified twice in YAML file' % d.kind)
            continue
        kinds.add(d.kind)
        docs.append(d)
    if errs:
        raise out.validation_error(errs)
    return docs


def read_config_file(path):
    try:
        with open(env.host_path(path), encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise KubeadmError('unable to read config from "%s" : %s' % (path, _os_error(path, e))) from None


def _os_error(path, e):
    if isinstance(e, FileNotFoundError):
        return "open %s: no such file or directory" % path
    return "open %s: %s" % (path, e.strerror)


def check_supported_version(doc, allow_deprecated=False, allow_experimental=False):
    """validateSupportedVersion; the table depends on the emulated version."""
    if doc.group != KUBEADM_GROUP:
        return
    old = dict(OLD_APIS)
    if version.v1beta3_state() == "removed":
        old["v1beta3"] = "v1.36"
    if doc.version in old:
        raise KubeadmError(
            'your configuration file uses an old API spec: "%s" (kind: "%s"). Please use kubeadm %s '
            "instead and run 'kubeadm config migrate --old-config old-config-file --new-config "
            "new-config-file', which will write the new, similar spec using a newer API version."
            % (doc.api_version, doc.kind, old[doc.version]))
    if doc.version == "v1beta3" and version.v1beta3_state() == "deprecated" and not allow_deprecated:
        out.warn('your configuration file uses a deprecated API spec: "%s" (kind: "%s"). Please use '
                 "'kubeadm config migrate --old-config old-config-file --new-config new-config-file', "
                 "which will write the new, similar spec using a newer API version."
                 % (doc.api_version, doc.kind), "common.go:101")
    if doc.version == "v1" and not allow_experimental:
        raise KubeadmError('experimental API spec: "%s" (kind: "%s") is not allowed. You can use the '
                           "--allow-experimental-api flag if the command supports it."
                           % (doc.api_version, doc.kind))


def registered(doc):
    """Is this GVK known to kubeadm's scheme or its component-config scheme?"""
    if doc.group == KUBEADM_GROUP:
        if doc.version == "v1beta4" and not version.v1beta4_registered():
            return False
        if doc.version == "v1beta3" and version.v1beta3_state() == "removed":
            return False
        return doc.version in schema.KUBEADM_KINDS and doc.kind in schema.KUBEADM_KINDS[doc.version]
    if doc.group in schema.COMPONENT_GROUPS:
        return (doc.version, doc.kind) == schema.COMPONENT_GROUPS[doc.group]
    return False


def not_registered_error(doc):
    return 'no kind "%s" is registered for version "%s" in scheme "%s"' % (
        doc.kind, doc.api_version, SCHEME_FILE)


def verify_strict(doc, strict):
    """strict.VerifyUnmarshalStrict. Unknown/duplicate fields: a warning, or with `strict`
    an error. A type mismatch is always an error (kubeadm's decode fails on it)."""
    types, pkg = schema.types_for(doc.group, doc.version)
    if types is None or not registered(doc):
        if doc.group in (KUBEADM_GROUP,) + tuple(schema.COMPONENT_GROUPS):
            msg = "error unmarshaling configuration %s: %s" % (doc.gvk_go(), not_registered_error(doc))
            if strict:
                raise KubeadmError(msg)
            out.warn(msg, "initconfiguration.go:332")
        return
    decoder = schema.Decoder(types, pkg)
    try:
        decoder.decode(copy.deepcopy(doc.obj), doc.kind)
    except schema.DecodeError as e:
        msg = str(e)
        raise KubeadmError("error unmarshaling configuration %s: %s" % (doc.gvk_go(), msg)
                           if strict else msg) from None
    findings = ["yaml: unmarshal errors:\n  line %d: %s" % (d.line, d.message()) for d in doc.dups]
    findings += ['unknown field "%s"' % f for f in decoder.unknown]
    if findings:
        msg = "error unmarshaling configuration %s: strict decoding error: %s" % (
            doc.gvk_go(), ", ".join(findings))
        if strict:
            raise KubeadmError(msg)
        out.warn(msg, "initconfiguration.go:332")


def to_internal(doc):
    """Decode and convert a kubeadm document to the internal (v1beta4-shaped) form."""
    if not registered(doc):
        raise KubeadmError(not_registered_error(doc))
    obj = copy.deepcopy(doc.obj)
    obj.pop("apiVersion", None)
    obj.pop("kind", None)
    if doc.group == KUBEADM_GROUP and doc.version == "v1beta3":
        _convert_v1beta3(doc.kind, obj)
    return obj


def _args_list(m):
    return [{"name": k, "value": m[k]} for k in sorted(m)] if isinstance(m, dict) else m


def _convert_v1beta3(kind, obj):
    if kind == "ClusterConfiguration":
        for comp in ("apiServer", "controllerManager", "scheduler"):
            c = obj.get(comp) or {}
            if "extraArgs" in c:
                c["extraArgs"] = _args_list(c["extraArgs"])
        local = (obj.get("etcd") or {}).get("local")
        if local and "extraArgs" in local:
            local["extraArgs"] = _args_list(local["extraArgs"])
        t = (obj.get("apiServer") or {}).pop("timeoutForControlPlane", None)
        if t:
            obj["_timeoutForControlPlane"] = t
    nr = obj.get("nodeRegistration")
    if nr and "kubeletExtraArgs" in nr:
        nr["kubeletExtraArgs"] = _args_list(nr["kubeletExtraArgs"])
    if kind == "JoinConfiguration":
        t = (obj.get("discovery") or {}).pop("timeout", None)
        if t:
            obj.setdefault("timeouts", {})["discovery"] = t


# Defaulting

def hostname():
    return socket.gethostname().strip().lower()


def default_advertise_address():
    try:
        text = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                              capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        text = ""
    m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", text)
    if not m:
        raise KubeadmError("unable to select an IP from default routes.")
    return m.group(1)


def normalize_kubernetes_version(cluster):
    v = cluster.get("kubernetesVersion") or ""
    cur = version.current()
    if not v or v.startswith(("stable", "latest")):
        if v:
            out.warn('could not fetch a Kubernetes version from the internet: khalab stand-in is '
                     'offline; falling back to the local client version: %s' % cur.text, "version.go:104")
        v = cur.text
    try:
        parsed = version.parse(v)
    except ValueError:
        raise KubeadmError('version "%s" doesn\'t match patterns for neither semantic version nor labels '
                           '(stable, latest, ...)' % v) from None
    if (parsed.major, parsed.minor) < (1, version.min_control_plane_minor()):
        raise KubeadmError("this version of kubeadm only supports deploying clusters with the control plane "
                           "version >= 1.%d.0. Current version: %s" % (version.min_control_plane_minor(), parsed.text))
    cluster["kubernetesVersion"] = parsed.text


def default_cluster(cluster):
    c = cluster
    c.setdefault("kubernetesVersion", "")
    net = c.setdefault("networking", {}) or {}
    c["networking"] = net
    net.setdefault("serviceSubnet", "10.96.0.0/12")
    net.setdefault("dnsDomain", "cluster.local")
    c.setdefault("certificatesDir", "/etc/kubernetes/pki")
    c.setdefault("imageRepository", "registry.k8s.io")
    c.setdefault("clusterName", "kubernetes")
    c.setdefault("encryptionAlgorithm", "RSA-2048")
    c.setdefault("certificateValidityPeriod", "8760h0m0s")
    c.setdefault("caCertificateValidityPeriod", "87600h0m0s")
    for comp in ("apiServer", "controllerManager", "scheduler", "dns", "proxy"):
        c[comp] = c.get(comp) or {}
    etcd = c.get("etcd") or {}
    c["etcd"] = etcd
    if etcd.get("local") is None and etcd.get("external") is None:
        etcd["local"] = {}
    if etcd.get("local") is not None:
        etcd["local"].setdefault("dataDir", "/var/lib/etcd")
    c.setdefault("featureGates", {})
    return c


def default_node_registration(nr, control_plane):
    if not nr.get("name"):
        nr["name"] = hostname()
    if not nr.get("criSocket"):
        nr["criSocket"] = DEFAULT_CRI
    elif nr["criSocket"].startswith("/"):
        nr["criSocket"] = "unix://" + nr["criSocket"]
    if nr.get("taints") is None:
        nr["taints"] = [dict(CONTROL_PLANE_TAINT)] if control_plane else []
    nr.setdefault("imagePullPolicy", "IfNotPresent")
    nr.setdefault("kubeletExtraArgs", [])
    nr.setdefault("ignorePreflightErrors", [])
    return nr


def default_timeouts(obj):
    t = obj.get("timeouts") or {}
    for k, v in DEFAULT_TIMEOUTS.items():
        t.setdefault(k, v)
    obj["timeouts"] = t
    return t


def default_bootstrap_tokens(init):
    bts = init.get("bootstrapTokens")
    if not bts:
        bts = [{}]
    for bt in bts:
        if not bt.get("token"):
            bt["token"] = tokens.generate()
        if not bt.get("expires") and bt.get("ttl") is None:
            bt["ttl"] = "24h0m0s"
        bt.setdefault("usages", ["signing", "authentication"])
        bt.setdefault("groups", [tokens.DEFAULT_GROUP])
    init["bootstrapTokens"] = bts


class InitConfig:
    """Internal view of the init documents."""

    def __init__(self, init, cluster, kubelet=None, kubeproxy=None):
        self.init, self.cluster, self.kubelet, self.kubeproxy = init, cluster, kubelet, kubeproxy

    @property
    def node_name(self):
        return self.init["nodeRegistration"]["name"]

    @property
    def endpoint(self):
        return self.init["localAPIEndpoint"]

    def timeout(self, name):
        return tokens.parse_duration(self.init["timeouts"][name])


def set_init_dynamic_defaults(init, cluster, skip_cri_detect=False):
    init["nodeRegistration"] = init.get("nodeRegistration") or {}
    default_node_registration(init["nodeRegistration"], True)
    ep = init.get("localAPIEndpoint") or {}
    init["localAPIEndpoint"] = ep
    if not ep.get("bindPort"):
        ep["bindPort"] = 6443
    if not ep.get("advertiseAddress"):
        ep["advertiseAddress"] = default_advertise_address()
    default_bootstrap_tokens(init)
    init.setdefault("certificateKey", "")
    init.setdefault("skipPhases", [])
    t = default_timeouts(init)
    legacy = cluster.pop("_timeoutForControlPlane", None)
    if legacy:
        t["controlPlaneComponentHealthCheck"] = legacy
    default_cluster(cluster)
    normalize_kubernetes_version(cluster)
    cpe = cluster.get("controlPlaneEndpoint") or ""
    if cpe:
        host, port = validation.parse_host_port(cpe) if _cpe_ok(cpe) else (cpe, "")
        if port and int(port) != int(ep["bindPort"]):
            out.warn("[endpoint] WARNING: port specified in controlPlaneEndpoint overrides bindPort in the "
                     "controlplane address", "endpoint.go:57")


def _cpe_ok(cpe):
    try:
        validation.parse_host_port(cpe)
        return True
    except ValueError:
        return False


def load_init(path, flag_overrides=None, strict=False):
    """LoadOrDefaultInitConfiguration. Returns an InitConfig, validated."""
    init, cluster, kubelet, kubeproxy = {}, {}, None, None
    if path:
        docs = split_documents(read_config_file(path))
        seen_init = seen_cluster = False
        for d in docs:
            check_supported_version(d)
            verify_strict(d, strict)
            if d.group == KUBEADM_GROUP and d.kind == "InitConfiguration":
                init, seen_init = to_internal(d), True
            elif d.group == KUBEADM_GROUP and d.kind == "ClusterConfiguration":
                cluster, seen_cluster = to_internal(d), True
            elif d.group in schema.COMPONENT_GROUPS:
                if d.kind == "KubeletConfiguration":
                    kubelet = d.obj
                elif d.kind == "KubeProxyConfiguration":
                    kubeproxy = d.obj
            else:
                out.warn("[config] WARNING: Ignored configuration document with GroupVersionKind %s\n"
                         % d.gvk(), "initconfiguration.go:361")
        if not seen_init and not seen_cluster:
            raise KubeadmError("no InitConfiguration or ClusterConfiguration kind was found in the "
                               "configuration file")
    for section, values in (flag_overrides or {}).items():
        target = init if section == "init" else cluster
        _deep_set(target, values)
    set_init_dynamic_defaults(init, cluster)
    errs = validation.validate_init(init, cluster)
    if errs:
        raise out.validation_error(errs)
    return InitConfig(init, cluster, kubelet, kubeproxy)


def _deep_set(target, values):
    for k, v in values.items():
        if isinstance(v, dict):
            _deep_set(target.setdefault(k, {}), v)
        else:
            target[k] = v


class JoinConfig:
    def __init__(self, join):
        self.join = join

    @property
    def node_name(self):
        return self.join["nodeRegistration"]["name"]

    @property
    def control_plane(self):
        return self.join.get("controlPlane")

    def timeout(self, name):
        return tokens.parse_duration(self.join["timeouts"][name])


def set_join_dynamic_defaults(join):
    cp = join.get("controlPlane")
    join["nodeRegistration"] = join.get("nodeRegistration") or {}
    default_node_registration(join["nodeRegistration"], cp is not None)
    join.setdefault("caCertPath", "/etc/kubernetes/pki/ca.crt")
    disc = join.get("discovery") or {}
    join["discovery"] = disc
    if disc.get("bootstrapToken") is not None and not disc.get("tlsBootstrapToken"):
        disc["tlsBootstrapToken"] = disc["bootstrapToken"].get("token", "")
    if cp is not None:
        ep = cp.setdefault("localAPIEndpoint", {}) or {}
        cp["localAPIEndpoint"] = ep
        if not ep.get("bindPort"):
            ep["bindPort"] = 6443
        if not ep.get("advertiseAddress"):
            ep["advertiseAddress"] = default_advertise_address()
        cp.setdefault("certificateKey", "")
    join.setdefault("skipPhases", [])
    default_timeouts(join)


def load_join(path, flag_values=None, strict=False):
    join = None
    if path:
        docs = split_documents(read_config_file(path))
        for d in docs:
            if d.kind != "JoinConfiguration":
                continue
            check_supported_version(d)
            verify_strict(d, strict)
            join = to_internal(d)
        if join is None:
            raise KubeadmError("no JoinConfiguration found in the supplied config")
    else:
        join = flag_values or {}
    set_join_dynamic_defaults(join)
    errs = validation.validate_join(join)
    if errs:
        raise out.validation_error(errs)
    return JoinConfig(join)


def load_reset(path, strict=False):
    reset = {}
    if path:
        docs = split_documents(read_config_file(path))
        found = False
        for d in docs:
            if d.kind != "ResetConfiguration":
                out.warn("[config] WARNING: Ignored configuration document with GroupVersionKind %s\n"
                         % d.gvk(), "resetconfiguration.go:118")
                continue
            check_supported_version(d)
            verify_strict(d, strict)
            reset, found = to_internal(d), True
        if not found:
            raise KubeadmError("no ResetConfiguration found in the supplied config")
    reset.setdefault("certificatesDir", "/etc/kubernetes/pki")
    reset.setdefault("criSocket", DEFAULT_CRI)
    reset.setdefault("skipPhases", [])
    reset.setdefault("ignorePreflightErrors", [])
    default_timeouts(reset)
    errs = validation.validate_reset(reset)
    if errs:
        raise out.validation_error(errs)
    return reset


def validate_config_file(path, allow_experimental=False):
    """`kubeadm config validate`: every document strictly, then each configuration kind is
    converted, defaulted and validated."""
    docs = split_documents(read_config_file(path))
    kinds = {d.kind for d in docs}
    for d in docs:
        check_supported_version(d, allow_experimental=allow_experimental)
        verify_strict(d, strict=True)
        if d.group == KUBEADM_GROUP and not registered(d):
            raise KubeadmError(not_registered_error(d))
    if kinds & {"InitConfiguration", "ClusterConfiguration"}:
        init, cluster = {}, {}
        for d in docs:
            if d.group == KUBEADM_GROUP and d.kind == "InitConfiguration":
                init = to_internal(d)
            elif d.group == KUBEADM_GROUP and d.kind == "ClusterConfiguration":
                cluster = to_internal(d)
        set_init_dynamic_defaults(init, cluster)
        errs = validation.validate_init(init, cluster)
        if errs:
            raise out.validation_error(errs)
    if "JoinConfiguration" in kinds:
        join = to_internal(next(d for d in docs if d.kind == "JoinConfiguration"))
        set_join_dynamic_defaults(join)
        errs = validation.validate_join(join)
        if errs:
            raise out.validation_error(errs)
    if "ResetConfiguration" in kinds:
        reset = to_internal(next(d for d in docs if d.kind == "ResetConfiguration"))
        reset.setdefault("certificatesDir", "/etc/kubernetes/pki")
        reset.setdefault("criSocket", DEFAULT_CRI)
        errs = validation.validate_reset(reset)
        if errs:
            raise out.validation_error(errs)


def cluster_document(cluster):
    """ClusterConfiguration as kubeadm uploads it to kube-system/kubeadm-config."""
    doc = {"apiVersion": version.preferred_kubeadm_api(), "kind": "ClusterConfiguration"}
    c = copy.deepcopy(cluster)
    if not version.v1beta4_registered():
        for comp in ("apiServer", "controllerManager", "scheduler"):
            if isinstance((c.get(comp) or {}).get("extraArgs"), list):
                c[comp]["extraArgs"] = {a["name"]: a["value"] for a in c[comp]["extraArgs"]}
        for k in ("encryptionAlgorithm", "certificateValidityPeriod", "caCertificateValidityPeriod", "proxy"):
            c.pop(k, None)
        (c.get("dns") or {}).pop("disabled", None)
        local = (c.get("etcd") or {}).get("local")
        if local and isinstance(local.get("extraArgs"), list):
            local["extraArgs"] = {a["name"]: a["value"] for a in local["extraArgs"]}
    doc.update(c)
    return yamlio.dump(doc)


def cluster_from_configmap(text):
    """The ClusterConfiguration stored in kubeadm-config, in internal form."""
    docs = split_documents(text)
    d = next((d for d in docs if d.kind == "ClusterConfiguration"), None)
    if d is None:
        raise KubeadmError("unexpected error when reading kubeadm-config ConfigMap: ClusterConfiguration key value pair missing")
    cluster = to_internal(d)
    default_cluster(cluster)
    return cluster
