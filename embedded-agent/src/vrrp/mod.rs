//! VRRP (RFC 5798 version 3, IPv4) for the API server's virtual IP.
//!
//! Data flows one way: [`settings`] (the `vrrp:` config section) → [`spawn`] starts the
//! [`runner`] on its own OS thread → the runner feeds socket and timer events into the pure
//! state machine in [`instance`] and executes the actions it returns through the kernel edge in
//! [`io`] (raw socket, rtnetlink, gratuitous ARP). [`packet`] encodes and decodes adverts.
//! Only `io` touches the kernel; `packet` and `instance` are pure and tested with byte vectors
//! and a virtual clock. Status leaves through a `watch` channel as [`VrrpStatus`].

pub mod instance;
pub mod io;
pub mod packet;
pub mod probe;
mod runner;
pub mod settings;
mod vip;
pub mod why;

use std::net::Ipv4Addr;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

pub use settings::{DEFAULT_STATE_DIR, SettingsProblem, VrrpSettings};
pub use vip::{MARKER_FILE, marker_line};

/// What tracked checks (computed by the agent's health module) do to this node's priority.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrackState {
    /// Added to the base priority; the sum is clamped to 1..=254.
    pub priority_delta: i32,
    /// Release the VIP and stay out of elections until cleared.
    pub force_fault: bool,
    /// Human-readable causes, shown in status.
    pub reasons: Vec<String>,
    /// A tracked backend has had no check yet (a freshly started or reloaded agent): it
    /// counts as failing, so the priority is not yet what it will settle at.
    pub pending: bool,
}

/// VRRP state of this node (RFC 5798 §6.4, plus `fault` for a forced-out node).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VrrpState {
    /// Not started or stopped (§6.4.1).
    #[default]
    Init,
    /// Monitoring the master (§6.4.2).
    Backup,
    /// Holding the VIP and advertising (§6.4.3).
    Master,
    /// Forced out by tracked checks; holds nothing, sends nothing.
    Fault,
}

/// Packet and event counters. Drops are counted per reason and never stop the instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VrrpCounters {
    pub adverts_rx: u64,
    pub adverts_tx: u64,
    pub priority_zero_rx: u64,
    pub priority_zero_tx: u64,
    pub transitions_to_master: u64,
    pub transitions_to_backup: u64,
    pub transitions_to_fault: u64,
    pub dropped_bad_checksum: u64,
    pub dropped_bad_version: u64,
    pub dropped_bad_type: u64,
    pub dropped_bad_ttl: u64,
    pub dropped_truncated: u64,
    pub dropped_count_mismatch: u64,
    pub dropped_unknown_peer: u64,
    pub dropped_other_vrid: u64,
    pub dropped_bad_interval: u64,
    pub dropped_address_mismatch: u64,
    /// Max Adver Int outside `vrrp.advert_interval_factor` of our own interval.
    pub dropped_interval_out_of_range: u64,
    pub vip_refresh_errors: u64,
    pub send_errors: u64,
}

/// Snapshot for `/status` and `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VrrpStatus {
    pub state: VrrpState,
    pub router_id: u8,
    pub vip: Option<Ipv4Addr>,
    pub base_priority: u8,
    pub effective_priority: u8,
    pub track: TrackState,
    /// Source of the adverts we currently follow (or our own address while master).
    pub master_address: Option<Ipv4Addr>,
    /// Master_Adver_Interval in milliseconds: learnt from the master while backup (§6.4.2).
    pub master_advert_interval_ms: u32,
    pub holds_vip: bool,
    /// A backup that saw a lower-priority master and will preempt it once the preempt delay
    /// runs out: the VIP is about to move here, so the group has not settled yet.
    pub preempt_pending: bool,
    /// Whether the VRRP thread runs under `SCHED_RR` (see `realtime_priority`).
    pub realtime: bool,
    pub counters: VrrpCounters,
    /// The most recent kernel-side failure (send, VIP add/refresh/remove), for operators.
    pub last_error: Option<String>,
}

/// Why VRRP could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum VrrpError {
    #[error("invalid vrrp settings: {}", join_problems(.0))]
    Settings(Vec<SettingsProblem>),
    #[error(
        "vrrp.interface: no interface named {0:?} in this network namespace; check the name with `ip link`"
    )]
    NoSuchInterface(String),
    #[error(
        "vrrp.source_address: interface {0} has no IPv4 address to send adverts from; add one or set vrrp.source_address"
    )]
    NoSourceAddress(String),
    #[error("vrrp: {what}: {source}{}", permission_hint(.source))]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "vrrp.vip: {vip}/{prefix_len} is already on {interface} and khagent did not add it ({why}): \
         another VRRP daemon (keepalived?) or an `ip addr add` put it there. khagent removes only \
         a VIP it added; stop that daemon, or remove the address \
         (`ip addr del {vip}/{prefix_len} dev {interface}`), then start khagent again"
    )]
    ForeignVip {
        vip: Ipv4Addr,
        prefix_len: u8,
        interface: String,
        why: String,
    },
    #[error("vrrp: the VRRP thread stopped unexpectedly: {0}")]
    Thread(String),
}

impl VrrpError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

fn join_problems(problems: &[SettingsProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn permission_hint(err: &std::io::Error) -> &'static str {
    if err.kind() == std::io::ErrorKind::PermissionDenied {
        " (hint: khagent needs CAP_NET_RAW and CAP_NET_ADMIN)"
    } else {
        ""
    }
}

/// A running VRRP instance.
#[derive(Debug)]
pub struct VrrpHandle {
    status: watch::Receiver<VrrpStatus>,
    peers: watch::Sender<Vec<Ipv4Addr>>,
    /// The running mode, fixed by the sockets opened at start.
    unicast: bool,
    thread: std::thread::JoinHandle<Result<(), VrrpError>>,
}

impl VrrpHandle {
    /// Live status; changes on every transition, counter update and track change.
    pub fn status(&self) -> watch::Receiver<VrrpStatus> {
        self.status.clone()
    }

    /// Waits for the instance to stop (after `shutdown` flips to true: priority-0 advert sent
    /// if master, VIP removed).
    pub fn join(self) -> Result<(), VrrpError> {
        self.thread
            .join()
            .map_err(|panic| VrrpError::Thread(panic_message(&panic)))?
    }

    /// Applies the peer list of a reloaded `vrrp:` section (SIGHUP), an empty one included:
    /// a unicast group reduced to this node hears no one any more. A section that switches
    /// between unicast and multicast is not applied: that needs new sockets, so a restart
    /// (which `Config::restart_needed` asks for), and until then the running peers stay.
    pub fn update_peers(&self, next: &VrrpSettings) {
        if next.unicast() == self.unicast {
            self.peers.send_replace(next.peers.clone());
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(ToString::to_string)
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// Starts the VRRP instance on its own OS thread with its own current-thread tokio runtime (so
/// a saturated load balancer cannot delay adverts). Returns once the sockets are set up; errors
/// name the bad setting (unknown interface, no address) or the missing capability. Every
/// transition and priority change goes to `events` with its reason.
pub fn spawn(
    settings: VrrpSettings,
    track: watch::Receiver<TrackState>,
    shutdown: watch::Receiver<bool>,
    events: Arc<crate::events::EventLog>,
) -> Result<VrrpHandle, VrrpError> {
    settings.validate().map_err(VrrpError::Settings)?;
    let (peers_tx, peers_rx) = watch::channel(settings.peers.clone());
    let unicast = settings.unicast();
    let (status, thread) = runner::start(settings, track, shutdown, peers_rx, events)?;
    Ok(VrrpHandle {
        status,
        peers: peers_tx,
        unicast,
        thread,
    })
}
