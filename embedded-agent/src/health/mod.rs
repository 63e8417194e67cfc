//! Active health checks of the backends, and the tracked checks that move the VRRP priority.
//!
//! [`spawn`] runs a supervisor that starts one check loop per backend of the current plan and
//! restarts them all when a reload publishes a new plan. Each loop runs a TCP connect or an
//! HTTPS `GET /readyz` ([`tls`]) every `interval`, feeds the result to a [`Threshold`] (rise /
//! fall consecutive results, like haproxy and pingora) and flips the backend's health, which
//! the load balancer reads. The [`track`] task turns backend and listener health into a
//! `vrrp::TrackState` on a watch channel for the VRRP thread.

pub mod tls;
pub mod track;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};

use crate::config::{CheckKind, HealthConfig};
use crate::lb::Generation;
use crate::lb::backend::Backend;
use crate::status::log;
use tls::TlsSettings;

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
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let plan = plans.borrow_and_update().clone();
            let (stop_tx, stop_rx) = watch::channel(false);
            for backend in &plan.generation.set.backends {
                tokio::spawn(check_loop(
                    Arc::clone(backend),
                    Arc::clone(&plan),
                    Arc::clone(&changed),
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
    changed: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let h = &plan.health;
    let mut threshold = Threshold::new(backend.is_healthy(), h.rise, h.fall);
    loop {
        let result = tokio::select! {
            r = tokio::time::timeout(h.timeout.0, check_once(&backend, &plan)) => match r {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {:?}", h.timeout.0)),
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let ok = result.is_ok();
        let counter = if ok {
            &backend.checks_ok
        } else {
            &backend.checks_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &result {
            backend.set_last_error(Some(e.clone()));
        }
        if let Some(up) = threshold.record(ok) {
            if up {
                backend.set_last_error(None);
                log::info(format_args!(
                    "backend {} ({}) is up",
                    backend.name, backend.address
                ));
            } else {
                log::warn(format_args!(
                    "backend {} ({}) is down: {}; closing its {} connections",
                    backend.name,
                    backend.address,
                    backend.last_error().unwrap_or_default(),
                    backend.active.load(Ordering::Relaxed),
                ));
            }
            backend.set_healthy(up);
            changed.notify_one();
        }
        tokio::select! {
            () = tokio::time::sleep(h.interval.0) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn check_once(backend: &Backend, plan: &Plan) -> Result<(), String> {
    match (plan.health.kind, &plan.tls) {
        (CheckKind::Https, Some(tls)) => tls.check(backend.address).await,
        (CheckKind::Https, None) => Err("https check without TLS settings".into()),
        (CheckKind::Tcp, _) => TcpStream::connect(backend.address)
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
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

    #[test]
    fn down_backend_needs_rise_successes() {
        let mut t = Threshold::new(false, 2, 2);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true));
    }
}
