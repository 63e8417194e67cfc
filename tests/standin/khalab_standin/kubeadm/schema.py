"""The fields and Go types of kubeadm's configuration documents, for decoding like kubeadm:
a type mismatch fails the decode (fatal everywhere), an unknown field is a strict-decoding
finding (a warning for init/join, an error for `kubeadm config validate`).

kubeadm.k8s.io/v1beta3 and v1beta4 are written out from k/k
cmd/kubeadm/app/apis/kubeadm/{v1beta3,v1beta4}/types.go; KubeletConfiguration and
KubeProxyConfiguration come from componentconfig_schema.json (generated, see tools/).
"""

import json
import os
import re

from .. import tokens

S, B, I, D, ANY, TOKEN = "string", "bool", "int", "duration", "any", "token"


def L(t):
    return ["list", t]


def M(t):
    return ["map", t]


def T(name):
    return ["struct", name]


TYPEMETA = {"apiVersion": S, "kind": S}

_COMMON = {
    "APIEndpoint": {"advertiseAddress": S, "bindPort": I},
    "ImageMeta": {"imageRepository": S, "imageTag": S},
    "Networking": {"serviceSubnet": S, "podSubnet": S, "dnsDomain": S},
    "Etcd": {"local": T("LocalEtcd"), "external": T("ExternalEtcd")},
    "ExternalEtcd": {"endpoints": L(S), "caFile": S, "certFile": S, "keyFile": S},
    "FileDiscovery": {"kubeConfigPath": S},
    "BootstrapTokenDiscovery": {"token": S, "apiServerEndpoint": S, "caCertHashes": L(S),
                                "unsafeSkipCAVerification": B},
    "JoinControlPlane": {"localAPIEndpoint": T("APIEndpoint"), "certificateKey": S},
    "HostPathMount": {"name": S, "hostPath": S, "mountPath": S, "readOnly": B, "pathType": S},
    "Patches": {"directory": S},
    "Taint": {"key": S, "value": S, "effect": S, "timeAdded": S},
    "BootstrapToken": {"token": TOKEN, "description": S, "ttl": D, "expires": S,
                       "usages": L(S), "groups": L(S)},
}

V1BETA3 = dict(_COMMON, **{
    "InitConfiguration": dict(TYPEMETA, bootstrapTokens=L(T("BootstrapToken")),
                              nodeRegistration=T("NodeRegistrationOptions"),
                              localAPIEndpoint=T("APIEndpoint"), certificateKey=S,
                              skipPhases=L(S), patches=T("Patches")),
    "ClusterConfiguration": dict(TYPEMETA, etcd=T("Etcd"), networking=T("Networking"),
                                 kubernetesVersion=S, controlPlaneEndpoint=S,
                                 apiServer=T("APIServer"), controllerManager=T("ControlPlaneComponent"),
                                 scheduler=T("ControlPlaneComponent"), dns=T("DNS"),
                                 certificatesDir=S, imageRepository=S, featureGates=M(B),
                                 clusterName=S),
    "ControlPlaneComponent": {"extraArgs": M(S), "extraVolumes": L(T("HostPathMount"))},
    "APIServer": {"extraArgs": M(S), "extraVolumes": L(T("HostPathMount")), "certSANs": L(S),
                  "timeoutForControlPlane": D},
    "DNS": {"imageRepository": S, "imageTag": S},
    "LocalEtcd": {"imageRepository": S, "imageTag": S, "dataDir": S, "extraArgs": M(S),
                  "serverCertSANs": L(S), "peerCertSANs": L(S)},
    "NodeRegistrationOptions": {"name": S, "criSocket": S, "taints": L(T("Taint")),
                                "kubeletExtraArgs": M(S), "ignorePreflightErrors": L(S),
                                "imagePullPolicy": S},
    "JoinConfiguration": dict(TYPEMETA, nodeRegistration=T("NodeRegistrationOptions"),
                              caCertPath=S, discovery=T("Discovery"),
                              controlPlane=T("JoinControlPlane"), skipPhases=L(S),
                              patches=T("Patches")),
    "Discovery": {"bootstrapToken": T("BootstrapTokenDiscovery"), "file": T("FileDiscovery"),
                  "tlsBootstrapToken": S, "timeout": D},
})

_TIMEOUTS = {"controlPlaneComponentHealthCheck": D, "kubeletHealthCheck": D, "kubernetesAPICall": D,
             "etcdAPICall": D, "tlsBootstrap": D, "discovery": D, "upgradeManifests": D}

V1BETA4 = dict(_COMMON, **{
    "InitConfiguration": dict(TYPEMETA, bootstrapTokens=L(T("BootstrapToken")), dryRun=B,
                              nodeRegistration=T("NodeRegistrationOptions"),
                              localAPIEndpoint=T("APIEndpoint"), certificateKey=S,
                              skipPhases=L(S), patches=T("Patches"), timeouts=T("Timeouts")),
    "ClusterConfiguration": dict(TYPEMETA, etcd=T("Etcd"), networking=T("Networking"),
                                 kubernetesVersion=S, controlPlaneEndpoint=S,
                                 apiServer=T("APIServer"), controllerManager=T("ControlPlaneComponent"),
                                 scheduler=T("ControlPlaneComponent"), dns=T("DNS"), proxy=T("Proxy"),
                                 certificatesDir=S, imageRepository=S, featureGates=M(B),
                                 clusterName=S, encryptionAlgorithm=S,
                                 certificateValidityPeriod=D, caCertificateValidityPeriod=D),
    "ControlPlaneComponent": {"extraArgs": L(T("Arg")), "extraVolumes": L(T("HostPathMount")),
                              "extraEnvs": L(T("EnvVar"))},
    "APIServer": {"extraArgs": L(T("Arg")), "extraVolumes": L(T("HostPathMount")),
                  "extraEnvs": L(T("EnvVar")), "certSANs": L(S)},
    "DNS": {"imageRepository": S, "imageTag": S, "disabled": B},
    "Proxy": {"disabled": B},
    "LocalEtcd": {"imageRepository": S, "imageTag": S, "dataDir": S, "extraArgs": L(T("Arg")),
                  "extraEnvs": L(T("EnvVar")), "serverCertSANs": L(S), "peerCertSANs": L(S)},
    "ExternalEtcd": {"endpoints": L(S), "caFile": S, "certFile": S, "keyFile": S,
                     "httpEndpoints": L(S)},
    "NodeRegistrationOptions": {"name": S, "criSocket": S, "taints": L(T("Taint")),
                                "kubeletExtraArgs": L(T("Arg")), "ignorePreflightErrors": L(S),
                                "imagePullPolicy": S, "imagePullSerial": B},
    "JoinConfiguration": dict(TYPEMETA, dryRun=B, nodeRegistration=T("NodeRegistrationOptions"),
                              caCertPath=S, discovery=T("Discovery"),
                              controlPlane=T("JoinControlPlane"), skipPhases=L(S),
                              patches=T("Patches"), timeouts=T("Timeouts")),
    "Discovery": {"bootstrapToken": T("BootstrapTokenDiscovery"), "file": T("FileDiscovery"),
                  "tlsBootstrapToken": S},
    "ResetConfiguration": dict(TYPEMETA, cleanupTmpDir=B, certificatesDir=S, criSocket=S,
                               dryRun=B, force=B, ignorePreflightErrors=L(S), skipPhases=L(S),
                               unmountFlags=L(S), timeouts=T("Timeouts")),
    "UpgradeConfiguration": dict(TYPEMETA, apply=T("UpgradeApplyConfiguration"),
                                 diff=T("UpgradeDiffConfiguration"), node=T("UpgradeNodeConfiguration"),
                                 plan=T("UpgradePlanConfiguration"), timeouts=T("Timeouts")),
    "UpgradeApplyConfiguration": {"kubernetesVersion": S, "allowExperimentalUpgrades": B,
                                  "allowRCUpgrades": B, "certificateRenewal": B, "dryRun": B,
                                  "etcdUpgrade": B, "forceUpgrade": B, "ignorePreflightErrors": L(S),
                                  "patches": T("Patches"), "printConfig": B, "skipPhases": L(S),
                                  "imagePullPolicy": S, "imagePullSerial": B},
    "UpgradeDiffConfiguration": {"kubernetesVersion": S, "contextLines": I},
    "UpgradeNodeConfiguration": {"certificateRenewal": B, "dryRun": B, "etcdUpgrade": B,
                                 "ignorePreflightErrors": L(S), "skipPhases": L(S),
                                 "patches": T("Patches"), "imagePullPolicy": S, "imagePullSerial": B},
    "UpgradePlanConfiguration": {"kubernetesVersion": S, "allowExperimentalUpgrades": B,
                                 "allowRCUpgrades": B, "dryRun": B, "ignorePreflightErrors": L(S),
                                 "printConfig": B},
    "Arg": {"name": S, "value": S},
    "EnvVar": {"name": S, "value": S, "valueFrom": ANY},
    "Timeouts": _TIMEOUTS,
})

KUBEADM_KINDS = {
    "v1beta3": ("InitConfiguration", "ClusterConfiguration", "JoinConfiguration"),
    "v1beta4": ("InitConfiguration", "ClusterConfiguration", "JoinConfiguration",
                "ResetConfiguration", "UpgradeConfiguration"),
}


def _load_componentconfig():
    path = os.path.join(os.path.dirname(__file__), "componentconfig_schema.json")
    with open(path) as f:
        raw = json.load(f)["types"]
    out = {}
    for name, t in raw.items():
        fields = dict(t["fields"])
        if "metav1.TypeMeta" in t["inline"]:
            fields.update(TYPEMETA)
        out[name] = fields
    return out


COMPONENT = _load_componentconfig()
COMPONENT_GROUPS = {
    "kubelet.config.k8s.io": ("v1beta1", "KubeletConfiguration"),
    "kubeproxy.config.k8s.io": ("v1alpha1", "KubeProxyConfiguration"),
}


def types_for(group, version):
    if group == "kubeadm.k8s.io":
        return {"v1beta3": V1BETA3, "v1beta4": V1BETA4}.get(version), "v1beta3" if version == "v1beta3" else "v1beta4"
    if group in COMPONENT_GROUPS:
        return COMPONENT, version
    return None, None


class DecodeError(Exception):
    pass


def _json_kind(v):
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"


def go_type(t, pkg):
    if isinstance(t, list):
        if t[0] == "list":
            return "[]" + go_type(t[1], pkg)
        if t[0] == "map":
            return "map[string]" + go_type(t[1], pkg)
        return "%s.%s" % (pkg, t[1])
    return {S: "string", B: "bool", I: "int32", D: "string", TOKEN: "string",
            "number": "float64", "quantity": "string"}.get(t, "interface {}")


class Decoder:
    """Walks a YAML object against a type like Go's encoding/json, collecting unknown fields
    (strict findings) and stopping at the first type mismatch (a decode error)."""

    def __init__(self, types, pkg):
        self.types, self.pkg = types, pkg
        self.unknown = []

    def decode(self, obj, root):
        self._walk(obj, ["struct", root], "", root)
        return obj

    def _mismatch(self, value, t, path, struct):
        raise DecodeError("json: cannot unmarshal %s into Go struct field %s.%s of type %s" % (
            _json_kind(value), struct, re.sub(r"\[\d+\]", "", path), go_type(t, self.pkg)))

    def _walk(self, value, t, path, struct):
        if value is None or t == ANY:
            return
        if t == S or t == D or t == TOKEN:
            if not isinstance(value, str):
                self._mismatch(value, t, path, struct)
            if t == D:
                try:
                    tokens.parse_duration(value)
                except ValueError as e:
                    raise DecodeError(str(e)) from None
            if t == TOKEN and tokens.split(value) is None:
                raise DecodeError(tokens.format_error(value))
        elif t == B:
            if not isinstance(value, bool):
                self._mismatch(value, t, path, struct)
        elif t == I:
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    return
                self._mismatch(value, t, path, struct)
        elif t == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self._mismatch(value, t, path, struct)
        elif t == "quantity":
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                self._mismatch(value, t, path, struct)
        elif t[0] == "list":
            if not isinstance(value, list):
                self._mismatch(value, t, path, struct)
            for i, item in enumerate(value):
                self._walk(item, t[1], "%s[%d]" % (path, i), struct)
        elif t[0] == "map":
            if not isinstance(value, dict):
                self._mismatch(value, t, path, struct)
            for k, item in value.items():
                self._walk(item, t[1], "%s.%s" % (path, k), struct)
        elif t[0] == "struct":
            fields = self.types.get(t[1])
            if fields is None:
                return
            if not isinstance(value, dict):
                self._mismatch(value, t, path, struct)
            for k, item in value.items():
                p = "%s.%s" % (path, k) if path else k
                if k not in fields:
                    self.unknown.append(p)
                    continue
                self._walk(item, fields[k], p, t[1])
