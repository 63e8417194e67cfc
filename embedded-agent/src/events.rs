//! The agent's event log: its last [`CAPACITY`] VRRP transitions, priority changes and
//! backend health changes, in memory, each with the reason, the priority after it and two
//! clocks. `/status` shows the newest [`IN_STATUS`]; `/events` serves all of them (or those
//! after a sequence number), so `khactl failover-test` and an operator can see why the VIP
//! moved and when, to the microsecond.
//!
//! Clocks: `monotonic_us` is the host's CLOCK_MONOTONIC (comparable between the agents that
//! ran on one host since boot, immune to clock steps); `unix_us` is wall-clock time, which is
//! what compares across hosts (as well as their clocks agree: NTP keeps them within a few
//! milliseconds).
//!
//! Recording never blocks: the VRRP thread runs under `SCHED_RR` and must not wait for a
//! status request holding the log. An event goes into a bounded channel and is moved into the
//! ring when the lock is free at once; a reader holding the lock moves what waits there before
//! it reads. Memory is bounded by the ring and the channel, whoever reads or not.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Events kept; older ones are dropped first.
pub const CAPACITY: usize = 512;
/// The newest events `/status` shows (all of them: `/events`).
pub const IN_STATUS: usize = 32;

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The VRRP state (`init`, `backup`, `master`, `fault`).
    Vrrp,
    /// The effective VRRP priority (tracked checks), the state unchanged.
    Priority,
    /// A backend's health (`up`, `down`) as the load balancer's checks see it.
    Backend,
}

/// One recorded event, as `/events` serves it (field names are part of the agent's API).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// 1 for the agent's first event; consecutive.
    pub seq: u64,
    #[serde(flatten)]
    pub entry: Entry,
    /// CLOCK_MONOTONIC, microseconds.
    pub monotonic_us: u64,
    /// Wall clock, microseconds since the Unix epoch.
    pub unix_us: u64,
}

/// What happened, as a recorder says it; the log adds the sequence number and the time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub kind: Kind,
    pub from: String,
    pub to: String,
    /// Why, in words (`no advert from master 10.0.0.11 for Master_Down_Interval (360 ms)`).
    pub reason: String,
    /// The effective VRRP priority after the event, when VRRP runs.
    pub priority: Option<u8>,
    /// The backend, for `backend` events.
    pub backend: Option<String>,
}

/// When an event happened, on both clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub monotonic: Duration,
    pub unix: Duration,
}

impl Stamp {
    pub fn now() -> Stamp {
        Stamp {
            monotonic: crate::vrrp::io::monotonic_now(),
            unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }
}

/// What `/events` answers.
#[derive(Clone, Debug, Serialize)]
pub struct Page {
    pub capacity: usize,
    /// Events recorded but no longer kept (the ring is full), plus any lost when the channel
    /// overflowed: gaps in `seq` show where.
    pub dropped: u64,
    pub events: Vec<Event>,
}

struct Ring {
    events: VecDeque<Event>,
    next_seq: u64,
    pending: Receiver<(Stamp, Entry)>,
}

impl Ring {
    fn take_pending(&mut self, capacity: usize) {
        while let Ok((stamp, entry)) = self.pending.try_recv() {
            if self.events.len() == capacity {
                self.events.pop_front();
            }
            self.events.push_back(Event {
                seq: self.next_seq,
                entry,
                monotonic_us: micros(stamp.monotonic),
                unix_us: micros(stamp.unix),
            });
            self.next_seq += 1;
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The in-memory log, shared by the VRRP thread, the health checks and the status server.
pub struct EventLog {
    capacity: usize,
    ring: Mutex<Ring>,
    sender: SyncSender<(Stamp, Entry)>,
    /// Entries lost because the channel was full (a reader held the lock through
    /// `capacity` recordings).
    overflowed: AtomicU64,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new(CAPACITY)
    }
}

impl EventLog {
    /// A log keeping the last `capacity` events (at least one).
    pub fn new(capacity: usize) -> EventLog {
        let capacity = capacity.max(1);
        let (sender, pending) = sync_channel(capacity);
        EventLog {
            capacity,
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(capacity),
                next_seq: 1,
                pending,
            }),
            sender,
            overflowed: AtomicU64::new(0),
        }
    }

    /// Records `entry` as happening now. Never blocks.
    pub fn record(&self, entry: Entry) {
        self.record_at(Stamp::now(), entry);
    }

    /// Records `entry` as happening at `stamp`. Never blocks.
    pub fn record_at(&self, stamp: Stamp, entry: Entry) {
        match self.sender.try_send((stamp, entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.overflowed.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Ok(mut ring) = self.ring.try_lock() {
            ring.take_pending(self.capacity);
        }
    }

    /// Every kept event with a sequence number above `after` (all with `None`), oldest first.
    pub fn page(&self, after: Option<u64>) -> Page {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.take_pending(self.capacity);
        let kept = ring.events.len() as u64;
        let recorded = ring.next_seq - 1;
        Page {
            capacity: self.capacity,
            dropped: recorded - kept + self.overflowed.load(Ordering::Relaxed),
            events: ring
                .events
                .iter()
                .filter(|e| after.is_none_or(|a| e.seq > a))
                .cloned()
                .collect(),
        }
    }

    /// The newest `n` events, oldest first.
    pub fn newest(&self, n: usize) -> Vec<Event> {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.take_pending(self.capacity);
        let skip = ring.events.len().saturating_sub(n);
        ring.events.iter().skip(skip).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn entry(to: &str) -> Entry {
        Entry {
            kind: Kind::Vrrp,
            from: "backup".into(),
            to: to.into(),
            reason: format!("going {to}"),
            priority: Some(100),
            backend: None,
        }
    }

    fn at(ms: u64) -> Stamp {
        Stamp {
            monotonic: Duration::from_millis(ms),
            unix: Duration::from_millis(1_700_000_000_000 + ms),
        }
    }

    #[test]
    fn events_get_consecutive_numbers_and_keep_both_clocks() {
        let log = EventLog::new(8);
        log.record_at(at(5), entry("master"));
        log.record_at(at(7), entry("backup"));
        let page = log.page(None);
        assert_eq!(page.dropped, 0);
        let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2]);
        assert_eq!(page.events[0].monotonic_us, 5_000);
        assert_eq!(page.events[0].unix_us, 1_700_000_000_005_000);
        assert_eq!(page.events[1].entry.to, "backup");
        assert_eq!(page.events[1].entry.reason, "going backup");
    }

    #[test]
    fn a_full_log_drops_the_oldest_and_counts_them() {
        let log = EventLog::new(3);
        for i in 0..5 {
            log.record_at(at(i), entry(&format!("s{i}")));
        }
        let page = log.page(None);
        let kept: Vec<&str> = page.events.iter().map(|e| e.entry.to.as_str()).collect();
        assert_eq!(kept, ["s2", "s3", "s4"]);
        assert_eq!(page.dropped, 2);
        assert_eq!(page.events[0].seq, 3, "numbers show the gap");
    }

    #[test]
    fn a_page_after_a_number_holds_only_newer_events() {
        let log = EventLog::new(8);
        for i in 0..4 {
            log.record_at(at(i), entry(&format!("s{i}")));
        }
        let page = log.page(Some(2));
        let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [3, 4]);
        assert!(log.page(Some(4)).events.is_empty());
    }

    #[test]
    fn newest_returns_the_last_n_oldest_first() {
        let log = EventLog::new(8);
        for i in 0..5 {
            log.record_at(at(i), entry(&format!("s{i}")));
        }
        let last: Vec<String> = log.newest(2).into_iter().map(|e| e.entry.to).collect();
        assert_eq!(last, ["s3", "s4"]);
        assert_eq!(log.newest(50).len(), 5);
    }

    #[test]
    fn recording_while_a_reader_holds_the_log_neither_blocks_nor_loses_the_event() {
        let log = EventLog::new(4);
        let held = log.ring.lock().unwrap();
        // Would deadlock if recording waited for the lock.
        log.record_at(at(1), entry("master"));
        drop(held);
        let page = log.page(None);
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0].entry.to, "master");
    }

    #[test]
    fn memory_stays_bounded_when_a_reader_never_lets_go() {
        let log = EventLog::new(2);
        let held = log.ring.lock().unwrap();
        for i in 0..5 {
            log.record_at(at(i), entry(&format!("s{i}")));
        }
        drop(held);
        let page = log.page(None);
        assert_eq!(page.events.len(), 2);
        assert_eq!(page.dropped, 3, "three entries could not be kept");
    }

    #[test]
    fn the_json_field_names_are_the_agents_api() {
        let log = EventLog::new(2);
        log.record_at(
            at(1),
            Entry {
                kind: Kind::Backend,
                from: "up".into(),
                to: "down".into(),
                reason: "connection refused".into(),
                priority: None,
                backend: Some("cp1".into()),
            },
        );
        let json = serde_json::to_value(log.page(None)).unwrap();
        let e = &json["events"][0];
        assert_eq!(e["kind"], "backend");
        assert_eq!(e["backend"], "cp1");
        for field in [
            "seq",
            "from",
            "to",
            "reason",
            "priority",
            "monotonic_us",
            "unix_us",
        ] {
            assert!(e.get(field).is_some(), "{field} missing in {e}");
        }
        assert_eq!(json["capacity"], 2);
    }

    #[test]
    fn stamps_read_both_clocks() {
        let a = Stamp::now();
        let b = Stamp::now();
        assert!(a.monotonic > Duration::ZERO && b.monotonic >= a.monotonic);
        assert!(a.unix > Duration::from_secs(1_600_000_000));
    }
}
