//! What kubeadm must never be told in khactl's layout, checked on the parsed documents
//! (so whatever a template printed, this is what kubeadm would read):
//! - the API endpoint is khagent's balancer on the VIP, never on the API servers' port 6443
//!   (they would compete for the port and kubeadm's `Port-6443` preflight check fails);
//! - every API server advertises its own node's address on 6443, the balancer's backend;
//! - etcd is stacked (`etcd.local` alone), or with `role: etcd` nodes external alone, on
//!   exactly those nodes' client URLs with the CA and client pair khactl placed; no feature
//!   gates (kubeadm rejects a gate it does not know, and locks gates at GA);
//! - a control plane joins through `controlPlane` in the file (kubeadm cannot mix
//!   `--control-plane` with `--config`), never with a `certificateKey`: the shared
//!   certificates are already on the node, and a key means the upload-certs flow;
//! - discovery pins khactl's CA (`caCertHashes`), never `unsafeSkipCAVerification`, and
//!   goes through the same endpoint as every other client;
//! - taints are written out (left out, kubeadm would decide), the bootstrap token is the
//!   one khactl made, lives one hour and may only sign and authenticate;
//! - nothing that hides failures or changes kubeadm's steps: no `ignorePreflightErrors`,
//!   `skipPhases`, `patches` or `dryRun`.
//!
//! Each version's documents are first gathered into one view, the way kubeadm converts
//! every version into its internal type.

use super::Purpose;
use super::api::Document;
use super::api::common::{
    ApiEndpoint, BootstrapToken, BootstrapTokenDiscovery, ExternalEtcd, Taint,
};
use super::context::{
    API_SERVER_PORT, EXTERNAL_ETCD_CA_FILE, EXTERNAL_ETCD_CERT_FILE, EXTERNAL_ETCD_KEY_FILE,
    TOKEN_TTL,
};

/// What the documents must say, from the inventory and the caller.
pub(super) struct Expected<'a> {
    pub purpose: Purpose,
    pub api_version: &'static str,
    pub kubernetes_version: &'a str,
    pub node_name: &'a str,
    pub node_address: String,
    pub endpoint: String,
    /// khagent serves the endpoint on the nodes (a VIP, or node-local balancers), so it
    /// must stay off the API servers' port; an external balancer is on it.
    pub agent_serves_endpoint: bool,
    pub token: &'a str,
    pub ca_hash: &'a str,
    pub cri_socket: &'a str,
    /// The external etcd members' client URLs; empty when etcd is stacked.
    pub etcd_endpoints: Vec<String>,
}

struct NodeRegistration<'a> {
    name: &'a str,
    cri_socket: &'a str,
    taints: Option<&'a [Taint]>,
    ignore_preflight_errors: &'a [String],
}

/// The parts of an Init- or JoinConfiguration the rules read, whatever the version.
struct Node<'a> {
    kind: &'static str,
    api_version: &'a str,
    registration: NodeRegistration<'a>,
    /// InitConfiguration's `localAPIEndpoint`, or JoinConfiguration's `controlPlane` one.
    local_api_endpoint: Option<&'a ApiEndpoint>,
    certificate_keys: Vec<&'a str>,
    bootstrap_tokens: &'a [BootstrapToken],
    discovery: Option<&'a BootstrapTokenDiscovery>,
    file_discovery: bool,
    tls_bootstrap_token: &'a str,
    changes_steps: bool,
}

struct Cluster<'a> {
    api_version: &'a str,
    kubernetes_version: &'a str,
    control_plane_endpoint: &'a str,
    feature_gates: bool,
    local_etcd: bool,
    external_etcd: Option<&'a ExternalEtcd>,
}

// The two versions name these fields alike, so one body per kind serves both (kubeadm
// generates its version conversions the same way).
macro_rules! registration {
    ($r:expr) => {
        NodeRegistration {
            name: &$r.name,
            cri_socket: &$r.cri_socket,
            taints: $r.taints.as_deref(),
            ignore_preflight_errors: &$r.ignore_preflight_errors,
        }
    };
}

macro_rules! init_view {
    ($d:expr, $dry_run:expr) => {
        Node {
            kind: "InitConfiguration",
            api_version: &$d.api_version,
            registration: registration!($d.node_registration),
            local_api_endpoint: Some(&$d.local_api_endpoint),
            certificate_keys: vec![&$d.certificate_key],
            bootstrap_tokens: &$d.bootstrap_tokens,
            discovery: None,
            file_discovery: false,
            tls_bootstrap_token: "",
            changes_steps: !$d.skip_phases.is_empty() || $d.patches.is_some() || $dry_run,
        }
    };
}

macro_rules! join_view {
    ($d:expr, $dry_run:expr) => {
        Node {
            kind: "JoinConfiguration",
            api_version: &$d.api_version,
            registration: registration!($d.node_registration),
            local_api_endpoint: $d.control_plane.as_ref().map(|c| &c.local_api_endpoint),
            certificate_keys: $d
                .control_plane
                .iter()
                .map(|c| c.certificate_key.as_str())
                .collect(),
            bootstrap_tokens: &[],
            discovery: $d.discovery.bootstrap_token.as_ref(),
            file_discovery: $d.discovery.file.is_some(),
            tls_bootstrap_token: &$d.discovery.tls_bootstrap_token.0,
            changes_steps: !$d.skip_phases.is_empty() || $d.patches.is_some() || $dry_run,
        }
    };
}

macro_rules! cluster_view {
    ($d:expr) => {
        Cluster {
            api_version: &$d.api_version,
            kubernetes_version: &$d.kubernetes_version,
            control_plane_endpoint: &$d.control_plane_endpoint,
            feature_gates: !$d.feature_gates.is_empty(),
            local_etcd: $d.etcd.local.is_some(),
            external_etcd: $d.etcd.external.as_ref(),
        }
    };
}

fn node_view(document: &Document) -> Option<Node<'_>> {
    Some(match document {
        // v1beta3 has no dryRun.
        Document::InitV1beta3(d) => init_view!(d, false),
        Document::InitV1beta4(d) => init_view!(d, d.dry_run),
        Document::JoinV1beta3(d) => join_view!(d, false),
        Document::JoinV1beta4(d) => join_view!(d, d.dry_run),
        _ => return None,
    })
}

fn cluster_view(document: &Document) -> Option<Cluster<'_>> {
    Some(match document {
        Document::ClusterV1beta3(d) => cluster_view!(d),
        Document::ClusterV1beta4(d) => cluster_view!(d),
        _ => return None,
    })
}

/// Every rule the documents break, each saying why it matters; empty when none.
pub(super) fn broken_rules(documents: &[Document], want: &Expected<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let kinds: Vec<&str> = documents.iter().map(Document::kind).collect();
    let wanted_kinds: &[&str] = match want.purpose {
        Purpose::Init => &[
            "InitConfiguration",
            "ClusterConfiguration",
            "KubeletConfiguration",
            "KubeProxyConfiguration",
        ],
        Purpose::JoinControlPlane | Purpose::JoinWorker => &["JoinConfiguration"],
    };
    if kinds != wanted_kinds {
        out.push(format!(
            "the file holds {kinds:?}; {} needs exactly {wanted_kinds:?}",
            want.purpose
        ));
    }
    for cluster in documents.iter().filter_map(cluster_view) {
        check_cluster(&cluster, want, &mut out);
    }
    for node in documents.iter().filter_map(node_view) {
        check_node(&node, want, &mut out);
    }
    for document in documents {
        if let Document::Kubelet(k) = document
            && k.cgroup_driver != "systemd"
        {
            out.push(format!(
                "KubeletConfiguration.cgroupDriver is {:?}, not \"systemd\" like the runtime's",
                k.cgroup_driver
            ));
        }
    }
    out
}

fn check_cluster(c: &Cluster<'_>, want: &Expected<'_>, out: &mut Vec<String>) {
    if c.api_version != want.api_version {
        out.push(format!(
            "ClusterConfiguration is {}, Kubernetes {} takes {}",
            c.api_version, want.kubernetes_version, want.api_version
        ));
    }
    if c.kubernetes_version != want.kubernetes_version {
        out.push(format!(
            "kubernetesVersion is {:?}, the inventory says {:?}",
            c.kubernetes_version, want.kubernetes_version
        ));
    }
    if c.control_plane_endpoint != want.endpoint {
        out.push(format!(
            "controlPlaneEndpoint is {:?}, not the VIP endpoint {:?}",
            c.control_plane_endpoint, want.endpoint
        ));
    }
    if want.agent_serves_endpoint
        && c.control_plane_endpoint.rsplit_once(':').map(|(_, p)| p) == Some("6443")
    {
        out.push(
            "controlPlaneEndpoint is on port 6443, the API servers' own port: the balancer \
             and the local API server would compete for it and kubeadm's Port-6443 \
             preflight check fails"
                .to_owned(),
        );
    }
    if c.feature_gates {
        out.push("featureGates are set; khactl renders none".to_owned());
    }
    check_etcd(c, want, out);
}

fn check_etcd(c: &Cluster<'_>, want: &Expected<'_>, out: &mut Vec<String>) {
    if want.etcd_endpoints.is_empty() {
        if !c.local_etcd || c.external_etcd.is_some() {
            out.push("etcd is not stacked (etcd.local alone)".to_owned());
        }
        return;
    }
    let Some(e) = c.external_etcd.filter(|_| !c.local_etcd) else {
        out.push(
            "etcd is not external (etcd.external alone), yet the inventory has etcd nodes"
                .to_owned(),
        );
        return;
    };
    if e.endpoints != want.etcd_endpoints {
        out.push(format!(
            "etcd.external.endpoints are {:?}, not the etcd nodes' {:?}",
            e.endpoints, want.etcd_endpoints
        ));
    }
    let files = [
        (e.ca_file.as_str(), EXTERNAL_ETCD_CA_FILE),
        (&e.cert_file, EXTERNAL_ETCD_CERT_FILE),
        (&e.key_file, EXTERNAL_ETCD_KEY_FILE),
    ];
    for (found, wanted) in files {
        if found != wanted {
            out.push(format!(
                "etcd.external names {found:?}, not {wanted:?} where khactl places it"
            ));
        }
    }
}

fn check_node(n: &Node<'_>, want: &Expected<'_>, out: &mut Vec<String>) {
    let kind = n.kind;
    if n.api_version != want.api_version {
        out.push(format!(
            "{kind} is {}, Kubernetes {} takes {}",
            n.api_version, want.kubernetes_version, want.api_version
        ));
    }
    let r = &n.registration;
    if r.name != want.node_name {
        out.push(format!(
            "{kind} registers node {:?}, not {:?}",
            r.name, want.node_name
        ));
    }
    if r.cri_socket != want.cri_socket {
        out.push(format!(
            "{kind} criSocket is {:?}, the inventory says {:?}",
            r.cri_socket, want.cri_socket
        ));
    }
    if r.taints.is_none() {
        out.push(format!(
            "{kind} leaves taints out, so kubeadm would pick them; write them (or [])"
        ));
    }
    if !r.ignore_preflight_errors.is_empty() || n.changes_steps {
        out.push(format!(
            "{kind} sets ignorePreflightErrors, skipPhases, patches or dryRun; khactl runs \
             kubeadm's steps unchanged"
        ));
    }
    if n.certificate_keys.iter().any(|k| !k.is_empty()) {
        out.push(format!(
            "{kind} has a certificateKey: the shared certificates are placed by khactl, \
             not uploaded"
        ));
    }
    let control_plane = want.purpose != Purpose::JoinWorker;
    let port = i32::from(API_SERVER_PORT);
    match n.local_api_endpoint {
        Some(e)
            if control_plane && e.advertise_address == want.node_address && e.bind_port == port => {
        }
        Some(e) if control_plane => out.push(format!(
            "{kind} local API endpoint is {}:{}, not the node's {}:{API_SERVER_PORT} that \
             khagent balances to",
            e.advertise_address, e.bind_port, want.node_address
        )),
        None if control_plane => out.push(format!(
            "{kind} has no local API endpoint; a control plane joins through `controlPlane` \
             in the file (kubeadm cannot mix --control-plane with --config)"
        )),
        Some(_) => out.push(format!(
            "{kind} of worker {} has a controlPlane section",
            want.node_name
        )),
        None => {}
    }
    if kind == "InitConfiguration" {
        check_token(n.bootstrap_tokens, want, out);
    } else {
        check_discovery(n, want, out);
    }
}

fn check_token(tokens: &[BootstrapToken], want: &Expected<'_>, out: &mut Vec<String>) {
    let [token] = tokens else {
        out.push(format!(
            "InitConfiguration has {} bootstrap tokens; khactl creates exactly one",
            tokens.len()
        ));
        return;
    };
    if token.token.as_ref().map(|t| t.reveal()).as_deref() != Some(want.token) {
        out.push("the bootstrap token is not the one khactl generated".to_owned());
    }
    if token.ttl.map(|d| d.0) != Some(TOKEN_TTL) || token.expires.is_some() {
        out.push("the bootstrap token does not live exactly one hour (ttl: 1h0m0s)".to_owned());
    }
    if token.usages != ["signing", "authentication"] {
        out.push(format!(
            "the bootstrap token's usages are {:?}, not signing and authentication",
            token.usages
        ));
    }
    if token.groups != ["system:bootstrappers:kubeadm:default-node-token"] {
        out.push(format!(
            "the bootstrap token's groups are {:?}, not kubeadm's default-node-token group",
            token.groups
        ));
    }
}

fn check_discovery(n: &Node<'_>, want: &Expected<'_>, out: &mut Vec<String>) {
    let Some(d) = n.discovery else {
        out.push("JoinConfiguration has no bootstrapToken discovery".to_owned());
        return;
    };
    if n.file_discovery {
        out.push("JoinConfiguration has file discovery too".to_owned());
    }
    if d.token.0 != want.token || !n.tls_bootstrap_token.is_empty() {
        out.push("discovery does not use the bootstrap token khactl generated (alone)".to_owned());
    }
    if d.api_server_endpoint != want.endpoint {
        out.push(format!(
            "discovery goes to {:?}, not the VIP endpoint {:?}",
            d.api_server_endpoint, want.endpoint
        ));
    }
    if d.unsafe_skip_ca_verification || d.ca_cert_hashes != [want.ca_hash] {
        out.push(
            "discovery does not pin exactly the CA khactl generated (caCertHashes, never \
             unsafeSkipCAVerification)"
                .to_owned(),
        );
    }
}
