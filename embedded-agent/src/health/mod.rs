//! Active health checks of the backends, and the tracked checks that move the VRRP priority.
//!
//! [`spawn`] runs a supervisor that starts one check loop per backend of the current plan and
//! restarts them all when a reload publishes a new plan. Each loop runs a TCP connect or an
//! HTTPS `GET /readyz` ([`tls`]) every `interval`, feeds the result to a [`Threshold`] (rise /
//! fall consecutive results, like haproxy and pingora) and flips the backend's health, which
//! the load balancer reads. The [`track`] task turns backend and listener health into a
//! `vrrp::TrackState` on a watch channel for the VRRP thread.

pub mod reserve;
pub mod tls;
pub mod track;

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::config::{CheckKind, HealthConfig};
use crate::events::{Entry, EventLog, Kind};
use crate::lb::Generation;
use crate::lb::backend::Backend;
use crate::status::log;
use reserve::Reserve;
use tls::TlsSettings;

/// Why a check did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The backend failed it: refused, reset, no answer in time, bad certificate, not ready.
    Backend(String),
    /// The check could not run for a reason of this host: out of descriptors or memory
    /// (EMFILE, ENFILE, ENOMEM, ENOBUFS). That says nothing about the backend, so its health
    /// stays as it was ("unknown"): counted, logged, never a step towards `fall`. Counting it
    /// as a failure let a local user who exhausted the agent's descriptors have every backend
    /// marked down and every proxied connection closed (issue #12).
    Local(String),
}

impl CheckError {
    /// An I/O error during `what`, classified by its errno.
    pub fn io(what: &str, e: &io::Error) -> CheckError {
        let text = format!("{what}: {e}");
        if crate::lb::is_exhaustion(e) {
            CheckError::Local(text)
        } else {
            CheckError::Backend(text)
        }
    }
}

/// How often "a check could not run" is logged per backend while it lasts.
const LOCAL_FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

/// The rise/fall state of one backend: `fall` consecutive failures take an up backend down,
/// `rise` consecutive successes bring a down backend up; a single contrary result resets the
/// count. Pure, so the thresholds are tested without sockets or clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    up: bool,
    streak: u32,
    rise: u32,
    fall: u32,
}

impl Threshold {
    pub fn new(up: bool, rise: u32, fall: u32) -> Threshold {
        Threshold {
            up,
            streak: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Records one check result; returns the new state when it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }
}

/// What the checks run against: the load balancer's current generation and the health
/// settings of the same config. Replaced whole on reload.
#[derive(Debug, Clone)]
pub struct Plan {
    pub generation: Arc<Generation>,
    pub health: HealthConfig,
    pub tls: Option<TlsSettings>,
}

/// Starts the supervisor. `changed` is notified on every health transition (the track task
/// listens to it).
pub fn spawn(
    mut plans: watch::Receiver<Arc<Plan>>,
    changed: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
    events: Arc<EventLog>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let reserve = Arc::new(Reserve::new(reserve::RESERVED));
        loop {
            let plan = plans.borrow_and_update().clone();
            let (stop_tx, stop_rx) = watch::channel(false);
            for backend in &plan.generation.set.backends {
                tokio::spawn(check_loop(
                    Arc::clone(backend),
                    Arc::clone(&plan),
                    Arc::clone(&reserve),
                    Arc::clone(&changed),
                    Arc::clone(&events),
                    stop_rx.clone(),
                ));
            }
            let keep_going = tokio::select! {
                r = plans.changed() => r.is_ok(),
                _ = shutdown.wait_for(|s| *s) => false,
            };
            stop_tx.send_replace(true);
            if !keep_going {
                return;
            }
        }
    })
}

async fn check_loop(
    backend: Arc<Backend>,
    plan: Arc<Plan>,
    reserve: Arc<Reserve>,
    changed: Arc<Notify>,
    events: Arc<EventLog>,
    mut stop: watch::Receiver<bool>,
) {
    let h = &plan.health;
    let mut threshold = Threshold::new(backend.is_healthy(), h.rise, h.fall);
    let mut local_failure_logged: Option<Instant> = None;
    // A client's failed connect counts as one failed check (haproxy's `observe layer4`), also
    // while a check runs, and brings the next check forward (`on-error fastinter`): a backend
    // that vanished is out after its first failed client and one more failure, while one
    // dropped SYN to a busy backend whose next check passes takes nothing down (nor closes
    // its connections).
    let passive = |threshold: &mut Threshold| {
        if let Some(up) = threshold.record(false) {
            let reason = format!(
                "{} consecutive failures, the last a client's: {}",
                h.fall,
                backend.last_error().unwrap_or_default()
            );
            transition(&backend, up, reason, &events, &changed);
        }
    };
    loop {
        let check = tokio::time::timeout(h.timeout.0, check_once(&backend, &plan, &reserve));
        tokio::pin!(check);
        let result = loop {
            tokio::select! {
                r = &mut check => break match r {
                    Ok(r) => r,
                    Err(_) => Err(CheckError::Backend(format!("no answer within {:?}", h.timeout.0))),
                },
                () = backend.connect_failed.notified() => passive(&mut threshold),
                _ = stop.wait_for(|s| *s) => return,
            }
        };
        // The check's socket is closed by now: take its number back before any other task runs.
        reserve.refill();
        // None: no observation of the backend, so the rise/fall streak is left as it is.
        let observed = match result {
            Ok(()) => {
                backend.checks_ok.fetch_add(1, Ordering::Relaxed);
                Some(true)
            }
            Err(CheckError::Backend(e)) => {
                backend.checks_failed.fetch_add(1, Ordering::Relaxed);
                backend.set_last_error(Some(e));
                Some(false)
            }
            Err(CheckError::Local(e)) => {
                backend.checks_unknown.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                if local_failure_logged.is_none_or(|at| now - at >= LOCAL_FAILURE_LOG_EVERY) {
                    local_failure_logged = Some(now);
                    log::warn(format_args!(
                        "backend {} ({}): the health check could not run ({e}); a shortage on \
                         this host, not the backend's fault: it stays {} ({} such checks so far)",
                        backend.name,
                        backend.address,
                        if threshold.is_up() { "up" } else { "down" },
                        backend.checks_unknown.load(Ordering::Relaxed),
                    ));
                }
                None
            }
        };
        if let Some(up) = observed.and_then(|ok| threshold.record(ok)) {
            let reason = if up {
                format!("{} consecutive checks passed", h.rise)
            } else {
                format!(
                    "{} consecutive checks failed: {}",
                    h.fall,
                    backend.last_error().unwrap_or_default()
                )
            };
            transition(&backend, up, reason, &events, &changed);
        }
        let pause = tokio::time::sleep(h.interval.0);
        tokio::pin!(pause);
        tokio::select! {
            () = &mut pause => {}
            () = backend.connect_failed.notified() => passive(&mut threshold),
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// A backend going up or down: logged, recorded as an event, published (marking down closes
/// its connections) and the tracked checks woken.
fn transition(backend: &Backend, up: bool, reason: String, events: &EventLog, changed: &Notify) {
    if up {
        backend.set_last_error(None);
        log::info(format_args!(
            "backend {} ({}) is up",
            backend.name, backend.address
        ));
    } else {
        log::warn(format_args!(
            "backend {} ({}) is down: {reason}; closing its {} connections",
            backend.name,
            backend.address,
            backend.active.load(Ordering::Relaxed),
        ));
    }
    let (from, to) = if up { ("down", "up") } else { ("up", "down") };
    events.record(Entry {
        kind: Kind::Backend,
        from: from.into(),
        to: to.into(),
        reason,
        priority: None,
        backend: Some(backend.name.clone()),
    });
    backend.set_healthy(up);
    changed.notify_one();
}

async fn check_once(backend: &Backend, plan: &Plan, reserve: &Reserve) -> Result<(), CheckError> {
    let connect = |e: io::Error| CheckError::io("connect", &e);
    let address = backend.address;
    let socket = reserve
        .open(|| crate::lb::tcp_socket(address))
        .map_err(connect)?;
    let tcp: TcpStream = socket.connect(address).await.map_err(connect)?;
    match (plan.health.kind, &plan.tls) {
        (CheckKind::Https, Some(tls)) => tls.check(tcp, address).await,
        (CheckKind::Https, None) => Err(CheckError::Backend(
            "https check without TLS settings".into(),
        )),
        (CheckKind::Tcp, _) => Ok(()),
    }
}

/// Interval used when nothing else wakes the track task (listener state has no event).
pub const TRACK_POLL: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn up_backend_goes_down_after_fall_consecutive_failures() {
        let mut t = Threshold::new(true, 2, 3);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
        assert!(!t.is_up());
    }

    #[test]
    fn one_success_resets_the_failure_streak() {
        let mut t = Threshold::new(true, 2, 2);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert!(t.is_up());
    }

    /// Issue #12, item 11: running out of descriptors or memory is this host's problem, not
    /// the backend's.
    #[test]
    fn local_shortages_are_told_apart_from_backend_failures() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOMEM, libc::ENOBUFS] {
            let e = io::Error::from_raw_os_error(errno);
            assert!(
                matches!(CheckError::io("connect", &e), CheckError::Local(_)),
                "{e}"
            );
        }
        for errno in [
            libc::ECONNREFUSED,
            libc::ECONNRESET,
            libc::EHOSTUNREACH,
            libc::ETIMEDOUT,
        ] {
            let e = io::Error::from_raw_os_error(errno);
            assert!(
                matches!(CheckError::io("connect", &e), CheckError::Backend(_)),
                "{e}"
            );
        }
    }

    #[test]
    fn down_backend_needs_rise_successes() {
        let mut t = Threshold::new(false, 2, 2);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true));
    }
}
