//! The VRRP state machine of RFC 5798 §6.4, pure: `(state, event) → (state, actions)`.
//!
//! No clock reads, sockets or kernel calls here. Time enters only as durations in
//! [`Action::Arm`]; the runner turns them into real timers and feeds expiries back as events.
//! Beyond the RFC: tracked checks move the effective priority or force a `fault` state, and a
//! keepalived-style preempt delay holds off preemption of a lower-priority master.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::{TrackState, VrrpState};

/// Fixed parameters of one virtual router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Base priority, 1..=254.
    pub priority: u8,
    /// Advertisement_Interval in centiseconds (§6.1).
    pub advert_interval_cs: u16,
    /// Our primary address: the advert source, compared on priority ties (§6.4.3).
    pub local_address: Ipv4Addr,
    /// Preempt_Mode (§6.1).
    pub preempt: bool,
    /// Time a higher-priority backup tolerates a lower-priority master before preempting.
    pub preempt_delay: Duration,
}

/// The timers of §6.4, plus the preempt delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Adver_Timer: master's next advert.
    Advert,
    /// Master_Down_Timer: backup's takeover deadline.
    MasterDown,
    /// End of the preempt delay.
    PreemptDelay,
}

/// Inputs to the state machine.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Startup,
    Shutdown,
    /// A valid advert for our VRID from another router (already checked per §7.1).
    Advert {
        src: Ipv4Addr,
        priority: u8,
        max_advert_int_cs: u16,
    },
    MasterDownTimer,
    AdvertTimer,
    PreemptDelayExpired,
    Track(TrackState),
}

/// Outputs, executed in order by the runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    SendAdvert {
        priority: u8,
    },
    AddVip,
    RemoveVip,
    SendGratuitousArp,
    /// (Re)arm a timer to fire after the duration; arming replaces any earlier deadline.
    Arm(Timer, Duration),
    Cancel(Timer),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Preemption {
    /// No lower-priority master seen since the last higher-or-equal one.
    Idle,
    /// Tolerating a lower-priority master until the delay ends.
    Waiting,
    /// Delay over: lower-priority adverts are discarded, so Master_Down_Timer fires (§6.4.2).
    Due,
}

/// One virtual router's protocol state.
#[derive(Clone, Debug)]
pub struct Instance {
    config: Config,
    state: VrrpState,
    track: TrackState,
    master_adver_interval_cs: u16,
    master_address: Option<Ipv4Addr>,
    /// The priority the master we follow last advertised (backup only).
    master_priority: Option<u8>,
    preemption: Preemption,
}

/// Centiseconds (the wire unit) to a duration.
fn cs(value: u64) -> Duration {
    Duration::from_millis(value * 10)
}

impl Instance {
    pub fn new(config: Config) -> Self {
        let master_adver_interval_cs = config.advert_interval_cs;
        Self {
            config,
            state: VrrpState::Init,
            track: TrackState::default(),
            master_adver_interval_cs,
            master_address: None,
            master_priority: None,
            preemption: Preemption::Idle,
        }
    }

    pub fn state(&self) -> VrrpState {
        self.state
    }

    pub fn track(&self) -> &TrackState {
        &self.track
    }

    pub fn master_address(&self) -> Option<Ipv4Addr> {
        self.master_address
    }

    /// Whether this backup has seen a lower-priority master and will take over from it once
    /// the preempt delay runs out: the VIP is about to move.
    pub fn preempt_pending(&self) -> bool {
        self.state == VrrpState::Backup && self.preemption != Preemption::Idle
    }

    pub fn master_adver_interval(&self) -> Duration {
        cs(u64::from(self.master_adver_interval_cs))
    }

    /// Base priority plus the tracked delta, kept in 1..=254: 0 would mean "releasing" on the
    /// wire and 255 "address owner", neither of which a tracked check may claim.
    pub fn effective_priority(&self) -> u8 {
        let p = i64::from(self.config.priority) + i64::from(self.track.priority_delta);
        u8::try_from(p.clamp(1, 254)).unwrap_or(1)
    }

    /// Skew_Time = ((256 − Priority) × Master_Adver_Interval) / 256 (§6.1, version 3), kept
    /// exact in microseconds rather than truncated to centiseconds: the difference in skew is
    /// the only thing that lets the highest-priority backup win a race after a master dies.
    pub fn skew_time(&self) -> Duration {
        let p = u64::from(self.effective_priority());
        Duration::from_micros((256 - p) * u64::from(self.master_adver_interval_cs) * 10_000 / 256)
    }

    /// Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time (§6.1).
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_interval() * 3 + self.skew_time()
    }

    fn advert_interval(&self) -> Duration {
        cs(u64::from(self.config.advert_interval_cs))
    }

    /// Feeds one event; returns the actions to execute, in order.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        match (self.state, event) {
            (_, Event::Track(track)) => self.on_track(track),
            (VrrpState::Init, Event::Startup) => {
                if self.track.force_fault {
                    self.state = VrrpState::Fault;
                    Vec::new()
                } else {
                    self.enter_backup_fresh()
                }
            }
            (VrrpState::Init, _) => Vec::new(),
            (VrrpState::Backup, event) => self.in_backup(event),
            (VrrpState::Master, event) => self.in_master(event),
            (VrrpState::Fault, Event::Shutdown) => {
                self.state = VrrpState::Init;
                Vec::new()
            }
            (VrrpState::Fault, Event::Advert { src, priority, .. }) => {
                self.master_address = (priority > 0).then_some(src);
                Vec::new()
            }
            (VrrpState::Fault, _) => Vec::new(),
        }
    }

    /// §6.4.1 (startup) and leaving fault: wait a full Master_Down_Interval at our own
    /// interval before claiming mastership.
    fn enter_backup_fresh(&mut self) -> Vec<Action> {
        self.state = VrrpState::Backup;
        self.master_adver_interval_cs = self.config.advert_interval_cs;
        self.master_address = None;
        self.master_priority = None;
        self.preemption = Preemption::Idle;
        vec![Action::Arm(Timer::MasterDown, self.master_down_interval())]
    }

    /// §6.4.2.
    fn in_backup(&mut self, event: Event) -> Vec<Action> {
        match event {
            Event::Shutdown => {
                self.state = VrrpState::Init;
                vec![
                    Action::Cancel(Timer::MasterDown),
                    Action::Cancel(Timer::PreemptDelay),
                ]
            }
            Event::MasterDownTimer => self.become_master(),
            Event::Advert { priority: 0, .. } => {
                // "If the Priority in the ADVERTISEMENT is zero, then: Set the
                // Master_Down_Timer to Skew_Time."
                self.master_address = None;
                self.master_priority = None;
                vec![Action::Arm(Timer::MasterDown, self.skew_time())]
            }
            Event::Advert {
                src,
                priority,
                max_advert_int_cs,
            } => {
                // Weighed on every advert, a discarded one too: a later tracked change of our
                // own priority must meet the master's priority of now.
                self.master_priority = Some(priority);
                let mut actions = self.weigh_master(priority);
                // "Otherwise: Discard the ADVERTISEMENT" — once the preempt delay no longer
                // tolerates this lower-priority master.
                if self.preemption == Preemption::Due {
                    return actions;
                }
                // "If Preempt_Mode is False, or if the Priority in the ADVERTISEMENT is
                // greater than or equal to the local Priority: Reset the Master_Down_Timer to
                // Master_Down_Interval", having learnt the master's interval (version 3).
                self.master_address = Some(src);
                self.master_adver_interval_cs = max_advert_int_cs;
                actions.push(Action::Arm(Timer::MasterDown, self.master_down_interval()));
                actions
            }
            Event::PreemptDelayExpired => {
                if self.preemption == Preemption::Waiting {
                    self.preemption = Preemption::Due;
                }
                Vec::new()
            }
            Event::AdvertTimer | Event::Startup | Event::Track(_) => Vec::new(),
        }
    }

    /// Holds the master's advertised priority against ours: a lower-priority master starts
    /// the preempt delay (or, with none, is due to be preempted at once); one of at least our
    /// priority calls off a preemption under way. Run on each advert and whenever a tracked
    /// check moves our priority, so the delay starts the moment we outrank the master.
    fn weigh_master(&mut self, priority: u8) -> Vec<Action> {
        let mut actions = Vec::new();
        if priority >= self.effective_priority() {
            if self.preemption != Preemption::Idle {
                actions.push(Action::Cancel(Timer::PreemptDelay));
            }
            self.preemption = Preemption::Idle;
        } else if self.config.preempt && self.preemption == Preemption::Idle {
            if self.config.preempt_delay.is_zero() {
                self.preemption = Preemption::Due;
            } else {
                self.preemption = Preemption::Waiting;
                actions.push(Action::Arm(Timer::PreemptDelay, self.config.preempt_delay));
            }
        }
        actions
    }

    /// §6.4.2 "If the Master_Down_Timer fires".
    fn become_master(&mut self) -> Vec<Action> {
        self.state = VrrpState::Master;
        self.master_address = Some(self.config.local_address);
        self.master_priority = None;
        let mut actions = Vec::new();
        if self.preemption != Preemption::Idle {
            actions.push(Action::Cancel(Timer::PreemptDelay));
            self.preemption = Preemption::Idle;
        }
        actions.extend([
            Action::SendAdvert {
                priority: self.effective_priority(),
            },
            Action::AddVip,
            Action::SendGratuitousArp,
            Action::Arm(Timer::Advert, self.advert_interval()),
        ]);
        actions
    }

    /// §6.4.3.
    fn in_master(&mut self, event: Event) -> Vec<Action> {
        match event {
            Event::Shutdown => self.release(VrrpState::Init),
            Event::AdvertTimer => self.advertise_now(),
            // "If the Priority in the ADVERTISEMENT is zero, then: Send an ADVERTISEMENT;
            // Reset the Adver_Timer to Advertisement_Interval".
            Event::Advert { priority: 0, .. } => self.advertise_now(),
            Event::Advert {
                src,
                priority,
                max_advert_int_cs,
            } => {
                let local = self.effective_priority();
                let wins = priority > local
                    || (priority == local && u32::from(src) > u32::from(self.config.local_address));
                if !wins {
                    // §6.4.3 says "Otherwise (i.e., the lower priority): Discard the
                    // ADVERTISEMENT". Only a master advertises, so this is a second master:
                    // a partition healed (a link back up) and both held the VIP meanwhile.
                    // As keepalived does (vrrp_state_master_rx: an advert, then gratuitous
                    // ARPs), answer at once so the other steps down now rather than at our
                    // next tick, and tell the segment where the VIP is: its neighbours
                    // learnt the other's MAC while we were cut off, and would keep sending
                    // there until their entries went stale, seconds later.
                    let mut actions = self.advertise_now();
                    actions.push(Action::SendGratuitousArp);
                    return actions;
                }
                self.state = VrrpState::Backup;
                self.master_address = Some(src);
                self.master_priority = Some(priority);
                self.master_adver_interval_cs = max_advert_int_cs;
                vec![
                    Action::Cancel(Timer::Advert),
                    Action::RemoveVip,
                    Action::Arm(Timer::MasterDown, self.master_down_interval()),
                ]
            }
            Event::MasterDownTimer
            | Event::PreemptDelayExpired
            | Event::Startup
            | Event::Track(_) => Vec::new(),
        }
    }

    /// A master leaving (§6.4.3 "If a Shutdown event is received": cancel the Adver_Timer,
    /// send an ADVERTISEMENT with Priority = 0), and giving the VIP back.
    fn release(&mut self, next: VrrpState) -> Vec<Action> {
        self.state = next;
        self.master_address = None;
        self.master_priority = None;
        vec![
            Action::Cancel(Timer::Advert),
            Action::SendAdvert { priority: 0 },
            Action::RemoveVip,
        ]
    }

    fn advertise_now(&self) -> Vec<Action> {
        vec![
            Action::SendAdvert {
                priority: self.effective_priority(),
            },
            Action::Arm(Timer::Advert, self.advert_interval()),
        ]
    }

    /// Tracked checks changed. A master announces a new priority at once rather than at the
    /// next tick; a forced fault releases the VIP with a priority-0 advert so a backup takes
    /// over after Skew_Time instead of Master_Down_Interval.
    fn on_track(&mut self, track: TrackState) -> Vec<Action> {
        let before = self.effective_priority();
        let was_forced = self.track.force_fault;
        self.track = track;
        let forced = self.track.force_fault;
        match self.state {
            VrrpState::Init => Vec::new(),
            VrrpState::Fault if !forced => self.enter_backup_fresh(),
            VrrpState::Fault => Vec::new(),
            VrrpState::Backup if forced => {
                self.state = VrrpState::Fault;
                self.master_address = None;
                self.master_priority = None;
                self.preemption = Preemption::Idle;
                vec![
                    Action::Cancel(Timer::MasterDown),
                    Action::Cancel(Timer::PreemptDelay),
                ]
            }
            VrrpState::Backup => match self.master_priority {
                Some(p) if self.effective_priority() != before => self.weigh_master(p),
                _ => Vec::new(),
            },
            VrrpState::Master if forced && !was_forced => self.release(VrrpState::Fault),
            VrrpState::Master if self.effective_priority() != before => self.advertise_now(),
            VrrpState::Master => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::HashMap;

    use super::*;

    const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const LOWER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const HIGHER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

    fn config(priority: u8) -> Config {
        Config {
            priority,
            advert_interval_cs: 10,
            local_address: ME,
            preempt: true,
            preempt_delay: Duration::ZERO,
        }
    }

    /// What a master does when it leaves (§6.4.3 shutdown, or a forced fault).
    const RELEASE: [Action; 3] = [
        Action::Cancel(Timer::Advert),
        Action::SendAdvert { priority: 0 },
        Action::RemoveVip,
    ];

    fn advert(src: Ipv4Addr, priority: u8) -> Event {
        Event::Advert {
            src,
            priority,
            max_advert_int_cs: 10,
        }
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// A virtual clock: executes Arm/Cancel, fires due timers in deadline order, and records
    /// every other action with the virtual time it happened at.
    struct Sim {
        inst: Instance,
        now: Duration,
        timers: HashMap<Timer, Duration>,
        log: Vec<(Duration, Action)>,
    }

    impl Sim {
        fn new(config: Config) -> Self {
            let mut sim = Self {
                inst: Instance::new(config),
                now: Duration::ZERO,
                timers: HashMap::new(),
                log: Vec::new(),
            };
            sim.feed(Event::Startup);
            sim
        }

        fn feed(&mut self, event: Event) -> Vec<Action> {
            let actions = self.inst.handle(event);
            for action in &actions {
                match action {
                    Action::Arm(t, d) => {
                        self.timers.insert(*t, self.now + *d);
                    }
                    Action::Cancel(t) => {
                        self.timers.remove(t);
                    }
                    other => self.log.push((self.now, other.clone())),
                }
            }
            actions
        }

        /// A priority-100 node that has become master (no other router heard).
        fn master() -> Self {
            let mut sim = Self::new(config(100));
            sim.advance_to(ms(400));
            assert_eq!(sim.inst.state(), VrrpState::Master);
            sim
        }

        /// Advances virtual time to `to`, firing timers on the way.
        fn advance_to(&mut self, to: Duration) {
            loop {
                let next = self
                    .timers
                    .iter()
                    .filter(|(_, at)| **at <= to)
                    .min_by_key(|(_, at)| **at)
                    .map(|(t, at)| (*t, *at));
                let Some((timer, at)) = next else { break };
                self.timers.remove(&timer);
                self.now = at;
                self.feed(match timer {
                    Timer::Advert => Event::AdvertTimer,
                    Timer::MasterDown => Event::MasterDownTimer,
                    Timer::PreemptDelay => Event::PreemptDelayExpired,
                });
            }
            self.now = to;
        }

        fn deadline(&self, timer: Timer) -> Option<Duration> {
            self.timers.get(&timer).copied()
        }

        fn became_master_at(&self) -> Option<Duration> {
            self.log
                .iter()
                .find(|(_, a)| *a == Action::AddVip)
                .map(|(t, _)| *t)
        }
    }

    /// §6.1: Skew_Time = ((256 − 100) × 10 cs) / 256 = 60.9375 ms; Master_Down_Interval =
    /// 3 × 100 ms + Skew_Time.
    #[test]
    fn computes_skew_time_and_master_down_interval_per_6_1() {
        let inst = Instance::new(config(100));
        assert_eq!(inst.skew_time(), Duration::from_micros(60_937));
        assert_eq!(inst.master_down_interval(), Duration::from_micros(360_937));
        assert_eq!(
            Instance::new(config(254)).skew_time(),
            Duration::from_micros(781)
        );
    }

    /// §6.4.1: startup goes to Backup with Master_Down_Timer = Master_Down_Interval.
    #[test]
    fn startup_enters_backup_and_arms_master_down_timer() {
        let sim = Sim::new(config(100));
        assert_eq!(sim.inst.state(), VrrpState::Backup);
        assert_eq!(
            sim.deadline(Timer::MasterDown),
            Some(Duration::from_micros(360_937))
        );
        assert!(sim.log.is_empty(), "a starting node must not claim the VIP");
    }

    /// §6.4.2: when Master_Down_Timer fires: send an advert, broadcast gratuitous ARP, set
    /// Adver_Timer, become Master.
    #[test]
    fn backup_becomes_master_when_no_advert_arrives() {
        let mut sim = Sim::new(config(100));
        sim.advance_to(ms(361));
        assert_eq!(sim.inst.state(), VrrpState::Master);
        let actions: Vec<_> = sim.log.iter().map(|(_, a)| a.clone()).collect();
        assert_eq!(
            actions,
            [
                Action::SendAdvert { priority: 100 },
                Action::AddVip,
                Action::SendGratuitousArp
            ]
        );
        assert_eq!(
            sim.deadline(Timer::Advert),
            Some(Duration::from_micros(360_937) + ms(100))
        );
    }

    /// §6.4.3: a master sends an advert every Advertisement_Interval.
    #[test]
    fn master_advertises_every_interval() {
        let mut sim = Sim::new(config(100));
        sim.advance_to(ms(1361));
        let sent = sim
            .log
            .iter()
            .filter(|(_, a)| matches!(a, Action::SendAdvert { priority: 100 }))
            .count();
        assert_eq!(sent, 11);
    }

    /// §6.4.2: adverts from a higher-priority master keep resetting Master_Down_Timer.
    #[test]
    fn backup_stays_backup_while_a_higher_priority_master_advertises() {
        let mut sim = Sim::new(config(100));
        for i in 0..50 {
            sim.advance_to(ms(i * 100));
            sim.feed(advert(HIGHER_ADDR, 150));
        }
        sim.advance_to(ms(5000));
        assert_eq!(sim.inst.state(), VrrpState::Backup);
        assert_eq!(sim.inst.master_address(), Some(HIGHER_ADDR));
    }

    /// §6.4.2 (version 3): a backup learns Master_Adver_Interval from the advert and derives
    /// Master_Down_Interval and Skew_Time from it.
    #[test]
    fn backup_learns_master_adver_interval_from_adverts() {
        let mut sim = Sim::new(config(100));
        sim.feed(Event::Advert {
            src: HIGHER_ADDR,
            priority: 150,
            max_advert_int_cs: 100,
        });
        assert_eq!(sim.inst.master_adver_interval(), ms(1000));
        // 3 × 1 s + (156 × 1 s) / 256
        assert_eq!(
            sim.deadline(Timer::MasterDown),
            Some(Duration::from_micros(3_609_375))
        );
    }

    /// §6.4.2: a priority-0 advert sets Master_Down_Timer to Skew_Time.
    #[test]
    fn priority_zero_advert_shortens_takeover_to_skew_time() {
        let mut sim = Sim::new(config(100));
        sim.feed(advert(HIGHER_ADDR, 150));
        sim.advance_to(ms(50));
        sim.feed(advert(HIGHER_ADDR, 0));
        assert_eq!(
            sim.deadline(Timer::MasterDown),
            Some(ms(50) + Duration::from_micros(60_937))
        );
        sim.advance_to(ms(112));
        assert_eq!(
            sim.became_master_at(),
            Some(ms(50) + Duration::from_micros(60_937))
        );
    }

    /// §6.4.2 with Preempt_Mode true: lower-priority adverts are discarded, so the backup
    /// takes over after Master_Down_Interval.
    #[test]
    fn higher_priority_backup_preempts_a_lower_priority_master() {
        let mut sim = Sim::new(config(100));
        for i in 0..10 {
            sim.advance_to(ms(i * 100));
            sim.feed(advert(LOWER_ADDR, 50));
        }
        assert_eq!(sim.inst.state(), VrrpState::Master);
        assert_eq!(sim.became_master_at(), Some(Duration::from_micros(360_937)));
    }

    /// §6.4.2 with Preempt_Mode false: a lower-priority master is followed like any other.
    #[test]
    fn no_preempt_backup_follows_a_lower_priority_master() {
        let mut sim = Sim::new(Config {
            preempt: false,
            ..config(100)
        });
        for i in 0..20 {
            sim.advance_to(ms(i * 100));
            sim.feed(advert(LOWER_ADDR, 50));
        }
        assert_eq!(sim.inst.state(), VrrpState::Backup);
        assert_eq!(sim.inst.master_address(), Some(LOWER_ADDR));
    }

    /// keepalived's preempt_delay: the lower-priority master is tolerated until the delay
    /// ends, then its adverts are discarded and Master_Down_Timer fires.
    #[test]
    fn preempt_delay_holds_off_preemption_until_it_expires() {
        let mut sim = Sim::new(Config {
            preempt_delay: ms(1000),
            ..config(100)
        });
        for i in 0..30 {
            sim.advance_to(ms(i * 100));
            sim.feed(advert(LOWER_ADDR, 50));
        }
        // Delay armed at 0 ends at 1000; the advert at 1000 is the first one discarded.
        assert_eq!(
            sim.became_master_at(),
            Some(ms(900) + Duration::from_micros(360_937))
        );
    }

    /// While the delay runs, the backup says the VIP is about to move (operators and the
    /// failover drill wait for it); not before a lower master is seen, not once master.
    #[test]
    fn a_running_preempt_delay_is_reported_until_the_takeover() {
        let mut sim = Sim::new(Config {
            preempt_delay: ms(1000),
            ..config(100)
        });
        sim.advance_to(ms(0));
        assert!(!sim.inst.preempt_pending());
        sim.feed(advert(LOWER_ADDR, 50));
        assert_eq!(sim.inst.state(), VrrpState::Backup);
        assert!(sim.inst.preempt_pending());
        for i in 1..30 {
            sim.advance_to(ms(i * 100));
            sim.feed(advert(LOWER_ADDR, 50));
        }
        assert_eq!(sim.inst.state(), VrrpState::Master);
        assert!(!sim.inst.preempt_pending());

        let mut at_once = Sim::new(config(100));
        at_once.advance_to(ms(0));
        at_once.feed(advert(LOWER_ADDR, 50));
        assert_eq!(at_once.inst.state(), VrrpState::Backup);
        assert!(at_once.inst.preempt_pending());

        let mut follower = Sim::new(Config {
            preempt: false,
            ..config(100)
        });
        follower.advance_to(ms(0));
        follower.feed(advert(LOWER_ADDR, 50));
        assert!(!follower.inst.preempt_pending());
    }

    /// A tracked check that lifts a backup above the master it follows starts the preempt
    /// delay at once (not at the master's next advert), and one that drops it again calls the
    /// preemption off at once: what the backup reports is never a stale "settled".
    #[test]
    fn a_priority_change_from_tracking_weighs_the_master_at_once() {
        let track = |delta| {
            Event::Track(TrackState {
                priority_delta: delta,
                ..TrackState::default()
            })
        };
        let mut sim = Sim::new(Config {
            preempt_delay: ms(1000),
            ..config(100)
        });
        sim.feed(track(-60));
        for i in 0..3 {
            sim.advance_to(ms(i * 100));
            sim.feed(advert(LOWER_ADDR, 50));
        }
        assert!(!sim.inst.preempt_pending(), "40 < 50: following the master");
        sim.advance_to(ms(250));
        sim.feed(track(0));
        assert!(
            sim.inst.preempt_pending(),
            "100 > 50: preempting, delay running"
        );
        assert!(sim.timers.contains_key(&Timer::PreemptDelay));
        sim.feed(track(-60));
        assert!(!sim.inst.preempt_pending());
        assert!(!sim.timers.contains_key(&Timer::PreemptDelay));
        sim.feed(track(0));
        for i in 3..30 {
            sim.advance_to(ms(i * 100));
            sim.feed(advert(LOWER_ADDR, 50));
        }
        assert_eq!(sim.inst.state(), VrrpState::Master);
        // The delay ran from the track change at 250 ms: first advert discarded at 1300.
        let at = sim.became_master_at().unwrap();
        assert!(at > ms(1200) && at < ms(1700), "{at:?}");

        // Due against a master at 50 (no delay): the master's own priority rises to 80 in an
        // advert that is discarded, then ours drops to 60: weighed against 80, not 50, the
        // preemption is off and the master is followed again.
        let mut due = Sim::new(config(100));
        due.advance_to(ms(0));
        due.feed(advert(LOWER_ADDR, 50));
        assert!(due.inst.preempt_pending());
        due.feed(advert(LOWER_ADDR, 80));
        due.feed(track(-40));
        assert!(!due.inst.preempt_pending(), "60 < 80: no preemption");
        due.feed(advert(LOWER_ADDR, 80));
        assert_eq!(due.inst.master_address(), Some(LOWER_ADDR));
    }

    /// The preempt delay restarts once a master of at least our priority was seen.
    #[test]
    fn preempt_delay_resets_when_a_higher_priority_master_appears() {
        let mut sim = Sim::new(Config {
            preempt_delay: ms(1000),
            ..config(100)
        });
        sim.feed(advert(LOWER_ADDR, 50));
        sim.advance_to(ms(100));
        let actions = sim.feed(advert(HIGHER_ADDR, 150));
        assert!(actions.contains(&Action::Cancel(Timer::PreemptDelay)));
        assert_eq!(sim.deadline(Timer::PreemptDelay), None);
    }

    /// §6.4.3: a master yields to a higher-priority advert: cancel Adver_Timer, arm
    /// Master_Down_Timer, go Backup, and (for us) release the VIP.
    #[test]
    fn master_yields_to_higher_priority() {
        let mut sim = Sim::master();
        let actions = sim.feed(Event::Advert {
            src: LOWER_ADDR,
            priority: 150,
            max_advert_int_cs: 20,
        });
        assert_eq!(sim.inst.state(), VrrpState::Backup);
        assert_eq!(
            actions,
            [
                Action::Cancel(Timer::Advert),
                Action::RemoveVip,
                Action::Arm(Timer::MasterDown, ms(600) + Duration::from_micros(121_875)),
            ]
        );
    }

    /// §6.4.3: on equal priority the higher primary address wins (unsigned comparison in
    /// network byte order).
    #[test]
    fn priority_tie_goes_to_the_higher_primary_address() {
        let mut sim = Sim::master();
        // The lower address loses: answered, as any second master is.
        assert!(
            sim.feed(advert(LOWER_ADDR, 100))
                .contains(&Action::SendGratuitousArp)
        );
        assert_eq!(sim.inst.state(), VrrpState::Master);
        sim.feed(advert(HIGHER_ADDR, 100));
        assert_eq!(sim.inst.state(), VrrpState::Backup);
    }

    /// A lower-priority advert can only come from a second master (a healed partition): the
    /// master keeps the VIP and answers at once with an advert and gratuitous ARPs, as
    /// keepalived does, instead of discarding it silently (§6.4.3).
    #[test]
    fn master_answers_a_lower_priority_master_with_an_advert_and_gratuitous_arps() {
        let mut sim = Sim::master();
        assert_eq!(
            sim.feed(advert(HIGHER_ADDR, 99)),
            [
                Action::SendAdvert { priority: 100 },
                Action::Arm(Timer::Advert, ms(100)),
                Action::SendGratuitousArp
            ]
        );
        assert_eq!(sim.inst.state(), VrrpState::Master);
    }

    /// §6.4.3: a master answers a priority-0 advert with an advert and resets Adver_Timer.
    #[test]
    fn master_answers_priority_zero_advert_at_once() {
        let mut sim = Sim::master();
        let actions = sim.feed(advert(HIGHER_ADDR, 0));
        assert_eq!(
            actions,
            [
                Action::SendAdvert { priority: 100 },
                Action::Arm(Timer::Advert, ms(100))
            ]
        );
    }

    /// §6.4.3: on shutdown a master cancels Adver_Timer and sends a priority-0 advert; we also
    /// remove the VIP.
    #[test]
    fn shutdown_as_master_sends_priority_zero_and_releases_the_vip() {
        let mut sim = Sim::master();
        let actions = sim.feed(Event::Shutdown);
        assert_eq!(actions, RELEASE);
        assert_eq!(sim.inst.state(), VrrpState::Init);
    }

    /// §6.4.2: shutdown as backup only cancels the timer.
    #[test]
    fn shutdown_as_backup_sends_nothing() {
        let mut sim = Sim::new(config(100));
        let actions = sim.feed(Event::Shutdown);
        assert!(actions.iter().all(|a| matches!(a, Action::Cancel(_))));
        assert_eq!(sim.inst.state(), VrrpState::Init);
    }

    /// After a master dies, the backup with the higher priority has the shorter
    /// Master_Down_Interval and takes over first; the gap is (Δpriority / 256) × interval.
    #[test]
    fn higher_priority_backup_wins_the_race_after_the_master_dies() {
        let mut high = Sim::new(config(100));
        let mut low = Sim::new(Config {
            local_address: HIGHER_ADDR,
            ..config(50)
        });
        for sim in [&mut high, &mut low] {
            sim.feed(advert(Ipv4Addr::new(10, 0, 0, 9), 150));
            sim.advance_to(ms(1000));
        }
        let (h, l) = (
            high.became_master_at().unwrap(),
            low.became_master_at().unwrap(),
        );
        assert!(h < l);
        assert_eq!(l - h, Duration::from_micros(19_531));
    }

    #[test]
    fn track_delta_changes_effective_priority_within_1_to_254() {
        let mut inst = Instance::new(config(100));
        inst.handle(Event::Track(TrackState {
            priority_delta: -60,
            ..TrackState::default()
        }));
        assert_eq!(inst.effective_priority(), 40);
        inst.handle(Event::Track(TrackState {
            priority_delta: -500,
            ..TrackState::default()
        }));
        assert_eq!(inst.effective_priority(), 1);
        inst.handle(Event::Track(TrackState {
            priority_delta: 500,
            ..TrackState::default()
        }));
        assert_eq!(inst.effective_priority(), 254);
    }

    /// A master announces a tracked priority drop at once, so a preempting backup sees it.
    #[test]
    fn master_advertises_a_tracked_priority_drop_immediately() {
        let mut sim = Sim::master();
        let actions = sim.feed(Event::Track(TrackState {
            priority_delta: -60,
            ..TrackState::default()
        }));
        assert_eq!(
            actions,
            [
                Action::SendAdvert { priority: 40 },
                Action::Arm(Timer::Advert, ms(100))
            ]
        );
        // And the drop lets a priority-50 advert take over.
        sim.feed(advert(LOWER_ADDR, 50));
        assert_eq!(sim.inst.state(), VrrpState::Backup);
    }

    #[test]
    fn forced_fault_releases_the_vip_and_returns_to_backup_when_cleared() {
        let mut sim = Sim::master();
        let fault = TrackState {
            force_fault: true,
            reasons: vec!["apiserver down".into()],
            ..TrackState::default()
        };
        let actions = sim.feed(Event::Track(fault));
        assert_eq!(actions, RELEASE);
        assert_eq!(sim.inst.state(), VrrpState::Fault);
        // In fault nothing claims the VIP, however long we wait.
        sim.advance_to(ms(5000));
        assert_eq!(sim.inst.state(), VrrpState::Fault);
        sim.feed(Event::Track(TrackState::default()));
        assert_eq!(sim.inst.state(), VrrpState::Backup);
        assert_eq!(
            sim.deadline(Timer::MasterDown),
            Some(ms(5000) + Duration::from_micros(360_937))
        );
    }

    #[test]
    fn startup_with_forced_fault_stays_out() {
        let mut inst = Instance::new(config(100));
        inst.handle(Event::Track(TrackState {
            force_fault: true,
            ..TrackState::default()
        }));
        assert!(inst.handle(Event::Startup).is_empty());
        assert_eq!(inst.state(), VrrpState::Fault);
    }
}
