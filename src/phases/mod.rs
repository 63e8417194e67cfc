//! Phases: the steps of a command, one file each, named by intent, in runbook order.
//!
//! A phase states what it needs to know of each node ([`Phase::facts`]) and what must hold
//! there before anything changes ([`Phase::preflight`]); the runner gathers the union of
//! those for the command's phase list in one probe per node ([`GatherFacts`]) and runs every
//! check at once ([`Preflight`]). A phase then decides what must change and hands each change
//! to the one gate ([`Context::apply`], [`changes`]) or runs an imperative step through
//! [`Context::step`]: in plan mode (`--dry-run`) both are recorded and shown, in apply mode they
//! run. Under both sits the remote seam, which refuses any command not marked read-only in a
//! dry run, so a phase cannot change a node by mistake. Phases are idempotent: what is already
//! as wanted is not a change, so a second run reports zero changes.
//!
//! When a phase fails or the user presses Ctrl-C, the runner stops after the step in flight
//! and runs the cleanups of the phases that started, last first ([`Phase::cleanup`]).
//!
//! Phases never print; they emit events through [`crate::report::Report`].

mod adopt_pki;
pub mod changes;
mod connect;
mod context;
pub(crate) mod distribute_pki;
mod etcd_endpoints;
mod etcd_membership;
pub mod existing_pki;
pub mod failover;
mod former_nodes;
mod gather_facts;
mod generate_pki;
pub mod install_agent;
pub mod install_etcd;
pub mod kubernetes;
mod lock_cluster;
pub mod manifest;
mod preflight;
mod prepare_hosts;
mod read_status;
mod reset_nodes;
pub mod rolling;
mod wait_for_vip;

#[cfg(test)]
mod etcd_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

pub use adopt_pki::{AdoptPki, Adopted};
pub use changes::{Change, ChangeRecord, Mode, SysctlChange};
pub use connect::{Connect, ConnectReachable};
pub use context::{Context, NodesFailed, Settings};
pub use distribute_pki::DistributePki;
pub use etcd_endpoints::UpdateEtcdEndpoints;
pub use etcd_membership::{CheckEtcdGrowth, JoinEtcdMember, LeaveEtcd};
pub use former_nodes::FormerNodes;
pub use gather_facts::GatherFacts;
pub use generate_pki::GeneratePki;
pub use install_agent::{InstallAgent, InstallAgentBeforeJoin};
pub use install_etcd::InstallEtcd;
pub use kubernetes::{CheckKubeadm, InitCluster, JoinControlPlanes, JoinWorkers, VerifyCluster};
pub use lock_cluster::LockCluster;
pub use preflight::Preflight;
pub use prepare_hosts::PrepareHosts;
pub use read_status::{OnRound, ReadStatus};
pub use reset_nodes::ResetNodes;
pub use wait_for_vip::WaitForVip;

use crate::facts::{HostFacts, ProbeRequest};
use crate::interrupt::Interrupted;
use crate::inventory::Node;
use crate::report::Event;

pub type PhaseFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;

/// One step of a command. khactl drives nodes from one thread (the work is waiting on SSH), so
/// phase futures need not be `Send`.
pub trait Phase {
    /// Shown as the phase header, e.g. "Prepare hosts".
    fn title(&self) -> &'static str;

    /// What this phase reads of `node` (sysctls, files, digests), gathered before it runs.
    fn facts(&self, _ctx: &Context, _node: &Node) -> ProbeRequest {
        ProbeRequest::default()
    }

    /// Problems on `node` that must stop the run before any node changes; empty when fine.
    fn preflight(&self, _ctx: &Context, _node: &Node, _facts: &HostFacts) -> Vec<String> {
        Vec::new()
    }

    /// `Some(reason)` when the phase has nothing to do in this run.
    fn skip_reason(&self, _ctx: &Context) -> Option<String> {
        None
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a>;

    /// Undoes what a failed or interrupted run would otherwise leave behind (a half-joined
    /// node, a stopped service); runs for every phase that started, last first, when the
    /// run fails. `None`: nothing to undo.
    fn cleanup<'a>(&'a self, _ctx: &'a mut Context) -> Option<PhaseFuture<'a>> {
        None
    }
}

/// The run stopped at the user's Ctrl-C, after the step in flight on every node.
#[derive(Debug)]
pub struct RunInterrupted {
    pub phase: &'static str,
    /// What each node had done when the run stopped.
    pub nodes: Vec<(String, String)>,
    /// A failure that happened in the same step, besides the interruption.
    pub cause: Option<anyhow::Error>,
}

impl fmt::Display for RunInterrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "interrupted during phase \"{}\"; every node finished the step it was on",
            self.phase
        )?;
        for (node, state) in &self.nodes {
            write!(f, "\n  {node}: {state}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RunInterrupted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_ref()
            .map(|e| e.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// Runs `phases` in order; stops at the first failure (every node finishes the failing
/// phase's step first, see [`crate::remote::Fleet::each`]) or at Ctrl-C, then runs the
/// cleanups of the phases that started, last first.
pub async fn run(ctx: &mut Context, phases: Vec<Box<dyn Phase>>) -> anyhow::Result<()> {
    let phases: Rc<[Box<dyn Phase>]> = phases.into();
    ctx.phases = Rc::clone(&phases);
    let mut started = Vec::new();
    let mut result = Ok(());
    for phase in phases.iter() {
        let title = phase.title();
        if ctx.settings.interrupt.is_raised() {
            result = Err(Interrupted.into());
            break;
        }
        if let Some(reason) = phase.skip_reason(ctx) {
            ctx.report.event(Event::PhaseSkipped {
                title,
                reason: &reason,
            });
            continue;
        }
        ctx.current_phase = title;
        ctx.report.event(Event::PhaseStarted { title });
        started.push(phase);
        let began = Instant::now();
        if let Err(e) = phase.run(ctx).await {
            result = Err(e);
            break;
        }
        ctx.report.event(Event::PhaseFinished {
            title,
            elapsed: began.elapsed(),
        });
    }
    let Err(error) = result else {
        return Ok(());
    };
    let report = ctx.report.clone();
    // Cleanups run to their end even after Ctrl-C: the flag that stops steps is set aside
    // for them (a second Ctrl-C still exits at once).
    let interrupted = ctx.settings.interrupt.is_raised();
    let interrupt = std::mem::take(&mut ctx.settings.interrupt);
    for phase in started.iter().rev() {
        let title = phase.title();
        if let Some(cleanup) = phase.cleanup(ctx) {
            report.event(Event::Warning {
                node: None,
                message: &format!("cleaning up after \"{title}\""),
            });
            if let Err(e) = cleanup.await {
                // Reported, not swallowed: the user must know what is left to undo by hand.
                report.event(Event::Warning {
                    node: None,
                    message: &format!("the cleanup of \"{title}\" failed: {e:#}"),
                });
            }
        }
    }
    ctx.settings.interrupt = interrupt;
    if interrupted {
        // A node may have failed on its own just before; keep that error, not only the log.
        let cause = (!error.chain().any(|c| c.is::<Interrupted>())).then_some(error);
        let nodes = ctx
            .inventory
            .nodes
            .iter()
            .map(|n| (n.name.to_string(), ctx.node_progress(n.name.as_str())))
            .collect();
        return Err(anyhow::Error::new(RunInterrupted {
            phase: ctx.current_phase,
            nodes,
            cause,
        }));
    }
    Err(error)
}
