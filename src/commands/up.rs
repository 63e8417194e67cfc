//! `khactl up`: validate the inventory, then run the install phases against every node.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::commands::UsageError;
use crate::inventory;
use crate::phases::{self, AgentBinary, Context, Mode, Settings};
use crate::remote::find_ssh_client;
use crate::report::{Event, Report, Reporter, RunLog};
use crate::state::StateDir;

/// Everything `up` needs, resolved from the command line once.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub inventory: PathBuf,
    pub dry_run: bool,
    pub parallelism: usize,
    pub connect_timeout: Duration,
    pub state_dir: Option<PathBuf>,
    /// The khagent to install; default: `khagent` next to this executable.
    pub agent_binary: Option<PathBuf>,
}

pub async fn run(opts: &UpOptions, reporter: Box<dyn Reporter>) -> anyhow::Result<()> {
    // Everything that can be wrong locally is found before the first connection.
    let validated = inventory::load(&opts.inventory).map_err(|e| UsageError(e.to_string()))?;
    find_ssh_client()
        .map_err(|e| UsageError(format!("{e}\n  hint: {}", e.hint().unwrap_or_default())))?;
    let inv = validated.inventory;
    check_local_files(&inv)?;
    let agent_path = AgentBinary::locate(opts.agent_binary.as_deref())
        .map_err(|e| UsageError(format!("cannot find khactl's own executable: {e}")))?;
    let agent = AgentBinary::load(&agent_path).map_err(|e| UsageError(e.to_string()))?;
    let state = StateDir::locate(opts.state_dir.as_deref(), inv.cluster.name.as_str())
        .map_err(|e| UsageError(e.to_string()))?;
    state.create().map_err(|e| UsageError(e.to_string()))?;
    let verb = if opts.dry_run { "plan" } else { "up" };
    let log = RunLog::create(&state.logs_dir(), verb)?;
    let report = Report::new(reporter, Some(log));
    for w in &validated.warnings {
        let text = w.to_string();
        report.event(Event::Warning {
            node: None,
            message: &text,
        });
    }

    let mode = if opts.dry_run {
        Mode::Plan
    } else {
        Mode::Apply
    };
    let mut ctx = Context {
        settings: Settings {
            mode,
            parallelism: opts.parallelism,
            connect_timeout: opts.connect_timeout,
            agent_binary: Some(Arc::new(agent)),
        },
        inventory: inv,
        state,
        report,
        fleet: None,
        facts: Default::default(),
        pki: None,
        changes: Default::default(),
        scratch: None,
    };
    let result = phases::run(&phases::up_phases(), &mut ctx).await;
    if let Some(fleet) = ctx.fleet.take() {
        fleet.close().await;
    }
    ctx.report.finish();
    let log_path = ctx
        .report
        .log_path()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    match result {
        Ok(()) => {
            let total = ctx.total_changes();
            let nodes = ctx.changes.values().filter(|n| **n > 0).count();
            let message = match (mode, total) {
                (Mode::Plan, 0) => {
                    "dry run: nothing to change, every node is up to date".to_owned()
                }
                (Mode::Plan, n) => {
                    format!(
                        "dry run: {n} change(s) planned on {nodes} node(s); nothing was changed"
                    )
                }
                (Mode::Apply, 0) => {
                    "up: nothing to change, every node was already up to date".to_owned()
                }
                (Mode::Apply, n) => format!("up: made {n} change(s) on {nodes} node(s)"),
            };
            ctx.report.event(Event::Info { message: &message });
            ctx.report.event(Event::Info {
                message: &format!("log: {log_path}"),
            });
            Ok(())
        }
        Err(e) => Err(e.context(format!("khactl {verb} stopped; full log: {log_path}"))),
    }
}

/// Identity files must exist here, on this machine, before any node is contacted.
fn check_local_files(inv: &inventory::Inventory) -> Result<(), UsageError> {
    let mut problems = Vec::new();
    for (i, node) in inv.nodes.iter().enumerate() {
        let target = inv.ssh_for(node);
        if let Some(key) = &target.identity_file {
            let field = if node.ssh.identity_file.is_some() {
                format!("nodes[{i}].ssh.identityFile")
            } else {
                "ssh.identityFile".to_owned()
            };
            if let Err(e) = std::fs::File::open(key) {
                let line = format!(
                    "  error: {field}: cannot read {} ({e}); fix the path or create the key",
                    key.display()
                );
                if !problems.contains(&line) {
                    problems.push(line);
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(UsageError(format!(
            "the inventory names SSH keys that cannot be used:\n{}",
            problems.join("\n")
        )))
    }
}
