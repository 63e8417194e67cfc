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
}
