use super::*;
use crate::phases::test_support::debian_host;

const MANIFEST: &str = "# khactl manifest v1\n\
    dir\t/etc/khagent\n\
    file\t/etc/khagent/khagent.yaml\tnew\n\
    file\t/etc/systemd/system/khagent.service\tnew\n\
    file\t/etc/sysctl.d/99-zz-khactl.conf\tnew\n\
    file\t/etc/hosts\texisted\t/etc/hosts.khactl.bak\n\
    file\t/etc/fstab\texisted\t/etc/fstab.khactl.bak\n\
    file\t/etc/kubernetes/pki/ca.crt\texisted\t/var/lib/khactl/backup/1/etc/kubernetes/pki/ca.crt\n\
    file\t/etc/kubernetes/pki/sa.key\texisted\t\n\
    sysctl\tnet/ipv4/ip_forward\t0\n\
    sysctl\tnet/ipv4/ip_nonlocal_bind\t0\n\
    sysctl\tnet/bridge/bridge-nf-call-iptables\n\
    swap\toff\n\
    service\tkhagent\n";

fn facts() -> HostFacts {
    let mut f = debian_host();
    f.files.insert(
        HOSTS.into(),
        Some(b"127.0.0.1 localhost\n10.0.0.100 api.local # khactl\n".to_vec()),
    );
    f.files.insert(
        FSTAB.into(),
        Some(b"UUID=1 / ext4 defaults 0 1\n# /swap none swap sw 0 0 # khactl: swap off for the kubelet\n".to_vec()),
    );
    f
}

fn all_exist(m: &Manifest) -> BTreeSet<String> {
    asked_paths(m).into_iter().collect()
}

#[test]
fn a_node_is_put_back_as_its_manifest_says_agent_first_manifest_last() {
    let m = Manifest::parse(MANIFEST);
    let now: BTreeMap<String, Option<String>> = [
        ("net/ipv4/ip_forward".to_owned(), Some("1".to_owned())),
        ("net/ipv4/ip_nonlocal_bind".to_owned(), Some("0".to_owned())),
        (
            "net/bridge/bridge-nf-call-iptables".to_owned(),
            Some("1".to_owned()),
        ),
    ]
    .into();
    let plan = plan_node(&m, &all_exist(&m), &now, &facts()).unwrap();
    let heads: Vec<String> = plan.services.iter().map(Change::headline).collect();
    assert_eq!(
        heads,
        [
            "stop service khagent (systemd)",
            "disable service khagent at boot (systemd)"
        ]
    );
    let heads: Vec<String> = plan.files.iter().map(Change::headline).collect();
    assert!(
        heads.contains(&"remove /etc/khagent/khagent.yaml".to_owned()),
        "{heads:?}"
    );
    assert!(heads.contains(&"remove /etc/sysctl.d/99-zz-khactl.conf".to_owned()));
    assert!(heads.contains(&"restore /etc/kubernetes/pki/ca.crt from /var/lib/khactl/backup/1/etc/kubernetes/pki/ca.crt".to_owned()));
    assert!(
        !heads.iter().any(|h| h.contains("sa.key")),
        "no copy kept: left as it is"
    );
    assert!(heads.contains(&"remove /etc/hosts.khactl.bak".to_owned()));
    assert!(heads.contains(&"remove /etc/fstab.khactl.bak".to_owned()));
    assert!(
        heads
            .iter()
            .any(|h| h.starts_with("reload systemd unit files")),
        "{heads:?}"
    );
    // Only khactl's line leaves /etc/hosts; the swap line is active again.
    let written = |path: &str| {
        plan.files.iter().find_map(|c| match c {
            Change::WriteFile {
                path: p, contents, ..
            } if p == Path::new(path) => Some(String::from_utf8(contents.clone()).unwrap()),
            _ => None,
        })
    };
    assert_eq!(written(HOSTS).unwrap(), "127.0.0.1 localhost\n");
    assert_eq!(
        written(FSTAB).unwrap(),
        "UUID=1 / ext4 defaults 0 1\n/swap none swap sw 0 0\n"
    );
    // Only the sysctl that differs from its noted value, and not one that did not exist.
    let sysctls = plan.files.iter().find_map(|c| match c {
        Change::SetSysctls { values } => Some(values.clone()),
        _ => None,
    });
    let sysctls = sysctls.unwrap();
    assert_eq!(sysctls.len(), 1);
    assert_eq!(sysctls[0].key.path(), "net/ipv4/ip_forward");
    assert_eq!(
        (sysctls[0].from.as_deref(), sysctls[0].to.as_str()),
        (Some("1"), "0")
    );
    assert_eq!(plan.dirs, ["/etc/khagent"]);
    assert_eq!(plan.trees, [AGENT_STATE_DIR, manifest::DIR]);
}

#[test]
fn what_is_already_gone_is_not_a_change() {
    let m = Manifest::parse(MANIFEST);
    let mut f = facts();
    f.files
        .insert(HOSTS.into(), Some(b"127.0.0.1 localhost\n".to_vec()));
    f.files
        .insert(FSTAB.into(), Some(b"UUID=1 / ext4 defaults 0 1\n".to_vec()));
    let now: BTreeMap<String, Option<String>> =
        [("net/ipv4/ip_forward".to_owned(), Some("0".to_owned()))].into();
    let plan = plan_node(&m, &BTreeSet::new(), &now, &f).unwrap();
    assert!(
        plan.services.is_empty() && plan.files.is_empty(),
        "{plan:?}"
    );
    assert!(plan.dirs.is_empty() && plan.trees.is_empty());
}

#[test]
fn a_node_without_a_manifest_has_nothing_of_khactls_to_undo() {
    let m = Manifest::parse("");
    let plan = plan_node(&m, &BTreeSet::new(), &BTreeMap::new(), &facts()).unwrap();
    assert_eq!(plan, ResetPlan::default());
}

const ETCD_MANIFEST: &str = "# khactl manifest v1\n\
    dir\t/etc/etcd\n\
    file\t/etc/etcd/etcd.conf.yml\tnew\n\
    file\t/etc/systemd/system/etcd.service\tnew\n\
    service\tetcd\n";

#[test]
fn an_etcd_node_khactl_installed_loses_its_unit_with_a_daemon_reload_and_may_lose_its_data() {
    let m = Manifest::parse(ETCD_MANIFEST);
    let plan = plan_node(&m, &all_exist(&m), &BTreeMap::new(), &facts()).unwrap();
    let heads: Vec<String> = plan.files.iter().map(Change::headline).collect();
    assert!(
        heads.contains(&"remove /etc/systemd/system/etcd.service".to_owned()),
        "{heads:?}"
    );
    assert!(
        heads
            .iter()
            .any(|h| h.starts_with("reload systemd unit files")),
        "systemd forgets the removed unit: {heads:?}"
    );
    let mut ours = facts();
    ours.files.insert(
        manifest::PATH.into(),
        Some(ETCD_MANIFEST.as_bytes().to_vec()),
    );
    assert!(installed_etcd(&ours));
    // A host whose etcd is not khactl's (no manifest, or one without etcd's config)
    // keeps its data.
    assert!(!installed_etcd(&facts()));
    let mut agent_only = facts();
    agent_only
        .files
        .insert(manifest::PATH.into(), Some(MANIFEST.as_bytes().to_vec()));
    assert!(!installed_etcd(&agent_only));
}
