//! kubeadm's configuration files, one per node and purpose: `kubeadm init` on the first
//! control plane, `kubeadm join` of the other control planes and of the workers.
//!
//! Data flows one way: inventory + [`BootstrapToken`] + the CA's discovery hash →
//! `context` (what goes into each document, decided once) → the templates in
//! `templates/kubeadm/` (layout and escaping) → text → [`api::parse_documents`] (kubeadm's
//! types, unknown fields denied) → `controls` (the rules of khactl's layout) →
//! [`KubeadmDocuments`]. A file that fails either check is a khactl bug and an error
//! before any node is touched.
//!
//! Versions: `kubeadm.k8s.io/v1beta4` from Kubernetes 1.31 (extra args as `{name, value}`
//! lists, a `timeouts` block), `v1beta3` for 1.29 and 1.30 (maps; the two timeouts it
//! has). No `featureGates`, ever.
//!
//! Pure: no I/O except [`write_files`], the helper for `khactl render --out`.

pub mod api;
mod cluster;
mod context;
mod controls;
mod token;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

pub use cluster::{ClusterDocuments, RenderedFile, Secrets, render_cluster, write_files};
pub use context::{
    API_SERVER_PORT, ETCD_DATA_DIR, EXTERNAL_ETCD_CA_FILE, EXTERNAL_ETCD_CERT_FILE,
    EXTERNAL_ETCD_KEY_FILE, TOKEN_TTL, effective_taints, external_etcd_endpoints,
};
pub use token::{BootstrapToken, TokenError};

use crate::inventory::{Inventory, KubernetesVersion, Node, NodeName, Role};
use crate::render::RenderError;
use api::Document;
use context::{Input, TEMPLATES, Templates};

/// The mode of a configuration file on a node: it holds the bootstrap token.
pub const FILE_MODE: u32 = 0o600;

/// What a node's file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// `kubeadm init`: the first control plane.
    Init,
    /// `kubeadm join` of another control plane.
    JoinControlPlane,
    /// `kubeadm join` of a worker.
    JoinWorker,
}

impl Purpose {
    /// What `node` does in a fresh install of `inventory`: the first control plane in the
    /// inventory inits, the other control planes and the workers join; an etcd or
    /// load-balancer node runs no kubeadm (`None`).
    pub fn for_node(inventory: &Inventory, node: &Node) -> Option<Purpose> {
        Some(match node.role {
            Role::Worker => Purpose::JoinWorker,
            Role::ControlPlane if init_node(inventory).is_some_and(|n| n.name == node.name) => {
                Purpose::Init
            }
            Role::ControlPlane => Purpose::JoinControlPlane,
            Role::Etcd | Role::LoadBalancer => return None,
        })
    }

    /// `init`, `join-control-plane`, `join-worker`: for file names and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Init => "init",
            Purpose::JoinControlPlane => "join-control-plane",
            Purpose::JoinWorker => "join-worker",
        }
    }

    fn role(self) -> Role {
        match self {
            Purpose::Init | Purpose::JoinControlPlane => Role::ControlPlane,
            Purpose::JoinWorker => Role::Worker,
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The control plane that runs `kubeadm init` in a fresh install: the first in the
/// inventory.
pub fn init_node(inventory: &Inventory) -> Option<&Node> {
    inventory.control_plane().next()
}

/// The kubeadm configuration API a Kubernetes release reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KubeadmApi {
    /// Kubernetes 1.29 and 1.30 (v1beta4 arrived in 1.31; v1beta3 is gone in 1.37).
    V1beta3,
    /// Kubernetes 1.31 and later.
    V1beta4,
}

impl KubeadmApi {
    pub fn for_version(version: &KubernetesVersion) -> Result<Self, KubeadmError> {
        version.supported().map_err(KubeadmError::Unsupported)?;
        Ok(if version.at_least(1, 31) {
            KubeadmApi::V1beta4
        } else {
            KubeadmApi::V1beta3
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KubeadmApi::V1beta3 => api::KUBEADM_V1BETA3,
            KubeadmApi::V1beta4 => api::KUBEADM_V1BETA4,
        }
    }
}

/// How long kubeadm waits for each step. kubeadm's own defaults, written into every
/// configuration (v1beta4's `timeouts`; in v1beta3 the two it can set) so a phase can
/// bound a whole `kubeadm init` or `join` by what the node was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The API server (and the other static pods) healthy after they start.
    pub control_plane: Duration,
    /// The kubelet healthy after it starts.
    pub kubelet: Duration,
    /// One etcd call during a control-plane join, learner promotion included.
    pub etcd_api_call: Duration,
    /// The joining kubelet's TLS bootstrap.
    pub tls_bootstrap: Duration,
    /// Token discovery of the cluster through the endpoint.
    pub discovery: Duration,
}

impl Timeouts {
    pub const KUBEADM: Timeouts = Timeouts {
        control_plane: Duration::from_secs(240),
        kubelet: Duration::from_secs(240),
        etcd_api_call: Duration::from_secs(120),
        tls_bootstrap: Duration::from_secs(300),
        discovery: Duration::from_secs(300),
    };
}

#[derive(Debug, thiserror::Error)]
pub enum KubeadmError {
    #[error("{0}")]
    Unsupported(String),
    #[error("node {0} is not in the inventory")]
    UnknownNode(NodeName),
    #[error("{node} is a {} node; it has no {purpose} configuration", role.as_str())]
    WrongRole {
        node: NodeName,
        role: Role,
        purpose: Purpose,
    },
    #[error(
        "{0:?} is not a CA public key pin: expected sha256: and 64 lowercase hex digits \
         (ClusterPki::discovery_hash)"
    )]
    CaHash(String),
    #[error(transparent)]
    Template(#[from] RenderError),
    /// The rendered text is not what kubeadm's types accept: a bug in a template.
    #[error("internal: the {purpose} configuration of {node} is not valid kubeadm {api}: {source}")]
    NotStrict {
        node: NodeName,
        purpose: Purpose,
        api: &'static str,
        source: api::StrictError,
    },
    /// The documents break a rule of khactl's layout: a bug in the rendering.
    #[error("internal: the {purpose} configuration of {node} breaks khactl's layout: {}", rules.join("; "))]
    Control {
        node: NodeName,
        purpose: Purpose,
        rules: Vec<String>,
    },
}

/// One node's kubeadm configuration file, checked. `Debug` and [`Self::redacted`] never
/// show the bootstrap token; [`Self::text`] is the real file.
#[derive(Clone)]
pub struct KubeadmDocuments {
    node: NodeName,
    purpose: Purpose,
    api: KubeadmApi,
    text: String,
    token: String,
    documents: Vec<Document>,
}

impl KubeadmDocuments {
    pub fn node(&self) -> &NodeName {
        &self.node
    }

    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    pub fn api(&self) -> KubeadmApi {
        self.api
    }

    /// The file's bytes for the node (mode [`FILE_MODE`]): the token in clear.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The file with the token replaced by `<redacted>`: for dry runs, logs and review.
    pub fn redacted(&self) -> String {
        self.text.replace(&self.token, "<redacted>")
    }

    /// The documents as kubeadm's types read them.
    pub fn documents(&self) -> &[Document] {
        &self.documents
    }
}

impl fmt::Debug for KubeadmDocuments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeadmDocuments")
            .field("node", &self.node)
            .field("purpose", &self.purpose)
            .field("api", &self.api)
            .field("bytes", &self.text.len())
            .finish_non_exhaustive()
    }
}

/// The kubeadm configuration of `node` for `purpose`, parsed back through kubeadm's types
/// and held against khactl's layout rules. `ca_hash` is the cluster CA's public key pin,
/// `ClusterPki::discovery_hash()`. Pure.
pub fn render_node(
    inventory: &Inventory,
    node: &Node,
    purpose: Purpose,
    token: &BootstrapToken,
    ca_hash: &str,
) -> Result<KubeadmDocuments, KubeadmError> {
    render_node_with(&TEMPLATES, inventory, node, purpose, token, ca_hash)
}

fn render_node_with(
    templates: &Templates,
    inventory: &Inventory,
    node: &Node,
    purpose: Purpose,
    token: &BootstrapToken,
    ca_hash: &str,
) -> Result<KubeadmDocuments, KubeadmError> {
    if inventory.node(node.name.as_str()) != Some(node) {
        return Err(KubeadmError::UnknownNode(node.name.clone()));
    }
    if node.role != purpose.role() {
        return Err(KubeadmError::WrongRole {
            node: node.name.clone(),
            role: node.role,
            purpose,
        });
    }
    if !is_ca_hash(ca_hash) {
        return Err(KubeadmError::CaHash(ca_hash.to_owned()));
    }
    let api = KubeadmApi::for_version(&inventory.cluster.kubernetes_version)?;
    let token = token.reveal();
    let input = Input {
        inventory,
        node,
        purpose,
        api,
        token: &token,
        ca_hash,
    };
    let text = context::render_file(templates, &input)?;
    let documents = api::parse_documents(&text).map_err(|source| KubeadmError::NotStrict {
        node: node.name.clone(),
        purpose,
        api: api.as_str(),
        source,
    })?;
    let expected = controls::Expected {
        purpose,
        api_version: api.as_str(),
        kubernetes_version: inventory.cluster.kubernetes_version.as_str(),
        node_name: node.name.as_str(),
        node_address: node.address.to_string(),
        endpoint: context::control_plane_endpoint(inventory),
        // On the control planes themselves; not behind an external balancer or dedicated
        // load-balancer nodes.
        agent_serves_endpoint: inventory.external_lb().is_none() && !inventory.dedicated_lb(),
        token: &token,
        ca_hash,
        cri_socket: inventory.kubeadm.cri_socket.as_str(),
        etcd_endpoints: context::external_etcd_endpoints(inventory),
    };
    let rules = controls::broken_rules(&documents, &expected);
    if !rules.is_empty() {
        return Err(KubeadmError::Control {
            node: node.name.clone(),
            purpose,
            rules,
        });
    }
    Ok(KubeadmDocuments {
        node: node.name.clone(),
        purpose,
        api,
        text,
        token,
        documents,
    })
}

/// `sha256:` and 64 lowercase hex digits, the form kubeadm's `pubkeypin` writes.
fn is_ca_hash(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}
