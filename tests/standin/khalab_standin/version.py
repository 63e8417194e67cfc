"""The emulated Kubernetes version and what differs between minors (1.29 to 1.37).

Each rule names where it comes from; the README has the table.
"""

import re

from . import env

SUPPORTED_MINORS = range(29, 38)

_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:[-+].*)?$")


class Version:
    def __init__(self, text):
        m = _VERSION_RE.match(text.strip())
        if not m:
            raise ValueError("not a Kubernetes version: %r" % text)
        self.major, self.minor, self.patch = (int(g) for g in m.groups())
        self.text = "v%d.%d.%d" % (self.major, self.minor, self.patch)

    def __str__(self):
        return self.text

    def tuple(self):
        return (self.major, self.minor, self.patch)


def parse(text):
    return Version(text)


_current = None


def current():
    global _current
    if _current is None:
        _current = Version(env.emulated_version())
    return _current


def minor():
    return current().minor


# k/k PR #132080 (1.34): every error gets an "error: " prefix and exits 1.
def error_prefix():
    return minor() >= 34


# Before 1.34 the exit code follows the error's concrete type: 3 for a validation aggregate,
# 2 for a bare preflight error, 1 otherwise (wrapped errors are "otherwise").
def typed_exit_codes():
    return minor() < 34


# v1beta4 enabled in 1.31 (PR #125029); v1beta3 deprecated 1.31, removed 1.37 (PR #136016).
def v1beta4_registered():
    return minor() >= 31


def v1beta3_state():
    if minor() <= 30:
        return "current"
    if minor() <= 36:
        return "deprecated"
    return "removed"


def preferred_kubeadm_api():
    return "kubeadm.k8s.io/v1beta4" if v1beta4_registered() else "kubeadm.k8s.io/v1beta3"


# WaitForAllControlPlaneComponents: beta (on) 1.33, GA 1.34 (PR #129620, #132594).
def wait_all_components():
    return minor() >= 33


# ControlPlaneKubeletLocalMode: beta (on) 1.33, GA 1.35 (PR #129956, #134106).
def kubelet_local_mode():
    return minor() >= 33


# NodeLocalCRISocket: the CRI socket moves from kubeadm-flags.env to instance-config.yaml
# (seen in a 1.35 transcript; PR #135742 locks it).
def node_local_cri_socket():
    return minor() >= 35


# Kubernetes 1.32 dropped conntrack from kubeadm's required binaries.
def needs_conntrack():
    return minor() < 32


def apiserver_kubelet_client_org():
    # k/k PR #138957 (1.37); kubeadm:cluster-admins since 1.29.
    if minor() >= 37:
        return "system:kubelet-api-admin"
    if minor() >= 29:
        return "kubeadm:cluster-admins"
    return "system:masters"


def encryption_algorithms():
    algos = ["ECDSA-P256", "RSA-2048", "RSA-3072", "RSA-4096"]
    if minor() >= 34:
        algos.insert(1, "ECDSA-P384")
    return algos


def min_control_plane_minor():
    # kubeadm deploys its own minor and the one before it.
    return minor() - 1


def etcd_version_for_manifest():
    return {29: "3.5.10-0", 30: "3.5.12-0", 31: "3.5.15-0", 32: "3.5.16-0", 33: "3.5.21-0",
            34: "3.6.4-0", 35: "3.6.5-0", 36: "3.6.6-0", 37: "3.6.7-0"}.get(minor(), "3.5.15-0")


def known_feature_gates():
    """kubeadm's own feature gates for this minor (an unknown one is a validation error)."""
    gates = {"RootlessControlPlane", "EtcdLearnerMode"}
    m = minor()
    if m <= 36:
        gates.add("PublicKeysECDSA")
    if 30 <= m <= 34:
        gates.add("WaitForAllControlPlaneComponents")
    if 31 <= m <= 35:
        gates.add("ControlPlaneKubeletLocalMode")
    if m <= 31:
        gates.add("UpgradeAddonsBeforeControlPlane")
    if m >= 34:
        gates.add("NodeLocalCRISocket")
    return gates
