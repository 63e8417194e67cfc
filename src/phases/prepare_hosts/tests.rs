use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::facts::HostFacts;
use crate::phases::test_support::{applied, debian_host};

const INVENTORY: &str = r#"
apiVersion: khactl.io/v1alpha1
kind: Inventory
cluster: { name: t, kubernetesVersion: v1.31.2 }
vip: { address: 10.0.0.100, dnsName: k8s-api.virtual.local }
nodes:
  - { name: cp1, address: 10.0.0.11, role: control-plane }
sysctls:
  vm.swappiness: "0"
"#;

fn inventory() -> Inventory {
    crate::inventory::parse(INVENTORY).unwrap().inventory
}

/// The plan for the inventory's first node.
fn plan(inv: &Inventory, facts: &HostFacts) -> anyhow::Result<(Vec<Change>, Vec<String>)> {
    plan_node(inv, &inv.nodes[0], facts, None)
}

/// A fresh Debian host: nothing set, bridge module present, no swap.
fn fresh() -> HostFacts {
    let inv = inventory();
    let mut sysctls: BTreeMap<String, Option<String>> = wanted_sysctls(&inv)
        .unwrap()
        .keys()
        .map(|k| (k.path().to_owned(), Some("0".to_owned())))
        .collect();
    sysctls.insert("vm/swappiness".into(), Some("60".into()));
    let mut files: BTreeMap<PathBuf, Option<Vec<u8>>> =
        files_read().into_iter().map(|p| (p, None)).collect();
    files.insert(HOSTS.into(), Some(b"127.0.0.1 localhost\n".to_vec()));
    files.insert(FSTAB.into(), Some(b"UUID=1 / ext4 defaults 0 1\n".to_vec()));
    HostFacts {
        modules: MODULES.iter().map(|m| ((*m).to_owned(), true)).collect(),
        sysctls,
        files,
        ..debian_host()
    }
}

#[test]
fn fresh_host_gets_drop_in_sysctls_modules_file_and_hosts_entry() {
    let (changes, warnings) = plan(&inventory(), &fresh()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let heads: Vec<String> = changes.iter().map(Change::headline).collect();
    assert!(
        heads
            .iter()
            .any(|h| h.starts_with("create /etc/sysctl.d/99-zz-khactl.conf")),
        "{heads:?}"
    );
    assert!(
        heads
            .iter()
            .any(|h| h.starts_with("create /etc/modules-load.d/khactl.conf"))
    );
    assert!(heads.iter().any(|h| h.starts_with("update /etc/hosts")));
    let Some(Change::SetSysctls { values }) = changes
        .iter()
        .find(|c| matches!(c, Change::SetSysctls { .. }))
    else {
        panic!("no sysctl change in {heads:?}");
    };
    let keys: Vec<String> = values.iter().map(|v| v.key.to_string()).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    assert!(keys.contains(&"net.ipv4.ip_forward"));
    assert!(keys.contains(&"net.ipv4.ip_nonlocal_bind"));
    assert!(keys.contains(&"net.bridge.bridge-nf-call-iptables"));
    assert!(keys.contains(&"vm.swappiness"));
}

#[test]
fn second_run_plans_nothing() {
    let inv = inventory();
    let (changes, _) = plan(&inv, &fresh()).unwrap();
    let (again, _) = plan(&inv, &applied(fresh(), &changes)).unwrap();
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn drop_in_marks_module_dependent_keys_as_optional() {
    let text = render_sysctl_drop_in(&wanted_sysctls(&inventory()).unwrap());
    assert!(
        text.contains("\n-net.bridge.bridge-nf-call-iptables = 1\n"),
        "{text}"
    );
    assert!(text.contains("\nnet.ipv4.ip_forward = 1\n"), "{text}");
}

#[test]
fn kernel_without_br_netfilter_skips_bridge_sysctls_with_a_warning() {
    let mut f = fresh();
    f.modules.insert("br_netfilter".into(), false);
    f.sysctls
        .insert("net/bridge/bridge-nf-call-iptables".into(), None);
    f.sysctls
        .insert("net/bridge/bridge-nf-call-ip6tables".into(), None);
    let (changes, warnings) = plan(&inventory(), &f).unwrap();
    assert!(
        warnings.iter().any(|w| w.contains("br_netfilter")),
        "{warnings:?}"
    );
    for c in &changes {
        if let Change::SetSysctls { values } = c {
            assert!(
                values
                    .iter()
                    .all(|v| !v.key.path().starts_with("net/bridge/")),
                "{values:?}"
            );
        }
    }
    // The other sysctls are still set; only the bridge ones are left out.
    let set: Vec<&str> = changes
        .iter()
        .filter_map(|c| match c {
            Change::SetSysctls { values } => Some(values),
            _ => None,
        })
        .flatten()
        .map(|v| v.key.path())
        .collect();
    assert!(set.contains(&"net/ipv4/ip_forward"), "{set:?}");
}

#[test]
fn missing_module_is_loaded_when_the_kernel_can() {
    let mut f = fresh();
    f.modules.insert("br_netfilter".into(), false);
    f.can_modprobe = true;
    let (changes, _) = plan(&inventory(), &f).unwrap();
    assert_eq!(
        changes[0],
        Change::LoadModule {
            name: "br_netfilter".into()
        }
    );
}

#[test]
fn unknown_inventory_sysctl_is_an_error_naming_it() {
    let mut f = fresh();
    f.sysctls.insert("vm/swappiness".into(), None);
    let err = plan(&inventory(), &f).unwrap_err().to_string();
    assert!(err.contains("vm.swappiness"), "{err}");
}

#[test]
fn swap_is_turned_off_and_commented_out_of_fstab_with_a_backup() {
    let mut f = fresh();
    f.swap_active = 1;
    f.files.insert(
        FSTAB.into(),
        Some(b"UUID=1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n".to_vec()),
    );
    let (changes, _) = plan(&inventory(), &f).unwrap();
    assert!(changes.contains(&Change::SwapOff));
    let fstab = changes.iter().find_map(|c| match c {
        Change::WriteFile {
            path,
            contents,
            backup,
            ..
        } if path == &PathBuf::from(FSTAB) => {
            Some((String::from_utf8(contents.clone()).unwrap(), backup.clone()))
        }
        _ => None,
    });
    let (text, backup) = fstab.unwrap();
    assert!(
        text.contains("# /swapfile none swap sw 0 0 # khactl"),
        "{text}"
    );
    assert!(text.contains("UUID=1 / ext4 defaults 0 1\n"));
    assert_eq!(backup, Some(PathBuf::from(FSTAB_BACKUP)));
}

#[test]
fn hosts_entry_replaces_an_old_khactl_line_and_keeps_the_rest() {
    let old = b"127.0.0.1 localhost\n10.0.0.99 k8s-api.virtual.local # khactl\n::1 ip6-localhost\n";
    let new = render_hosts(old, Some("10.0.0.100 k8s-api.virtual.local"));
    assert_eq!(
        new,
        b"127.0.0.1 localhost\n::1 ip6-localhost\n10.0.0.100 k8s-api.virtual.local # khactl\n"
    );
}

#[test]
fn hosts_keeps_every_byte_it_does_not_own_and_is_backed_up_once() {
    // A Latin-1 comment (0xe9), CRLF line ends and no final newline: all kept as they are.
    let old: &[u8] = b"127.0.0.1 localhost # caf\xe9\r\n10.1.1.1 db\r\n192.0.2.9 x";
    let mut f = fresh();
    f.files.insert(HOSTS.into(), Some(old.to_vec()));
    let (changes, _) = plan(&inventory(), &f).unwrap();
    let (contents, backup) = changes
        .iter()
        .find_map(|c| match c {
            Change::WriteFile {
                path,
                contents,
                backup,
                ..
            } if path == &PathBuf::from(HOSTS) => Some((contents.clone(), backup.clone())),
            _ => None,
        })
        .expect("an /etc/hosts write");
    let mut want = old.to_vec();
    want.extend_from_slice(b"\n10.0.0.100 k8s-api.virtual.local # khactl\n");
    assert_eq!(contents, want);
    assert_eq!(backup, Some(PathBuf::from(HOSTS_BACKUP)));
    // Once the entry is there, nothing changes.
    let (again, _) = plan(&inventory(), &applied(f, &changes)).unwrap();
    assert!(
        again.iter().all(|c| !c.headline().contains("/etc/hosts")),
        "{again:?}"
    );
}

#[test]
fn fstab_keeps_bytes_that_are_not_utf8() {
    let old: &[u8] =
        b"# disque syst\xe8me\nUUID=1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n";
    let new = render_fstab_without_swap(old).unwrap();
    assert!(
        new.starts_with(b"# disque syst\xe8me\nUUID=1 / ext4"),
        "{new:?}"
    );
}

fn with_sysctls(extra: &str) -> Inventory {
    crate::inventory::parse(&format!("{INVENTORY}{extra}"))
        .unwrap()
        .inventory
}

#[test]
fn a_slashed_key_names_its_own_file_under_proc_sys() {
    // eth0.5 is a VLAN interface: its dot is part of the name, not a separator.
    let inv = with_sysctls("  net/ipv4/conf/eth0.5/rp_filter: \"2\"\n");
    let wanted = wanted_sysctls(&inv).unwrap();
    let vlan = wanted
        .keys()
        .find(|k| k.path().contains("eth0"))
        .expect("the VLAN key");
    assert_eq!(vlan.proc_path(), "/proc/sys/net/ipv4/conf/eth0.5/rp_filter");
    // The probe asks for that path, not for net/ipv4/conf/eth0/5/rp_filter.
    let mut f = fresh();
    f.sysctls
        .insert("net/ipv4/conf/eth0.5/rp_filter".into(), Some("0".into()));
    let (changes, _) = plan(&inv, &f).unwrap();
    let drop_in = changes
        .iter()
        .find_map(|c| match c {
            Change::WriteFile { path, contents, .. } if path == &PathBuf::from(SYSCTL_DROP_IN) => {
                Some(String::from_utf8(contents.clone()).unwrap())
            }
            _ => None,
        })
        .unwrap();
    assert!(
        drop_in.contains("\nnet/ipv4/conf/eth0.5/rp_filter = 2\n"),
        "{drop_in}"
    );
    let set = changes
        .iter()
        .find_map(|c| match c {
            Change::SetSysctls { values } => Some(values.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        set.iter()
            .any(|v| v.key.path() == "net/ipv4/conf/eth0.5/rp_filter" && v.to == "2"),
        "{set:?}"
    );
}

#[test]
fn a_key_that_reads_as_an_option_is_refused_by_the_inventory() {
    let text = format!("{INVENTORY}  -p/x: \"1\"\n");
    let err = crate::inventory::parse(&text).unwrap_err().to_string();
    assert!(err.contains("starts with '-'"), "{err}");
}

#[test]
fn the_drop_in_sorts_after_debians_sysctl_conf_and_replaces_the_old_one() {
    let name = |p: &str| Path::new(p).file_name().unwrap().to_owned();
    assert!(name(SYSCTL_DROP_IN) > name("/etc/sysctl.d/99-sysctl.conf"));
    let mut f = fresh();
    f.files.insert(
        OLD_SYSCTL_DROP_IN.into(),
        Some(b"net.ipv4.ip_forward = 1\n".to_vec()),
    );
    let (changes, _) = plan(&inventory(), &f).unwrap();
    let write = changes
        .iter()
        .position(|c| {
            c.headline()
                .starts_with("create /etc/sysctl.d/99-zz-khactl.conf")
        })
        .unwrap();
    let remove = changes
        .iter()
        .position(|c| {
            *c == Change::RemoveFile {
                path: OLD_SYSCTL_DROP_IN.into(),
            }
        })
        .expect("the old drop-in is removed");
    assert!(
        write < remove,
        "written before the old one goes: {changes:?}"
    );
    let (again, _) = plan(&inventory(), &applied(f, &changes)).unwrap();
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn a_sysctl_conf_that_undoes_a_value_at_boot_is_warned_about() {
    let mut f = fresh();
    f.files.insert(
        "/etc/sysctl.conf".into(),
        Some(b"net.ipv4.ip_forward=0\n".to_vec()),
    );
    let (_, warnings) = plan(&inventory(), &f).unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("net.ipv4.ip_forward") && w.contains("/etc/sysctl.conf")),
        "{warnings:?}"
    );
}

#[test]
fn swap_lines_khactl_commented_out_come_back_as_they_were_and_nothing_else_moves() {
    let fstab = b"# /etc/fstab\nUUID=1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n\
                  # /old none swap sw 0 0\n";
    let off = render_fstab_without_swap(fstab).unwrap();
    assert_eq!(render_fstab_with_swap(&off).unwrap(), fstab.to_vec());
    assert_eq!(
        render_fstab_with_swap(fstab),
        None,
        "nothing of khactl's: no change"
    );
}

#[test]
fn node_local_balancers_resolve_the_api_name_to_loopback_on_every_node() {
    let example = include_str!("../../../inventories/nginx-on-every-node.yaml");
    let inv = crate::inventory::parse(example).unwrap().inventory;
    for node in &inv.nodes {
        assert_eq!(
            hosts_entry(&inv, node, None).as_deref(),
            Some("127.0.0.1 k8s-api.cluster.internal"),
            "{}",
            node.name
        );
    }
    let vip = inventory();
    assert_eq!(
        hosts_entry(&vip, &vip.nodes[0], None).as_deref(),
        Some("10.0.0.100 k8s-api.virtual.local")
    );
}

fn cloud_lb() -> Inventory {
    let example = include_str!("../../../inventories/cloud-lb-without-hairpin.yaml");
    crate::inventory::parse(example).unwrap().inventory
}

#[test]
fn behind_a_cloud_balancer_control_planes_use_loopback_and_workers_the_balancer() {
    let inv = cloud_lb();
    let entry = |name: &str, via| hosts_entry(&inv, inv.node(name).unwrap(), via);
    assert_eq!(
        entry("master1", None).as_deref(),
        Some("127.0.0.1 k8s-api.cluster.internal")
    );
    assert_eq!(
        entry("node1", None).as_deref(),
        Some("192.168.1.200 k8s-api.cluster.internal")
    );
    // A joining control plane goes through a member until its own API server is up.
    let via = Some("192.168.1.101".parse().unwrap());
    assert_eq!(
        entry("master2", via).as_deref(),
        Some("192.168.1.101 k8s-api.cluster.internal")
    );
    // Without the balancer's address, workers get no line: DNS answers for the name.
    let mut by_dns = inv.clone();
    by_dns.load_balancer.address = None;
    assert_eq!(
        hosts_entry(&by_dns, by_dns.node("node1").unwrap(), None),
        None
    );
}

#[test]
fn a_joining_control_plane_goes_through_a_member_then_the_init_node() {
    let inv = cloud_lb();
    let node = |name: &str| inv.node(name).unwrap();
    let master1: IpAddr = "192.168.1.101".parse().unwrap();
    let master3: IpAddr = "192.168.1.103".parse().unwrap();
    // A fresh cluster: init runs on master1, which needs nobody; the others go through it.
    let fresh = |_: &Node| false;
    assert_eq!(joining_via(&inv, node("master1"), fresh), None);
    assert_eq!(joining_via(&inv, node("master2"), fresh), Some(master1));
    // master1 gone, master3 in: master2 rejoins through master3. Members and workers need
    // no detour.
    let only_master3 = |n: &Node| n.name.as_str() == "master3";
    assert_eq!(
        joining_via(&inv, node("master2"), only_master3),
        Some(master3)
    );
    assert_eq!(joining_via(&inv, node("master3"), only_master3), None);
    assert_eq!(joining_via(&inv, node("node1"), fresh), None);
    // Behind a VIP or node-local balancers there is never a detour.
    let vip = inventory();
    assert_eq!(joining_via(&vip, &vip.nodes[0], fresh), None);
}

#[test]
fn a_joining_control_plane_s_line_goes_through_its_member_then_to_loopback() {
    let inv = cloud_lb();
    let master2 = inv.node("master2").unwrap();
    let mut f = fresh();
    f.files.insert(
        HOSTS.into(),
        Some(b"127.0.0.1 localhost\n10.9.9.9 db\n".to_vec()),
    );
    let via = Some("192.168.1.101".parse().unwrap());
    let (changes, _) = plan_node(&inv, master2, &f, via).unwrap();
    let written = |c: &Change| match c {
        Change::WriteFile { path, contents, .. } if path == &PathBuf::from(HOSTS) => {
            Some(String::from_utf8(contents.clone()).unwrap())
        }
        _ => None,
    };
    let joining = changes.iter().find_map(written).expect("a hosts write");
    assert_eq!(
        joining,
        "127.0.0.1 localhost\n10.9.9.9 db\n192.168.1.101 k8s-api.cluster.internal # khactl\n"
    );
    // The join goes through the member it was checked on (master3), then 127.0.0.1.
    let master3 = Some("192.168.1.103".parse().unwrap());
    let through = hosts_for_join(&inv, master2, &f, via, master3).expect("a joining write");
    assert_eq!(
        written(&through).unwrap(),
        "127.0.0.1 localhost\n10.9.9.9 db\n192.168.1.103 k8s-api.cluster.internal # khactl\n"
    );
    let after = hosts_for_join(&inv, master2, &f, master3, None).expect("a second write");
    assert_eq!(
        written(&after).unwrap(),
        "127.0.0.1 localhost\n10.9.9.9 db\n127.0.0.1 k8s-api.cluster.internal # khactl\n"
    );
    // The diff it shows is from the joining line.
    let Change::WriteFile { current, .. } = &after else {
        unreachable!()
    };
    assert_eq!(
        current.as_deref(),
        Some(written(&through).unwrap().as_bytes())
    );
    // Nothing to change, no write; workers and other modes never get one.
    assert_eq!(hosts_for_join(&inv, master2, &f, via, via), None);
    assert_eq!(
        hosts_for_join(&inv, inv.node("node1").unwrap(), &f, via, None),
        None
    );
    let vip = inventory();
    assert_eq!(hosts_for_join(&vip, &vip.nodes[0], &f, via, None), None);
}

/// A dedicated load-balancer node runs only khagent: none of the kubelet's sysctls, modules,
/// swap rules or `/etc/hosts` line, even on a host with swap on and nothing set; only the
/// sysctls the inventory asks for.
#[test]
fn a_load_balancer_node_gets_only_the_inventory_s_sysctls() {
    let text = include_str!("../../../inventories/alpine-keepalived-haproxy-lb-nodes.yaml");
    let inv = crate::inventory::parse(text).unwrap().inventory;
    let mut facts = fresh();
    facts.swap_active = 1;
    let (changes, warnings) = plan_node(&inv, inv.node("lb1").unwrap(), &facts, None).unwrap();
    assert!(changes.is_empty() && warnings.is_empty(), "{changes:?}");
    let (cp, _) = plan_node(&inv, inv.node("master1").unwrap(), &facts, None).unwrap();
    assert!(!cp.is_empty());

    let tuned = crate::inventory::parse(&text.replace(
        "ssh:\n",
        "sysctls: { net.core.somaxconn: \"4096\" }\nssh:\n",
    ))
    .unwrap()
    .inventory;
    facts
        .sysctls
        .insert("net/core/somaxconn".into(), Some("128".into()));
    let (changes, _) = plan_node(&tuned, tuned.node("lb1").unwrap(), &facts, None).unwrap();
    let heads: Vec<String> = changes.iter().map(Change::headline).collect();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(heads[0].contains(SYSCTL_DROP_IN), "{heads:?}");
    assert!(heads[1].contains("net.core.somaxconn"), "{heads:?}");
    let Change::WriteFile { contents, .. } = &changes[0] else {
        panic!("{heads:?}")
    };
    let drop_in = String::from_utf8_lossy(contents);
    assert!(drop_in.contains("net.core.somaxconn = 4096"), "{drop_in}");
    assert!(!drop_in.contains("ip_forward"), "{drop_in}");
}
