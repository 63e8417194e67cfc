//! What the HTML report draws for one scenario: a row per node with its VRRP state over time,
//! the prober's successes and failures, and the marks. Pure; compact (runs, not samples).

use serde::Serialize;

use super::measure::{Broken, Marks, NodeEvents};
use crate::cluster::prober::Probe;

/// A stretch of one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    pub from_us: u64,
    pub to_us: u64,
    /// `master`, `backup`, `fault`, `init`, `unknown` (the node could not be observed); for
    /// the prober `ok` or `failed`.
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    pub node: String,
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    pub nodes: Vec<NodeRow>,
    pub probes: Vec<Segment>,
}

fn push(segments: &mut Vec<Segment>, from_us: u64, to_us: u64, state: &str) {
    if let Some(last) = segments.last_mut()
        && last.state == state
    {
        last.to_us = last.to_us.max(to_us);
        return;
    }
    if to_us > from_us {
        segments.push(Segment {
            from_us,
            to_us,
            state: state.to_owned(),
        });
    }
}

pub fn build(
    marks: &Marks,
    old_holder: &str,
    broken: &Broken,
    probes: &[Probe],
    events: &[NodeEvents],
) -> Timeline {
    let (start, end) = (marks.start_us, marks.end_us);
    let mut nodes = Vec::new();
    for n in events {
        let mut vrrp: Vec<_> = n
            .events
            .iter()
            .filter(|e| e.kind == "vrrp" && e.unix_us > start && e.unix_us <= end)
            .collect();
        vrrp.sort_by_key(|e| (e.unix_us, e.seq));
        // Before the first event in view: as the health check saw it (a restarted agent's
        // first event says `init`, which is its new process's beginning, not the node's).
        let mut state = if n.node == old_holder {
            "master"
        } else {
            "backup"
        }
        .to_owned();
        let mut at = start;
        let mut segments = Vec::new();
        let dark = (broken.node == n.node)
            .then_some(broken.dark_until_us)
            .flatten()
            .map(|until| (marks.break_us, until));
        let mut cuts: Vec<(u64, Option<String>)> = vrrp
            .iter()
            .map(|e| (e.unix_us, Some(e.to.clone())))
            .collect();
        if let Some((from, until)) = dark {
            cuts.push((from, None));
            cuts.push((until, Some("__end_dark".to_owned())));
        }
        cuts.sort_by_key(|(t, _)| *t);
        let mut in_dark = false;
        for (t, next) in cuts {
            push(
                &mut segments,
                at,
                t,
                if in_dark { "unknown" } else { &state },
            );
            at = t;
            match next.as_deref() {
                None => in_dark = true,
                Some("__end_dark") => in_dark = false,
                Some(s) => state = s.to_owned(),
            }
        }
        push(
            &mut segments,
            at,
            end,
            if in_dark { "unknown" } else { &state },
        );
        nodes.push(NodeRow {
            node: n.node.clone(),
            segments,
        });
    }
    let mut sorted: Vec<&Probe> = probes
        .iter()
        .filter(|p| p.start_us >= start && p.start_us <= end)
        .collect();
    sorted.sort_by_key(|p| p.start_us);
    let mut runs = Vec::new();
    for (i, p) in sorted.iter().enumerate() {
        let to = sorted.get(i + 1).map_or(p.end_us, |n| n.start_us);
        push(
            &mut runs,
            p.start_us,
            to,
            if p.ok { "ok" } else { "failed" },
        );
    }
    Timeline {
        nodes,
        probes: runs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::failover::measure::vrrp_event as ev;

    #[test]
    fn rows_show_each_state_a_dark_stretch_and_probe_runs() {
        let marks = Marks {
            start_us: 0,
            break_us: 100,
            restore_us: None,
            healthy_us: Some(900),
            end_us: 1000,
        };
        let events = vec![
            NodeEvents {
                node: "cp1".into(),
                events: vec![ev(1, "init", "backup", 500)],
            },
            NodeEvents {
                node: "cp2".into(),
                events: vec![ev(7, "backup", "master", 300)],
            },
        ];
        let broken = Broken {
            node: "cp1".into(),
            dark_until_us: Some(500),
        };
        let probe = |s: u64, ok| Probe {
            start_us: s,
            end_us: s + 5,
            ok,
            error: None,
        };
        let probes = [
            probe(0, true),
            probe(150, false),
            probe(200, false),
            probe(400, true),
        ];
        let t = build(&marks, "cp1", &broken, &probes, &events);
        let states = |row: &NodeRow| {
            row.segments
                .iter()
                .map(|s| (s.from_us, s.to_us, s.state.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            states(&t.nodes[0]),
            [
                (0, 100, "master".to_owned()),
                (100, 500, "unknown".to_owned()),
                (500, 1000, "backup".to_owned())
            ]
        );
        assert_eq!(
            states(&t.nodes[1]),
            [
                (0, 300, "backup".to_owned()),
                (300, 1000, "master".to_owned())
            ]
        );
        let runs: Vec<_> = t
            .probes
            .iter()
            .map(|s| (s.from_us, s.to_us, s.state.as_str()))
            .collect();
        assert_eq!(
            runs,
            [(0, 150, "ok"), (150, 400, "failed"), (400, 405, "ok")]
        );
    }
}
