//! What the cluster as a whole looks like: read-only queries that `up`, `status` and the
//! failover drill share (who holds the VIP, whether VIP:port answers), and [`ClusterState`],
//! the cluster-wide values a run learns as it goes.

pub mod agent;
pub mod api;
pub mod certs;
pub mod etcd;
pub mod health;
pub mod prober;
pub mod vip;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::render::kubeadm::BootstrapToken;

/// Cluster-wide values of one run, learned by phases and read by later ones and by the
/// command's result. Per-node facts live in the context's `facts`, not here.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterState {
    /// The control-plane node holding the virtual IP, once known.
    pub vip_holder: Option<String>,
    /// Whether a Kubernetes control plane exists (some control plane is a full member).
    pub initialized: bool,
    /// Nodes that are part of the cluster: found so at the start, or joined in this run.
    pub members: BTreeSet<String>,
    /// The etcd members as last read.
    pub etcd: Vec<etcd::Member>,
    /// The control plane whose etcd last answered: asked first next time.
    #[serde(skip)]
    pub etcd_answers_on: Option<String>,
    /// Nodes where `kubeadm init` or `join` started and did not finish in this run: what a
    /// cleanup resets.
    #[serde(skip)]
    pub half_joined: Vec<String>,
    /// The bootstrap token of this run (CSPRNG, 1 h); never serialized, never logged.
    #[serde(skip)]
    pub join_token: Option<BootstrapToken>,
    /// Whether `join_token` exists in the cluster (made by init, or by `kubeadm token create`).
    #[serde(skip)]
    pub token_in_cluster: bool,
    /// When it was put there: it lives an hour, so a long run makes another.
    #[serde(skip)]
    pub token_made: Option<std::time::Instant>,
    /// Nodes khactl once placed its agent or the CA keys on that are no longer control
    /// planes, with what may be left there.
    pub former: Vec<FormerNode>,
    /// Nodes a read-only view could not connect to, with why (`ConnectReachable`).
    pub unreachable: BTreeMap<String, String>,
}

impl ClusterState {
    /// The started etcd voters' names, as last read.
    pub fn voter_names(&self) -> Vec<String> {
        self.etcd
            .iter()
            .filter(|m| !m.is_learner && !m.name.is_empty())
            .map(|m| m.name.clone())
            .collect()
    }
}

/// A node that left the control plane, and what khactl found of its agent and CA keys there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FormerNode {
    pub node: String,
    /// khagent's files are there (or the node could not be asked: it may be).
    pub agent: bool,
    pub ca_keys: bool,
    /// Why it could not be checked, if it could not.
    pub unreachable: Option<String>,
}

impl FormerNode {
    pub fn seen(node: &str, agent: bool, ca_keys: bool) -> Self {
        Self {
            node: node.to_owned(),
            agent,
            ca_keys,
            unreachable: None,
        }
    }

    /// Not reachable: everything may still be there.
    pub fn unreachable(node: &str, why: &str) -> Self {
        Self {
            node: node.to_owned(),
            agent: true,
            ca_keys: true,
            unreachable: Some(why.to_owned()),
        }
    }

    /// Nothing of khactl's is left: the record may forget the node.
    pub fn is_clean(&self) -> bool {
        !self.agent && !self.ca_keys && self.unreachable.is_none()
    }

    pub fn describe(&self) -> String {
        if let Some(why) = &self.unreachable {
            return format!(
                "no longer a control plane, and cannot be checked ({why}): khagent and the CA \
                 keys khactl placed there may still be there"
            );
        }
        match (self.agent, self.ca_keys) {
            (false, false) => "no longer a control plane; nothing of khactl's is left".to_owned(),
            (true, true) => {
                "no longer a control plane, but still has khagent and the cluster's CA keys"
                    .to_owned()
            }
            (true, false) => "no longer a control plane, but still has khagent".to_owned(),
            (false, true) => {
                "no longer a control plane, but still has the cluster's CA keys".to_owned()
            }
        }
    }
}
