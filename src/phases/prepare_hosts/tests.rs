use std::collections::BTreeMap;
use std::path::PathBuf;

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

/// A fresh Debian host: nothing set, bridge module present, no swap.
fn fresh() -> HostFacts {
    let inv = inventory();
    let mut sysctls: BTreeMap<String, Option<String>> = wanted_sysctls(&inv)
        .keys()
        .map(|k| (k.clone(), Some("0".to_owned())))
        .collect();
    sysctls.insert("vm.swappiness".into(), Some("60".into()));
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
    let (changes, warnings) = plan_node(&inventory(), &fresh()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let heads: Vec<String> = changes.iter().map(Change::headline).collect();
    assert!(
        heads
            .iter()
            .any(|h| h.starts_with("create /etc/sysctl.d/99-khactl.conf")),
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
    let keys: Vec<&str> = values.iter().map(|v| v.key.as_str()).collect();
    assert!(keys.contains(&"net.ipv4.ip_forward"));
    assert!(keys.contains(&"net.ipv4.ip_nonlocal_bind"));
    assert!(keys.contains(&"net.bridge.bridge-nf-call-iptables"));
    assert!(keys.contains(&"vm.swappiness"));
}

#[test]
fn second_run_plans_nothing() {
    let inv = inventory();
    let (changes, _) = plan_node(&inv, &fresh()).unwrap();
    let (again, _) = plan_node(&inv, &applied(fresh(), &changes)).unwrap();
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn drop_in_marks_module_dependent_keys_as_optional() {
    let text = render_sysctl_drop_in(&wanted_sysctls(&inventory()));
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
        .insert("net.bridge.bridge-nf-call-iptables".into(), None);
    f.sysctls
        .insert("net.bridge.bridge-nf-call-ip6tables".into(), None);
    let (changes, warnings) = plan_node(&inventory(), &f).unwrap();
    assert!(
        warnings.iter().any(|w| w.contains("br_netfilter")),
        "{warnings:?}"
    );
    // The other sysctls are still set; only the bridge ones are left out.
    let set: Vec<&str> = changes
        .iter()
        .filter_map(|c| match c {
            Change::SetSysctls { values } => Some(values),
            _ => None,
        })
        .flatten()
        .map(|v| v.key.as_str())
        .collect();
    assert!(set.contains(&"net.ipv4.ip_forward"), "{set:?}");
    assert!(set.iter().all(|k| !k.starts_with("net.bridge.")), "{set:?}");
}

#[test]
fn missing_module_is_loaded_when_the_kernel_can() {
    let mut f = fresh();
    f.modules.insert("br_netfilter".into(), false);
    f.can_modprobe = true;
    let (changes, _) = plan_node(&inventory(), &f).unwrap();
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
    f.sysctls.insert("vm.swappiness".into(), None);
    let err = plan_node(&inventory(), &f).unwrap_err().to_string();
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
    let (changes, _) = plan_node(&inventory(), &f).unwrap();
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
    let old = "127.0.0.1 localhost\n10.0.0.99 k8s-api.virtual.local # khactl\n::1 ip6-localhost\n";
    let new = render_hosts(old, Some("10.0.0.100 k8s-api.virtual.local"));
    assert_eq!(
        new,
        "127.0.0.1 localhost\n::1 ip6-localhost\n10.0.0.100 k8s-api.virtual.local # khactl\n"
    );
}
