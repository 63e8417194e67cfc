//! What phases share: the inventory, run settings, the report, the connected fleet, the facts
//! gathered from each node, the cluster PKI, cluster-wide state, and the journal of every
//! change made or planned.

use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Phase;
use super::changes::{Change, ChangeRecord, Mode, apply_changes};
use crate::agent::AgentBinary;
use crate::cluster::ClusterState;
use crate::facts::HostFacts;
use crate::interrupt::Interrupt;
use crate::inventory::{Inventory, Node};
use crate::pki::ClusterPki;
use crate::remote::{Connector, Fleet, NodeHandle};
use crate::report::{Event, Report};
use crate::state::{ControlDir, Scratch, StateDir, StateLock};

/// Settings resolved once from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub parallelism: usize,
    pub connect_timeout: Duration,
    /// The khagent binary to install; `None` for commands that do not install the agent.
    pub agent_binary: Option<Arc<AgentBinary>>,
    /// Raised by Ctrl-C; checked between steps.
    pub interrupt: Interrupt,
    /// The command, as the user typed it (`up`), for messages and the log's name.
    pub verb: String,
    /// The inventory file, for commands a message tells the user to run.
    pub inventory_path: Option<std::path::PathBuf>,
    /// The nodes host preparation and certificate distribution may change (`add-master`,
    /// `add-worker`: the new node only); `None`: every node.
    pub scope: Option<std::collections::BTreeSet<String>>,
    /// The command only reads by nature (`status`): plan mode without being a dry run.
    pub read_only_verb: bool,
}

pub struct Context {
    pub inventory: Inventory,
    pub settings: Settings,
    pub state: StateDir,
    pub report: Report,
    /// How nodes are reached: SSH, or fakes in unit tests.
    pub connector: Box<dyn Connector>,
    pub fleet: Option<Fleet>,
    /// Nodes the inventory no longer lists that khactl once placed its agent on, connected by
    /// `FormerNodes` from the state's record (never part of `fleet`: no phase changes them).
    pub former: Option<Fleet>,
    pub facts: BTreeMap<String, HostFacts>,
    pub pki: Option<ClusterPki>,
    /// Cluster-wide values learned during the run (the VIP holder, …).
    pub cluster: ClusterState,
    /// Every change made or planned, per node, in order.
    journal: Mutex<BTreeMap<String, Vec<ChangeRecord>>>,
    /// A scratch PKI directory for plan mode, so a dry run writes nothing to the state's PKI;
    /// inside the state directory, removed when the run ends.
    pub scratch: Option<Scratch>,
    /// Where this run's SSH control sockets live (made by `Connect`, removed with the context).
    pub control_dir: Option<ControlDir>,
    /// The state directory's lock, held for the whole run (taken by the session).
    pub state_lock: Option<StateLock>,
    /// The cluster lock on the first control plane (`LockCluster`), released by dropping it.
    pub cluster_lock: Option<crate::remote::Held>,
    /// The command's phases, so GatherFacts and Preflight can ask each what it needs.
    pub(super) phases: Rc<[Box<dyn Phase>]>,
    pub(super) current_phase: &'static str,
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
    pub fn new(
        inventory: Inventory,
        settings: Settings,
        state: StateDir,
        report: Report,
        connector: Box<dyn Connector>,
    ) -> Self {
        Self {
            inventory,
            settings,
            state,
            report,
            connector,
            fleet: None,
            former: None,
            facts: BTreeMap::new(),
            pki: None,
            cluster: ClusterState::default(),
            journal: Mutex::new(BTreeMap::new()),
            scratch: None,
            control_dir: None,
            state_lock: None,
            cluster_lock: None,
            phases: Rc::new([]),
            current_phase: "",
        }
    }

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

    /// Whether host preparation and certificate distribution may change `node` in this run.
    pub fn in_scope(&self, node: &str) -> bool {
        self.settings
            .scope
            .as_ref()
            .is_none_or(|s| s.contains(node))
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

    /// The one gate for typed changes: applies (or, in plan mode, shows) a node's changes,
    /// journals each, and returns how many there were. Between steps it stops at Ctrl-C.
    pub async fn apply(&self, host: &NodeHandle, changes: &[Change]) -> anyhow::Result<usize> {
        apply_changes(self, host, changes).await
    }

    /// An imperative step that is not a typed change (kubeadm init, an etcd member add): in
    /// apply mode it runs `step` and returns its value; in plan mode it is shown as planned
    /// under `headline` and not run. Journaled either way.
    pub async fn step<T>(
        &self,
        host: &NodeHandle,
        headline: &str,
        step: impl AsyncFnOnce(&NodeHandle) -> anyhow::Result<T>,
    ) -> anyhow::Result<Option<T>> {
        self.step_detailed(host, headline, Vec::new(), step).await
    }

    /// [`Context::step`] with lines a plan shows under the headline (a file's text, with
    /// its secrets blanked).
    pub async fn step_detailed<T>(
        &self,
        host: &NodeHandle,
        headline: &str,
        details: Vec<String>,
        step: impl AsyncFnOnce(&NodeHandle) -> anyhow::Result<T>,
    ) -> anyhow::Result<Option<T>> {
        if self.settings.mode == Mode::Plan {
            let mut text = headline.to_owned();
            for line in &details {
                text.push_str(&format!("\n      {line}"));
            }
            self.report.event(Event::Planned {
                node: host.node(),
                change: &text,
            });
            let mut record = ChangeRecord::step(self.current_phase, headline, false);
            record.details = details;
            self.record(host.node(), record);
            return Ok(None);
        }
        self.settings.interrupt.check()?;
        self.report.event(Event::NodeStep {
            node: host.node(),
            message: headline,
        });
        let value = step(host).await?;
        self.record(
            host.node(),
            ChangeRecord::step(self.current_phase, headline, true),
        );
        Ok(Some(value))
    }

    /// The phase running now.
    pub fn phase(&self) -> &'static str {
        self.current_phase
    }

    pub(super) fn record(&self, node: &str, record: ChangeRecord) {
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        journal.entry(node.to_owned()).or_default().push(record);
    }

    /// Every change made or planned so far, per node.
    pub fn journal(&self) -> BTreeMap<String, Vec<ChangeRecord>> {
        self.journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes made or planned in the phase running now, on `node`.
    fn changes_this_phase(&self, node: &str) -> usize {
        let journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        journal.get(node).map_or(0, |records| {
            records
                .iter()
                .filter(|r| r.phase == self.current_phase)
                .count()
        })
    }

    /// One line on what `node` has done, for an interrupted run.
    pub fn node_progress(&self, node: &str) -> String {
        let journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let done: Vec<&ChangeRecord> = journal
            .get(node)
            .map(|r| r.iter().filter(|c| c.done).collect())
            .unwrap_or_default();
        match done.last() {
            None => "nothing changed yet".to_owned(),
            Some(last) => format!(
                "{} change(s) made; the last: {} ({})",
                done.len(),
                last.headline,
                last.phase
            ),
        }
    }

    /// Reports each node's end of a phase from its results, counting the changes the gate
    /// journaled for it in this phase; fails naming every node that failed.
    pub fn settle_changes(
        &mut self,
        results: Vec<(String, anyhow::Result<()>)>,
    ) -> anyhow::Result<()> {
        let mode = self.settings.mode;
        let summaries = results
            .into_iter()
            .map(|(node, r)| {
                let n = self.changes_this_phase(&node);
                (node, r.map(|()| summary(mode, n)))
            })
            .collect();
        self.settle(summaries)
    }

    /// Reports each node's end of the current phase, and fails the phase naming every node
    /// that failed (after all of them finished their step).
    pub fn settle(&mut self, results: Vec<(String, anyhow::Result<String>)>) -> anyhow::Result<()> {
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
            Err(NodesFailed {
                phase: self.current_phase,
                failures,
            }
            .into())
        }
    }

    /// Total changes made or planned in this run, and on how many nodes.
    pub fn totals(&self) -> (usize, usize) {
        let journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let total = journal.values().map(Vec::len).sum();
        let nodes = journal.values().filter(|r| !r.is_empty()).count();
        (total, nodes)
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
