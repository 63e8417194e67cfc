//! Checks that must hold before anything changes: root (or working sudo), a supported
//! architecture and init system, and the VIP on the control-plane nodes' own subnet
//! (VRRP moves it between them on one L2 segment). Every node is checked; every
//! problem is reported.

use std::net::IpAddr;

use anyhow::bail;

use super::{Context, Phase, PhaseFuture};
use crate::facts::{HostFacts, InitSystem};
use crate::inventory::{Inventory, Node, Role};

pub struct Preflight;

impl Phase for Preflight {
    fn title(&self) -> &'static str {
        "Preflight checks"
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let mut results = Vec::new();
            for node in &ctx.inventory.nodes {
                let facts = ctx.facts_of(node.name.as_str())?;
                let mut r = check_node(&ctx.inventory, node, facts);
                // A control plane the agent binary cannot run on is refused now, before
                // any host is prepared, not halfway through the install.
                if let (Ok(()), Role::ControlPlane, Some(agent)) =
                    (&r, node.role, &ctx.settings.agent_binary)
                {
                    r = super::install_agent::check_arch(agent, facts);
                }
                let r = r.map(|()| "ok".to_owned());
                results.push((node.name.to_string(), r));
            }
            ctx.settle(self.title(), results)
        })
    }
}

/// Pure: the checks for one node given its facts.
pub fn check_node(inv: &Inventory, node: &Node, facts: &HostFacts) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    if facts.uid != Some(0) {
        problems.push(
            "commands do not run as root: connect as root, or set `ssh.sudo: true` for a user \
             with passwordless sudo"
                .to_owned(),
        );
    }
    if !matches!(facts.arch.as_str(), "x86_64" | "aarch64") {
        problems.push(format!(
            "architecture {} is not supported (x86_64 and aarch64 are)",
            facts.arch
        ));
    }
    if facts.init == InitSystem::Unknown {
        problems.push("no init system found (systemd or OpenRC is needed to run services)".into());
    }
    if node.role == Role::ControlPlane {
        let own = facts
            .addresses
            .iter()
            .find(|(_, net)| IpAddr::V4(net.addr()) == node.address);
        match own {
            None => problems.push(format!(
                "the node does not have its inventory address {} on any interface",
                node.address
            )),
            Some((dev, net)) => {
                if !net.trunc().contains(&inv.vip.address) {
                    problems.push(format!(
                        "vip.address {} is outside this node's subnet {} (on {dev}); the VIP \
                         must be on the control-plane nodes' own network for VRRP to move it",
                        inv.vip.address,
                        net.trunc()
                    ));
                }
                if let Some(want) = &inv.vip.interface
                    && !facts.addresses.iter().any(|(d, _)| d == want)
                {
                    problems.push(format!(
                        "vip.interface {want} has no IPv4 address on this node (its address \
                             is on {dev})"
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!(problems.join("; "))
    }
}

#[cfg(test)]
mod tests;
