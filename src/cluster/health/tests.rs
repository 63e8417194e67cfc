use super::*;
use crate::cluster::agent::Backend;

const INVENTORY: &str = "\
apiVersion: khactl.io/v1alpha1
kind: Inventory
cluster: { name: fake, kubernetesVersion: v1.31.2 }
vip: { address: 10.0.0.100, prefixLength: 24, interface: eth0 }
nodes:
  - { name: cp1, address: 10.0.0.11, role: control-plane }
  - { name: cp2, address: 10.0.0.12, role: control-plane }
  - { name: cp3, address: 10.0.0.13, role: control-plane }
  - { name: w1, address: 10.0.0.21, role: worker }
";

fn inventory() -> Inventory {
    crate::inventory::parse(INVENTORY).unwrap().inventory
}

fn agent(name: &str, master: bool) -> AgentHealth {
    let backends = ["cp1", "cp2", "cp3"]
        .iter()
        .enumerate()
        .map(|(i, b)| Backend {
            name: (*b).to_owned(),
            address: format!("10.0.0.1{}:6443", i + 1),
            healthy: true,
            active_connections: 1,
            last_error: None,
        })
        .collect();
    let priority = match name {
        "cp1" => 250,
        "cp2" => 210,
        _ => 170,
    };
    AgentHealth {
        active: true,
        enabled: true,
        logs: "journalctl -u khagent".to_owned(),
        status: Some(AgentStatus {
            version: Some("0.1.0".to_owned()),
            uptime_seconds: Some(60),
            vrrp_state: Some(if master { "master" } else { "backup" }.to_owned()),
            base_priority: Some(priority),
            effective_priority: Some(priority),
            track_reasons: vec![],
            track_pending: false,
            holds_vip: master,
            preempt_pending: false,
            master_address: Some("10.0.0.11".to_owned()),
            last_error: None,
            listening: true,
            active_connections: 3,
            backends,
        }),
    }
}

fn cert(path: &str, days: i64) -> CertExpiry {
    CertExpiry {
        path: path.to_owned(),
        subject: "CN=x".to_owned(),
        not_after: "2027-01-01T00:00:00Z".to_owned(),
        days_left: days,
    }
}

fn member(name: &str, octet: u8, leader: bool) -> EtcdMemberHealth {
    EtcdMemberHealth {
        id: format!("{octet:x}"),
        name: name.to_owned(),
        peer_url: format!("https://10.0.0.{octet}:2380"),
        learner: false,
        healthy: Some(true),
        leader,
        db_size: Some(20480),
        version: Some("3.4.23".to_owned()),
    }
}

fn leader(lease: &str, node: &str) -> Option<Leader> {
    Some(Leader {
        lease: lease.to_owned(),
        holder: format!("{node}_1234"),
        node: node.to_owned(),
        fresh: true,
    })
}

/// A 3+1 cluster where everything answers as it should, cp1 holding the VIP.
fn healthy() -> ClusterHealth {
    let inv = inventory();
    let nodes = inv
        .nodes
        .iter()
        .map(|n| {
            let cp = n.role == crate::inventory::Role::ControlPlane;
            NodeHealth {
                name: n.name.to_string(),
                role: n.role.as_str(),
                address: n.address.to_string(),
                reachable: true,
                unreachable: None,
                holds_vip: n.name.as_str() == "cp1",
                agent: cp.then(|| agent(n.name.as_str(), n.name.as_str() == "cp1")),
                api_ready: cp.then_some(true),
                certificates: vec![cert("/etc/kubernetes/pki/apiserver.crt", 364)],
                errors: vec![],
                etcd_service: None,
            }
        })
        .collect();
    let mut h = ClusterHealth {
        cluster: "fake".to_owned(),
        healthy: false,
        checked_at: String::new(),
        vip: VipHealth {
            address: "10.0.0.100".to_owned(),
            port: 8443,
            external: false,
            holders: vec!["cp1".to_owned()],
            api_ready: Some(true),
            asked_from: Some("cp1".to_owned()),
        },
        nodes,
        etcd: EtcdHealth {
            asked_on: Some("cp1".to_owned()),
            error: None,
            members: vec![
                member("cp1", 11, true),
                member("cp2", 12, false),
                member("cp3", 13, false),
            ],
        },
        leaders: LeadersHealth {
            asked_on: Some("cp1".to_owned()),
            error: None,
            controller_manager: leader("kube-controller-manager", "cp2"),
            scheduler: leader("kube-scheduler", "cp1"),
        },
        problems: vec![],
        warnings: vec![],
    };
    h.assess(&inv);
    h
}

fn node<'a>(h: &'a mut ClusterHealth, name: &str) -> &'a mut NodeHealth {
    h.nodes.iter_mut().find(|n| n.name == name).unwrap()
}

fn messages(h: &ClusterHealth) -> Vec<&str> {
    h.problems.iter().map(|p| p.message.as_str()).collect()
}

#[test]
fn a_cluster_where_everything_answers_is_healthy_with_no_finding() {
    let h = healthy();
    assert!(h.healthy, "{:?}", h.problems);
    assert!(h.problems.is_empty() && h.warnings.is_empty());
    assert_eq!(h.verdict(), "cluster fake: healthy");
    let text = h.text().join("\n");
    assert!(
        text.contains("etcd      3 member(s): cp1 voter healthy leader 20 KiB"),
        "{text}"
    );
    assert!(
        text.contains("controller-manager cp2, scheduler cp1"),
        "{text}"
    );
    assert!(
        text.contains("running, master, priority 250, holds the VIP"),
        "{text}"
    );
}

#[test]
fn a_stopped_agent_and_a_stopped_etcd_member_are_both_named_with_hints() {
    let mut h = healthy();
    let inv = inventory();
    node(&mut h, "cp2").agent.as_mut().unwrap().active = false;
    node(&mut h, "cp2").agent.as_mut().unwrap().status = None;
    h.etcd.members[2].healthy = Some(false);
    h.etcd.members[2].db_size = None;
    node(&mut h, "cp3").api_ready = Some(false);
    h.assess(&inv);
    assert!(!h.healthy);
    let m = messages(&h);
    assert!(m.contains(&"cp2: khagent is not running"), "{m:?}");
    assert!(
        m.iter().any(|p| p.starts_with("etcd member cp3 (https://10.0.0.13:2380) is not healthy; 2 of 3 voters are, quorum is 2")),
        "{m:?}"
    );
    assert!(
        m.contains(&"cp3: the API server's /readyz is not ok"),
        "{m:?}"
    );
    assert!(h.problems.iter().all(|p| !p.hint.is_empty()));
    let agent = h
        .problems
        .iter()
        .find(|p| p.node.as_deref() == Some("cp2"))
        .unwrap();
    assert!(
        agent.hint.contains("systemctl start khagent"),
        "{}",
        agent.hint
    );
    assert!(
        h.verdict()
            .starts_with("cluster fake: DEGRADED, 3 problem(s): "),
        "{}",
        h.verdict()
    );
    let text = h.text().join("\n");
    assert!(text.contains("agent     NOT running"), "{text}");
    assert!(text.contains("cp3 voter UNHEALTHY"), "{text}");
}

#[test]
fn a_vip_added_by_hand_on_a_backup_is_a_double_holder_with_the_command_to_remove_it() {
    let mut h = healthy();
    h.vip.holders = vec!["cp1".to_owned(), "cp3".to_owned()];
    node(&mut h, "cp3").holds_vip = true;
    h.assess(&inventory());
    assert!(!h.healthy);
    let p = &h.problems[0];
    assert_eq!(
        p.message,
        "the VIP 10.0.0.100 is held by 2 nodes at once (double holder): cp1, cp3"
    );
    assert!(
        p.hint.contains("on cp3 was not added by its agent"),
        "{}",
        p.hint
    );
    assert!(
        p.hint
            .contains("`ip addr del 10.0.0.100/24 dev eth0` on cp3"),
        "{}",
        p.hint
    );
    assert!(
        !p.hint.contains("on cp1"),
        "cp1's agent holds it: {}",
        p.hint
    );
}

#[test]
fn two_agents_both_master_are_told_apart_from_an_address_added_by_hand() {
    let mut h = healthy();
    h.vip.holders = vec!["cp1".to_owned(), "cp2".to_owned()];
    node(&mut h, "cp2")
        .agent
        .as_mut()
        .unwrap()
        .status
        .as_mut()
        .unwrap()
        .holds_vip = true;
    h.assess(&inventory());
    assert!(
        h.problems[0].hint.contains("do not hear each other"),
        "{:?}",
        h.problems
    );
}

#[test]
fn no_holder_an_unreachable_node_and_a_down_backend_are_problems() {
    let mut h = healthy();
    h.vip.holders.clear();
    let w1 = node(&mut h, "w1");
    w1.reachable = false;
    w1.unreachable = Some("connection refused".to_owned());
    w1.certificates.clear();
    for n in ["cp1", "cp2"] {
        let s = node(&mut h, n)
            .agent
            .as_mut()
            .unwrap()
            .status
            .as_mut()
            .unwrap();
        s.backends[2].healthy = false;
        s.backends[2].last_error = Some("connection refused".to_owned());
    }
    h.assess(&inventory());
    let m = messages(&h);
    assert!(
        m.contains(&"w1 is unreachable: connection refused"),
        "{m:?}"
    );
    assert!(m.contains(&"no node holds the VIP 10.0.0.100"), "{m:?}");
    assert!(
        m.contains(&"backend cp3 (10.0.0.13:6443) is down for the load balancer on cp1, cp2: connection refused"),
        "one line for the backend, naming both agents that see it: {m:?}"
    );
    let w1 = h
        .problems
        .iter()
        .find(|p| p.node.as_deref() == Some("w1"))
        .unwrap();
    assert!(w1.hint.contains("ssh -p 22 root@10.0.0.21"), "{}", w1.hint);
}

#[test]
fn a_certificate_ending_within_30_days_warns_and_an_expired_one_degrades() {
    let mut h = healthy();
    node(&mut h, "cp2").certificates = vec![
        cert("/etc/kubernetes/admin.conf", 12),
        cert("/etc/kubernetes/pki/apiserver.crt", 364),
    ];
    h.assess(&inventory());
    assert!(h.healthy, "a warning does not degrade: {:?}", h.problems);
    assert_eq!(h.warnings.len(), 1);
    assert!(
        h.warnings[0]
            .message
            .contains("admin.conf expires in 12 day(s)")
    );
    node(&mut h, "w1").certificates = vec![cert("/etc/kubernetes/pki/ca.crt", -2)];
    h.assess(&inventory());
    assert!(!h.healthy);
    assert!(
        messages(&h)[0].contains("w1: /etc/kubernetes/pki/ca.crt expired"),
        "{:?}",
        h.problems
    );
}

#[test]
fn etcd_learners_missing_members_strangers_and_no_leader_are_problems() {
    let mut h = healthy();
    h.etcd.members[2].learner = true;
    h.etcd.members[1].name = "old-cp".to_owned();
    h.etcd.members[1].peer_url = "https://10.0.0.99:2380".to_owned();
    for m in &mut h.etcd.members {
        m.leader = false;
    }
    h.assess(&inventory());
    let m = messages(&h);
    assert!(
        m.iter()
            .any(|p| p.contains("cp3 (https://10.0.0.13:2380) is a learner")),
        "{m:?}"
    );
    assert!(m.contains(&"cp2 is not an etcd member"), "{m:?}");
    assert!(
        m.iter().any(|p| p.starts_with("etcd member old-cp")),
        "{m:?}"
    );
    assert!(
        m.contains(&"etcd has no leader among the members that answered"),
        "{m:?}"
    );
}

#[test]
fn a_lapsed_or_missing_leader_lease_is_a_problem() {
    let mut h = healthy();
    h.leaders.controller_manager.as_mut().unwrap().fresh = false;
    h.leaders.scheduler = None;
    h.assess(&inventory());
    let m = messages(&h);
    assert!(
        m.contains(&"kube-controller-manager's Lease has lapsed (last held by cp2_1234)"),
        "{m:?}"
    );
    assert!(
        m.contains(&"kube-scheduler has no leader (no Lease)"),
        "{m:?}"
    );
}

#[test]
fn the_json_names_are_camel_case_and_stable() {
    let h = healthy();
    let v = serde_json::to_value(&h).unwrap();
    assert_eq!(v["healthy"], true);
    assert_eq!(v["vip"]["holders"][0], "cp1");
    assert_eq!(v["nodes"][0]["agent"]["status"]["vrrpState"], "master");
    assert_eq!(
        v["nodes"][0]["agent"]["status"]["backends"][0]["activeConnections"],
        1
    );
    assert_eq!(v["nodes"][0]["apiReady"], true);
    assert_eq!(v["nodes"][0]["certificates"][0]["daysLeft"], 364);
    assert_eq!(v["etcd"]["members"][0]["dbSize"], 20480);
    assert_eq!(v["leaders"]["controllerManager"]["node"], "cp2");
}

/// The same cluster with w1 replaced by three etcd nodes (external etcd): the members are
/// theirs, the control planes are not expected in etcd, and a down member's hint is the
/// service's, not a static pod's.
#[test]
fn with_external_etcd_the_members_are_the_etcd_nodes_and_the_control_planes_are_not() {
    let text = INVENTORY.replace(
        "  - { name: w1, address: 10.0.0.21, role: worker }\n",
        "  - { name: e1, address: 10.0.0.31, role: etcd }\n  \
         - { name: e2, address: 10.0.0.32, role: etcd }\n  \
         - { name: e3, address: 10.0.0.33, role: etcd }\n",
    );
    let inv = crate::inventory::parse(&text).unwrap().inventory;
    let mut h = healthy();
    h.nodes.retain(|n| n.name != "w1");
    h.etcd.asked_on = Some("e1".to_owned());
    h.etcd.members = vec![
        member("e1", 31, true),
        member("e2", 32, false),
        member("e3", 33, false),
    ];
    h.assess(&inv);
    assert!(h.healthy, "{:?}", h.problems);

    // The stacked members would be strangers here, and the etcd nodes missing.
    h.etcd.members = vec![member("cp1", 11, true), member("e2", 32, false)];
    h.etcd.members[1].healthy = Some(false);
    h.assess(&inv);
    let m = messages(&h);
    assert!(
        m.contains(
            &"etcd member cp1 (https://10.0.0.11:2380) is not an etcd node of the inventory"
        ),
        "{m:?}"
    );
    assert!(m.contains(&"e1 is not an etcd member"), "{m:?}");
    assert!(m.contains(&"e3 is not an etcd member"), "{m:?}");
    assert!(!m.iter().any(|p| p.starts_with("cp2 is not")), "{m:?}");
    let down = h
        .problems
        .iter()
        .find(|p| p.message.starts_with("etcd member e2"))
        .unwrap();
    assert!(down.hint.contains("systemctl status etcd"), "{}", down.hint);

    // An etcd node whose service stopped is a problem of its own, with the command.
    let mut e2 = node(&mut h, "cp3").clone();
    e2.name = "e2".to_owned();
    e2.role = "etcd";
    e2.agent = None;
    e2.api_ready = None;
    e2.etcd_service = Some(ServiceHealth {
        active: false,
        enabled: true,
        logs: "journalctl -u etcd".to_owned(),
    });
    h.nodes.push(e2);
    h.assess(&inv);
    let stopped = h
        .problems
        .iter()
        .find(|p| p.message == "e2: the etcd service is not running")
        .unwrap();
    assert!(
        stopped.hint.contains("systemctl start etcd"),
        "{}",
        stopped.hint
    );
    assert!(
        h.text()
            .join("\n")
            .contains("  etcd      service NOT running, enabled"),
        "{}",
        h.text().join("\n")
    );
}
