//! khagent and Debian's keepalived (`vrrp_version 3`, same VRID, VIP and 100 ms interval) in
//! one group: the higher priority wins whichever implementation it is, and each takes over
//! when the other dies.

use std::process::Command;
use std::time::Duration;

use super::failover::assert_sole_holder;
use super::support::{Lab, Proc, ROUTER_ID, keepalived, khagent, wait_for};

const KEEPALIVED_BACKUP: &str = "(VI) Entering BACKUP STATE";
const KEEPALIVED_MASTER: &str = "(VI) Entering MASTER STATE";

/// How often keepalived's log (its console output, `-l`) says `line`.
fn logged(keepalived: &Proc, line: &str) -> usize {
    keepalived.log_text().matches(line).count()
}

#[test]
fn keepalived_master_is_followed_by_khagent_which_takes_over_when_it_dies() {
    let lab = Lab::new(98, 2);
    let mut keepalived_1 = keepalived(&lab, 1, 150, "0.1");
    let _node2 = khagent(&lab, 2, 100, "", "");
    wait_for(
        "keepalived to hold the VIP, khagent following it",
        Duration::from_secs(5),
        || lab.holders() == [1] && lab.vrrp(2)["master_address"] == lab.addr(1).to_string(),
    );
    assert_sole_holder(&lab, 1, Duration::from_secs(1));
    assert_eq!(lab.counter(2, "dropped_bad_checksum"), 0);
    assert_eq!(lab.vrrp(2)["master_advert_interval_ms"], 100);

    lab.kill_all(1);
    wait_for(
        "khagent to take over from the dead keepalived",
        Duration::from_secs(2),
        || lab.holders().contains(&2),
    );
    // (keepalived killed this way leaves its VIP behind on node 1: the behaviour khagent's
    // VIP lifetime exists to avoid.)

    // A returning higher-priority keepalived preempts khagent. (Node 1 may still hold the
    // dead keepalived's VIP, so only keepalived's log and khagent following it tell.)
    keepalived_1.kill();
    let keepalived_1 = keepalived(&lab, 1, 150, "0.1");
    wait_for(
        "keepalived to preempt khagent",
        Duration::from_secs(5),
        || {
            logged(&keepalived_1, KEEPALIVED_MASTER) == 1
                && lab.state(2) == "backup"
                && lab.vrrp(2)["master_address"] == lab.addr(1).to_string()
                && lab.holders() == [1]
        },
    );
    assert_sole_holder(&lab, 1, Duration::from_millis(500));
}

#[test]
fn khagent_master_is_followed_by_keepalived_which_takes_over_when_it_dies() {
    let lab = Lab::new(99, 2);
    let mut node1 = khagent(&lab, 1, 150, "", "");
    let keepalived_2 = keepalived(&lab, 2, 100, "0.1");
    wait_for("khagent to hold the VIP", Duration::from_secs(5), || {
        lab.holders() == [1]
    });
    // Holding the VIP says nothing about keepalived, which may not be listening yet.
    wait_for(
        "keepalived to start as backup",
        Duration::from_secs(5),
        || logged(&keepalived_2, KEEPALIVED_BACKUP) > 0,
    );
    // keepalived accepts our adverts (checksum, interval, address list): it never claims,
    // for far longer than its Master_Down_Interval (about 0.4 s).
    assert_sole_holder(&lab, 1, Duration::from_secs(2));
    assert_eq!(
        logged(&keepalived_2, KEEPALIVED_MASTER),
        0,
        "keepalived claimed the VIP while khagent was master: {}",
        keepalived_2.log_text()
    );

    node1.kill();
    wait_for(
        "keepalived to take over from the dead khagent",
        Duration::from_secs(2),
        || lab.holders().contains(&2),
    );
    wait_for(
        "the dead khagent's VIP to expire",
        Duration::from_secs(3),
        || lab.holders() == [2],
    );

    assert_eq!(logged(&keepalived_2, KEEPALIVED_MASTER), 1);

    let _node1 = khagent(&lab, 1, 150, "", "");
    wait_for(
        "khagent to preempt keepalived",
        Duration::from_secs(5),
        || lab.holders() == [1] && logged(&keepalived_2, KEEPALIVED_BACKUP) == 2,
    );
    assert_sole_holder(&lab, 1, Duration::from_millis(500));
    assert_eq!(logged(&keepalived_2, KEEPALIVED_MASTER), 1);
}

/// Issue #12, item 12: before khactl first starts an agent on a node it listens there for
/// another VRRP router with the cluster's VRID (`khagent probe-vrid`). A keepalived set up
/// as the guides do (VRID 51, `advert_int 1`) is heard, with its address, priority, interval
/// and VIP; a listen for another VRID hears nothing.
#[test]
fn probe_vrid_hears_a_keepalived_with_that_vrid_and_nothing_else() {
    let lab = Lab::new(84, 2);
    let _keepalived = keepalived(&lab, 1, 150, "1");
    wait_for("keepalived to hold the VIP", Duration::from_secs(8), || {
        lab.holders() == [1]
    });
    let probe = |vrid: u8| {
        lab.assert_up();
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.ns(2), env!("CARGO_BIN_EXE_khagent")])
            .args(["probe-vrid", "--interface", "eth0", "--vrid"])
            .args([vrid.to_string().as_str(), "--for", "1500ms"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        probe(ROUTER_ID),
        format!(
            "heard {} priority 150 interval_cs 100 addresses {}\n",
            lab.addr(1),
            lab.vip()
        )
    );
    assert_eq!(probe(ROUTER_ID + 1), "");
    assert_eq!(lab.holders(), [1], "the probe moved the VIP");
}
