//! Tracked checks → `vrrp::TrackState`, with keepalived's `track_script` semantics: a negative
//! weight is added to the priority while its check fails, a positive weight while it succeeds,
//! and `fault: true` forces the node out of the election while its check fails.
//!
//! Two kinds of check are tracked: a backend's health (normally the local apiserver's /readyz,
//! already checked by the health loops) and the agent's own listener, which is healthy while
//! it is bound and accepting and at least one backend is up, i.e. while this node can actually
//! serve the VIP's port.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{Notify, watch};

use crate::config::TrackConfig;
use crate::lb::Lb;
use crate::lb::backend::BackendSet;
use crate::vrrp::TrackState;

/// Pure evaluation of the tracked checks against the current health.
pub fn evaluate(tracks: &[TrackConfig], set: &BackendSet, listening: bool) -> TrackState {
    let mut state = TrackState::default();
    for t in tracks {
        let (ok, what) = match &t.backend {
            // A tracked backend counts as passing only once a check has succeeded: the
            // load balancer starts backends optimistic (as haproxy does), but a freshly
            // started agent must not claim a priority its apiserver has not earned, or it
            // preempts the VIP and hands it back a few seconds later. Until any check has
            // ended, the priority is not final (`pending`).
            Some(name) => {
                let backend = set.by_name(name);
                let passed = backend.map_or(0, |b| b.checks_ok.load(Ordering::Relaxed));
                let failed = backend.map_or(0, |b| b.checks_failed.load(Ordering::Relaxed));
                state.pending |= backend.is_some() && passed == 0 && failed == 0;
                (
                    backend.is_some_and(|b| b.is_healthy() && passed > 0),
                    format!("backend {name}"),
                )
            }
            None => (listening && set.healthy_count() > 0, "listener".to_owned()),
        };
        if t.fault && !ok {
            state.force_fault = true;
            state
                .reasons
                .push(format!("{}: {what} failing (fault)", t.name));
        }
        match t.weight {
            Some(w) if w < 0 && !ok => {
                state.priority_delta += w;
                state
                    .reasons
                    .push(format!("{}: {what} failing ({w})", t.name));
            }
            Some(w) if w > 0 && ok => {
                state.priority_delta += w;
                state.reasons.push(format!("{}: {what} ok (+{w})", t.name));
            }
            _ => {}
        }
    }
    state
}

/// Re-evaluates on every health transition (and every [`super::TRACK_POLL`] for the listener)
/// and publishes only real changes.
pub fn spawn(
    lb: Lb,
    mut tracks: watch::Receiver<Arc<Vec<TrackConfig>>>,
    out: watch::Sender<TrackState>,
    changed: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let list = tracks.borrow_and_update().clone();
            let listening = lb
                .stats()
                .listening
                .load(std::sync::atomic::Ordering::Relaxed);
            let next = evaluate(&list, &lb.current().set, listening);
            out.send_if_modified(|cur| {
                let differs = *cur != next;
                if differs {
                    *cur = next;
                }
                differs
            });
            tokio::select! {
                () = changed.notified() => {}
                r = tracks.changed() => if r.is_err() { return },
                () = tokio::time::sleep(super::TRACK_POLL) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::{BackendConfig, Balance};

    fn set() -> BackendSet {
        let cfg = |name: &str, port| BackendConfig {
            name: name.into(),
            address: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        };
        BackendSet::new(
            &[cfg("local", 1), cfg("other", 2)],
            Balance::RoundRobin,
            None,
        )
    }

    fn track(name: &str, backend: Option<&str>, weight: Option<i32>, fault: bool) -> TrackConfig {
        TrackConfig {
            name: name.into(),
            backend: backend.map(Into::into),
            listener: backend.is_none(),
            weight,
            fault,
        }
    }

    /// Records one successful check on every backend, as the health loops would.
    fn checked(s: &BackendSet) {
        for b in &s.backends {
            b.checks_ok.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn unchecked_backend_counts_as_failing_until_a_check_succeeds() {
        let s = set();
        let tracks = [track("apiserver", Some("local"), Some(-50), false)];
        assert!(
            s.backends[0].is_healthy(),
            "backends start optimistic for traffic"
        );
        let before = evaluate(&tracks, &s, true);
        assert_eq!(before.priority_delta, -50);
        assert!(
            before.pending,
            "no check has run: the priority is not final"
        );
        checked(&s);
        assert_eq!(evaluate(&tracks, &s, true), TrackState::default());
    }

    #[test]
    fn failing_apiserver_lowers_priority_by_its_weight() {
        let s = set();
        checked(&s);
        let tracks = [track("apiserver", Some("local"), Some(-50), false)];
        assert_eq!(evaluate(&tracks, &s, true), TrackState::default());
        s.backends[0].set_healthy(false);
        let st = evaluate(&tracks, &s, true);
        assert_eq!(st.priority_delta, -50);
        assert!(!st.force_fault);
        assert_eq!(st.reasons, ["apiserver: backend local failing (-50)"]);
    }

    #[test]
    fn positive_weight_applies_while_check_succeeds() {
        let s = set();
        checked(&s);
        let tracks = [track("apiserver", Some("local"), Some(20), false)];
        assert_eq!(evaluate(&tracks, &s, true).priority_delta, 20);
        s.backends[0].set_healthy(false);
        assert_eq!(evaluate(&tracks, &s, true).priority_delta, 0);
    }

    #[test]
    fn listener_without_healthy_backend_forces_fault() {
        let s = set();
        let tracks = [track("lb", None, None, true)];
        assert!(!evaluate(&tracks, &s, true).force_fault);
        assert!(evaluate(&tracks, &s, false).force_fault, "not listening");
        s.backends[0].set_healthy(false);
        s.backends[1].set_healthy(false);
        assert!(evaluate(&tracks, &s, true).force_fault, "no backend up");
    }
}
