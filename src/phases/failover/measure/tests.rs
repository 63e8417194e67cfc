use super::*;

const T0: u64 = 1_000_000_000;

fn probe(start_ms: u64, ok: bool) -> Probe {
    Probe {
        start_us: T0 + start_ms * 1000,
        end_us: T0 + start_ms * 1000 + 5_000,
        ok,
        error: (!ok).then(|| "connection refused".to_owned()),
    }
}

fn vrrp(seq: u64, from: &str, to: &str, at_ms: u64) -> AgentEvent {
    vrrp_event(seq, from, to, T0 + at_ms * 1000)
}

fn marks(end_ms: u64) -> Marks {
    Marks {
        start_us: T0 - 1_000_000,
        break_us: T0,
        restore_us: Some(T0 + 3_000_000),
        healthy_us: Some(T0 + 5_500_000),
        end_us: T0 + end_ms * 1000,
    }
}

fn observed(node: &str) -> Broken {
    Broken {
        node: node.into(),
        dark_until_us: None,
    }
}

fn nodes(list: Vec<(&str, Vec<AgentEvent>)>) -> Vec<NodeEvents> {
    list.into_iter()
        .map(|(n, events)| NodeEvents {
            node: n.into(),
            events,
        })
        .collect()
}

#[test]
fn one_outage_lasts_from_the_first_failed_probe_to_the_first_success_again() {
    let probes = [
        probe(0, true),
        probe(20, false),
        probe(40, false),
        probe(60, false),
        probe(80, true),
        probe(100, true),
    ];
    let f = figures(&marks(200), "cp1", &observed("cp1"), &probes, &[], &[]);
    assert_eq!(f.api_unavailable_ms, 60.0);
    assert_eq!(f.longest_outage_ms, 60.0);
    assert_eq!((f.probes, f.failed_probes), (6, 3));
}

#[test]
fn scattered_failures_add_up_and_the_longest_run_is_kept() {
    let probes = [
        probe(0, false),
        probe(20, true),
        probe(40, false),
        probe(60, false),
        probe(80, true),
    ];
    let f = figures(&marks(200), "cp1", &observed("cp1"), &probes, &[], &[]);
    assert_eq!(f.api_unavailable_ms, 60.0);
    assert_eq!(f.longest_outage_ms, 40.0);
}

#[test]
fn failures_before_the_break_do_not_count_and_an_unended_outage_runs_to_its_last_probe() {
    let early = Probe {
        start_us: T0 - 50_000,
        end_us: T0 - 45_000,
        ok: false,
        error: None,
    };
    let probes = [early, probe(10, false), probe(30, false)];
    let f = figures(&marks(200), "cp1", &observed("cp1"), &probes, &[], &[]);
    assert_eq!(f.failed_probes, 2);
    // 10 ms → the end of the probe started at 30 ms (35 ms).
    assert_eq!(f.api_unavailable_ms, 25.0);
}

#[test]
fn takeover_is_the_first_other_node_becoming_master_after_the_break() {
    let events = nodes(vec![
        ("cp1", vec![vrrp(1, "init", "backup", 900)]),
        (
            "cp2",
            vec![
                vrrp(1, "backup", "master", 361),
                vrrp(2, "master", "backup", 1_200),
            ],
        ),
        ("cp3", vec![]),
    ]);
    let broken = Broken {
        node: "cp1".into(),
        dark_until_us: Some(T0 + 900_000),
    };
    let f = figures(&marks(5_000), "cp1", &broken, &[], &[], &events);
    assert_eq!(f.vip_takeover_ms, Some(361.0));
    assert_eq!(f.new_holder.as_deref(), Some("cp2"));
    assert_eq!(f.vip_moves, 1);
    assert_eq!(f.max_holders, 1);
    assert_eq!(f.split_brain_ms, 0.0);
}

#[test]
fn two_masters_at_once_is_measured_as_split_brain() {
    let events = nodes(vec![
        ("cp1", vec![]),
        ("cp2", vec![vrrp(1, "backup", "master", 100)]),
        (
            "cp3",
            vec![
                vrrp(1, "backup", "master", 300),
                vrrp(2, "master", "backup", 450),
            ],
        ),
    ]);
    // cp1 (the old holder) is observed and never left master.
    let f = figures(&marks(1_000), "cp1", &observed("cp1"), &[], &[], &events);
    assert_eq!(f.max_holders, 3);
    // cp1+cp2 from 100 ms to the end (1000), whatever cp3 did.
    assert_eq!(f.split_brain_ms, 900.0);
    assert_eq!(f.vip_moves, 2);
}

#[test]
fn a_dark_holder_that_comes_back_still_master_overlaps_until_it_yields() {
    // network-cut: cp1 is cut off 0..2000 ms and keeps claiming master; cp2 takes over.
    let events = nodes(vec![
        ("cp1", vec![vrrp(9, "master", "backup", 2_040)]),
        ("cp2", vec![vrrp(4, "backup", "master", 360)]),
    ]);
    let broken = Broken {
        node: "cp1".into(),
        dark_until_us: Some(T0 + 2_000_000),
    };
    let mut m = marks(3_000);
    m.restore_us = Some(T0 + 2_000_000);
    let f = figures(&m, "cp1", &broken, &[], &[], &events);
    assert_eq!(f.vip_takeover_ms, Some(360.0));
    // cp1 holds nothing believable while dark, then overlaps cp2 for 40 ms.
    assert_eq!(f.max_holders, 2);
    assert_eq!(f.split_brain_ms, 40.0);
}

#[test]
fn the_long_lived_connection_recovers_when_a_new_one_works() {
    let ll = [
        LongLived::Working {
            at_us: T0 - 5_000_000,
        },
        LongLived::Broken {
            at_us: T0 + 400_000,
            why: "reset".into(),
        },
        LongLived::Working {
            at_us: T0 + 650_000,
        },
    ];
    let f = figures(&marks(1_000), "cp1", &observed("cp1"), &[], &ll, &[]);
    assert!(f.long_lived_broken);
    assert_eq!(f.long_lived_closed_after_ms, Some(400.0));
    assert_eq!(f.long_lived_recovery_ms, Some(250.0));
    let unbroken = figures(&marks(1_000), "cp1", &observed("cp1"), &[], &ll[..1], &[]);
    assert!(!unbroken.long_lived_broken);
    assert_eq!(unbroken.long_lived_recovery_ms, None);
}

#[test]
fn healthy_after_counts_from_the_restore() {
    let f = figures(&marks(1_000), "cp1", &observed("cp1"), &[], &[], &[]);
    assert_eq!(f.healthy_after_ms, Some(2_500.0));
}

fn figures_with(api: f64, takeover: Option<f64>, moves: usize) -> Figures {
    Figures {
        vip_takeover_ms: takeover,
        new_holder: None,
        api_unavailable_ms: api,
        longest_outage_ms: api,
        probes: 10,
        failed_probes: 1,
        long_lived_broken: false,
        long_lived_closed_after_ms: None,
        long_lived_recovery_ms: None,
        vip_moves: moves,
        max_holders: 1,
        split_brain_ms: 0.0,
        healthy_after_ms: Some(1_000.0),
    }
}

fn targets() -> Targets {
    Targets {
        max_takeover_ms: Some(1_000.0),
        max_api_unavailable_ms: Some(2_000.0),
        max_long_lived_recovery_ms: Some(3_000.0),
        max_vip_moves: None,
        max_split_brain_ms: Some(1_000.0),
        max_healthy_after_ms: Some(60_000.0),
    }
}

#[test]
fn a_figure_over_its_target_is_a_miss_naming_the_target() {
    let missed = misses(&figures_with(2_500.0, Some(300.0), 1), &targets());
    assert_eq!(
        missed,
        [Miss {
            target: "max-api-unavailable",
            limit: "2000 ms".into(),
            measured: "2500 ms".into()
        }]
    );
    assert!(misses(&figures_with(1_999.0, Some(300.0), 1), &targets()).is_empty());
}

#[test]
fn a_takeover_that_never_happened_misses_its_target() {
    let missed = misses(&figures_with(0.0, None, 0), &targets());
    assert_eq!(missed.len(), 1);
    assert_eq!(missed[0].target, "max-takeover");
    assert_eq!(missed[0].measured, "no other node took the VIP");
}

#[test]
fn a_vip_that_must_stay_put_misses_when_it_moved() {
    let mut t = targets();
    t.max_takeover_ms = None;
    t.max_vip_moves = Some(0);
    assert!(misses(&figures_with(0.0, None, 0), &t).is_empty());
    let missed = misses(&figures_with(0.0, Some(400.0), 1), &t);
    assert_eq!(missed[0].target, "max-vip-moves");
}
