//! What the cluster as a whole looks like: read-only queries that `up`, `status` and the
//! failover drill share (who holds the VIP, whether VIP:port answers), and [`ClusterState`],
//! the cluster-wide values a run learns as it goes.

pub mod vip;

use serde::Serialize;

/// Cluster-wide values of one run, learned by phases and read by later ones and by the
/// command's result. Per-node facts live in the context's `facts`, not here.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterState {
    /// The control-plane node holding the virtual IP, once known.
    pub vip_holder: Option<String>,
    /// Nodes khactl once placed its agent or the CA keys on that are no longer control
    /// planes, with what may be left there.
    pub former: Vec<FormerNode>,
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
