//! Backends and the backend set the listener picks from.
//!
//! A [`Backend`] lives as long as some set or connection refers to it and carries its health (a
//! `watch` channel, so proxied connections can be closed the moment it is marked down) and its
//! counters. A [`BackendSet`] is immutable; a reload builds a new one, re-using the `Backend` of
//! every entry whose name and address did not change (so health and counters carry over), and
//! publishes it by swapping one `Arc` (see `Lb::swap`), like pingora's `ArcSwap` of backends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::watch;

use crate::config::{BackendConfig, Balance};

/// One upstream server and its live state.
#[derive(Debug)]
pub struct Backend {
    pub name: String,
    pub address: SocketAddr,
    healthy: watch::Sender<bool>,
    /// Connections proxied to this backend right now (and connects in progress), for
    /// least-connections and status.
    pub active: AtomicUsize,
    pub total: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Bytes forwarded client → backend and backend → client.
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    /// Connections closed by the agent because the backend was marked down.
    pub closed_on_down: AtomicU64,
    /// Last health-check failure, for status pages.
    pub last_error: std::sync::Mutex<Option<String>>,
    pub checks_ok: AtomicU64,
    pub checks_failed: AtomicU64,
    /// Checks that could not run for a local reason (`health::CheckError::Local`).
    pub checks_unknown: AtomicU64,
    /// Woken when a client's connect to this backend failed for the backend's own reason
    /// (refused, unreachable, no answer within `timeouts.connect`): its health loop counts it
    /// as a failed check and checks again at once (haproxy's `observe layer4` with `on-error
    /// fastinter`).
    pub connect_failed: tokio::sync::Notify,
}

impl Backend {
    /// A new backend starts up: haproxy does the same, and it keeps a freshly started agent from
    /// refusing every client for `rise × interval`. `fall` failed checks take it down.
    pub fn new(cfg: &BackendConfig) -> Arc<Backend> {
        Arc::new(Backend {
            name: cfg.name.clone(),
            address: cfg.address,
            healthy: watch::Sender::new(true),
            active: AtomicUsize::new(0),
            total: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            closed_on_down: AtomicU64::new(0),
            last_error: std::sync::Mutex::new(None),
            checks_ok: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
            checks_unknown: AtomicU64::new(0),
            connect_failed: tokio::sync::Notify::new(),
        })
    }

    pub fn is_healthy(&self) -> bool {
        *self.healthy.borrow()
    }

    /// Sets the health; returns whether it changed. Marking down wakes every connection watching
    /// this backend, which then closes (haproxy's `on-marked-down shutdown-sessions`).
    pub fn set_healthy(&self, up: bool) -> bool {
        self.healthy.send_if_modified(|h| {
            let changed = *h != up;
            *h = up;
            changed
        })
    }

    /// A receiver that changes when the backend's health does.
    pub fn watch_health(&self) -> watch::Receiver<bool> {
        self.healthy.subscribe()
    }

    pub fn set_last_error(&self, err: Option<String>) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = err;
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

/// The backends of one config generation and how to choose among them.
#[derive(Debug)]
pub struct BackendSet {
    pub backends: Vec<Arc<Backend>>,
    pub balance: Balance,
    next: AtomicUsize,
}

impl BackendSet {
    /// Builds the set for `configs`, re-using backends from `previous` with the same name and
    /// address.
    pub fn new(configs: &[BackendConfig], balance: Balance, previous: Option<&BackendSet>) -> Self {
        let backends = configs
            .iter()
            .map(|cfg| {
                previous
                    .and_then(|p| {
                        p.backends
                            .iter()
                            .find(|b| b.name == cfg.name && b.address == cfg.address)
                    })
                    .cloned()
                    .unwrap_or_else(|| Backend::new(cfg))
            })
            .collect();
        BackendSet {
            backends,
            balance,
            next: AtomicUsize::new(0),
        }
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.name == name)
    }

    pub fn healthy_count(&self) -> usize {
        self.backends.iter().filter(|b| b.is_healthy()).count()
    }

    /// Picks a healthy backend not in `tried` (a bitmask of indexes), or `None` when none is
    /// left. Round-robin walks on from a shared cursor; least-connections takes the fewest active
    /// connections, ties broken by the same cursor so equal backends still alternate.
    pub fn pick(&self, tried: u64) -> Option<usize> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let candidates = (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| i >= 64 || tried & (1 << i) == 0)
            .filter(|&i| self.backends[i].is_healthy());
        match self.balance {
            Balance::RoundRobin => candidates.into_iter().next(),
            Balance::LeastConnections => {
                candidates.min_by_key(|&i| self.backends[i].active.load(Ordering::Relaxed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn cfgs(n: usize) -> Vec<BackendConfig> {
        (0..n)
            .map(|i| BackendConfig {
                name: format!("b{i}"),
                address: SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
            })
            .collect()
    }

    #[test]
    fn round_robin_visits_every_healthy_backend_in_turn() {
        let set = BackendSet::new(&cfgs(3), Balance::RoundRobin, None);
        let picks: Vec<_> = (0..6).map(|_| set.pick(0).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn unhealthy_backends_are_skipped() {
        let set = BackendSet::new(&cfgs(3), Balance::RoundRobin, None);
        set.backends[1].set_healthy(false);
        assert!((0..10).all(|_| set.pick(0) != Some(1)));
        set.backends[0].set_healthy(false);
        set.backends[2].set_healthy(false);
        assert_eq!(set.pick(0), None);
    }

    #[test]
    fn retry_skips_backends_already_tried() {
        let set = BackendSet::new(&cfgs(3), Balance::RoundRobin, None);
        let first = set.pick(0).unwrap();
        let second = set.pick(1 << first).unwrap();
        let third = set.pick((1 << first) | (1 << second)).unwrap();
        assert_eq!(
            [first, second, third]
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len(),
            3
        );
        assert_eq!(set.pick(0b111), None);
    }

    #[test]
    fn least_connections_prefers_the_idlest_backend() {
        let set = BackendSet::new(&cfgs(3), Balance::LeastConnections, None);
        set.backends[0].active.store(5, Ordering::Relaxed);
        set.backends[1].active.store(1, Ordering::Relaxed);
        set.backends[2].active.store(3, Ordering::Relaxed);
        assert!((0..5).all(|_| set.pick(0) == Some(1)));
    }

    #[test]
    fn reload_keeps_state_of_unchanged_backends() {
        let old = BackendSet::new(&cfgs(2), Balance::RoundRobin, None);
        old.backends[1].set_healthy(false);
        let mut next_cfg = cfgs(3);
        next_cfg.remove(0);
        let new = BackendSet::new(&next_cfg, Balance::RoundRobin, Some(&old));
        assert!(Arc::ptr_eq(&new.backends[0], &old.backends[1]));
        assert!(!new.backends[0].is_healthy());
        assert!(new.backends[1].is_healthy());
    }

    #[test]
    fn marking_down_notifies_watchers_once() {
        let set = BackendSet::new(&cfgs(1), Balance::RoundRobin, None);
        let mut rx = set.backends[0].watch_health();
        assert!(!rx.has_changed().unwrap());
        assert!(set.backends[0].set_healthy(false));
        assert!(!set.backends[0].set_healthy(false));
        assert!(rx.has_changed().unwrap());
        assert!(!*rx.borrow_and_update());
    }
}
