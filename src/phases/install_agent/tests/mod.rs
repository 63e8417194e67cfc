use std::collections::BTreeMap;

use super::*;
use crate::agent::elf_arch;
use crate::cluster::vip::holder_in_facts as vip_holder;
use crate::phases::test_support::{applied, debian_host};

const INVENTORY: &str = r#"
apiVersion: khactl.io/v1alpha1
kind: Inventory
cluster: { name: t, kubernetesVersion: v1.31.2 }
vip: { address: 10.0.0.100, routerId: 61 }
nodes:
  - { name: cp1, address: 10.0.0.11, role: control-plane }
  - { name: cp2, address: 10.0.0.12, role: control-plane }
  - { name: cp3, address: 10.0.0.13, role: control-plane }
  - { name: w1, address: 10.0.0.21, role: worker }
"#;

pub(super) fn inventory() -> Inventory {
    crate::inventory::parse(INVENTORY).unwrap().inventory
}

fn node<'a>(inv: &'a Inventory, name: &str) -> &'a Node {
    inv.node(name).unwrap()
}

/// A fresh Debian host with systemd, its address on eth0, no agent files.
fn fresh(last_octet: u8) -> HostFacts {
    HostFacts {
        addresses: vec![
            ("lo".into(), "127.0.0.1/8".parse().unwrap()),
            (
                "eth0".into(),
                format!("10.0.0.{last_octet}/24").parse().unwrap(),
            ),
        ],
        files: files_read().into_iter().map(|p| (p, None)).collect(),
        digests: digests_read().into_iter().map(|p| (p, None)).collect(),
        ..debian_host()
    }
}

/// A minimal little-endian ELF64 header for `machine`.
fn elf(machine: u16) -> Vec<u8> {
    let mut b = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
    b.resize(18, 0);
    b.extend_from_slice(&machine.to_le_bytes());
    b.resize(64, 0);
    b
}

fn binary() -> AgentBinary {
    let contents = elf(62);
    AgentBinary {
        path: "/build/khagent".into(),
        sha256: sha256_hex(&contents),
        contents,
        arch: "x86_64".into(),
    }
}

/// The facts of a node where a first install of the agent went through.
fn installed(inv: &Inventory, name: &str, last_octet: u8) -> HostFacts {
    let first = plan_node(
        inv,
        node(inv, name),
        &fresh(last_octet),
        &binary(),
        ServiceState::default(),
    )
    .unwrap();
    applied(fresh(last_octet), &first.files)
}

const RUNNING: ServiceState = ServiceState {
    enabled: true,
    active: true,
};

/// `inv` with another VRRP router id: a change only a restart applies.
fn with_router_id_77(inv: &Inventory) -> Inventory {
    let mut moved = inv.clone();
    moved.vip.as_mut().unwrap().router_id = crate::inventory::RouterId::new(77).unwrap();
    moved
}

/// A running agent's new files: a checked restart, then the pending-restart mark cleared.
const CHECKED_RESTART_THEN_UNMARK: [&str; 2] = [
    "restart service khagent (systemd), after \
     `/usr/local/bin/khagent check --config /etc/khagent/khagent.yaml` passes",
    "remove /var/lib/khagent/restart-pending",
];

fn paths(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|c| match c {
            Change::WriteFile { path, mode, .. } => format!("{} {mode:o}", path.display()),
            other => other.headline(),
        })
        .collect()
}

#[test]
fn reads_the_architecture_from_the_elf_header() {
    assert_eq!(elf_arch(&elf(62)).as_deref(), Some("x86_64"));
    assert_eq!(elf_arch(&elf(183)).as_deref(), Some("aarch64"));
    let mut big_endian = elf(0);
    big_endian[5] = 2;
    big_endian[18..20].copy_from_slice(&183u16.to_be_bytes());
    assert_eq!(elf_arch(&big_endian).as_deref(), Some("aarch64"));
    assert_eq!(elf_arch(b"#!/bin/sh\necho hi\n"), None);
    assert_eq!(elf_arch(&elf(62)[..10]), None);
}

#[test]
fn refuses_a_node_of_another_architecture() {
    let inv = inventory();
    let mut facts = fresh(11);
    facts.arch = "aarch64".into();
    let err = plan_node(&inv, node(&inv, "cp1"), &facts, &binary(), RUNNING).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("built for x86_64, but this node is aarch64"),
        "{text}"
    );
    assert!(text.contains("--agent-binary"), "{text}");
}

#[test]
fn priorities_descend_by_control_plane_order_and_peers_are_the_others() {
    let inv = inventory();
    let c1 = agent_config(&inv, node(&inv, "cp1"), &fresh(11)).unwrap();
    let c3 = agent_config(&inv, node(&inv, "cp3"), &fresh(13)).unwrap();
    assert_eq!(
        (
            c1.vrrp.as_ref().unwrap().priority,
            c3.vrrp.as_ref().unwrap().priority
        ),
        (250, 170)
    );
    assert_eq!(
        c3.vrrp.as_ref().unwrap().peers,
        [Ipv4Addr::new(10, 0, 0, 11), Ipv4Addr::new(10, 0, 0, 12)]
    );
    assert_eq!(
        c3.vrrp.as_ref().unwrap().source_address,
        Ipv4Addr::new(10, 0, 0, 13)
    );
    assert_eq!(c3.vrrp.as_ref().unwrap().router_id, 61);
    assert_eq!(
        (
            c3.vrrp.as_ref().unwrap().interface.as_str(),
            c3.vrrp.as_ref().unwrap().vip_prefix_len
        ),
        ("eth0", 24)
    );
    assert_eq!(c3.listen.to_string(), "10.0.0.100:8443");
    // Every control plane is a backend, workers are not; the track follows the own apiserver.
    let backends: Vec<String> = c3
        .backends
        .iter()
        .map(|b| format!("{}={}", b.name, b.address))
        .collect();
    assert_eq!(
        backends,
        [
            "cp1=10.0.0.11:6443",
            "cp2=10.0.0.12:6443",
            "cp3=10.0.0.13:6443"
        ]
    );
    assert_eq!(c3.track.as_ref().unwrap().backend.as_deref(), Some("cp3"));
    // A dead apiserver drops even the top node below the lowest healthy one.
    assert!(
        i32::from(c1.vrrp.as_ref().unwrap().priority) + c1.track.as_ref().unwrap().weight
            < i32::from(c3.vrrp.as_ref().unwrap().priority)
    );
}

#[test]
fn the_inventory_interface_and_prefix_win_over_facts() {
    let mut inv = inventory();
    inv.vip.as_mut().unwrap().interface = Some("bond0".into());
    inv.vip.as_mut().unwrap().prefix_length = Some(25);
    let c = agent_config(&inv, node(&inv, "cp2"), &fresh(12)).unwrap();
    assert_eq!(
        (
            c.vrrp.as_ref().unwrap().interface.as_str(),
            c.vrrp.as_ref().unwrap().vip_prefix_len
        ),
        ("bond0", 25)
    );
}

#[test]
fn a_fresh_node_gets_binary_config_unit_and_a_checked_start() {
    let inv = inventory();
    let plan = plan_node(
        &inv,
        node(&inv, "cp1"),
        &fresh(11),
        &binary(),
        ServiceState::default(),
    )
    .unwrap();
    assert_eq!(
        paths(&plan.files),
        [
            "/usr/local/bin/khagent 755",
            "/etc/khagent/khagent.yaml 600",
            "/etc/systemd/system/khagent.service 644",
            "reload systemd unit files (for khagent)",
        ]
    );
    assert_eq!(
        paths(&plan.service),
        ["enable and start service khagent (systemd), after \
          `/usr/local/bin/khagent check --config /etc/khagent/khagent.yaml` passes"]
    );
    // The binary is large: its plan line names it, never diffs it.
    assert_eq!(
        plan.files[0].plan_text(),
        "create /usr/local/bin/khagent (0755)"
    );
}

#[test]
fn an_installed_running_node_needs_nothing() {
    let inv = inventory();
    let facts = installed(&inv, "cp2", 12);
    let again = plan_node(&inv, node(&inv, "cp2"), &facts, &binary(), RUNNING).unwrap();
    assert_eq!(again, NodePlan::default());
}

#[test]
fn a_config_change_rewrites_the_config_and_restarts_after_a_check() {
    let inv = inventory();
    let facts = installed(&inv, "cp2", 12);
    let moved = with_router_id_77(&inv);
    let plan = plan_node(&moved, node(&moved, "cp2"), &facts, &binary(), RUNNING).unwrap();
    assert_eq!(
        paths(&plan.files),
        [
            "/var/lib/khagent/restart-pending 600",
            "/etc/khagent/khagent.yaml 600"
        ]
    );
    let diff = plan.files[1].plan_text();
    assert!(
        diff.contains("-  router_id: 61") && diff.contains("+  router_id: 77"),
        "{diff}"
    );
    assert_eq!(paths(&plan.service), CHECKED_RESTART_THEN_UNMARK);
    let done = applied(applied(facts, &plan.files), &plan.service);
    let again = plan_node(&moved, node(&moved, "cp2"), &done, &binary(), RUNNING).unwrap();
    assert_eq!(again, NodePlan::default(), "the restart went through");
}

#[test]
fn a_run_cut_short_after_writing_the_files_restarts_the_agent_next_time() {
    let inv = inventory();
    let facts = installed(&inv, "cp2", 12);
    let moved = with_router_id_77(&inv);
    let plan = plan_node(&moved, node(&moved, "cp2"), &facts, &binary(), RUNNING).unwrap();
    // The files landed, then the run stopped (node lost, or an earlier node's restart failed).
    let cut_short = applied(facts, &plan.files);
    let next = plan_node(&moved, node(&moved, "cp2"), &cut_short, &binary(), RUNNING).unwrap();
    assert_eq!(
        paths(&next.files),
        ["reload systemd unit files (for khagent)"],
        "nothing to write; the unit may have been written without a reload"
    );
    assert_eq!(paths(&next.service), CHECKED_RESTART_THEN_UNMARK);
    let done = applied(applied(cut_short, &next.files), &next.service);
    let after = plan_node(&moved, node(&moved, "cp2"), &done, &binary(), RUNNING).unwrap();
    assert_eq!(after, NodePlan::default());
}

#[test]
fn a_pending_restart_of_a_stopped_agent_is_a_start() {
    let inv = inventory();
    let mut facts = installed(&inv, "cp1", 11);
    let mark = b"left by an earlier run".to_vec();
    facts.digests.insert(
        RESTART_PENDING.into(),
        Some(crate::facts::FileDigest {
            sha256: sha256_hex(&mark),
            mode: 0o600,
        }),
    );
    let stopped = ServiceState {
        enabled: true,
        active: false,
    };
    let plan = plan_node(&inv, node(&inv, "cp1"), &facts, &binary(), stopped).unwrap();
    assert_eq!(
        paths(&plan.service),
        [
            "enable and start service khagent (systemd), after \
             `/usr/local/bin/khagent check --config /etc/khagent/khagent.yaml` passes",
            "remove /var/lib/khagent/restart-pending",
        ]
    );
}

#[test]
fn a_stopped_agent_is_started_without_touching_files() {
    let inv = inventory();
    let facts = installed(&inv, "cp1", 11);
    let stopped = ServiceState {
        enabled: true,
        active: false,
    };
    let plan = plan_node(&inv, node(&inv, "cp1"), &facts, &binary(), stopped).unwrap();
    assert!(plan.files.is_empty());
    assert!(matches!(
        plan.service.as_slice(),
        [Change::Service {
            action: ServiceAction::EnableNow,
            ..
        }]
    ));
}

#[test]
fn a_config_with_the_wrong_mode_is_only_re_moded() {
    let inv = inventory();
    let mut facts = installed(&inv, "cp1", 11);
    if let Some(Some(d)) = facts.digests.get_mut(Path::new(AGENT_CONFIG)) {
        d.mode = 0o644;
    }
    let plan = plan_node(&inv, node(&inv, "cp1"), &facts, &binary(), RUNNING).unwrap();
    assert_eq!(
        paths(&plan.files),
        ["/etc/khagent/khagent.yaml 600"],
        "no pending-restart mark"
    );
    assert_eq!(
        plan.files[0].headline(),
        "set mode of /etc/khagent/khagent.yaml (0600)"
    );
    assert!(plan.service.is_empty(), "same bytes: no restart");
}

#[test]
fn openrc_hosts_get_an_executable_init_script_and_no_daemon_reload() {
    let inv = inventory();
    let mut facts = fresh(11);
    facts.init = InitSystem::OpenRc;
    let plan = plan_node(
        &inv,
        node(&inv, "cp1"),
        &facts,
        &binary(),
        ServiceState::default(),
    )
    .unwrap();
    assert_eq!(
        paths(&plan.files),
        [
            "/usr/local/bin/khagent 755",
            "/etc/khagent/khagent.yaml 600",
            "/etc/init.d/khagent 755",
        ]
    );
}

#[test]
fn the_vip_holder_restarts_last() {
    let inv = inventory();
    let mut facts: BTreeMap<String, HostFacts> = [("cp1", 11), ("cp2", 12), ("cp3", 13)]
        .into_iter()
        .map(|(n, o)| (n.to_owned(), fresh(o)))
        .collect();
    assert_eq!(vip_holder(&inv, &facts), None);
    if let Some(f) = facts.get_mut("cp1") {
        f.addresses
            .push(("eth0".into(), "10.0.0.100/24".parse().unwrap()));
    }
    let holder = vip_holder(&inv, &facts);
    assert_eq!(holder, Some("cp1"));
    assert_eq!(
        restart_order(["cp1", "cp2", "cp3"].into_iter(), holder, &[]),
        ["cp2", "cp3", "cp1"]
    );
    assert_eq!(
        restart_order(["cp1", "cp2", "cp3"].into_iter(), None, &[]),
        ["cp1", "cp2", "cp3"]
    );
    // A new node's first start comes after the holder learnt it as a peer.
    assert_eq!(
        restart_order(
            ["cp1", "cp2", "cp4", "cp3"].into_iter(),
            holder,
            &["cp4".to_owned()]
        ),
        ["cp2", "cp3", "cp1", "cp4"]
    );
}

#[test]
fn a_new_control_plane_reaches_running_agents_by_reload_not_restart() {
    let inv = inventory();
    let facts = installed(&inv, "cp2", 12);
    let grown = crate::inventory::parse(&INVENTORY.replace(
        "  - { name: w1,",
        "  - { name: cp4, address: 10.0.0.14, role: control-plane }\n  - { name: w1,",
    ))
    .unwrap()
    .inventory;
    let plan = plan_node(&grown, node(&grown, "cp2"), &facts, &binary(), RUNNING).unwrap();
    let diff = plan.files[1].plan_text();
    assert!(
        diff.contains("+  - name: \"cp4\"") && diff.contains("10.0.0.14"),
        "new backend and peer: {diff}"
    );
    assert_eq!(
        paths(&plan.service),
        [
            "reload service khagent (systemd), after \
             `/usr/local/bin/khagent check --config /etc/khagent/khagent.yaml` passes",
            "remove /var/lib/khagent/restart-pending",
        ]
    );
    // cut short before the reload: the old config is gone, so the next run restarts.
    let cut_short = applied(facts, &plan.files);
    let next = plan_node(&grown, node(&grown, "cp2"), &cut_short, &binary(), RUNNING).unwrap();
    assert_eq!(paths(&next.service), CHECKED_RESTART_THEN_UNMARK);
}

/// The config khactl renders, read by the agent's own parser and rules.
fn rendered(inv: &Inventory, name: &str, last_octet: u8) -> String {
    agent_config(inv, node(inv, name), &fresh(last_octet))
        .unwrap()
        .render()
        .unwrap()
}

#[test]
fn the_agent_parses_and_accepts_the_config_khactl_renders() {
    let inv = inventory();
    for (name, octet) in [("cp1", 11), ("cp2", 12), ("cp3", 13)] {
        let text = rendered(&inv, name, octet);
        let config = khagent::config::Config::parse(&text)
            .unwrap_or_else(|e| panic!("{name}: the agent refuses khactl's config: {e}\n{text}"));
        let problems = config.problems();
        assert!(problems.is_empty(), "{name}: {problems:?}\n{text}");
    }
}

#[test]
fn reload_or_restart_is_the_agents_own_decision_on_the_rendered_configs() {
    let inv = inventory();
    let base = rendered(&inv, "cp2", 12);
    assert!(reload_is_enough(base.as_bytes(), base.as_bytes()));
    let grown = crate::inventory::parse(&INVENTORY.replace(
        "  - { name: w1,",
        "  - { name: cp4, address: 10.0.0.14, role: control-plane }\n  - { name: w1,",
    ))
    .unwrap()
    .inventory;
    let more = rendered(&grown, "cp2", 12);
    assert_ne!(more, base);
    assert!(
        reload_is_enough(base.as_bytes(), more.as_bytes()),
        "backends, peers and tracked checks: a reload"
    );
    let moved = rendered(&with_router_id_77(&inv), "cp2", 12);
    assert!(
        !reload_is_enough(base.as_bytes(), moved.as_bytes()),
        "another router id: a restart"
    );
    let mut other_port = inv.clone();
    other_port.vip.as_mut().unwrap().port = crate::inventory::Port::new(9443).unwrap();
    let relisten = rendered(&other_port, "cp2", 12);
    assert!(
        !reload_is_enough(base.as_bytes(), relisten.as_bytes()),
        "listen"
    );
    assert!(!reload_is_enough(base.as_bytes(), b"listen: [unclosed"));
}

#[test]
fn seven_control_planes_get_distinct_priorities_and_a_dead_apiserver_sinks_below_them_all() {
    let mut text = INVENTORY.replace("  - { name: w1, address: 10.0.0.21, role: worker }\n", "");
    for i in 4..=7 {
        text.push_str(&format!(
            "  - {{ name: cp{i}, address: 10.0.0.1{i}, role: control-plane }}\n"
        ));
    }
    let inv = crate::inventory::parse(&text).unwrap().inventory;
    let configs: Vec<AgentConfig> = (1..=7)
        .map(|i| {
            let name = format!("cp{i}");
            agent_config(&inv, node(&inv, &name), &fresh(10 + i)).unwrap()
        })
        .collect();
    let priorities: Vec<u8> = configs
        .iter()
        .map(|c| c.vrrp.as_ref().unwrap().priority)
        .collect();
    assert_eq!(priorities, [250, 210, 170, 130, 90, 50, 10]);
    for c in &configs {
        assert!(
            i32::from(c.vrrp.as_ref().unwrap().priority) + c.track.as_ref().unwrap().weight < 10,
            "{}: with its apiserver down it must sink below every live node",
            c.node
        );
    }
}

#[test]
fn priorities_follow_the_ladder_on_a_fresh_cluster() {
    let inv = inventory();
    let p = priorities(&inv, |_| None);
    assert_eq!(
        p.into_iter().collect::<Vec<_>>(),
        [
            ("cp1".to_owned(), 250),
            ("cp2".to_owned(), 210),
            ("cp3".to_owned(), 170)
        ]
    );
}

#[test]
fn removing_the_first_control_plane_changes_no_running_agent_s_priority() {
    // The review's finding: by rank, cp2 and cp3 would move up (210 -> 250, 170 -> 210),
    // which is a restart of every agent, and a VIP move.
    let mut inv = inventory();
    inv.nodes.retain(|n| n.name.as_str() != "cp1");
    let cp2 = installed(&inventory(), "cp2", 12);
    let cp3 = installed(&inventory(), "cp3", 13);
    let current = |n: &str| match n {
        "cp2" => current_priority(&cp2),
        "cp3" => current_priority(&cp3),
        _ => None,
    };
    let p = priorities(&inv, current);
    assert_eq!((p["cp2"], p["cp3"]), (210, 170));
    let plan = plan_node_with(
        &inv,
        node(&inv, "cp3"),
        &cp3,
        &binary(),
        RUNNING,
        Some(p["cp3"]),
        None,
    )
    .unwrap();
    assert!(
        plan.service.iter().all(|c| !matches!(
            c,
            Change::Service {
                action: ServiceAction::Restart,
                ..
            }
        )),
        "a reload at most: {plan:?}"
    );
}

#[test]
fn a_control_plane_inserted_in_the_middle_takes_the_highest_free_step() {
    let inv = inventory();
    // cp2 is new; cp1 and cp3 run with 250 and 210 (cp3 was second before).
    let p = priorities(&inv, |n| match n {
        "cp1" => Some(250),
        "cp3" => Some(210),
        _ => None,
    });
    assert_eq!((p["cp1"], p["cp2"], p["cp3"]), (250, 170, 210));
    // Two agents claiming one priority (edited by hand): the later one in order moves.
    let p = priorities(&inv, |n| (n != "cp3").then_some(250));
    assert_eq!((p["cp1"], p["cp2"], p["cp3"]), (250, 210, 170));
}

const NODE_LOCAL: &str = r#"
apiVersion: khactl.io/v1alpha1
kind: Inventory
cluster: { name: t, kubernetesVersion: v1.31.2 }
loadBalancer: { mode: node-local, port: 7443, dnsName: api.internal }
nodes:
  - { name: cp1, address: 10.0.0.11, role: control-plane }
  - { name: cp2, address: 10.0.0.12, role: control-plane }
  - { name: w1, address: 10.0.0.21, role: worker }
"#;

#[test]
fn node_local_agents_balance_loopback_to_every_api_server_without_vrrp() {
    let inv = crate::inventory::parse(NODE_LOCAL).unwrap().inventory;
    for (name, ca) in [("cp1", CLUSTER_CA), ("w1", NODE_LOCAL_CA)] {
        let c = agent_config(&inv, node(&inv, name), &fresh(21)).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7443", "{name}");
        let backends: Vec<String> = c.backends.iter().map(|b| b.address.to_string()).collect();
        assert_eq!(backends, ["10.0.0.11:6443", "10.0.0.12:6443"], "{name}");
        assert!(c.vrrp.is_none() && c.track.is_none(), "{name}");
        assert_eq!(
            c.ca_file, ca,
            "{name}: a worker may not hold kubeadm's ca.crt before join"
        );
        // The agent itself accepts the rendered file, and it has no VRRP section.
        let text = c.render().unwrap();
        let parsed = khagent::config::Config::parse(&text).unwrap();
        assert!(parsed.vrrp.is_none() && parsed.track.is_empty(), "{text}");
        assert!(text.contains("node-local API load balancer"), "{text}");
    }
}

#[test]
fn adding_a_control_plane_reloads_a_node_local_agent() {
    let inv = crate::inventory::parse(NODE_LOCAL).unwrap().inventory;
    let mut grown = inv.clone();
    let mut cp3 = grown.nodes[0].clone();
    cp3.name = crate::inventory::NodeName::new("cp3").unwrap();
    cp3.address = "10.0.0.13".parse().unwrap();
    grown.nodes.push(cp3);
    let w1 = node(&inv, "w1");
    let before = agent_config(&inv, w1, &fresh(21))
        .unwrap()
        .render()
        .unwrap();
    let after = agent_config(&grown, w1, &fresh(21))
        .unwrap()
        .render()
        .unwrap();
    assert_ne!(before, after);
    assert!(reload_is_enough(before.as_bytes(), after.as_bytes()));
}

#[test]
fn a_worker_gets_an_agent_only_with_node_local_balancers() {
    let nl = crate::inventory::parse(NODE_LOCAL).unwrap().inventory;
    let w1 = node(&nl, "w1");
    assert!(nl.runs_agent(w1));
    let vip = inventory();
    assert!(!vip.runs_agent(node(&vip, "w1")));
}

mod stats_page;

const DEDICATED: &str = r#"
apiVersion: khactl.io/v1alpha1
kind: Inventory
cluster: { name: t, kubernetesVersion: v1.31.2 }
vip: { address: 10.0.0.100, routerId: 61, port: 6443 }
nodes:
  - { name: cp1, address: 10.0.0.11, role: control-plane }
  - { name: cp2, address: 10.0.0.12, role: control-plane }
  - { name: lb1, address: 10.0.0.5, role: loadbalancer }
  - { name: lb2, address: 10.0.0.6, role: loadbalancer }
"#;

/// A dedicated load-balancer node: VRRP with the other balancers, every control plane a
/// backend checked against its own copy of the cluster CA, and its own balancer tracked (it
/// has no API server): with no backend up it sinks below every balancer that has one, so a
/// balancer cut off from the control planes never keeps or takes back the VIP. A control
/// plane runs no agent.
#[test]
fn load_balancer_nodes_run_vrrp_among_themselves_and_balance_to_every_control_plane() {
    let inv = crate::inventory::parse(DEDICATED).unwrap().inventory;
    let c = agent_config(&inv, node(&inv, "lb2"), &fresh(6)).unwrap();
    let backends: Vec<String> = c.backends.iter().map(|b| b.address.to_string()).collect();
    assert_eq!(backends, ["10.0.0.11:6443", "10.0.0.12:6443"]);
    let vrrp = c.vrrp.as_ref().unwrap();
    assert_eq!(vrrp.peers, ["10.0.0.5".parse::<Ipv4Addr>().unwrap()]);
    assert_eq!(vrrp.source_address.to_string(), "10.0.0.6");
    assert_eq!(i32::from(vrrp.priority), TOP_PRIORITY - PRIORITY_STEP);
    let track = c.track.as_ref().unwrap();
    assert_eq!(track.backend, None);
    assert!(TOP_PRIORITY + track.weight < i32::from(vrrp.priority));
    assert_eq!(c.ca_file, NODE_LOCAL_CA);
    assert_eq!(c.listen.to_string(), "10.0.0.100:6443");
    let text = c.render().unwrap();
    let parsed = khagent::config::Config::parse(&text).unwrap();
    assert!(parsed.vrrp.is_some(), "{text}");
    assert_eq!(parsed.track.len(), 1, "{text}");
    assert!(
        parsed.track[0].listener && parsed.track[0].backend.is_none(),
        "{text}"
    );
    assert!(agent_config(&inv, node(&inv, "cp1"), &fresh(11)).is_err());
    assert!(!inv.runs_agent(node(&inv, "cp1")));
    // The ladder is the balancers'.
    let prio = priorities(&inv, |_| None);
    assert_eq!(prio.keys().collect::<Vec<_>>(), ["lb1", "lb2"]);
}

/// A control plane added behind dedicated balancers reaches their agents by reload.
#[test]
fn a_new_control_plane_reaches_the_load_balancer_nodes_by_reload() {
    let inv = crate::inventory::parse(DEDICATED).unwrap().inventory;
    let grown = crate::inventory::parse(&DEDICATED.replace(
        "  - { name: lb1",
        "  - { name: cp3, address: 10.0.0.13, role: control-plane }\n  - { name: lb1",
    ))
    .unwrap()
    .inventory;
    let lb1 = node(&inv, "lb1");
    let before = agent_config(&inv, lb1, &fresh(5))
        .unwrap()
        .render()
        .unwrap();
    let after = agent_config(&grown, lb1, &fresh(5))
        .unwrap()
        .render()
        .unwrap();
    assert!(after.contains("10.0.0.13:6443"), "{after}");
    assert!(reload_is_enough(before.as_bytes(), after.as_bytes()));
}
