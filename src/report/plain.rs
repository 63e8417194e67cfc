//! One line per event, for CI, pipes and `-v`. Lines start with the node they are
//! about, so `grep cp2` follows one machine.

use super::{Event, Reporter};

pub struct PlainReporter {
    verbose: bool,
}

impl PlainReporter {
    pub fn new(verbose: bool) -> Self {
        Self { verbose }
    }
}

/// The text of an event as a plain line; `None` for events not shown at this level.
pub(crate) fn line(event: &Event<'_>, verbose: bool) -> Option<String> {
    Some(match event {
        Event::PhaseStarted { title } => format!("==> {title}"),
        Event::PhaseSkipped { title, reason } => format!("==> {title}: skipped ({reason})"),
        Event::PhaseFinished { title, elapsed } => {
            if !verbose {
                return None;
            }
            format!("    {title} done in {:.1}s", elapsed.as_secs_f64())
        }
        Event::NodeStep { node, message } => {
            if !verbose {
                return None;
            }
            format!("    {node}: {message}")
        }
        Event::NodeDone { node, summary } => format!("    {node}: {summary}"),
        Event::NodeFailed { node, error } => format!("    {node}: FAILED: {error}"),
        Event::Command { node, command } => {
            if !verbose {
                return None;
            }
            format!("    {node}: $ {command}")
        }
        Event::Warning {
            node: Some(node),
            message,
        } => format!("    {node}: warning: {message}"),
        Event::Warning {
            node: None,
            message,
        } => format!("warning: {message}"),
        Event::Planned { node, change } => format!("    {node}: {change}"),
        Event::Info { message } => (*message).to_owned(),
    })
}

impl Reporter for PlainReporter {
    #[expect(
        clippy::print_stderr,
        reason = "the reporter is where progress is printed"
    )]
    fn event(&self, event: &Event<'_>) {
        if let Some(l) = line(event, self.verbose) {
            eprintln!("{l}");
        }
    }
}
