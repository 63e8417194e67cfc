//! Progress on a terminal: a header per phase and one spinner line per node under it.
//! When a phase ends its node lines become ordinary scrollback lines, so the terminal
//! ends up holding the same record the plain reporter prints.

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Event, Reporter, plain};

struct NodeLine {
    node: String,
    bar: ProgressBar,
    /// The line to keep once the phase is over ("✓ 4 changes", "✗ …").
    outcome: Option<String>,
}

pub struct ProgressReporter {
    multi: MultiProgress,
    lines: Mutex<Vec<NodeLine>>,
}

impl ProgressReporter {
    pub fn new() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            lines: Mutex::new(Vec::new()),
        }
    }

    fn with_line(&self, node: &str, f: impl FnOnce(&mut NodeLine)) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(line) = lines.iter_mut().find(|l| l.node == node) {
            f(line);
            return;
        }
        let bar = self.multi.add(ProgressBar::new_spinner());
        let style = ProgressStyle::with_template("    {spinner} {prefix:<12} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.set_prefix(node.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        let mut line = NodeLine {
            node: node.to_owned(),
            bar,
            outcome: None,
        };
        f(&mut line);
        lines.push(line);
    }

    fn println(&self, line: &str) {
        // MultiProgress::println fails only when the terminal is gone. Then nothing can be
        // drawn any more: stop drawing (the run log still gets every line).
        if self.multi.println(line).is_err() {
            self.multi.set_draw_target(ProgressDrawTarget::hidden());
        }
    }

    /// Turns the current phase's node lines into scrollback, in the order nodes appeared.
    fn flush(&self) {
        let lines: Vec<NodeLine> =
            std::mem::take(&mut *self.lines.lock().unwrap_or_else(|p| p.into_inner()));
        for l in &lines {
            let text = l
                .outcome
                .clone()
                .unwrap_or_else(|| l.bar.message().to_string());
            self.println(&format!("    {}: {text}", l.node));
        }
        for l in lines {
            l.bar.finish_and_clear();
            self.multi.remove(&l.bar);
        }
    }
}

impl Default for ProgressReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for ProgressReporter {
    fn event(&self, event: &Event<'_>) {
        match event {
            Event::PhaseStarted { .. } | Event::PhaseSkipped { .. } => {
                self.flush();
                if let Some(l) = plain::line(event, false) {
                    self.println(&l);
                }
            }
            Event::PhaseFinished { .. } => self.flush(),
            Event::NodeStep { node, message } => {
                self.with_line(node, |l| l.bar.set_message(message.to_string()));
            }
            Event::NodeDone { node, summary } => self.with_line(node, |l| {
                l.outcome = Some((*summary).to_owned());
                l.bar.finish_with_message(format!("✓ {summary}"));
            }),
            Event::NodeFailed { node, error } => self.with_line(node, |l| {
                let first = error.lines().next().unwrap_or_default().to_owned();
                l.outcome = Some(format!("FAILED: {first}"));
                l.bar.finish_with_message(format!("✗ {first}"));
            }),
            Event::Command { .. } => {}
            Event::Warning { .. } | Event::Planned { .. } | Event::Info { .. } => {
                if let Some(l) = plain::line(event, false) {
                    self.println(&l);
                }
            }
        }
    }

    fn finish(&self) {
        self.flush();
    }

    fn suspend(&self, f: &mut dyn FnMut()) {
        self.multi.suspend(f);
    }
}
