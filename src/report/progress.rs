//! Progress on a terminal: a header per phase and one spinner line per node under it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Event, Reporter, plain};

pub struct ProgressReporter {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl ProgressReporter {
    pub fn new() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, node: &str) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        bars.entry(node.to_owned())
            .or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new_spinner());
                let style = ProgressStyle::with_template("    {spinner} {prefix:<12} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                bar.set_style(style);
                bar.set_prefix(node.to_owned());
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            })
            .clone()
    }

    fn println(&self, line: &str) {
        // MultiProgress::println only fails when the terminal is gone; nothing to do then.
        if self.multi.println(line).is_err() {}
    }

    fn clear_bars(&self) {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        for (_, bar) in bars.drain() {
            if !bar.is_finished() {
                bar.finish_and_clear();
            }
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
                self.clear_bars();
                if let Some(l) = plain::line(event, false) {
                    self.println(&l);
                }
            }
            Event::PhaseFinished { .. } => {}
            Event::NodeStep { node, message } => self.bar(node).set_message(message.to_string()),
            Event::NodeDone { node, summary } => {
                self.bar(node).finish_with_message(format!("✓ {summary}"));
            }
            Event::NodeFailed { node, error } => {
                let first = error.lines().next().unwrap_or_default();
                self.bar(node).finish_with_message(format!("✗ {first}"));
            }
            Event::Command { .. } => {}
            Event::Warning { .. } | Event::Planned { .. } | Event::Info { .. } => {
                if let Some(l) = plain::line(event, false) {
                    self.println(&l);
                }
            }
        }
    }

    fn finish(&self) {
        let bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        for bar in bars.values() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}
