//! Checks that must hold before anything changes, every node and every problem at once: the
//! base checks every command needs (root or working sudo, a supported architecture and init
//! system) and those the command's phases declare ([`super::Phase::preflight`]; for example the
//! agent's: its binary runs on the node, the VIP is on the control planes' own subnet).

use super::{Context, Phase, PhaseFuture};
use crate::facts::{HostFacts, InitSystem};

pub struct Preflight;

impl Phase for Preflight {
    fn title(&self) -> &'static str {
        "Preflight checks"
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let phases = ctx.phases.clone();
            let mut results = Vec::new();
            for node in &ctx.inventory.nodes {
                let facts = ctx.facts_of(node.name.as_str())?;
                let mut problems = base_problems(facts);
                for phase in phases.iter() {
                    problems.extend(phase.preflight(ctx, node, facts));
                }
                let r = if problems.is_empty() {
                    Ok("ok".to_owned())
                } else {
                    Err(anyhow::anyhow!(problems.join("; ")))
                };
                results.push((node.name.to_string(), r));
            }
            ctx.settle(results)
        })
    }
}

/// Pure: what every node needs whatever the command.
pub fn base_problems(facts: &HostFacts) -> Vec<String> {
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
    problems
}

#[cfg(test)]
mod tests;
