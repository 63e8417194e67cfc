//! Tracked health checks moving the VIP, driven through the agent's own health config.

use std::time::Duration;

use super::failover::assert_sole_holder;
use super::support::{Lab, Proc, greeter, khagent, wait_for};

/// Node 1 (priority 150, with `track`) in front of its healthy local apiserver, node 2
/// (priority 100) untracked; returns once node 1 holds the VIP.
fn tracked_pair(k: u8, track: &str) -> (Lab, Proc, [Proc; 2]) {
    let lab = Lab::new(k, 2);
    let api = greeter(&lab, 1);
    let agents = [
        khagent(&lab, 1, 150, "", track),
        khagent(&lab, 2, 100, "", ""),
    ];
    wait_for(
        "node 1 healthy and holding the VIP",
        Duration::from_secs(5),
        || {
            lab.vrrp(1)["effective_priority"] == 150
                && lab.state(1) == "master"
                && lab.holders() == [1]
        },
    );
    (lab, api, agents)
}

#[test]
fn failing_tracked_check_lowers_priority_and_moves_the_vip_back_when_healthy() {
    let track = "track:\n  - name: local-apiserver\n    backend: local\n    weight: -100\n";
    let (lab, mut api, _agents) = tracked_pair(95, track);

    api.kill();
    wait_for(
        "node 2 to take over from the unhealthy node",
        Duration::from_secs(5),
        || lab.holders() == [2],
    );
    let v = lab.vrrp(1);
    assert_eq!(v["effective_priority"], 50);
    assert_eq!(v["state"], "backup");
    assert!(
        v["track"]["reasons"]
            .to_string()
            .contains("local-apiserver"),
        "{v}"
    );

    let _api = greeter(&lab, 1);
    wait_for(
        "node 1 to preempt once healthy",
        Duration::from_secs(5),
        || lab.holders() == [1],
    );
    assert_eq!(lab.vrrp(1)["effective_priority"], 150);
    assert_sole_holder(&lab, 1, Duration::from_millis(500));
}

#[test]
fn fault_check_releases_the_vip_at_once() {
    let track = "track:\n  - name: local-apiserver\n    backend: local\n    fault: true\n";
    let (lab, mut api, _agents) = tracked_pair(90, track);
    api.kill();
    wait_for(
        "node 2 to take over from the faulted node",
        Duration::from_secs(5),
        || lab.holders() == [2],
    );
    assert_eq!(lab.state(1), "fault");
    // The faulted master said goodbye with priority 0 instead of going silent.
    assert_eq!(lab.counter(1, "priority_zero_tx"), 1);
    assert_eq!(lab.counter(2, "priority_zero_rx"), 1);
}
