//! `khactl status -i INVENTORY [--watch]`: the cluster's health in one view, read-only (every
//! remote command is marked read-only and the session runs in plan mode, so the remote seam
//! refuses anything else). Nodes that cannot be reached are part of the view, not an error.
//! The result is healthy (exit 0) or degraded (exit 1, naming every problem with a hint).

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use serde::Serialize;

use crate::cluster::health::ClusterHealth;
use crate::diagnostics::Hinted;
use crate::phases::{ConnectReachable, GatherFacts, OnRound, Phase, ReadStatus};
use crate::remote::Connector;
use crate::report::Reporter;
use crate::session::{self, NodeOptions};

#[derive(Debug, Clone)]
pub struct StatusOptions {
    pub nodes: NodeOptions,
    /// Read again every this long until Ctrl-C.
    pub watch: Option<Duration>,
}

/// What `status` saw. Field names are stable: see `docs/output.md`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusResult {
    #[serde(flatten)]
    pub health: ClusterHealth,
    pub log: Option<PathBuf>,
}

impl StatusResult {
    pub fn text(&self) -> Vec<String> {
        let mut lines = self.health.text();
        if let Some(log) = &self.log {
            lines.push(format!("log: {}", log.display()));
        }
        lines
    }

    /// The error a degraded cluster exits 1 with: the problems, each hint as a hint.
    pub fn degraded(&self) -> Option<Hinted> {
        if self.health.healthy {
            return None;
        }
        let mut message = format!(
            "cluster {} is degraded: {} problem(s)",
            self.health.cluster,
            self.health.problems.len()
        );
        for p in &self.health.problems {
            message.push_str(&format!("\n  - {}", p.message));
        }
        let mut e = Hinted::new(message);
        for p in &self.health.problems {
            e = e.hint(p.hint.clone());
        }
        Some(e)
    }
}

/// The phases of `khactl status`.
pub fn phases(
    watch: Option<Duration>,
    on_round: Option<OnRound>,
    outcome: &Rc<RefCell<Option<ClusterHealth>>>,
) -> Vec<Box<dyn Phase>> {
    vec![
        Box::new(ConnectReachable),
        Box::new(GatherFacts),
        Box::new(ReadStatus {
            watch,
            on_round,
            outcome: Rc::clone(outcome),
        }),
    ]
}

/// Runs `status`; `on_round` sees every look as it is taken (`--watch` draws it).
pub async fn run(
    opts: &StatusOptions,
    reporter: Box<dyn Reporter>,
    on_round: Option<OnRound>,
) -> anyhow::Result<StatusResult> {
    run_with(opts, reporter, on_round, None).await
}

/// [`run`] with another way to reach nodes (unit tests pass fakes).
pub async fn run_with(
    opts: &StatusOptions,
    reporter: Box<dyn Reporter>,
    on_round: Option<OnRound>,
    connector: Option<Box<dyn Connector>>,
) -> anyhow::Result<StatusResult> {
    let loaded = session::load(&opts.nodes)?;
    let outcome = Rc::new(RefCell::new(None));
    let mut ctx = loaded.start_read_only("status", reporter, connector)?;
    let result = session::run(&mut ctx, phases(opts.watch, on_round, &outcome)).await;
    let finished = session::finish(ctx, result).await?;
    let health = outcome
        .borrow_mut()
        .take()
        .ok_or_else(|| anyhow::anyhow!("internal: status finished without a look"))?;
    Ok(StatusResult {
        health,
        log: finished.log,
    })
}

#[cfg(test)]
mod tests;
