//! With node-local balancers, a node reaches the API only through its own agent, so the
//! agent must run on a node before `kubeadm join` there (`add-master`, `add-worker`); behind
//! a VIP the joining node dials the VIP, and a new control plane gets its agent only once it
//! has joined. This phase is [`InstallAgent`] in the first case and skipped in the second.

use super::InstallAgent;
use crate::facts::{HostFacts, ProbeRequest};
use crate::inventory::Node;
use crate::phases::{Context, Phase, PhaseFuture};

pub struct InstallAgentBeforeJoin {
    /// Whether this phase runs the agent's preflight checks: not when [`InstallAgent`] also
    /// is in the list (the same problems would be reported twice).
    pub preflight: bool,
}

impl Phase for InstallAgentBeforeJoin {
    fn title(&self) -> &'static str {
        "Install the node-local agents"
    }

    fn facts(&self, ctx: &Context, node: &Node) -> ProbeRequest {
        InstallAgent.facts(ctx, node)
    }

    fn preflight(&self, ctx: &Context, node: &Node, facts: &HostFacts) -> Vec<String> {
        if !self.preflight || ctx.inventory.node_local().is_none() {
            return Vec::new();
        }
        InstallAgent.preflight(ctx, node, facts)
    }

    fn skip_reason(&self, ctx: &Context) -> Option<String> {
        if let Some(reason) = InstallAgent.skip_reason(ctx) {
            return Some(reason);
        }
        ctx.inventory
            .node_local()
            .is_none()
            .then(|| "behind the VIP the joining node needs no agent of its own first".to_owned())
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        InstallAgent.run(ctx)
    }
}
