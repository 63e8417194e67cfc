//! The component configurations kubeadm accepts beside its own documents, mirrored for the
//! fields khactl renders only (the real types have dozens more): rendering any other
//! field is an error until it is added here from the component's types.
//! - `kubelet.config.k8s.io/v1beta1` `KubeletConfiguration`
//!   (k/k `staging/src/k8s.io/kubelet/config/v1beta1/types.go`);
//! - `kubeproxy.config.k8s.io/v1alpha1` `KubeProxyConfiguration`
//!   (k/k `staging/src/k8s.io/kube-proxy/config/v1alpha1/types.go`).

use serde::Deserialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeletConfiguration {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    #[serde(rename = "kind")]
    pub kind: String,
    /// `cgroupfs` or `systemd`; must match the container runtime's.
    #[serde(rename = "cgroupDriver")]
    pub cgroup_driver: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeProxyConfiguration {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    #[serde(rename = "kind")]
    pub kind: String,
    /// The pods' range, so traffic from outside it is told apart.
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: String,
}
