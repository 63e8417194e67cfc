//! What the status pages show: one [`Snapshot`] of the load balancer, the health of every
//! backend, the tracked checks and the VRRP status, rendered as JSON, Prometheus text or HTML.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::Context;
use crate::events::{Event, IN_STATUS};
use crate::vrrp::{TrackState, VrrpStatus};

#[derive(Debug, Serialize)]
pub struct BackendView {
    pub name: String,
    pub address: String,
    pub healthy: bool,
    pub active_connections: usize,
    pub connections_total: u64,
    pub connect_failures_total: u64,
    pub closed_on_down_total: u64,
    pub bytes_up_total: u64,
    pub bytes_down_total: u64,
    pub checks_ok_total: u64,
    pub checks_failed_total: u64,
    pub checks_unknown_total: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ListenerView {
    pub address: String,
    pub listening: bool,
    pub balance: &'static str,
    pub active_connections: usize,
    pub max_connections: usize,
    pub accepted_total: u64,
    pub no_backend_total: u64,
    pub closed_done_total: u64,
    pub closed_error_total: u64,
    pub closed_idle_total: u64,
    pub closed_drained_total: u64,
    pub accept_exhausted_total: u64,
    pub pooled_pipes: usize,
}

/// Everything the pages show, read at one moment.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub reloads_total: u64,
    pub listener: ListenerView,
    pub backends: Vec<BackendView>,
    pub track: TrackState,
    pub vrrp: Option<VrrpStatus>,
    /// The newest events of the log (all of them: `/events`).
    pub events: Vec<Event>,
}

/// `/events`: the kept events after sequence number `after` (all with `None`), as JSON.
pub fn events(ctx: &Context, after: Option<u64>) -> String {
    let mut out = serde_json::to_string_pretty(&ctx.events.page(after)).unwrap_or_else(|e| {
        serde_json::json!({ "error": format!("cannot render events: {e}") }).to_string()
    });
    out.push('\n');
    out
}

/// `/healthz`: serving is possible (listener up and a healthy backend).
pub fn healthz(ctx: &Context) -> Result<(), &'static str> {
    if !ctx.lb.stats().listening.load(Ordering::Relaxed) {
        return Err("listener not accepting");
    }
    if ctx.lb.current().set.healthy_count() == 0 {
        return Err("no healthy backend");
    }
    Ok(())
}

impl Snapshot {
    pub fn take(ctx: &Context) -> Snapshot {
        let lb = &ctx.lb;
        let s = lb.stats();
        let generation = lb.current();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let backends = generation
            .set
            .backends
            .iter()
            .map(|b| BackendView {
                name: b.name.clone(),
                address: b.address.to_string(),
                healthy: b.is_healthy(),
                active_connections: b.active.load(Ordering::Relaxed),
                connections_total: load(&b.total),
                connect_failures_total: load(&b.connect_failures),
                closed_on_down_total: load(&b.closed_on_down),
                bytes_up_total: load(&b.bytes_up),
                bytes_down_total: load(&b.bytes_down),
                checks_ok_total: load(&b.checks_ok),
                checks_failed_total: load(&b.checks_failed),
                checks_unknown_total: load(&b.checks_unknown),
                last_error: b.last_error(),
            })
            .collect();
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: ctx.started.elapsed().as_secs(),
            reloads_total: load(&ctx.reloads),
            listener: ListenerView {
                address: ctx.listen.to_string(),
                listening: s.listening.load(Ordering::Relaxed),
                balance: generation.set.balance.as_str(),
                active_connections: lb.active(),
                max_connections: lb.max_connections(),
                accepted_total: load(&s.accepted),
                no_backend_total: load(&s.no_backend),
                closed_done_total: load(&s.closed_done),
                closed_error_total: load(&s.closed_error),
                closed_idle_total: load(&s.closed_idle),
                closed_drained_total: load(&s.closed_drained),
                accept_exhausted_total: load(&s.accept_exhausted),
                pooled_pipes: crate::lb::sys::pooled_pipes(),
            },
            backends,
            track: ctx.track.borrow().clone(),
            vrrp: ctx.vrrp.as_ref().map(|v| v.borrow().clone()),
            events: ctx.events.newest(IN_STATUS),
        }
    }

    pub fn json(&self) -> String {
        let mut out = serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            serde_json::json!({ "error": format!("cannot render status: {e}") }).to_string()
        });
        out.push('\n');
        out
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn metrics(&self) -> String {
        let mut m = Metrics::default();
        let l = &self.listener;
        m.gauge("khagent_up", "1 while the agent runs", &[], 1);
        m.counter(
            "khagent_reloads_total",
            "Successful config reloads",
            &[],
            self.reloads_total,
        );
        m.gauge(
            "khagent_listener_up",
            "1 while accepting",
            &[],
            u64::from(l.listening),
        );
        m.gauge(
            "khagent_connections_active",
            "Proxied connections",
            &[],
            l.active_connections as u64,
        );
        m.gauge(
            "khagent_connections_max",
            "max_connections",
            &[],
            l.max_connections as u64,
        );
        m.counter(
            "khagent_connections_accepted_total",
            "Accepted connections",
            &[],
            l.accepted_total,
        );
        m.counter(
            "khagent_connections_no_backend_total",
            "Connections closed because no backend was healthy or reachable",
            &[],
            l.no_backend_total,
        );
        for (reason, v) in [
            ("done", l.closed_done_total),
            ("error", l.closed_error_total),
            ("idle", l.closed_idle_total),
            ("drained", l.closed_drained_total),
        ] {
            m.counter(
                "khagent_connections_closed_total",
                "Closed connections by reason",
                &[("reason", reason)],
                v,
            );
        }
        m.counter(
            "khagent_accept_exhausted_total",
            "accept() failures for lack of descriptors or memory",
            &[],
            l.accept_exhausted_total,
        );
        // Samples of one family must be contiguous in the text format: families outside,
        // backends inside.
        type Get = fn(&BackendView) -> u64;
        let families: [(&str, &str, bool, Get); 8] = [
            (
                "khagent_backend_up",
                "1 when the backend passes its health checks",
                false,
                |b| u64::from(b.healthy),
            ),
            (
                "khagent_backend_connections_active",
                "Connections to the backend",
                false,
                |b| b.active_connections as u64,
            ),
            (
                "khagent_backend_connections_total",
                "Connections made to the backend",
                true,
                |b| b.connections_total,
            ),
            (
                "khagent_backend_connect_failures_total",
                "Failed or timed-out connects",
                true,
                |b| b.connect_failures_total,
            ),
            (
                "khagent_backend_closed_on_down_total",
                "Connections closed when the backend was marked down",
                true,
                |b| b.closed_on_down_total,
            ),
            (
                "khagent_backend_checks_ok_total",
                "Passed health checks",
                true,
                |b| b.checks_ok_total,
            ),
            (
                "khagent_backend_checks_failed_total",
                "Failed health checks",
                true,
                |b| b.checks_failed_total,
            ),
            (
                "khagent_backend_checks_unknown_total",
                "Health checks that could not run for a local reason (out of descriptors or memory)",
                true,
                |b| b.checks_unknown_total,
            ),
        ];
        for (name, help, is_counter, get) in families {
            for b in &self.backends {
                let labels = [
                    ("backend", b.name.as_str()),
                    ("address", b.address.as_str()),
                ];
                if is_counter {
                    m.counter(name, help, &labels, get(b));
                } else {
                    m.gauge(name, help, &labels, get(b));
                }
            }
        }
        for b in &self.backends {
            for (dir, v) in [("up", b.bytes_up_total), ("down", b.bytes_down_total)] {
                let labels = [
                    ("backend", b.name.as_str()),
                    ("address", b.address.as_str()),
                    ("direction", dir),
                ];
                m.counter(
                    "khagent_backend_bytes_total",
                    "Bytes forwarded (up: client to backend)",
                    &labels,
                    v,
                );
            }
        }
        m.gauge(
            "khagent_track_force_fault",
            "1 while a tracked check forces VRRP fault",
            &[],
            u64::from(self.track.force_fault),
        );
        m.signed(
            "khagent_track_priority_delta",
            "Priority change from tracked checks",
            self.track.priority_delta.into(),
        );
        if let Some(v) = &self.vrrp {
            self.vrrp_metrics(&mut m, v);
        }
        m.out
    }

    fn vrrp_metrics(&self, m: &mut Metrics, v: &VrrpStatus) {
        let state = serde_json::to_value(v.state).ok();
        let state = state.as_ref().and_then(|s| s.as_str()).unwrap_or("unknown");
        for s in ["init", "backup", "master", "fault"] {
            m.gauge(
                "khagent_vrrp_state",
                "1 for the current VRRP state",
                &[("state", s)],
                u64::from(s == state),
            );
        }
        m.gauge(
            "khagent_vrrp_holds_vip",
            "1 while this node holds the VIP",
            &[],
            u64::from(v.holds_vip),
        );
        m.gauge(
            "khagent_vrrp_base_priority",
            "Configured priority",
            &[],
            v.base_priority.into(),
        );
        m.gauge(
            "khagent_vrrp_effective_priority",
            "Priority after tracked checks",
            &[],
            v.effective_priority.into(),
        );
        // Every counter the VRRP module keeps, named after its field, so new ones appear here
        // without a change in this file.
        if let Ok(serde_json::Value::Object(counters)) = serde_json::to_value(&v.counters) {
            for (name, value) in counters {
                if let Some(n) = value.as_u64() {
                    m.counter(
                        &format!("khagent_vrrp_{name}_total"),
                        "VRRP counter",
                        &[],
                        n,
                    );
                }
            }
        }
    }

    pub fn html(&self) -> String {
        let mut h = String::with_capacity(4096);
        let l = &self.listener;
        let _ = write!(
            h,
            "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=5>\
             <title>khagent {addr}</title><style>\
             body{{font:14px system-ui,sans-serif;margin:1.5em}}table{{border-collapse:collapse;margin:.5em 0 1.5em}}\
             td,th{{border:1px solid #bbb;padding:.25em .6em;text-align:right}}th{{background:#eee}}\
             td.l{{text-align:left}}tr.up td.s{{background:#c8f0c8}}tr.down td.s{{background:#f4b4b4}}\
             </style></head><body><h1>khagent {ver}</h1>\
             <p>listener <b>{addr}</b> ({state}), {bal}, up {up} s, {reloads} reloads</p>\
             <table><tr><th>active</th><th>max</th><th>accepted</th><th>no backend</th><th>done</th>\
             <th>errors</th><th>idle</th><th>drained</th></tr><tr><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
            l.active_connections,
            l.max_connections,
            l.accepted_total,
            l.no_backend_total,
            l.closed_done_total,
            l.closed_error_total,
            l.closed_idle_total,
            l.closed_drained_total,
            addr = esc(&l.address),
            state = if l.listening {
                "accepting"
            } else {
                "not accepting"
            },
            bal = l.balance,
            ver = self.version,
            up = self.uptime_seconds,
            reloads = self.reloads_total,
        );
        h.push_str(
            "<h2>Backends</h2><table><tr><th>name</th><th>address</th><th>status</th><th>active</th>\
             <th>total</th><th>connect failures</th><th>closed on down</th><th>bytes up</th>\
             <th>bytes down</th><th>checks ok</th><th>checks failed</th><th>last error</th></tr>",
        );
        for b in &self.backends {
            let _ = write!(
                h,
                "<tr class={cls}><td class=l>{}</td><td class=l>{}</td><td class=s>{cls}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=l>{}</td></tr>",
                esc(&b.name),
                esc(&b.address),
                b.active_connections,
                b.connections_total,
                b.connect_failures_total,
                b.closed_on_down_total,
                b.bytes_up_total,
                b.bytes_down_total,
                b.checks_ok_total,
                b.checks_failed_total,
                esc(b.last_error.as_deref().unwrap_or("")),
                cls = if b.healthy { "up" } else { "down" },
            );
        }
        h.push_str("</table><h2>VRRP</h2>");
        match &self.vrrp {
            Some(v) => {
                let state = serde_json::to_value(v.state)
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                let _ = write!(
                    h,
                    "<p>state <b>{}</b>, VIP {}{}{}, priority {} (base {}), master {}</p>",
                    esc(state.trim_matches('"')),
                    v.vip.map(|a| a.to_string()).unwrap_or_default(),
                    if v.holds_vip { " held here" } else { "" },
                    if v.preempt_pending {
                        ", taking it over once the preempt delay runs out"
                    } else {
                        ""
                    },
                    v.effective_priority,
                    v.base_priority,
                    v.master_address
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| "unknown".into()),
                );
            }
            None => h.push_str("<p>not configured (node-local load balancer)</p>"),
        }
        let reasons = if self.track.reasons.is_empty() {
            "all tracked checks pass".to_owned()
        } else {
            self.track.reasons.join("; ")
        };
        let _ = writeln!(
            h,
            "<p>tracked checks: {} (priority {:+}{})</p></body></html>",
            esc(&reasons),
            self.track.priority_delta,
            if self.track.force_fault {
                ", fault"
            } else {
                ""
            }
        );
        h
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Prometheus text builder: writes `# HELP`/`# TYPE` once per family.
#[derive(Default)]
struct Metrics {
    out: String,
    seen: Vec<String>,
}

impl Metrics {
    fn header(&mut self, name: &str, help: &str, kind: &str) {
        if !self.seen.iter().any(|s| s == name) {
            self.seen.push(name.to_owned());
            let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: &dyn std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            let parts: Vec<String> = labels
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k}=\"{}\"",
                        v.replace('\\', "\\\\")
                            .replace('"', "\\\"")
                            .replace('\n', "\\n")
                    )
                })
                .collect();
            let _ = write!(self.out, "{{{}}}", parts.join(","));
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], v: u64) {
        self.header(name, help, "gauge");
        self.sample(name, labels, &v);
    }

    fn signed(&mut self, name: &str, help: &str, v: i64) {
        self.header(name, help, "gauge");
        self.sample(name, &[], &v);
    }

    fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], v: u64) {
        self.header(name, help, "counter");
        self.sample(name, labels, &v);
    }
}
