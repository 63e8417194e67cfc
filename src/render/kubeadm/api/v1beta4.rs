//! `kubeadm.k8s.io/v1beta4` (k/k `cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go`, as
//! released in 1.31), the version khactl renders for Kubernetes 1.31 and later: extra
//! args are lists of `{name, value}` (duplicates allowed), timeouts are one `timeouts`
//! block in Init- and JoinConfiguration.

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
    #[serde(rename = "dryRun")]
    pub dry_run: bool,
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
    #[serde(rename = "timeouts")]
    pub timeouts: Option<Timeouts>,
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
    #[serde(rename = "proxy")]
    pub proxy: Proxy,
    #[serde(rename = "certificatesDir")]
    pub certificates_dir: String,
    #[serde(rename = "imageRepository")]
    pub image_repository: String,
    #[serde(rename = "featureGates")]
    pub feature_gates: BTreeMap<String, bool>,
    #[serde(rename = "clusterName")]
    pub cluster_name: String,
    #[serde(rename = "encryptionAlgorithm")]
    pub encryption_algorithm: String,
    #[serde(rename = "certificateValidityPeriod")]
    pub certificate_validity_period: Option<GoDuration>,
    #[serde(rename = "caCertificateValidityPeriod")]
    pub ca_certificate_validity_period: Option<GoDuration>,
}

/// `Arg`: one `--name=value`. Both fields are required strings in Go's tags; a number
/// (`value: 30`) is a decoding error there, and here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Arg {
    #[serde(rename = "name")]
    pub name: String,
    #[serde(rename = "value")]
    pub value: String,
}

/// `EnvVar` (inlines `core/v1` `EnvVar`). `valueFrom`, a tree of secret and field
/// references, is left out: khactl renders no environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvVar {
    #[serde(rename = "name")]
    pub name: String,
    #[serde(rename = "value")]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlPlaneComponent {
    #[serde(rename = "extraArgs")]
    pub extra_args: Vec<Arg>,
    #[serde(rename = "extraVolumes")]
    pub extra_volumes: Vec<HostPathMount>,
    #[serde(rename = "extraEnvs")]
    pub extra_envs: Vec<EnvVar>,
}

/// `APIServer`: `ControlPlaneComponent` inlined, plus `certSANs`
/// (`timeoutForControlPlane` moved to `timeouts.controlPlaneComponentHealthCheck`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiServer {
    #[serde(rename = "extraArgs")]
    pub extra_args: Vec<Arg>,
    #[serde(rename = "extraVolumes")]
    pub extra_volumes: Vec<HostPathMount>,
    #[serde(rename = "extraEnvs")]
    pub extra_envs: Vec<EnvVar>,
    #[serde(rename = "certSANs")]
    pub cert_sans: Vec<String>,
}

/// `DNS`, with `ImageMeta` inlined.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dns {
    #[serde(rename = "imageRepository")]
    pub image_repository: String,
    #[serde(rename = "imageTag")]
    pub image_tag: String,
    #[serde(rename = "disabled")]
    pub disabled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Proxy {
    #[serde(rename = "disabled")]
    pub disabled: bool,
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
    pub extra_args: Vec<Arg>,
    #[serde(rename = "extraEnvs")]
    pub extra_envs: Vec<EnvVar>,
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
    pub kubelet_extra_args: Vec<Arg>,
    #[serde(rename = "ignorePreflightErrors")]
    pub ignore_preflight_errors: Vec<String>,
    #[serde(rename = "imagePullPolicy")]
    pub image_pull_policy: String,
    #[serde(rename = "imagePullSerial")]
    pub image_pull_serial: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JoinConfiguration {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    #[serde(rename = "kind")]
    pub kind: String,
    #[serde(rename = "dryRun")]
    pub dry_run: bool,
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
    #[serde(rename = "timeouts")]
    pub timeouts: Option<Timeouts>,
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
}

/// `Timeouts` (defaults: health checks 4m, API call 1m, etcd call 2m, TLS bootstrap,
/// discovery and manifest upgrades 5m).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    #[serde(rename = "controlPlaneComponentHealthCheck")]
    pub control_plane_component_health_check: Option<GoDuration>,
    #[serde(rename = "kubeletHealthCheck")]
    pub kubelet_health_check: Option<GoDuration>,
    #[serde(rename = "kubernetesAPICall")]
    pub kubernetes_api_call: Option<GoDuration>,
    #[serde(rename = "etcdAPICall")]
    pub etcd_api_call: Option<GoDuration>,
    #[serde(rename = "tlsBootstrap")]
    pub tls_bootstrap: Option<GoDuration>,
    #[serde(rename = "discovery")]
    pub discovery: Option<GoDuration>,
    #[serde(rename = "upgradeManifests")]
    pub upgrade_manifests: Option<GoDuration>,
}
