//! What a running khagent says about itself: its `/status` page, read on the node over the
//! same SSH khactl uses (the page listens on loopback only, see `docs/security.md`), and the
//! service's state from the init system.
//!
//! The page is read leniently: only the fields shown here are taken, any other field (an
//! event log, counters a newer agent adds) is ignored, and a field that is missing is simply
//! not shown, so an older or newer agent never makes `status` fail.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::remote::{NodeHandle, RemoteCommand};

/// Where every agent khactl installs serves its status pages (`status.listen` in the config
/// khactl renders; loopback, no password).
pub const STATUS_URL: &str = "http://127.0.0.1:9901/status";

/// One backend as an agent's load balancer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    pub name: String,
    pub address: String,
    pub healthy: bool,
    pub active_connections: u64,
    pub last_error: Option<String>,
}

/// An agent's view of itself, from `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub version: Option<String>,
    pub uptime_seconds: Option<u64>,
    /// `init`, `backup`, `master` or `fault`; `None` when the agent runs no VRRP.
    pub vrrp_state: Option<String>,
    pub base_priority: Option<u64>,
    pub effective_priority: Option<u64>,
    /// What the agent says moved its priority or forced it out (its tracked checks).
    pub track_reasons: Vec<String>,
    /// A tracked check has not run yet (a freshly started agent): its priority is not final.
    pub track_pending: bool,
    pub holds_vip: bool,
    /// A backup that will take the VIP over from a lower-priority holder once its preempt
    /// delay runs out (the VIP is about to move).
    pub preempt_pending: bool,
    /// The address whose adverts it follows (its own while master).
    pub master_address: Option<String>,
    pub last_error: Option<String>,
    pub listening: bool,
    pub active_connections: u64,
    pub backends: Vec<Backend>,
}

impl AgentStatus {
    /// The tracked checks that lowered the priority or forced a fault (not the ones that
    /// raised it).
    pub fn lowered_by(&self) -> Vec<&str> {
        self.track_reasons
            .iter()
            .map(String::as_str)
            .filter(|r| !r.contains(" ok (+"))
            .collect()
    }
}

/// Reads the agent's `/status` on `host`: `Ok(None)` when nothing answers there (the agent
/// is not running or not listening), an error when the answer cannot be read.
pub async fn status(host: &NodeHandle) -> anyhow::Result<Option<AgentStatus>> {
    let cmd = RemoteCommand::new(["curl", "-sS", "--fail", "--max-time", "3", STATUS_URL])
        .read_only()
        .timeout(Duration::from_secs(10));
    let out = host.run_unchecked(&cmd).await?;
    if !out.success() {
        return Ok(None);
    }
    parse_status(&out.stdout_str()).map(Some)
}

/// Parses khagent's `/status` JSON.
pub fn parse_status(json: &str) -> anyhow::Result<AgentStatus> {
    let v: Value = serde_json::from_str(json.trim())
        .map_err(|e| anyhow::anyhow!("khagent's /status is not JSON ({e})"))?;
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let vrrp = v.get("vrrp").filter(|x| !x.is_null());
    let in_vrrp = |key: &str| vrrp.and_then(|x| x.get(key));
    let backends = v["backends"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|b| Backend {
                    name: text(&b["name"]).unwrap_or_default(),
                    address: text(&b["address"]).unwrap_or_default(),
                    healthy: b["healthy"].as_bool().unwrap_or(false),
                    active_connections: b["active_connections"].as_u64().unwrap_or(0),
                    last_error: text(&b["last_error"]),
                })
                .collect()
        })
        .unwrap_or_default();
    // The track state is served twice (top level and inside vrrp); the one inside vrrp was
    // published together with the VRRP state (`preempt_pending`) it led to.
    let track = in_vrrp("track").or_else(|| v.get("track"));
    let track_reasons = track
        .and_then(|t| t["reasons"].as_array())
        .map(|r| r.iter().filter_map(text).collect())
        .unwrap_or_default();
    Ok(AgentStatus {
        version: text(&v["version"]),
        uptime_seconds: v["uptime_seconds"].as_u64(),
        vrrp_state: in_vrrp("state").and_then(text),
        base_priority: in_vrrp("base_priority").and_then(Value::as_u64),
        effective_priority: in_vrrp("effective_priority").and_then(Value::as_u64),
        track_reasons,
        track_pending: track.and_then(|t| t["pending"].as_bool()).unwrap_or(false),
        holds_vip: in_vrrp("holds_vip")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        preempt_pending: in_vrrp("preempt_pending")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        master_address: in_vrrp("master_address").and_then(text),
        last_error: in_vrrp("last_error").and_then(text),
        listening: v["listener"]["listening"].as_bool().unwrap_or(false),
        active_connections: v["listener"]["active_connections"].as_u64().unwrap_or(0),
        backends,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `/status` page as khagent serves it (trimmed), with a field it may add later.
    const PAGE: &str = r#"{
      "version": "0.1.0", "uptime_seconds": 42, "reloads_total": 0,
      "listener": {"address": "10.0.0.100:8443", "listening": true, "active_connections": 3},
      "backends": [
        {"name": "cp1", "address": "10.0.0.11:6443", "healthy": true, "active_connections": 2, "last_error": null},
        {"name": "cp2", "address": "10.0.0.12:6443", "healthy": false, "active_connections": 0, "last_error": "connection refused"}
      ],
      "track": {"priority_delta": -50, "force_fault": false, "reasons": ["apiserver: backend cp2 failing (-50)", "lb: listener ok (+5)"], "pending": true},
      "vrrp": {"state": "backup", "router_id": 51, "vip": "10.0.0.100", "base_priority": 210,
               "effective_priority": 160, "master_address": "10.0.0.11", "holds_vip": false,
               "preempt_pending": true,
               "last_error": null, "counters": {"adverts_rx": 10}},
      "events": [{"what": "a field this khactl does not know"}]
    }"#;

    #[test]
    fn reads_state_priorities_what_lowered_them_and_backends() {
        let s = parse_status(PAGE).unwrap();
        assert_eq!(s.vrrp_state.as_deref(), Some("backup"));
        assert_eq!(
            (s.base_priority, s.effective_priority),
            (Some(210), Some(160))
        );
        assert_eq!(s.lowered_by(), ["apiserver: backend cp2 failing (-50)"]);
        assert!(!s.holds_vip && s.listening && s.preempt_pending && s.track_pending);
        assert_eq!(s.active_connections, 3);
        assert_eq!(s.backends.len(), 2);
        assert!(s.backends[0].healthy && !s.backends[1].healthy);
        assert_eq!(
            s.backends[1].last_error.as_deref(),
            Some("connection refused")
        );
        assert_eq!(s.master_address.as_deref(), Some("10.0.0.11"));
    }

    #[test]
    fn an_agent_without_vrrp_or_with_fields_missing_still_reads() {
        let s = parse_status(r#"{"listener": {"listening": false}, "vrrp": null}"#).unwrap();
        assert_eq!(s.vrrp_state, None);
        assert!(s.backends.is_empty() && !s.listening && !s.holds_vip);
        assert!(parse_status("<html>").is_err());
    }
}
