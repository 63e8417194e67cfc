//! `kubeadm.k8s.io/v1beta3` (k/k `cmd/kubeadm/app/apis/kubeadm/v1beta3/types.go`), the
//! version khactl renders for Kubernetes 1.29 and 1.30: extra args are maps, timeouts
//! live in `apiServer.timeoutForControlPlane` and `discovery.timeout`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::common::{
    ApiEndpoint, BootstrapToken, BootstrapTokenDiscovery, ExternalEtcd, FileDiscovery, GoDuration,
    HostPathMount, JoinControlPlane, Networking, Patches, Secret, Taint,
};

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InitConfiguration {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    #[serde(rename = "kind")]
    pub kind: String,
    #[serde(rename = "bootstrapTokens")]
    pub bootstrap_tokens: Vec<BootstrapToken>,
    #[serde(rename = "nodeRegistration")]
    pub node_registration: NodeRegistrationOptions,
    #[serde(rename = "localAPIEndpoint")]
    pub local_api_endpoint: ApiEndpoint,
    #[serde(rename = "certificateKey")]
    pub certificate_key: String,
    #[serde(rename = "skipPhases")]
    pub skip_phases: Vec<String>,
    #[serde(rename = "patches")]
    pub patches: Option<Patches>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfiguration {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    #[serde(rename = "kind")]
    pub kind: String,
    #[serde(rename = "etcd")]
    pub etcd: Etcd,
    #[serde(rename = "networking")]
    pub networking: Networking,
    #[serde(rename = "kubernetesVersion")]
    pub kubernetes_version: String,
    #[serde(rename = "controlPlaneEndpoint")]
    pub control_plane_endpoint: String,
    #[serde(rename = "apiServer")]
    pub api_server: ApiServer,
    #[serde(rename = "controllerManager")]
    pub controller_manager: ControlPlaneComponent,
    #[serde(rename = "scheduler")]
    pub scheduler: ControlPlaneComponent,
    #[serde(rename = "dns")]
    pub dns: Dns,
    #[serde(rename = "certificatesDir")]
    pub certificates_dir: String,
    #[serde(rename = "imageRepository")]
    pub image_repository: String,
    #[serde(rename = "featureGates")]
    pub feature_gates: BTreeMap<String, bool>,
    #[serde(rename = "clusterName")]
    pub cluster_name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlPlaneComponent {
    #[serde(rename = "extraArgs")]
    pub extra_args: BTreeMap<String, String>,
    #[serde(rename = "extraVolumes")]
    pub extra_volumes: Vec<HostPathMount>,
}

/// `APIServer`: Go inlines `ControlPlaneComponent`, so its fields sit beside `certSANs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiServer {
    #[serde(rename = "extraArgs")]
    pub extra_args: BTreeMap<String, String>,
    #[serde(rename = "extraVolumes")]
    pub extra_volumes: Vec<HostPathMount>,
    #[serde(rename = "certSANs")]
    pub cert_sans: Vec<String>,
    #[serde(rename = "timeoutForControlPlane")]
    pub timeout_for_control_plane: Option<GoDuration>,
}

/// `DNS`, with `ImageMeta` inlined.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dns {
    #[serde(rename = "imageRepository")]
    pub image_repository: String,
    #[serde(rename = "imageTag")]
    pub image_tag: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Etcd {
    #[serde(rename = "local")]
    pub local: Option<LocalEtcd>,
    #[serde(rename = "external")]
    pub external: Option<ExternalEtcd>,
}

/// `LocalEtcd`, with `ImageMeta` inlined.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalEtcd {
    #[serde(rename = "imageRepository")]
    pub image_repository: String,
    #[serde(rename = "imageTag")]
    pub image_tag: String,
    #[serde(rename = "dataDir")]
    pub data_dir: String,
    #[serde(rename = "extraArgs")]
    pub extra_args: BTreeMap<String, String>,
    #[serde(rename = "serverCertSANs")]
    pub server_cert_sans: Vec<String>,
    #[serde(rename = "peerCertSANs")]
    pub peer_cert_sans: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeRegistrationOptions {
    #[serde(rename = "name")]
    pub name: String,
    #[serde(rename = "criSocket")]
    pub cri_socket: String,
    /// `json:"taints"` without omitempty: nil (left out) and `[]` mean different things.
    #[serde(rename = "taints")]
    pub taints: Option<Vec<Taint>>,
    #[serde(rename = "kubeletExtraArgs")]
    pub kubelet_extra_args: BTreeMap<String, String>,
    #[serde(rename = "ignorePreflightErrors")]
    pub ignore_preflight_errors: Vec<String>,
    #[serde(rename = "imagePullPolicy")]
    pub image_pull_policy: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JoinConfiguration {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    #[serde(rename = "kind")]
    pub kind: String,
    #[serde(rename = "nodeRegistration")]
    pub node_registration: NodeRegistrationOptions,
    #[serde(rename = "caCertPath")]
    pub ca_cert_path: String,
    #[serde(rename = "discovery")]
    pub discovery: Discovery,
    #[serde(rename = "controlPlane")]
    pub control_plane: Option<JoinControlPlane>,
    #[serde(rename = "skipPhases")]
    pub skip_phases: Vec<String>,
    #[serde(rename = "patches")]
    pub patches: Option<Patches>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Discovery {
    #[serde(rename = "bootstrapToken")]
    pub bootstrap_token: Option<BootstrapTokenDiscovery>,
    #[serde(rename = "file")]
    pub file: Option<FileDiscovery>,
    #[serde(rename = "tlsBootstrapToken")]
    pub tls_bootstrap_token: Secret,
    #[serde(rename = "timeout")]
    pub timeout: Option<GoDuration>,
}
