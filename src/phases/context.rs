//! What phases share: the inventory, run settings, the report, the connected fleet,
//! the facts gathered from each node, and the cluster PKI.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::changes::{Change, Mode, apply_all};
use super::install_agent::AgentBinary;
use crate::facts::HostFacts;
use crate::inventory::{Inventory, Node};
use crate::pki::ClusterPki;
use crate::remote::{Fleet, SshHost};
use crate::report::{Event, Report};
use crate::state::StateDir;

/// Settings resolved once from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub parallelism: usize,
    pub connect_timeout: Duration,
    /// The khagent binary to install; `None` for commands that do not install the agent.
    pub agent_binary: Option<Arc<AgentBinary>>,
}

pub struct Context {
    pub inventory: Inventory,
    pub settings: Settings,
    pub state: StateDir,
    pub report: Report,
    pub fleet: Option<Fleet>,
    pub facts: BTreeMap<String, HostFacts>,
    pub pki: Option<ClusterPki>,
    /// Changes made (or planned) so far, per node.
    pub changes: BTreeMap<String, usize>,
    /// A scratch PKI directory for plan mode, so a dry run writes nothing to the state.
    pub scratch: Option<tempfile::TempDir>,
}

/// One or more nodes failed a phase; each is listed with its error.
#[derive(Debug)]
pub struct NodesFailed {
    pub phase: &'static str,
    pub failures: Vec<(String, anyhow::Error)>,
}

impl fmt::Display for NodesFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.failures.iter().map(|(n, _)| n.as_str()).collect();
        write!(f, "{}: failed on {}", self.phase, names.join(", "))?;
        for (_, e) in &self.failures {
            write!(f, "\n  - {e:#}")?;
        }
        Ok(())
    }
}

impl std::error::Error for NodesFailed {}

impl Context {
    pub fn fleet(&self) -> anyhow::Result<&Fleet> {
        self.fleet
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("internal: no connection to the nodes yet"))
    }

    pub fn facts_of(&self, node: &str) -> anyhow::Result<&HostFacts> {
        self.facts
            .get(node)
            .ok_or_else(|| anyhow::anyhow!("internal: no facts gathered for {node}"))
    }

    pub fn node(&self, name: &str) -> anyhow::Result<&Node> {
        self.inventory
            .node(name)
            .ok_or_else(|| anyhow::anyhow!("internal: {name} is not in the inventory"))
    }

    pub fn pki(&self) -> anyhow::Result<&ClusterPki> {
        self.pki
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("internal: the PKI is not loaded yet"))
    }

    /// The one gate: applies (or, in plan mode, shows) a node's changes.
    pub async fn apply(&self, host: &SshHost, changes: &[Change]) -> anyhow::Result<usize> {
        apply_all(self.settings.mode, &self.report, host, changes).await
    }

    /// Collects per-node change counts of a phase; see [`Context::settle`].
    pub fn settle_changes(
        &mut self,
        phase: &'static str,
        results: Vec<(String, anyhow::Result<usize>)>,
    ) -> anyhow::Result<()> {
        let mode = self.settings.mode;
        let mut summaries = Vec::new();
        for (node, r) in results {
            if let Ok(n) = &r {
                *self.changes.entry(node.clone()).or_default() += n;
            }
            summaries.push((node, r.map(|n| summary(mode, n))));
        }
        self.settle(phase, summaries)
    }

    /// Reports each node's end of a phase, and fails the phase naming every node that
    /// failed (after all of them finished their step).
    pub fn settle(
        &mut self,
        phase: &'static str,
        results: Vec<(String, anyhow::Result<String>)>,
    ) -> anyhow::Result<()> {
        let mut failures = Vec::new();
        for (node, r) in results {
            match r {
                Ok(summary) => {
                    self.report.event(Event::NodeDone {
                        node: &node,
                        summary: &summary,
                    });
                }
                Err(e) => {
                    let text = format!("{e:#}");
                    self.report.event(Event::NodeFailed {
                        node: &node,
                        error: &text,
                    });
                    failures.push((node, e));
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(NodesFailed { phase, failures }.into())
        }
    }

    /// Total changes made or planned in this run.
    pub fn total_changes(&self) -> usize {
        self.changes.values().sum()
    }
}

fn summary(mode: Mode, n: usize) -> String {
    match (mode, n) {
        (_, 0) => "up to date".to_owned(),
        (Mode::Apply, 1) => "1 change".to_owned(),
        (Mode::Apply, n) => format!("{n} changes"),
        (Mode::Plan, 1) => "1 change planned".to_owned(),
        (Mode::Plan, n) => format!("{n} changes planned"),
    }
}
