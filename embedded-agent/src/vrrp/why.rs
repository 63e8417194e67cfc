//! Why the state machine did what it did, in words, for the event log (pure: the runner
//! hands in the event, the states around it and what it remembers of the last advert).

use std::net::Ipv4Addr;
use std::time::Duration;

use super::instance::Event;
use super::{TrackState, VrrpState};

/// What the runner knows besides the event itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Source and priority of the last accepted advert, before this event.
    pub last_advert: Option<(Ipv4Addr, u8)>,
    /// Our effective priority before the event.
    pub our_priority: u8,
    /// Master_Down_Interval before the event (§6.1).
    pub master_down: Duration,
}

/// The reason for a change of state from `before` to `after` caused by `event`.
pub fn transition(event: &Event, before: VrrpState, after: VrrpState, seen: &Seen) -> String {
    let ms = |d: Duration| d.as_millis();
    match (event, after) {
        (Event::Startup, VrrpState::Fault) => "started with a tracked check forcing fault".into(),
        (Event::Startup, _) => format!(
            "started; a master must be heard within Master_Down_Interval ({} ms)",
            ms(seen.master_down)
        ),
        (Event::Shutdown, _) if before == VrrpState::Master => {
            "stopping: priority-0 advert sent, VIP released (RFC 5798 §6.4.3)".into()
        }
        (Event::Shutdown, _) => "stopping".into(),
        (Event::MasterDownTimer, VrrpState::Master) => match seen.last_advert {
            None => format!(
                "no advert heard for Master_Down_Interval ({} ms) since start",
                ms(seen.master_down)
            ),
            Some((src, 0)) => format!("master {src} resigned (priority-0 advert)"),
            Some((src, p)) if p < seen.our_priority => format!(
                "preempting master {src} (priority {p} < ours {})",
                seen.our_priority
            ),
            Some((src, _)) => format!(
                "no advert from master {src} for Master_Down_Interval ({} ms)",
                ms(seen.master_down)
            ),
        },
        (Event::PreemptDelayExpired, VrrpState::Master) => {
            "preempt delay over: taking over from a lower-priority master".into()
        }
        (Event::Advert { src, priority, .. }, VrrpState::Backup) => {
            if *priority > seen.our_priority {
                format!(
                    "advert from {src} with higher priority {priority} (ours {})",
                    seen.our_priority
                )
            } else {
                format!("advert from {src} with equal priority {priority} and a higher address")
            }
        }
        (Event::Track(t), VrrpState::Fault) => {
            format!("tracked check forces fault: {}", reasons(t))
        }
        (Event::Track(_), VrrpState::Backup) if before == VrrpState::Fault => {
            "tracked checks no longer force fault".into()
        }
        (other, _) => format!("{other:?}"),
    }
}

/// The reason for a change of effective priority by tracked checks.
pub fn priority(track: &TrackState) -> String {
    if track.reasons.is_empty() {
        "tracked checks pass".into()
    } else {
        format!("tracked checks: {}", reasons(track))
    }
}

fn reasons(t: &TrackState) -> String {
    if t.reasons.is_empty() {
        "no reason given".into()
    } else {
        t.reasons.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);

    fn seen(last: Option<(Ipv4Addr, u8)>) -> Seen {
        Seen {
            last_advert: last,
            our_priority: 100,
            master_down: Duration::from_micros(360_937),
        }
    }

    #[test]
    fn a_takeover_says_whether_the_master_went_silent_resigned_or_was_preempted() {
        let t = |last| {
            transition(
                &Event::MasterDownTimer,
                VrrpState::Backup,
                VrrpState::Master,
                &seen(last),
            )
        };
        assert_eq!(
            t(Some((PEER, 150))),
            "no advert from master 10.0.0.11 for Master_Down_Interval (360 ms)"
        );
        assert_eq!(
            t(Some((PEER, 0))),
            "master 10.0.0.11 resigned (priority-0 advert)"
        );
        assert_eq!(
            t(Some((PEER, 50))),
            "preempting master 10.0.0.11 (priority 50 < ours 100)"
        );
        assert!(t(None).contains("since start"));
    }

    #[test]
    fn yielding_to_an_advert_names_its_sender_and_priority() {
        let advert = Event::Advert {
            src: PEER,
            priority: 150,
            max_advert_int_cs: 10,
        };
        let why = transition(&advert, VrrpState::Master, VrrpState::Backup, &seen(None));
        assert_eq!(
            why,
            "advert from 10.0.0.11 with higher priority 150 (ours 100)"
        );
    }

    #[test]
    fn a_forced_fault_names_the_failing_check() {
        let track = TrackState {
            priority_delta: 0,
            force_fault: true,
            reasons: vec!["listener: no healthy backend".into()],
            pending: false,
        };
        let why = transition(
            &Event::Track(track),
            VrrpState::Master,
            VrrpState::Fault,
            &seen(None),
        );
        assert_eq!(
            why,
            "tracked check forces fault: listener: no healthy backend"
        );
    }

    #[test]
    fn a_clean_stop_of_a_master_says_it_handed_over() {
        let why = transition(
            &Event::Shutdown,
            VrrpState::Master,
            VrrpState::Init,
            &seen(None),
        );
        assert!(why.contains("priority-0"), "{why}");
    }

    #[test]
    fn priority_changes_carry_the_checks_reasons() {
        let track = TrackState {
            priority_delta: -50,
            force_fault: false,
            reasons: vec!["local-apiserver: backend cp1 down".into()],
            pending: false,
        };
        assert_eq!(
            priority(&track),
            "tracked checks: local-apiserver: backend cp1 down"
        );
        assert_eq!(priority(&TrackState::default()), "tracked checks pass");
    }
}
