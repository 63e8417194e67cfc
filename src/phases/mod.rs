//! The install as an ordered list of phases, one file each, named by intent.
//!
//! A phase reads facts, decides what must change, and hands each change to the one
//! gate in [`changes`]: in plan mode (`--dry-run`) the change is recorded and shown
//! per node, in apply mode it runs. Phases are idempotent: what is already as wanted
//! is not a change, so a second `up` reports zero changes.
//!
//! Phases never print; they emit events through [`crate::report::Report`].

pub mod changes;
mod connect;
mod context;
mod distribute_pki;
mod gather_facts;
mod generate_pki;
pub mod install_agent;
mod preflight;
mod prepare_hosts;
mod wait_for_vip;

#[cfg(test)]
mod test_support;

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

pub use changes::{Change, Mode, ServiceAction};
pub use connect::Connect;
pub use context::{Context, NodesFailed, Settings};
pub use distribute_pki::DistributePki;
pub use gather_facts::GatherFacts;
pub use generate_pki::GeneratePki;
pub use install_agent::{AgentBinary, InstallAgent};
pub use preflight::Preflight;
pub use prepare_hosts::PrepareHosts;
pub use wait_for_vip::WaitForVip;

use crate::report::Event;

pub type PhaseFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;

/// khactl drives nodes from one thread (the work is waiting on SSH), so phase futures
/// need not be `Send`.
pub trait Phase {
    /// Shown as the phase header, e.g. "Prepare hosts".
    fn title(&self) -> &'static str;

    /// `Some(reason)` when the phase has nothing to do in this run.
    fn skip_reason(&self, _ctx: &Context) -> Option<String> {
        None
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a>;
}

/// The phases of `khactl up`, in runbook order.
pub fn up_phases() -> Vec<Box<dyn Phase>> {
    vec![
        Box::new(GeneratePki),
        Box::new(Connect),
        Box::new(GatherFacts),
        Box::new(Preflight),
        Box::new(PrepareHosts),
        Box::new(DistributePki),
        Box::new(InstallAgent),
        Box::new(WaitForVip),
    ]
}

/// Runs phases in order; stops at the first failure (every node finishes the failing
/// phase's step first, see [`crate::remote::Fleet::each`]).
pub async fn run(phases: &[Box<dyn Phase>], ctx: &mut Context) -> anyhow::Result<()> {
    for phase in phases {
        let title = phase.title();
        if let Some(reason) = phase.skip_reason(ctx) {
            ctx.report.event(Event::PhaseSkipped {
                title,
                reason: &reason,
            });
            continue;
        }
        ctx.report.event(Event::PhaseStarted { title });
        let started = Instant::now();
        phase.run(ctx).await?;
        ctx.report.event(Event::PhaseFinished {
            title,
            elapsed: started.elapsed(),
        });
    }
    Ok(())
}
