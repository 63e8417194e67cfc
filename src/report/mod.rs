//! Progress and results, away from business code. Phases emit [`Event`]s; a
//! [`Reporter`] draws them (one indicatif line per node on a terminal, plain lines
//! for CI, `-v` and pipes), and the [`RunLog`] keeps every event and every remote
//! command with its output in the state directory, so a failure can point at it.
//! This module owns `indicatif` and is, with `main`, the only place that prints.

mod log;
mod plain;
mod progress;

use std::time::Duration;

pub use log::RunLog;
pub use plain::PlainReporter;
pub use progress::ProgressReporter;

#[derive(Debug, Clone)]
pub enum Event<'a> {
    PhaseStarted {
        title: &'a str,
    },
    PhaseSkipped {
        title: &'a str,
        reason: &'a str,
    },
    PhaseFinished {
        title: &'a str,
        elapsed: Duration,
    },
    NodeStep {
        node: &'a str,
        message: &'a str,
    },
    NodeDone {
        node: &'a str,
        summary: &'a str,
    },
    NodeFailed {
        node: &'a str,
        error: &'a str,
    },
    /// A remote command about to run (shown with `-v`; always logged).
    Command {
        node: &'a str,
        command: &'a str,
    },
    Warning {
        node: Option<&'a str>,
        message: &'a str,
    },
    /// A plan line for `--dry-run`: what would change on this node.
    Planned {
        node: &'a str,
        change: &'a str,
    },
    Info {
        message: &'a str,
    },
}

pub trait Reporter: Send + Sync {
    fn event(&self, event: &Event<'_>);
    /// Stop drawing (clear spinners) before the final summary is printed.
    fn finish(&self) {}
}

/// Picks the reporter for this terminal: progress bars on a TTY unless verbose.
pub fn for_terminal(verbose: bool) -> Box<dyn Reporter> {
    use std::io::IsTerminal;
    if !verbose && std::io::stderr().is_terminal() {
        Box::new(ProgressReporter::new())
    } else {
        Box::new(PlainReporter::new(verbose))
    }
}

/// A reporter and the run log together: what phases talk to.
pub struct Report {
    reporter: Box<dyn Reporter>,
    log: Option<RunLog>,
}

impl Report {
    pub fn new(reporter: Box<dyn Reporter>, log: Option<RunLog>) -> Self {
        Self { reporter, log }
    }

    pub fn event(&self, event: Event<'_>) {
        if let Some(log) = &self.log {
            log.event(&event);
        }
        self.reporter.event(&event);
    }

    /// Output of a remote command: logged in full, never drawn.
    pub fn command_output(&self, node: &str, stdout: &[u8], stderr: &[u8]) {
        if let Some(log) = &self.log {
            log.output(node, stdout, stderr);
        }
    }

    pub fn log_path(&self) -> Option<&std::path::Path> {
        self.log.as_ref().map(RunLog::path)
    }

    pub fn finish(&self) {
        self.reporter.finish();
    }
}
