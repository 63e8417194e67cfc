//! The drill's report as one self-contained HTML page (no script, no external file): the
//! table, then per scenario an SVG timeline — a row per node with its VRRP state over time,
//! a row for the prober's successes and failures, and the break, restore and healthy marks.

use std::fmt::Write as _;

use super::failover_test::FailoverResult;
use crate::phases::failover::ScenarioReport;

/// Escapes text for HTML and SVG.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn color(state: &str) -> &'static str {
    match state {
        "master" => "#2e7d32",
        "backup" => "#90caf9",
        "fault" => "#ef6c00",
        "init" => "#bdbdbd",
        "ok" => "#66bb6a",
        "failed" => "#d32f2f",
        _ => "#eeeeee",
    }
}

const WIDTH: f64 = 900.0;
const LEFT: f64 = 90.0;
const ROW: f64 = 26.0;

fn timeline_svg(s: &ScenarioReport) -> String {
    let (Some(t), Some(m)) = (&s.timeline, &s.marks) else {
        return String::new();
    };
    let span = (m.end_us.saturating_sub(m.start_us)).max(1) as f64;
    let x = |us: u64| LEFT + (us.saturating_sub(m.start_us) as f64 / span) * (WIDTH - LEFT - 10.0);
    let rows = t.nodes.len() + 1;
    let height = 30.0 + rows as f64 * ROW + 30.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\" role=\"img\" aria-label=\"{} timeline\">",
        esc(s.scenario)
    );
    let row = |svg: &mut String,
               i: usize,
               label: &str,
               segs: &[crate::phases::failover::timeline::Segment]| {
        let y = 20.0 + i as f64 * ROW;
        let _ = write!(
            svg,
            "<text x=\"4\" y=\"{:.1}\">{}</text>",
            y + 15.0,
            esc(label)
        );
        for seg in segs {
            let (x0, x1) = (x(seg.from_us), x(seg.to_us));
            let _ = write!(
                svg,
                "<rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"20\" fill=\"{}\">\
                 <title>{}: {} ms → {} ms</title></rect>",
                (x1 - x0).max(0.5),
                color(&seg.state),
                esc(&seg.state),
                (seg.from_us as i64 - m.break_us as i64) / 1000,
                (seg.to_us as i64 - m.break_us as i64) / 1000,
            );
        }
    };
    for (i, n) in t.nodes.iter().enumerate() {
        row(&mut svg, i, &n.node, &n.segments);
    }
    row(&mut svg, t.nodes.len(), "prober", &t.probes);
    let bottom = 20.0 + rows as f64 * ROW;
    let mark = |svg: &mut String, at: Option<u64>, label: &str, color: &str| {
        if let Some(at) = at {
            let xm = x(at);
            let _ = write!(
                svg,
                "<line x1=\"{xm:.1}\" y1=\"14\" x2=\"{xm:.1}\" y2=\"{bottom:.1}\" stroke=\"{color}\" \
                 stroke-width=\"2\" stroke-dasharray=\"4 2\"/><text x=\"{:.1}\" y=\"11\" fill=\"{color}\">{}</text>",
                xm + 2.0,
                esc(label)
            );
        }
    };
    mark(&mut svg, Some(m.break_us), "break", "#b71c1c");
    mark(&mut svg, m.restore_us, "restore", "#1565c0");
    mark(&mut svg, m.healthy_us, "healthy", "#2e7d32");
    // A time axis in seconds from the break.
    let first = -((m.break_us.saturating_sub(m.start_us)) as f64 / 1e6).floor() as i64;
    let last = ((m.end_us.saturating_sub(m.break_us)) as f64 / 1e6).ceil() as i64;
    let step = ((last - first) / 10).max(1);
    let mut sec = first;
    while sec <= last {
        let at = (m.break_us as i64 + sec * 1_000_000).max(0) as u64;
        if at >= m.start_us && at <= m.end_us {
            let xa = x(at);
            let _ = write!(
                svg,
                "<line x1=\"{xa:.1}\" y1=\"{bottom:.1}\" x2=\"{xa:.1}\" y2=\"{:.1}\" stroke=\"#555\"/>\
                 <text x=\"{xa:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{sec}s</text>",
                bottom + 4.0,
                bottom + 17.0
            );
        }
        sec += step;
    }
    svg.push_str("</svg>");
    svg
}

pub fn render(r: &FailoverResult) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>khactl failover-test: {c}</title><style>\
         body{{font-family:sans-serif;margin:24px;color:#222}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
         th{{background:#f4f4f4}}td:first-child,th:first-child{{text-align:left}}\
         .ok{{color:#2e7d32;font-weight:bold}}.missed{{color:#c62828;font-weight:bold}}\
         .legend span{{display:inline-block;padding:2px 8px;margin-right:6px;color:#000}}\
         </style></head><body><h1>Failover drill: {c}</h1>\
         <p>{verdict}. VIP holder before: <b>{before}</b>, after: <b>{after}</b>.</p>",
        c = esc(&r.cluster),
        verdict = if r.passed {
            "<span class=\"ok\">Every scenario met its targets</span>"
        } else {
            "<span class=\"missed\">Targets were missed</span>"
        },
        before = esc(&r.holder_before),
        after = esc(r.holder_after.as_deref().unwrap_or("none")),
    );
    h.push_str(
        "<table><tr><th>scenario</th><th>node</th><th>VIP takeover ms</th><th>API unavailable ms</th>\
         <th>failed probes</th><th>long-lived reconnect ms</th><th>VIP moves</th><th>max holders</th>\
         <th>healthy after s</th><th>result</th></tr>",
    );
    let opt = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.0}"));
    for s in &r.scenarios {
        match &s.figures {
            None => {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td colspan=\"9\">skipped: {}</td></tr>",
                    esc(s.scenario),
                    esc(s.skipped.as_deref().unwrap_or(""))
                );
            }
            Some(f) => {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{}/{}</td><td>{}</td>\
                     <td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                    esc(s.scenario),
                    esc(s.node.as_deref().unwrap_or("")),
                    opt(f.vip_takeover_ms),
                    f.api_unavailable_ms,
                    f.failed_probes,
                    f.probes,
                    if f.long_lived_broken {
                        opt(f.long_lived_recovery_ms)
                    } else {
                        "not broken".to_owned()
                    },
                    f.vip_moves,
                    f.max_holders,
                    f.healthy_after_ms
                        .map_or("–".to_owned(), |v| format!("{:.1}", v / 1000.0)),
                    if s.passed { "ok" } else { "missed" },
                    if s.passed { "ok" } else { "missed" },
                );
            }
        }
    }
    h.push_str("</table>");
    for m in r.missed() {
        let _ = write!(h, "<p class=\"missed\">{}</p>", esc(&m));
    }
    h.push_str("<p class=\"legend\">");
    for state in [
        "master", "backup", "fault", "init", "unknown", "ok", "failed",
    ] {
        let _ = write!(
            h,
            "<span style=\"background:{}\">{}</span>",
            color(state),
            if state == "unknown" {
                "not observable"
            } else {
                state
            }
        );
    }
    h.push_str("</p>");
    for s in r.scenarios.iter().filter(|s| s.timeline.is_some()) {
        let _ = write!(
            h,
            "<h2>{} <small>({} broken; holder {} → {})</small></h2>{}",
            esc(s.scenario),
            esc(s.node.as_deref().unwrap_or("")),
            esc(s.holder_before.as_deref().unwrap_or("?")),
            esc(s.holder_after.as_deref().unwrap_or("none")),
            timeline_svg(s)
        );
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
