//! Runs one VRRP instance: its own OS thread and current-thread tokio runtime, real timers,
//! the kernel edge, and the pure [`Instance`] in between. Publishes [`VrrpStatus`] on every
//! change and stops (priority-0 advert, VIP removed) when `shutdown` turns true.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::instance::{Action, Config, Event, Instance, Timer};
use super::io::arp::GratuitousArp;
use super::io::netlink::Netlink;
use super::io::socket::VrrpSocket;
use super::io::timer::DeadlineTimer;
use super::io::{interface_index, set_realtime};
use super::packet::{self, Advert, DecodeError, VRRP_MULTICAST};
use super::vip::{Foreign, Marker, Vip, VipWorker, left_by_us};
use super::why;
use super::{TrackState, VrrpCounters, VrrpError, VrrpSettings, VrrpState, VrrpStatus};
use crate::events::{Entry, EventLog, Kind};
use crate::status::log;

type Started = (
    watch::Receiver<VrrpStatus>,
    std::thread::JoinHandle<Result<(), VrrpError>>,
);

/// Big enough for any IPv4 datagram; larger ones are reported truncated.
const RECV_BUFFER: usize = 65_535;
/// Most queued datagrams handled before due timers (see `Runner::drain_queued`).
const MAX_DRAIN: usize = 64;
/// Dropped adverts worth a log line are logged at most this often: a flood of forged adverts
/// must not turn into a flood of log lines written from the realtime thread.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

pub(super) fn start(
    settings: VrrpSettings,
    track: watch::Receiver<TrackState>,
    shutdown: watch::Receiver<bool>,
    peers: watch::Receiver<Vec<Ipv4Addr>>,
    events: Arc<EventLog>,
) -> Result<Started, VrrpError> {
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("khagent-vrrp".into())
        .spawn(move || {
            // Before the runtime exists, so every wake-up of this thread is realtime.
            let realtime = match settings.realtime_priority {
                0 => Ok(false),
                priority => set_realtime(priority).map(|()| true),
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| VrrpError::io("starting the VRRP runtime", e))?;
            runtime.block_on(async move {
                let runner = match Runner::open(settings, track, shutdown, peers, realtime, events)
                {
                    Ok((runner, status)) => {
                        // The receiver only disappears if spawn() itself is gone.
                        let _ = ready_tx.send(Ok(status));
                        runner
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                };
                runner.run().await
            })
        })
        .map_err(|e| VrrpError::io("starting the VRRP thread", e))?;
    match ready_rx.recv() {
        Ok(Ok(status)) => Ok((status, thread)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(match thread.join() {
            Ok(Err(e)) => e,
            _ => VrrpError::Thread("the VRRP thread exited during setup".into()),
        }),
    }
}

/// Sockets and the interface they live on.
struct Edge {
    source: Ipv4Addr,
    socket: VrrpSocket,
    vip: VipWorker,
    arp: GratuitousArp,
    timer: DeadlineTimer,
}

impl Edge {
    fn open(settings: &VrrpSettings) -> Result<Self, VrrpError> {
        let interface = &settings.interface;
        let ifindex = interface_index(interface)
            .map_err(|_| VrrpError::NoSuchInterface(interface.clone()))?;
        let mut netlink = Netlink::open().map_err(|e| VrrpError::io("opening rtnetlink", e))?;
        let source = match settings.source_address {
            Some(source) => source,
            None => netlink
                .addresses(ifindex)
                .map_err(|e| VrrpError::io(format!("listing the addresses of {interface}"), e))?
                .into_iter()
                .find(|a| !a.secondary && a.address != settings.vip)
                .map(|a| a.address)
                .ok_or_else(|| VrrpError::NoSourceAddress(interface.clone()))?,
        };
        let socket =
            VrrpSocket::open(interface, ifindex, source, !settings.unicast()).map_err(|e| {
                VrrpError::io(
                    format!("opening the VRRP socket on {interface} from {source}"),
                    e,
                )
            })?;
        let timer =
            DeadlineTimer::new().map_err(|e| VrrpError::io("creating the VRRP timer", e))?;
        let arp = GratuitousArp::open(interface, ifindex)
            .map_err(|e| VrrpError::io(format!("opening the ARP socket on {interface}"), e))?;
        let marker = Marker::new(
            &settings.state_dir,
            settings.vip,
            settings.vip_prefix_len,
            interface,
        );
        remove_vip_left_by_us(&mut netlink, ifindex, settings, &marker)?;
        let vip = Vip {
            ifindex,
            address: settings.vip,
            prefix_len: settings.vip_prefix_len,
            lifetime: settings.vip_lifetime(),
            marker,
        };
        let vip = VipWorker::start(netlink, vip, settings.realtime_priority)
            .map_err(|e| VrrpError::io("starting the VIP worker thread", e))?;
        Ok(Self {
            source,
            socket,
            vip,
            arp,
            timer,
        })
    }
}

/// An agent starts as a backup holding nothing. A VIP that an earlier run of this agent left
/// (killed before the lifetime ran out) would make two holders: it is removed. A VIP someone
/// else put there (keepalived, an `ip addr add`) is theirs: it is left alone and the agent
/// does not start, saying why, rather than take or drop an address it does not own.
fn remove_vip_left_by_us(
    netlink: &mut Netlink,
    ifindex: u32,
    settings: &VrrpSettings,
    marker: &Marker,
) -> Result<(), VrrpError> {
    let (vip, interface) = (settings.vip, &settings.interface);
    let listing = |e| VrrpError::io(format!("listing the addresses of {interface}"), e);
    let found = netlink.addresses(ifindex).map_err(listing)?;
    if let Some(found) = found.iter().find(|a| a.address == vip) {
        left_by_us(found, marker.present()).map_err(|why| VrrpError::ForeignVip {
            vip,
            prefix_len: found.prefix_len,
            interface: interface.clone(),
            why: match why {
                Foreign::Permanent => "it never expires (valid_lft forever)".into(),
                Foreign::Unrecorded => format!(
                    "{} does not record adding it; it has a lifetime and goes away by itself",
                    marker.path().display()
                ),
            },
        })?;
        netlink
            .delete_address(ifindex, vip, found.prefix_len)
            .map_err(|e| VrrpError::io(format!("removing our stale {vip} from {interface}"), e))?;
    }
    marker
        .clear()
        .map_err(|e| VrrpError::io(format!("removing {}", marker.path().display()), e))
}

struct Runner {
    settings: VrrpSettings,
    edge: Edge,
    instance: Instance,
    track: watch::Receiver<TrackState>,
    shutdown: watch::Receiver<bool>,
    peers: watch::Receiver<Vec<Ipv4Addr>>,
    unicast_peers: Vec<Ipv4Addr>,
    status: watch::Sender<VrrpStatus>,
    timers: HashMap<Timer, Instant>,
    holds_vip: bool,
    realtime: bool,
    next_vip_refresh: Option<Instant>,
    next_garp_repeat: Option<Instant>,
    counters: VrrpCounters,
    last_error: Option<String>,
    /// When an advert dropped for its interval was last logged.
    interval_drop_logged: Option<Instant>,
    /// Transitions and priority changes, with their reasons.
    events: Arc<EventLog>,
    /// Source and priority of the last accepted advert (for the reason of a takeover).
    last_advert: Option<(Ipv4Addr, u8)>,
}

/// What woke the loop.
enum Wake {
    Shutdown,
    Datagram(std::io::Result<usize>),
    Track,
    TrackGone,
    Peers,
    PeersGone,
    Deadline,
}

impl Runner {
    fn open(
        settings: VrrpSettings,
        track: watch::Receiver<TrackState>,
        shutdown: watch::Receiver<bool>,
        peers: watch::Receiver<Vec<Ipv4Addr>>,
        realtime: std::io::Result<bool>,
        events: Arc<EventLog>,
    ) -> Result<(Self, watch::Receiver<VrrpStatus>), VrrpError> {
        let edge = Edge::open(&settings)?;
        let instance = Instance::new(Config {
            priority: settings.priority,
            advert_interval_cs: settings.advert_interval_cs(),
            local_address: edge.source,
            preempt: settings.preempt,
            preempt_delay: Duration::from_millis(u64::from(settings.preempt_delay_ms)),
        });
        let (status, status_rx) = watch::channel(VrrpStatus::default());
        let runner = Self {
            unicast_peers: settings.peers.clone(),
            interval_drop_logged: None,
            events,
            last_advert: None,
            settings,
            edge,
            instance,
            track,
            shutdown,
            peers,
            status,
            timers: HashMap::new(),
            holds_vip: false,
            next_vip_refresh: None,
            next_garp_repeat: None,
            counters: VrrpCounters::default(),
            realtime: *realtime.as_ref().unwrap_or(&false),
            last_error: realtime.err().map(|e| {
                format!("no realtime priority for the VRRP thread ({e}); adverts may be late under CPU load")
            }),
        };
        runner.publish();
        Ok((runner, status_rx))
    }

    async fn run(mut self) -> Result<(), VrrpError> {
        let initial_track = self.track.borrow_and_update().clone();
        self.feed(Event::Track(initial_track), Instant::now());
        self.feed(Event::Startup, Instant::now());
        let mut buf = vec![0u8; RECV_BUFFER];
        let (mut track_open, mut peers_open) = (true, true);
        loop {
            if *self.shutdown.borrow_and_update() {
                break;
            }
            let deadline = self.next_deadline();
            let precise = match self.edge.timer.arm(deadline) {
                Ok(()) => true,
                Err(e) => {
                    self.last_error = Some(format!("arming the VRRP timer: {e}"));
                    false
                }
            };
            let wake = tokio::select! {
                biased;
                changed = self.shutdown.changed() => match changed {
                    Ok(()) => continue,
                    Err(_) => Wake::Shutdown,
                },
                () = wait_for_deadline(&self.edge.timer, deadline, precise) => Wake::Deadline,
                received = self.edge.socket.recv(&mut buf) => Wake::Datagram(received),
                changed = self.track.changed(), if track_open => {
                    if changed.is_ok() { Wake::Track } else { Wake::TrackGone }
                }
                changed = self.peers.changed(), if peers_open => {
                    if changed.is_ok() { Wake::Peers } else { Wake::PeersGone }
                }
            };
            let now = Instant::now();
            match wake {
                Wake::Shutdown => break,
                Wake::Deadline => {
                    self.drain_queued(&mut buf, now);
                    self.fire_due(now);
                }
                Wake::Datagram(Ok(len)) => self.on_datagram(&buf[..len.min(buf.len())], len, now),
                Wake::Datagram(Err(e)) => {
                    self.last_error = Some(format!("receiving adverts: {e}"));
                    // A broken socket must not spin the thread; the next wake retries.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Wake::Track => {
                    let track = self.track.borrow_and_update().clone();
                    self.feed(Event::Track(track), now);
                }
                Wake::TrackGone => track_open = false,
                // Only sent in the running mode (see `VrrpHandle::update_peers`).
                Wake::Peers => self.unicast_peers = self.peers.borrow_and_update().clone(),
                Wake::PeersGone => peers_open = false,
            }
            self.collect_refresh_failures();
            self.publish();
        }
        self.feed(Event::Shutdown, Instant::now());
        if self.holds_vip {
            self.remove_vip();
        }
        self.publish();
        if self.holds_vip {
            let s = &self.settings;
            let cause = self.last_error.take().unwrap_or_default();
            return Err(VrrpError::io(
                format!("removing {} from {} at shutdown", s.vip, s.interface),
                std::io::Error::other(format!("{cause}; it disappears when its lifetime ends")),
            ));
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers
            .values()
            .copied()
            .chain(self.next_vip_refresh)
            .chain(self.next_garp_repeat)
            .min()
    }

    /// Fires every timer that is due, earliest first.
    fn fire_due(&mut self, now: Instant) {
        while let Some((timer, at)) = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= now)
            .min_by_key(|(_, at)| **at)
            .map(|(t, at)| (*t, *at))
        {
            self.timers.remove(&timer);
            let event = match timer {
                Timer::Advert => Event::AdvertTimer,
                Timer::MasterDown => Event::MasterDownTimer,
                Timer::PreemptDelay => Event::PreemptDelayExpired,
            };
            self.feed(event, self.schedule_base(at, now));
        }
        if let Some(at) = self.next_vip_refresh.filter(|at| *at <= now) {
            self.add_vip(self.schedule_base(at, now));
        }
        if self.next_garp_repeat.is_some_and(|at| at <= now) {
            self.next_garp_repeat = None;
            self.send_garps();
        }
    }

    /// Processes adverts already queued before a due timer: a backup woken by its
    /// Master_Down_Timer in the same millisecond as the new master's first advert arrived must
    /// not take over from a master it has already heard (measured at a 10 ms interval: 1 in 20
    /// takeovers moved the VIP twice without this). Bounded, so a flood cannot hold timers off.
    fn drain_queued(&mut self, buf: &mut [u8], now: Instant) {
        for _ in 0..MAX_DRAIN {
            match self.edge.socket.try_recv(buf) {
                Ok(Some(len)) => self.on_datagram(&buf[..len.min(buf.len())], len, now),
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// What a timer that was due at `at` and ran at `now` re-arms from. Late wake-ups under
    /// load would otherwise stretch every interval (measured: 6 % fewer adverts than due with
    /// both cores saturated); but after a stall longer than one interval, catching up with a
    /// burst of adverts is worse than resuming the cadence from now.
    fn schedule_base(&self, at: Instant, now: Instant) -> Instant {
        let interval = Duration::from_millis(u64::from(self.settings.advert_interval_ms));
        if now.duration_since(at) < interval {
            at
        } else {
            now
        }
    }

    /// RFC 5798 §7.1 receive checks that need configuration, then the state machine.
    fn on_datagram(&mut self, datagram: &[u8], real_len: usize, now: Instant) {
        let c = &mut self.counters;
        if real_len > datagram.len() {
            c.dropped_truncated += 1;
            return;
        }
        let received = match packet::decode_ipv4(datagram) {
            Ok(received) => received,
            Err(e) => {
                *match e {
                    DecodeError::Truncated { .. } | DecodeError::NotVrrp => {
                        &mut c.dropped_truncated
                    }
                    DecodeError::BadTtl(_) => &mut c.dropped_bad_ttl,
                    DecodeError::BadVersion(_) => &mut c.dropped_bad_version,
                    DecodeError::BadType(_) => &mut c.dropped_bad_type,
                    DecodeError::BadChecksum => &mut c.dropped_bad_checksum,
                    DecodeError::CountMismatch { .. } => &mut c.dropped_count_mismatch,
                    DecodeError::BadInterval => &mut c.dropped_bad_interval,
                } += 1;
                return;
            }
        };
        if received.src == self.edge.source {
            return;
        }
        let advert = received.advert;
        if advert.vrid != self.settings.router_id {
            c.dropped_other_vrid += 1;
            return;
        }
        if self.settings.unicast() && !self.unicast_peers.contains(&received.src) {
            c.dropped_unknown_peer += 1;
            return;
        }
        // §7.1: a sender that is not the address owner (255) and disagrees on the address
        // list is misconfigured; its adverts are dropped.
        if advert.priority != 255 && !advert.addresses.contains(&self.settings.vip) {
            c.dropped_address_mismatch += 1;
            return;
        }
        // Not in RFC 5798, which has a backup adopt any interval (§6.4.2): see
        // `VrrpSettings::advert_interval_factor`.
        let accepted = self.settings.accepted_advert_intervals_cs();
        if !accepted.contains(&advert.max_advert_int_cs) {
            c.dropped_interval_out_of_range += 1;
            if self
                .interval_drop_logged
                .is_none_or(|at| now - at >= DROP_LOG_EVERY)
            {
                self.interval_drop_logged = Some(now);
                log::warn(format_args!(
                    "vrrp: dropped an advert from {} advertising {} cs, outside the accepted \
                     {}..={} cs (vrrp.advert_interval_factor); {} dropped so far",
                    received.src,
                    advert.max_advert_int_cs,
                    accepted.start(),
                    accepted.end(),
                    c.dropped_interval_out_of_range,
                ));
            }
            return;
        }
        c.adverts_rx += 1;
        if advert.priority == 0 {
            c.priority_zero_rx += 1;
        }
        let event = Event::Advert {
            src: received.src,
            priority: advert.priority,
            max_advert_int_cs: advert.max_advert_int_cs,
        };
        self.feed(event, now);
    }

    fn feed(&mut self, event: Event, now: Instant) {
        let before = self.instance.state();
        let seen = why::Seen {
            last_advert: self.last_advert,
            our_priority: self.instance.effective_priority(),
            master_down: self.instance.master_down_interval(),
        };
        let recorded = event.clone();
        if let Event::Advert { src, priority, .. } = &event {
            self.last_advert = Some((*src, *priority));
        }
        for action in self.instance.handle(event) {
            match action {
                Action::SendAdvert { priority } => self.send_advert(priority),
                Action::AddVip => self.add_vip(now),
                Action::RemoveVip => self.remove_vip(),
                Action::SendGratuitousArp => {
                    self.send_garps();
                    let repeat = self.settings.gratuitous_arp_repeat_ms;
                    self.next_garp_repeat =
                        (repeat > 0).then(|| now + Duration::from_millis(u64::from(repeat)));
                }
                Action::Arm(timer, after) => {
                    self.timers.insert(timer, now + after);
                }
                Action::Cancel(timer) => {
                    self.timers.remove(&timer);
                }
            }
        }
        let after = self.instance.state();
        if after != before {
            match after {
                VrrpState::Master => self.counters.transitions_to_master += 1,
                VrrpState::Backup => self.counters.transitions_to_backup += 1,
                VrrpState::Fault => self.counters.transitions_to_fault += 1,
                VrrpState::Init => {}
            }
            self.record(
                Kind::Vrrp,
                state_name(before),
                state_name(after),
                why::transition(&recorded, before, after, &seen),
            );
        }
        let priority = self.instance.effective_priority();
        if priority != seen.our_priority {
            self.record(
                Kind::Priority,
                seen.our_priority.to_string(),
                priority.to_string(),
                why::priority(self.instance.track()),
            );
        }
    }

    fn record(&self, kind: Kind, from: impl Into<String>, to: impl Into<String>, reason: String) {
        self.events.record(Entry {
            kind,
            from: from.into(),
            to: to.into(),
            reason,
            priority: Some(self.instance.effective_priority()),
            backend: None,
        });
    }

    fn send_advert(&mut self, priority: u8) {
        let advert = Advert {
            vrid: self.settings.router_id,
            priority,
            max_advert_int_cs: self.settings.advert_interval_cs(),
            addresses: vec![self.settings.vip],
        };
        let destinations = if self.settings.unicast() {
            self.unicast_peers.clone()
        } else {
            vec![VRRP_MULTICAST]
        };
        for dst in destinations {
            match self
                .edge
                .socket
                .send(&advert.encode(self.edge.source, dst), dst)
            {
                Ok(()) => {
                    self.counters.adverts_tx += 1;
                    if priority == 0 {
                        self.counters.priority_zero_tx += 1;
                    }
                }
                Err(e) => {
                    self.counters.send_errors += 1;
                    self.last_error = Some(format!("sending an advert to {dst}: {e}"));
                }
            }
        }
    }

    /// Adds the VIP (waiting until it is there), or queues a refresh of its kernel lifetime if
    /// we already hold it.
    fn add_vip(&mut self, now: Instant) {
        let s = &self.settings;
        let result = if self.holds_vip {
            self.edge.vip.refresh()
        } else {
            self.edge.vip.add()
        };
        match result {
            Ok(()) => self.holds_vip = true,
            Err(e) => {
                self.counters.vip_refresh_errors += 1;
                self.last_error = Some(format!("adding {} to {}: {e}", s.vip, s.interface));
            }
        }
        // Retry on failure too: a master must not silently stop holding the VIP.
        self.next_vip_refresh = Some(now + s.vip_refresh_interval());
    }

    fn remove_vip(&mut self) {
        self.next_vip_refresh = None;
        self.next_garp_repeat = None;
        match self.edge.vip.remove() {
            Ok(()) => self.holds_vip = false,
            Err(e) => {
                let s = &self.settings;
                self.last_error = Some(format!("removing {} from {}: {e}", s.vip, s.interface))
            }
        }
    }

    /// Counts refreshes that failed on the worker since the last look.
    fn collect_refresh_failures(&mut self) {
        for e in self.edge.vip.failures() {
            self.counters.vip_refresh_errors += 1;
            let s = &self.settings;
            self.last_error = Some(format!("refreshing {} on {}: {e}", s.vip, s.interface));
        }
    }

    fn send_garps(&mut self) {
        for _ in 0..self.settings.gratuitous_arp_count {
            if let Err(e) = self.edge.arp.send(self.settings.vip) {
                self.counters.send_errors += 1;
                self.last_error = Some(format!("sending a gratuitous ARP: {e}"));
            }
        }
    }

    fn publish(&self) {
        let status = VrrpStatus {
            state: self.instance.state(),
            router_id: self.settings.router_id,
            vip: Some(self.settings.vip),
            base_priority: self.settings.priority,
            effective_priority: self.instance.effective_priority(),
            track: self.instance.track().clone(),
            master_address: self.instance.master_address(),
            master_advert_interval_ms: u32::try_from(
                self.instance.master_adver_interval().as_millis(),
            )
            .unwrap_or(u32::MAX),
            holds_vip: self.holds_vip,
            preempt_pending: self.instance.preempt_pending(),
            realtime: self.realtime,
            counters: self.counters.clone(),
            last_error: self.last_error.clone(),
        };
        self.status.send_if_modified(|current| {
            if *current == status {
                false
            } else {
                *current = status;
                true
            }
        });
    }
}

/// Waits for `deadline` (forever without one) on the timerfd, or on tokio's millisecond
/// timer if the timerfd failed.
async fn wait_for_deadline(timer: &DeadlineTimer, deadline: Option<Instant>, precise: bool) {
    match deadline {
        None => std::future::pending().await,
        Some(at) => {
            if !precise || timer.expired().await.is_err() {
                tokio::time::sleep_until(at).await;
            }
        }
    }
}

fn state_name(s: VrrpState) -> &'static str {
    match s {
        VrrpState::Init => "init",
        VrrpState::Backup => "backup",
        VrrpState::Master => "master",
        VrrpState::Fault => "fault",
    }
}
