//! Progress and results, away from business code. Phases emit [`Event`]s; a
//! [`Reporter`] draws them (one indicatif line per node on a terminal, plain lines
//! for CI, `-v` and pipes), and the [`RunLog`] keeps every event and every remote
//! command with its output in the state directory, so a failure can point at it.
//! [`Report`] is also the remote seam's observer: every command any phase runs reaches
//! the log (secrets blanked) through it, not through the phase.
//! This module owns `indicatif` and `dialoguer` (questions, [`Report::confirm`]) and is, with
//! `main`, the only place that prints.

mod confirm;
mod log;
mod plain;
mod progress;

use std::sync::Arc;
use std::time::Duration;

pub use log::RunLog;
pub use plain::PlainReporter;
#[cfg(test)]
pub(crate) use plain::line as plain_line;
pub use progress::ProgressReporter;

use crate::remote::{CommandOutput, Observer, RemoteCommand};

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
    /// Runs `f` (a question to the user) with the terminal to itself.
    fn suspend(&self, f: &mut dyn FnMut()) {
        f();
    }
}

/// Shows nothing (the run log still keeps every event): for views that redraw the terminal
/// themselves, such as `status --watch`.
pub struct SilentReporter;

impl Reporter for SilentReporter {
    fn event(&self, _event: &Event<'_>) {}
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

/// A reporter and the run log together: what phases talk to. Cheap to clone (the session,
/// the remote seam and the Ctrl-C listener each hold one).
#[derive(Clone)]
pub struct Report {
    inner: Arc<Inner>,
}

struct Inner {
    reporter: Box<dyn Reporter>,
    log: Option<RunLog>,
}

impl Report {
    pub fn new(reporter: Box<dyn Reporter>, log: Option<RunLog>) -> Self {
        Self {
            inner: Arc::new(Inner { reporter, log }),
        }
    }

    pub fn event(&self, event: Event<'_>) {
        if let Some(log) = &self.inner.log {
            log.event(&event);
        }
        self.inner.reporter.event(&event);
    }

    /// A line for the run log only (the final outcome, a closing connection's trouble).
    pub fn log_only(&self, line: &str) {
        if let Some(log) = &self.inner.log {
            log.line(line);
        }
    }

    pub fn log_path(&self) -> Option<&std::path::Path> {
        self.inner.log.as_ref().map(RunLog::path)
    }

    /// Asks the user to type `expected` to go on; `Ok(false)` for any other answer. The
    /// question and whether it was confirmed go to the log.
    pub fn confirm(&self, prompt: &str, expected: &str) -> std::io::Result<bool> {
        let mut answer = Ok(false);
        self.inner
            .reporter
            .suspend(&mut || answer = confirm::typed(prompt, expected));
        let said = match &answer {
            Ok(true) => "confirmed",
            Ok(false) => "not confirmed",
            Err(_) => "no answer",
        };
        self.log_only(&format!("asked: {prompt} -> {said}"));
        answer
    }

    /// Stops drawing; says so if the log could not be written in full.
    pub fn finish(&self) {
        self.inner.reporter.finish();
        if let Some(problem) = self.inner.log.as_ref().and_then(RunLog::write_error) {
            self.inner.reporter.event(&Event::Warning {
                node: None,
                message: &format!("the run log is incomplete: {problem}"),
            });
        }
    }
}

impl Observer for Report {
    fn command(&self, node: &str, cmd: &RemoteCommand) {
        let shown = cmd.to_string();
        self.event(Event::Command {
            node,
            command: &shown,
        });
    }

    fn output(&self, node: &str, cmd: &RemoteCommand, out: &CommandOutput) {
        if let Some(log) = &self.inner.log {
            let shown = cmd.visible_output(out);
            log.output(node, out.status, &shown.stdout, &shown.stderr);
        }
    }

    fn note(&self, node: &str, message: &str) {
        self.log_only(&format!("    {node}: {message}"));
    }
}
