//! The base checks of [`base_problems`] and the agent's VIP checks
//! ([`crate::phases::install_agent::vip_problems`], which preflight runs on control planes),
//! each on an otherwise healthy host, and all problems of a host reported at once.

use super::*;
use crate::inventory::Inventory;
use crate::phases::install_agent::vip_problems;
use crate::phases::test_support::debian_host;

const INVENTORY: &str = r#"
apiVersion: khactl.io/v1alpha1
kind: Inventory
cluster: { name: t, kubernetesVersion: v1.31.2 }
vip: { address: 10.0.0.100 }
nodes:
  - { name: cp1, address: 10.0.0.11, role: control-plane }
  - { name: w1, address: 10.0.1.21, role: worker }
"#;

fn inventory(text: &str) -> Inventory {
    crate::inventory::parse(text).unwrap().inventory
}

/// A host with the node's inventory address on eth0, in the VIP's /24.
fn host(address: &str) -> HostFacts {
    HostFacts {
        addresses: vec![("eth0".into(), format!("{address}/24").parse().unwrap())],
        ..debian_host()
    }
}

/// What preflight says of control plane `node` (base and VIP checks), joined as it reports.
fn check(inv: &Inventory, node: &str, facts: &HostFacts) -> Result<(), String> {
    let node = inv.nodes.iter().find(|n| n.name.as_str() == node).unwrap();
    let mut problems = base_problems(facts);
    problems.extend(vip_problems(inv, node, facts));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[test]
fn a_healthy_control_plane_and_worker_pass() {
    let inv = inventory(INVENTORY);
    assert_eq!(check(&inv, "cp1", &host("10.0.0.11")), Ok(()));
    assert_eq!(base_problems(&host("10.0.1.21")), Vec::<String>::new());
}

#[test]
fn commands_that_do_not_run_as_root_are_refused_with_the_way_out() {
    let inv = inventory(INVENTORY);
    let err = check(
        &inv,
        "cp1",
        &HostFacts {
            uid: Some(65534),
            ..host("10.0.0.11")
        },
    )
    .unwrap_err();
    assert!(err.contains("do not run as root"), "{err}");
    assert!(err.contains("ssh.sudo: true"), "{err}");
    // A uid the probe could not read is no more root than another.
    let unknown = HostFacts {
        uid: None,
        ..host("10.0.0.11")
    };
    assert!(check(&inv, "cp1", &unknown).is_err());
}

#[test]
fn only_x86_64_and_aarch64_are_supported() {
    let inv = inventory(INVENTORY);
    for arch in ["x86_64", "aarch64"] {
        let facts = HostFacts {
            arch: arch.into(),
            ..host("10.0.0.11")
        };
        assert_eq!(check(&inv, "cp1", &facts), Ok(()), "{arch}");
    }
    let riscv = HostFacts {
        arch: "riscv64".into(),
        ..host("10.0.0.11")
    };
    let err = check(&inv, "cp1", &riscv).unwrap_err();
    assert!(
        err.contains("architecture riscv64 is not supported"),
        "{err}"
    );
}

#[test]
fn a_host_without_systemd_or_openrc_is_refused() {
    let inv = inventory(INVENTORY);
    let openrc = HostFacts {
        init: InitSystem::OpenRc,
        ..host("10.0.0.11")
    };
    assert_eq!(check(&inv, "cp1", &openrc), Ok(()));
    let none = HostFacts {
        init: InitSystem::Unknown,
        ..host("10.0.0.11")
    };
    let err = check(&inv, "cp1", &none).unwrap_err();
    assert!(err.contains("no init system found"), "{err}");
}

#[test]
fn a_control_plane_must_have_its_inventory_address() {
    let inv = inventory(INVENTORY);
    let err = check(&inv, "cp1", &host("10.0.0.12")).unwrap_err();
    assert!(
        err.contains("does not have its inventory address 10.0.0.11"),
        "{err}"
    );
}

#[test]
fn the_vip_must_be_on_the_control_planes_subnet() {
    let inv = inventory(INVENTORY);
    let narrow = HostFacts {
        addresses: vec![("eth0".into(), "10.0.0.11/29".parse().unwrap())],
        ..debian_host()
    };
    let err = check(&inv, "cp1", &narrow).unwrap_err();
    assert!(
        err.contains("vip.address 10.0.0.100 is outside this node's subnet 10.0.0.8/29 (on eth0)"),
        "{err}"
    );
}

#[test]
fn a_named_vip_interface_must_carry_an_ipv4_address() {
    let inv = inventory(&INVENTORY.replace(
        "vip: { address: 10.0.0.100 }",
        "vip: { address: 10.0.0.100, interface: bond0 }",
    ));
    let err = check(&inv, "cp1", &host("10.0.0.11")).unwrap_err();
    assert!(
        err.contains("vip.interface bond0 has no IPv4 address on this node"),
        "{err}"
    );
    let with_bond = HostFacts {
        addresses: vec![
            ("eth0".into(), "10.0.0.11/24".parse().unwrap()),
            ("bond0".into(), "192.168.5.2/24".parse().unwrap()),
        ],
        ..debian_host()
    };
    assert_eq!(check(&inv, "cp1", &with_bond), Ok(()));
}

#[test]
fn every_problem_of_a_host_is_reported_at_once() {
    let inv = inventory(INVENTORY);
    let facts = HostFacts {
        uid: Some(1000),
        arch: "mips".into(),
        init: InitSystem::Unknown,
        ..host("10.0.0.99")
    };
    let err = check(&inv, "cp1", &facts).unwrap_err();
    for part in [
        "do not run as root",
        "architecture mips",
        "no init system",
        "inventory address 10.0.0.11",
    ] {
        assert!(err.contains(part), "missing {part:?} in {err}");
    }
}
