//! The drill's figures, pure: from what the prober recorded, what each agent's event log
//! says and when khactl broke and restored things, compute the numbers a scenario is judged
//! by, and hold them against its targets. Every time is wall-clock microseconds.

use serde::{Deserialize, Serialize};

use crate::cluster::prober::{LongLived, Probe};

/// One event of an agent's log (`/events`), the fields the drill reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct AgentEvent {
    pub seq: u64,
    pub kind: String,
    pub from: String,
    pub to: String,
    pub reason: String,
    pub priority: Option<u8>,
    pub unix_us: u64,
}

/// A node's events, as read after the scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvents {
    pub node: String,
    pub events: Vec<AgentEvent>,
}

/// When things happened in one scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Marks {
    /// The prober's view starts here (a little before the break).
    pub start_us: u64,
    /// khactl issued the break.
    pub break_us: u64,
    /// khactl issued the restore (`None`: the scenario heals itself, as a killed agent
    /// restarted by its init system).
    pub restore_us: Option<u64>,
    /// The cluster was healthy again (`None`: it was not within the wait).
    pub healthy_us: Option<u64>,
    pub end_us: u64,
}

/// What is known of the node that was broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub node: String,
    /// Its agent could not be observed from the break until this time (killed, stopped,
    /// frozen, cut off): its log of that time is lost or not believable, and whatever it says
    /// it holds there reaches no one. `None`: observed throughout.
    pub dark_until_us: Option<u64>,
}

/// The measured figures of one scenario. Milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    /// Break → another node became master (`None`: the VIP did not move).
    pub vip_takeover_ms: Option<f64>,
    /// Who that was.
    pub new_holder: Option<String>,
    /// Time through the VIP without a working API: every run of failed probes, from its first
    /// failed probe to the next successful one, summed (one outage: first failure → first
    /// success again).
    pub api_unavailable_ms: f64,
    /// The longest such run.
    pub longest_outage_ms: f64,
    pub probes: usize,
    pub failed_probes: usize,
    /// Whether the long-lived connection broke.
    pub long_lived_broken: bool,
    /// Break → it broke (late when the VIP moves late, as after an API server stopped).
    pub long_lived_closed_after_ms: Option<f64>,
    /// It broke → a new long-lived connection worked: the gap a watch client feels (`None`:
    /// it did not break, or never worked again).
    pub long_lived_recovery_ms: Option<f64>,
    /// Times a node became master.
    pub vip_moves: usize,
    /// The most nodes master at once (observable nodes only).
    pub max_holders: usize,
    /// Time with two or more masters at once.
    pub split_brain_ms: f64,
    /// Restore (or break, when nothing is restored) → healthy again.
    pub healthy_after_ms: Option<f64>,
}

/// Limits one scenario is held to. Milliseconds; `None`: not checked.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Targets {
    pub max_takeover_ms: Option<f64>,
    pub max_api_unavailable_ms: Option<f64>,
    pub max_long_lived_recovery_ms: Option<f64>,
    /// `Some(0)`: the VIP must not move.
    pub max_vip_moves: Option<usize>,
    pub max_split_brain_ms: Option<f64>,
    pub max_healthy_after_ms: Option<f64>,
}

/// A target the scenario missed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Miss {
    /// The target's name, as its flag says it (`max-api-unavailable`).
    pub target: &'static str,
    pub limit: String,
    pub measured: String,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The figures of one scenario.
pub fn figures(
    marks: &Marks,
    old_holder: &str,
    broken: &Broken,
    probes: &[Probe],
    long_lived: &[LongLived],
    events: &[NodeEvents],
) -> Figures {
    let (api_unavailable_ms, longest_outage_ms, failed) = outages(probes, marks.break_us);
    let (long_lived_closed_after_ms, long_lived_recovery_ms) =
        long_lived_recovery(long_lived, marks);
    let timeline = master_timeline(marks, old_holder, broken, events);
    let takeover = timeline
        .became_master
        .iter()
        .find(|(node, _)| node != old_holder);
    let (max_holders, split_brain_ms) = timeline.overlap();
    Figures {
        vip_takeover_ms: takeover.map(|(_, at)| ms(at.saturating_sub(marks.break_us))),
        new_holder: takeover.map(|(node, _)| node.clone()),
        api_unavailable_ms,
        longest_outage_ms,
        probes: probes
            .iter()
            .filter(|p| p.start_us >= marks.break_us)
            .count(),
        failed_probes: failed,
        long_lived_broken: long_lived_closed_after_ms.is_some(),
        long_lived_closed_after_ms,
        long_lived_recovery_ms,
        vip_moves: timeline.became_master.len(),
        max_holders,
        split_brain_ms,
        healthy_after_ms: marks
            .healthy_us
            .map(|h| ms(h.saturating_sub(marks.restore_us.unwrap_or(marks.break_us)))),
    }
}

/// (total, longest, failed probes) of the runs of failed probes that start at or after
/// `from`. A run ends at the start of the next successful probe, or, if none came, at the
/// end of its last probe.
fn outages(probes: &[Probe], from: u64) -> (f64, f64, usize) {
    let mut sorted: Vec<&Probe> = probes.iter().filter(|p| p.start_us >= from).collect();
    sorted.sort_by_key(|p| p.start_us);
    let (mut total, mut longest, mut failed) = (0u64, 0u64, 0usize);
    let mut run: Option<(u64, u64)> = None;
    for p in sorted {
        if p.ok {
            if let Some((start, _)) = run.take() {
                let d = p.start_us.saturating_sub(start);
                total += d;
                longest = longest.max(d);
            }
        } else {
            failed += 1;
            run = Some(match run {
                Some((start, end)) => (start, end.max(p.end_us)),
                None => (p.start_us, p.end_us),
            });
        }
    }
    if let Some((start, end)) = run {
        let d = end.saturating_sub(start);
        total += d;
        longest = longest.max(d);
    }
    (ms(total), ms(longest), failed)
}

/// (break → it broke, it broke → a new one worked), for the first break after the break.
fn long_lived_recovery(events: &[LongLived], marks: &Marks) -> (Option<f64>, Option<f64>) {
    let broke = events.iter().enumerate().find_map(|(i, e)| match e {
        LongLived::Broken { at_us, .. } if *at_us >= marks.break_us => Some((i, *at_us)),
        _ => None,
    });
    let Some((i, broke_at)) = broke else {
        return (None, None);
    };
    let back = events[i..].iter().find_map(|e| match e {
        LongLived::Working { at_us } => Some(*at_us),
        LongLived::Broken { .. } => None,
    });
    (
        Some(ms(broke_at - marks.break_us)),
        back.map(|at| ms(at.saturating_sub(broke_at))),
    )
}

/// Who was master when, from the break to the end.
#[derive(Debug, Default)]
struct Timeline {
    /// (node, time) of every change to master, in time order.
    became_master: Vec<(String, u64)>,
    /// (time, node, is master) of every change, in time order, starting with each node's
    /// state at the break.
    changes: Vec<(u64, String, bool)>,
    end_us: u64,
}

impl Timeline {
    /// (most masters at once, time with two or more).
    fn overlap(&self) -> (usize, f64) {
        let mut masters: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
        let (mut max, mut doubled, mut since) = (0usize, 0u64, None::<u64>);
        for (i, (at, node, master)) in self.changes.iter().enumerate() {
            if *master {
                masters.insert(node);
            } else {
                masters.remove(node.as_str());
            }
            // Changes at the same instant settle before they count.
            if self
                .changes
                .get(i + 1)
                .is_some_and(|(next, _, _)| next == at)
            {
                continue;
            }
            max = max.max(masters.len());
            match (masters.len() >= 2, since) {
                (true, None) => since = Some(*at),
                (false, Some(s)) => {
                    doubled += at - s;
                    since = None;
                }
                _ => {}
            }
        }
        if let Some(s) = since {
            doubled += self.end_us.saturating_sub(s);
        }
        (max, ms(doubled))
    }
}

fn master_timeline(
    marks: &Marks,
    old_holder: &str,
    broken: &Broken,
    events: &[NodeEvents],
) -> Timeline {
    let mut t = Timeline {
        end_us: marks.end_us,
        ..Timeline::default()
    };
    let mut all: Vec<(u64, u64, &str, &AgentEvent)> = Vec::new();
    for n in events {
        for e in n.events.iter().filter(|e| e.kind == "vrrp") {
            all.push((e.unix_us, e.seq, n.node.as_str(), e));
        }
    }
    all.sort_by_key(|(at, seq, node, _)| (*at, *node, *seq));
    // At the break, the old holder alone is master; a broken holder goes dark at once.
    for n in events {
        let dark = broken.node == n.node && broken.dark_until_us.is_some();
        t.changes.push((
            marks.break_us,
            n.node.clone(),
            n.node == old_holder && !dark,
        ));
    }
    for (at, _, node, e) in all {
        if at <= marks.break_us || at > marks.end_us {
            continue;
        }
        if node == broken.node && broken.dark_until_us.is_some_and(|until| at < until) {
            continue;
        }
        let master = e.to == "master";
        if master {
            t.became_master.push((node.to_owned(), at));
        }
        t.changes.push((at, node.to_owned(), master));
    }
    // A node coming out of the dark is what its log says it was at that moment.
    if let Some(until) = broken.dark_until_us
        && let Some(n) = events.iter().find(|n| n.node == broken.node)
    {
        let state = n
            .events
            .iter()
            .rfind(|e| e.kind == "vrrp" && e.unix_us < until)
            .map(|e| e.to == "master")
            // No event from before (the log's beginning is older than the window): what the
            // first one after says it left.
            .or_else(|| {
                n.events
                    .iter()
                    .find(|e| e.kind == "vrrp" && e.unix_us >= until)
                    .map(|e| e.from == "master")
            });
        if let Some(master) = state.filter(|_| until > marks.break_us && until <= marks.end_us) {
            // Not a move: it held the VIP all along, unheard.
            t.changes.push((until, broken.node.clone(), master));
        }
    }
    t.changes.sort_by_key(|(at, _, _)| *at);
    t.became_master.sort_by_key(|(_, at)| *at);
    t
}

/// The targets `f` misses.
pub fn misses(f: &Figures, t: &Targets) -> Vec<Miss> {
    let mut out = Vec::new();
    let fmt = |v: f64| format!("{v:.0} ms");
    let mut check =
        |target: &'static str, limit: Option<f64>, measured: Option<f64>, never: &str| {
            if let Some(limit) = limit {
                match measured {
                    Some(m) if m > limit => out.push(Miss {
                        target,
                        limit: fmt(limit),
                        measured: fmt(m),
                    }),
                    Some(_) => {}
                    None if !never.is_empty() => out.push(Miss {
                        target,
                        limit: fmt(limit),
                        measured: never.to_owned(),
                    }),
                    None => {}
                }
            }
        };
    check(
        "max-takeover",
        t.max_takeover_ms,
        f.vip_takeover_ms,
        "no other node took the VIP",
    );
    check(
        "max-api-unavailable",
        t.max_api_unavailable_ms,
        Some(f.api_unavailable_ms),
        "",
    );
    check(
        "max-long-lived-recovery",
        t.max_long_lived_recovery_ms,
        if f.long_lived_broken {
            f.long_lived_recovery_ms
        } else {
            Some(0.0)
        },
        "the long-lived connection never worked again",
    );
    check(
        "max-split-brain",
        t.max_split_brain_ms,
        Some(f.split_brain_ms),
        "",
    );
    check(
        "max-healthy-after",
        t.max_healthy_after_ms,
        f.healthy_after_ms,
        "not healthy again within the wait",
    );
    if let Some(limit) = t.max_vip_moves
        && f.vip_moves > limit
    {
        out.push(Miss {
            target: "max-vip-moves",
            limit: limit.to_string(),
            measured: f.vip_moves.to_string(),
        });
    }
    out
}

/// A VRRP event as an agent logs it, for tests.
#[cfg(test)]
pub(super) fn vrrp_event(seq: u64, from: &str, to: &str, unix_us: u64) -> AgentEvent {
    AgentEvent {
        seq,
        kind: "vrrp".into(),
        from: from.into(),
        to: to.into(),
        reason: String::new(),
        priority: Some(100),
        unix_us,
    }
}

#[cfg(test)]
mod tests;
