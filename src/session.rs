//! A command's life around its phases, so a new command is its phase list plus its result.
//!
//! ```text
//! load(options)        inventory validated, ssh client found, identity files readable —
//!                      nothing created, no node contacted (errors exit 2)
//!   .start(verb, mode) state directory and its lock, run log, report, Ctrl-C and SIGTERM
//!                      listener → Context
//! run(ctx, phases)     the phases (see `phases::run`): cleanups on failure, Ctrl-C between steps
//! finish(ctx, result)  connections closed, outcome written to the log → Finished or the error
//! ```

use std::path::PathBuf;
use std::time::Duration;

use crate::diagnostics::Hinted;
use crate::interrupt::Interrupt;
use crate::inventory::{self, Inventory};
use crate::phases::{self, ChangeRecord, Context, Mode, Phase, Settings};
use crate::remote::{Connector, SshConnector, find_ssh_client, ssh_config_path};
use crate::report::{Event, Report, Reporter, RunLog};
use crate::state::{StateDir, StateLock};

pub use crate::cluster::ClusterState;

/// The options every command that reaches nodes shares, resolved from the command line once.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub inventory: PathBuf,
    pub parallelism: usize,
    pub connect_timeout: Duration,
    pub state_dir: Option<PathBuf>,
}

/// An error found before any connection: bad usage, an invalid inventory, a local problem.
/// Exits 2.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct UsageError(Hinted);

impl UsageError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(Hinted::new(message))
    }

    pub fn hint(self, hint: impl Into<String>) -> Self {
        Self(self.0.hint(hint))
    }

    pub fn hints(&self) -> &[String] {
        self.0.hints()
    }
}

/// Everything checked locally, nothing created yet.
pub struct Loaded {
    pub options: NodeOptions,
    pub inventory: Inventory,
    pub warnings: Vec<String>,
}

/// Validates what can be checked here, before anything is created or contacted.
pub fn load(options: &NodeOptions) -> Result<Loaded, UsageError> {
    let validated =
        inventory::load(&options.inventory).map_err(|e| UsageError::new(e.to_string()))?;
    if let Err(e) = find_ssh_client() {
        let mut err = UsageError::new(e.to_string());
        if let Some(h) = e.hint() {
            err = err.hint(h);
        }
        return Err(err);
    }
    check_local_files(&validated.inventory)?;
    Ok(Loaded {
        options: options.clone(),
        inventory: validated.inventory,
        warnings: validated.warnings.iter().map(ToString::to_string).collect(),
    })
}

impl Loaded {
    /// Creates the state directory, takes its lock (so one khactl at a time writes it or
    /// changes the cluster's nodes: an error naming the holder, exit 1, otherwise), creates
    /// the run log, and starts listening for Ctrl-C and SIGTERM.
    pub fn start(
        self,
        verb: &str,
        mode: Mode,
        reporter: Box<dyn Reporter>,
    ) -> anyhow::Result<Context> {
        self.start_with(verb, mode, reporter, Box::new(SshConnector))
    }

    /// [`Loaded::start`] for a command that only reads (`status`): it runs in plan mode, so
    /// the remote seam refuses any command not marked read-only, but it is no dry run of
    /// anything and its log and lock say its own name.
    pub fn start_read_only(
        self,
        verb: &str,
        reporter: Box<dyn Reporter>,
        connector: Option<Box<dyn Connector>>,
    ) -> anyhow::Result<Context> {
        let connector = connector.unwrap_or_else(|| Box::new(SshConnector));
        self.start_inner(verb, Mode::Plan, true, reporter, connector)
    }

    /// [`Loaded::start`] with another way to reach nodes (unit tests pass fakes).
    pub fn start_with(
        self,
        verb: &str,
        mode: Mode,
        reporter: Box<dyn Reporter>,
        connector: Box<dyn Connector>,
    ) -> anyhow::Result<Context> {
        self.start_inner(verb, mode, false, reporter, connector)
    }

    fn start_inner(
        self,
        verb: &str,
        mode: Mode,
        read_only_verb: bool,
        reporter: Box<dyn Reporter>,
        connector: Box<dyn Connector>,
    ) -> anyhow::Result<Context> {
        let state = StateDir::locate(
            self.options.state_dir.as_deref(),
            self.inventory.cluster.name.as_str(),
        )
        .map_err(|e| UsageError::new(e.to_string()))?;
        // ssh must read the known_hosts path as one file, or host keys go unchecked.
        if let Err(e) = ssh_config_path(&state.known_hosts()) {
            return Err(
                UsageError::new(format!("the state directory cannot be used: {e}"))
                    .hint("choose another --state-dir (or KHACTL_STATE_DIR)")
                    .into(),
            );
        }
        state.create().map_err(|e| UsageError::new(e.to_string()))?;
        let command = match mode {
            Mode::Plan if !read_only_verb => format!("{verb} --dry-run"),
            _ => verb.to_owned(),
        };
        let lock = StateLock::acquire(&state.lock_path(), &command)?;
        let swept = state.sweep_scratch(&lock)?;
        let log_verb = if mode == Mode::Plan && !read_only_verb {
            "plan"
        } else {
            verb
        };
        let log = RunLog::create(&state.logs_dir(), log_verb).map_err(|e| {
            UsageError::new(format!(
                "cannot create the run log in {}: {e}",
                state.logs_dir().display()
            ))
        })?;
        let report = Report::new(reporter, Some(log));
        for w in &self.warnings {
            report.event(Event::Warning {
                node: None,
                message: w,
            });
        }
        for dir in swept {
            report.log_only(&format!(
                "removed {}, the dry-run scratch of a run that was killed",
                dir.display()
            ));
        }
        let interrupt = Interrupt::default();
        listen_for_signals(interrupt.clone(), report.clone(), state.scratch_path());
        let settings = Settings {
            mode,
            parallelism: self.options.parallelism,
            connect_timeout: self.options.connect_timeout,
            agent_binary: None,
            interrupt,
            verb: verb.to_owned(),
            inventory_path: Some(self.options.inventory.clone()),
            scope: None,
            read_only_verb,
        };
        let mut ctx = Context::new(self.inventory, settings, state, report, connector);
        ctx.state_lock = Some(lock);
        Ok(ctx)
    }
}

/// The first Ctrl-C or SIGTERM (a service manager, `timeout`, a CI runner stopping khactl):
/// finish the step in flight, clean up, exit 130. The second: exit at once, after removing
/// the dry run's scratch PKI (`scratch`), the one thing an exit skips that must not stay.
fn listen_for_signals(interrupt: Interrupt, report: Report, scratch: std::path::PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    // Outside a runtime (a unit test building a context by hand) there is nothing to listen
    // with; the run can still be interrupted through the flag.
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        report.log_only("cannot listen for Ctrl-C and SIGTERM: they stop khactl at once");
        return;
    };
    tokio::spawn(async move {
        let first = tokio::select! {
            _ = int.recv() => "interrupt (Ctrl-C)",
            _ = term.recv() => "SIGTERM",
        };
        interrupt.raise();
        report.event(Event::Warning {
            node: None,
            message: &format!(
                "{first}: every node finishes the step it is on, then the run stops \
                 (Ctrl-C again to stop at once)"
            ),
        });
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        if let Err(e) = crate::state::remove_if_present(&scratch) {
            report.log_only(&format!(
                "stopping at once; could not remove the dry run's scratch PKI {}: {e}",
                scratch.display()
            ));
        }
        report.log_only("interrupted again: stopping at once");
        std::process::exit(130);
    });
}

/// Runs the command's phases on the context.
pub async fn run(ctx: &mut Context, phases: Vec<Box<dyn Phase>>) -> anyhow::Result<()> {
    phases::run(ctx, phases).await
}

/// What a command's phases did, for its typed result.
#[derive(Debug, Clone)]
pub struct Finished {
    pub mode: Mode,
    pub inventory: Inventory,
    /// Every change made or planned, per node, in order.
    pub journal: std::collections::BTreeMap<String, Vec<ChangeRecord>>,
    pub cluster: ClusterState,
    pub log: Option<PathBuf>,
    /// The cluster's state directory (where a generated stats password is kept).
    pub state: StateDir,
}

impl Finished {
    pub fn total_changes(&self) -> usize {
        self.journal.values().map(Vec::len).sum()
    }

    pub fn nodes_changed(&self) -> usize {
        self.journal.values().filter(|r| !r.is_empty()).count()
    }
}

/// Closes the connections, writes the outcome to the log, and returns what the phases did or
/// the error, which then names the log.
pub async fn finish(mut ctx: Context, result: anyhow::Result<()>) -> anyhow::Result<Finished> {
    // The cluster lock's command ends when its stdin closes; before the connections go.
    drop(ctx.cluster_lock.take());
    if let Some(fleet) = ctx.fleet.take() {
        fleet.close().await;
    }
    if let Some(former) = ctx.former.take() {
        former.close().await;
    }
    if let Some(scratch) = ctx.scratch.take() {
        let path = scratch.path().display().to_string();
        if let Err(e) = scratch.remove() {
            ctx.report.event(Event::Warning {
                node: None,
                message: &format!(
                    "could not remove the dry run's scratch PKI {path} ({e}); it holds CA \
                     keys: remove it by hand (the next run also tries)"
                ),
            });
        }
    }
    ctx.report.finish();
    let log = ctx.report.log_path().map(std::path::Path::to_path_buf);
    let shown = log
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    match result {
        Ok(()) => {
            let (total, nodes) = ctx.totals();
            ctx.report
                .log_only(&format!("finished: {total} change(s) on {nodes} node(s)"));
            Ok(Finished {
                mode: ctx.settings.mode,
                journal: ctx.journal(),
                cluster: ctx.cluster.clone(),
                state: ctx.state.clone(),
                inventory: ctx.inventory,
                log,
            })
        }
        Err(e) => {
            ctx.report.log_only(&format!("stopped: {e:#}"));
            let dry = match ctx.settings.mode {
                Mode::Plan if !ctx.settings.read_only_verb => " --dry-run",
                _ => "",
            };
            let verb = &ctx.settings.verb;
            Err(e.context(format!("khactl {verb}{dry} stopped; full log: {shown}")))
        }
    }
}

/// Identity files and the stats page's password file must be usable here, on this machine,
/// before any node is contacted.
fn check_local_files(inv: &Inventory) -> Result<(), UsageError> {
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
    let mut what = "SSH keys";
    if let Some(path) = inv.stats_page.as_ref().and_then(|p| p.password_file())
        && let Err(e) = crate::phases::install_agent::stats_page::read_password_file(&path)
    {
        what = if problems.is_empty() {
            "a password file"
        } else {
            "files"
        };
        problems.push(format!("  error: {e}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(UsageError::new(format!(
            "the inventory names {what} that cannot be used:\n{}",
            problems.join("\n")
        )))
    }
}
