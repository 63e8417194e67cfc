//! The inventory's specification as tests: the examples in `inventories/` validate,
//! every broken inventory in `tests/inventories/broken/` is rejected with the problem
//! its name describes (path, message and line), odd input never panics, and the typed
//! model resolves defaults and per-node overrides as documented.

use std::path::{Path, PathBuf};

use super::*;

mod cost;
mod dedicated_lb;
mod external_etcd;
mod external_lb;
mod node_local;
mod optional_sections;

fn repo_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(sub)
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn problems_of(result: Result<Validated, InventoryError>) -> Vec<Problem> {
    match result {
        Err(InventoryError::Invalid { problems, .. }) => problems,
        Err(other) => panic!("expected an invalid inventory, got {other}"),
        Ok(v) => panic!(
            "expected an invalid inventory, it validated (warnings: {:?})",
            v.warnings
        ),
    }
}

/// Files in `inventories/` that validate with a warning, and a fragment of it.
const EXPECTED_WARNINGS: &[(&str, &str)] = &[(
    "keepalived-guide-two-masters.yaml",
    "2 control-plane nodes: etcd needs 2 of 2 members",
)];

#[test]
fn every_example_inventory_validates() {
    let files = yaml_files(&repo_dir("inventories"));
    assert!(files.len() >= 3, "examples missing: {files:?}");
    for file in files {
        let name = file.file_name().unwrap().to_str().unwrap();
        let validated = load(&file).unwrap_or_else(|e| panic!("{e}"));
        let expected = EXPECTED_WARNINGS.iter().find(|(f, _)| *f == name);
        match expected {
            None => assert!(
                validated.warnings.is_empty(),
                "{name}: {:?}",
                validated.warnings
            ),
            Some((_, fragment)) => {
                assert_eq!(
                    validated.warnings.len(),
                    1,
                    "{name}: {:?}",
                    validated.warnings
                );
                assert!(
                    validated.warnings[0].message.contains(fragment),
                    "{:?}",
                    validated.warnings
                );
            }
        }
    }
}

#[test]
fn the_full_example_reads_as_documented() {
    let v = load(&repo_dir("inventories/three-masters-two-workers.yaml")).unwrap();
    let inv = v.inventory;
    assert_eq!(inv.control_plane().count(), 3);
    assert_eq!(inv.workers().count(), 2);
    assert_eq!(inv.vip.as_ref().unwrap().prefix_length, Some(24));
    assert_eq!(inv.pki.key_type, KeyType::EcdsaP256);
    // Numbers in free-form maps arrive as the text a program on the node receives.
    assert_eq!(inv.sysctls["vm.swappiness"], "0");
    assert_eq!(inv.kubeadm.kubelet_extra_args["max-pods"], "150");
    let w2 = inv.node("w2").unwrap();
    let taints = w2.taints.as_deref().unwrap();
    assert_eq!(taints[0].value.as_deref(), Some("true"));
    assert_eq!(taints[0].effect, TaintEffect::NoSchedule);
    assert_eq!(
        inv.kubeadm.cri_socket.as_str(),
        "unix:///var/run/containerd/containerd.sock"
    );
    let drill = &inv.failover_test;
    let ms = |l: Option<Limit>| l.map(|l| l.get().as_millis());
    assert_eq!(ms(drill.targets.max_split_brain), Some(500));
    assert_eq!(
        ms(drill.scenarios.agent_crash.max_api_unavailable),
        Some(1000)
    );
    assert_eq!(
        ms(drill.scenarios.network_cut.max_long_lived_recovery),
        Some(2500)
    );
    assert_eq!(
        drill.node_up_cmd, None,
        "no command the example's readers would run"
    );
}

/// kubeadm taints a control plane when `taints` is unset and not when it is `[]`: the
/// model keeps the difference.
#[test]
fn taints_left_out_differ_from_an_empty_list() {
    let text = "apiVersion: khactl.io/v1alpha1\nkind: Inventory\ncluster: { name: t, kubernetesVersion: v1.31.2 }\n\
                vip: { address: 10.0.0.100 }\nnodes:\n\
                - { name: a, address: 10.0.0.1, role: control-plane }\n\
                - { name: b, address: 10.0.0.2, role: control-plane, taints: [] }\n\
                - { name: c, address: 10.0.0.3, role: control-plane, taints: ~ }\n";
    let problems = problems_of(parse(text));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "nodes[2].taints");
    let fixed = text.replace(", taints: ~", "");
    let inv = parse(&fixed).unwrap().inventory;
    assert_eq!(inv.nodes[0].taints, None);
    assert_eq!(inv.nodes[1].taints, Some(vec![]));
}

#[test]
fn cri_sockets_are_unix_urls_with_an_absolute_path() {
    for ok in [
        "unix:///var/run/containerd/containerd.sock",
        "unix:///var/run/crio/crio.sock",
        "unix:///run/k3s/containerd/containerd.sock",
    ] {
        assert_eq!(CriSocket::new(ok).unwrap().as_str(), ok);
    }
    for bad in [
        "unix://",
        "unix:///",
        "unix://run/x.sock",
        "tcp://10.0.0.1:1234",
        "npipe:////./pipe/x",
        "unix:///run/x.sock?x=1",
        "unix:///run/a b.sock",
        "",
    ] {
        assert!(CriSocket::new(bad).is_err(), "{bad}");
    }
    assert_eq!(
        CriSocket::default().as_str(),
        "unix:///var/run/containerd/containerd.sock"
    );
}

#[test]
fn left_out_fields_take_their_documented_defaults() {
    let inv = load(&repo_dir("inventories/minimal.yaml"))
        .unwrap()
        .inventory;
    assert_eq!(inv.vip.as_ref().unwrap().router_id, RouterId::DEFAULT);
    assert_eq!(inv.vip.as_ref().unwrap().port.get(), 8443);
    assert_eq!(
        (inv.ssh.user.as_str(), inv.ssh.port.get(), inv.ssh.sudo),
        ("root", 22, false)
    );
    assert_eq!(inv.networking.pod_subnet.to_string(), "10.244.0.0/16");
    assert_eq!(inv.networking.service_subnet.to_string(), "10.96.0.0/12");
    assert_eq!(inv.networking.dns_domain.as_str(), "cluster.local");
    assert_eq!(inv.pki, PkiSettings::default());
    assert_eq!(inv.pki.key_type, KeyType::Rsa2048);
    assert_eq!(
        (inv.pki.ca_validity_days, inv.pki.cert_validity_days),
        (3650, 365)
    );
}

#[test]
fn ssh_for_puts_node_overrides_over_the_defaults() {
    let inv = load(&repo_dir("inventories/three-masters-two-workers.yaml"))
        .unwrap()
        .inventory;
    let cp1 = inv.ssh_for(inv.node("cp1").unwrap());
    assert_eq!(
        (cp1.user.as_str(), cp1.port.get(), cp1.sudo),
        ("debian", 22, true)
    );
    // `~/` is expanded: the path is opened locally, where no shell does it.
    let home = PathBuf::from(std::env::var_os("HOME").unwrap());
    assert_eq!(cp1.identity_file, Some(home.join(".ssh/id_ed25519")));
    assert_eq!(cp1.bastion.as_ref().unwrap().address, "bastion.example.com");
    let cp3 = inv.ssh_for(inv.node("cp3").unwrap());
    assert_eq!(cp3.port.get(), 2022);
    assert_eq!(cp3.address.to_string(), "192.168.10.13");
    assert!(inv.node("nope").is_none());
}

struct Case {
    file: &'static str,
    path: &'static str,
    fragment: &'static str,
    line: Option<usize>,
}

const fn case(
    file: &'static str,
    path: &'static str,
    fragment: &'static str,
    line: Option<usize>,
) -> Case {
    Case {
        file,
        path,
        fragment,
        line,
    }
}

/// Each broken inventory, the problem it must raise (among possibly others): field
/// path, a distinctive part of the message, and the line where the user finds it.
const CASES: &[Case] = &[
    case(
        "unknown-field-typo",
        "nodes[0].adress",
        "did you mean `address`?",
        Some(8),
    ),
    case(
        "unknown-top-level-field",
        "node",
        "did you mean `nodes`?",
        Some(6),
    ),
    case(
        "snake-case-field",
        "vip.router_id",
        "did you mean `routerId`?",
        Some(5),
    ),
    case(
        "wrong-api-version",
        "apiVersion",
        "this khactl reads `apiVersion: khactl.io/v1alpha1`",
        Some(2),
    ),
    case("wrong-kind", "kind", "`kind: Inventory`", Some(3)),
    case(
        "duplicate-node-names",
        "nodes[1].name",
        "cp1 is also the name of nodes[0] (cp1)",
        Some(8),
    ),
    case(
        "duplicate-node-addresses",
        "nodes[2].address",
        "10.0.0.11 is also the address of nodes[0] (cp1); give each node its own address",
        Some(14),
    ),
    case(
        "vip-is-a-node-address",
        "vip.address",
        "also the address of nodes[1] (cp2)",
        Some(5),
    ),
    case(
        "vip-is-network-address",
        "vip.address",
        "network address of 10.0.0.0/24",
        Some(5),
    ),
    case(
        "vip-is-broadcast-address",
        "vip.address",
        "broadcast address of 10.0.0.0/24",
        Some(6),
    ),
    case(
        "vip-with-prefix-in-address",
        "vip.address",
        "`vip.prefixLength: 24`",
        Some(5),
    ),
    case(
        "control-plane-outside-vip-subnet",
        "nodes[2].address",
        "outside the VIP's subnet",
        Some(9),
    ),
    case(
        "control-plane-with-ipv6-address",
        "nodes[1].address",
        "control-plane node fd00::12 has an IPv6 address",
        Some(8),
    ),
    case(
        "no-control-plane",
        "nodes",
        "no node has `role: control-plane`",
        Some(6),
    ),
    case(
        "unknown-role",
        "nodes[0].role",
        "expected one of `control-plane`, `worker`, `etcd`",
        Some(7),
    ),
    case(
        "empty-node-list",
        "nodes",
        "the list of nodes is empty",
        Some(6),
    ),
    case("router-id-zero", "vip.routerId", "use 1-255", Some(5)),
    case(
        "router-id-too-large",
        "vip.routerId",
        "invalid VRRP router id 256",
        Some(7),
    ),
    case(
        "ssh-port-out-of-range",
        "ssh.port",
        "invalid port 70000: use 1-65535",
        Some(7),
    ),
    case(
        "lb-port-is-apiserver-port",
        "vip.port",
        "put the load balancer on 8443 or 16443",
        Some(5),
    ),
    case(
        "invalid-node-name",
        "nodes[0].name",
        "invalid name \"CP_1\"",
        Some(7),
    ),
    case(
        "invalid-dns-name",
        "vip.dnsName",
        "invalid DNS name \"k8s_api.local\"",
        Some(5),
    ),
    case(
        "invalid-node-address",
        "nodes[0].address",
        "not an IP address",
        Some(7),
    ),
    case(
        "bad-kubernetes-version",
        "cluster.kubernetesVersion",
        "e.g. v1.31.2",
        Some(6),
    ),
    case(
        "pod-and-service-subnets-overlap",
        "networking.serviceSubnet",
        "overlaps podSubnet 10.64.0.0/10",
        Some(12),
    ),
    case(
        "pod-subnet-contains-nodes",
        "networking.podSubnet",
        "contains nodes[0] (cp1) 10.0.0.11",
        Some(11),
    ),
    case(
        "pod-subnet-contains-nodes",
        "networking.podSubnet",
        "the VIP 10.0.0.100",
        Some(11),
    ),
    case(
        "nodes-inside-default-service-subnet",
        "networking.serviceSubnet",
        "10.96.0.0/12 (the default serviceSubnet) contains nodes[0] (cp1) 10.99.1.11, the VIP",
        None,
    ),
    case(
        "service-subnet-too-small",
        "networking.serviceSubnet",
        "tenth for cluster DNS",
        Some(11),
    ),
    case(
        "subnet-with-host-bits",
        "networking.serviceSubnet",
        "write the network itself: 10.96.0.0/12",
        Some(11),
    ),
    case(
        "pod-subnet-smaller-than-node-range",
        "networking.podSubnet",
        "smaller than the /24 each node gets",
        Some(11),
    ),
    case(
        "bad-sysctl-key",
        "sysctls[\"net.ipv4.ip_forward=1\"]",
        "is not a sysctl name",
        Some(11),
    ),
    case(
        "multiline-sysctl-value",
        "sysctls[\"vm.swappiness\"]",
        "write it on one line",
        Some(11),
    ),
    case(
        "same-sysctl-twice",
        "sysctls[\"net/ipv4/ip_forward\"]",
        "the same sysctl as \"net.ipv4.ip_forward\"",
        Some(12),
    ),
    case(
        "bad-label-key",
        "nodes[0].labels[\"-team\"]",
        "is not a valid key",
        Some(11),
    ),
    case(
        "bad-taint-effect",
        "nodes[0].taints[0].effect",
        "`NoSchedule`, `PreferNoSchedule`, `NoExecute`",
        Some(11),
    ),
    case(
        "empty-bastion-address",
        "ssh.bastion.address",
        "the bastion address is empty",
        Some(8),
    ),
    case(
        "ssh-user-with-host",
        "ssh.user",
        "write only the login name",
        Some(7),
    ),
    case(
        "non-root-without-sudo",
        "ssh.user",
        "set `ssh.sudo: true`",
        Some(7),
    ),
    case(
        "node-override-without-sudo",
        "nodes[0].ssh",
        "set `sudo: true` in this node's ssh",
        Some(7),
    ),
    case(
        "identity-file-is-public-key",
        "ssh.identityFile",
        "point at the private key",
        Some(7),
    ),
    case(
        "extra-arg-with-dashes",
        "kubeadm.apiServerExtraArgs[\"--audit-log-maxage\"]",
        "write \"audit-log-maxage\" without the leading dashes",
        Some(12),
    ),
    case(
        "node-label-kubelet-may-not-set",
        "nodes[1].labels[\"node-role.kubernetes.io/worker\"]",
        "the kubelet may not set on its own Node",
        Some(12),
    ),
    case(
        "kubelet-arg-set-by-khactl",
        "kubeadm.kubeletExtraArgs.node-labels",
        "from `nodes[].labels`",
        Some(11),
    ),
    case(
        "cri-socket-without-scheme",
        "kubeadm.criSocket",
        "unix:///run/containerd/containerd.sock",
        Some(9),
    ),
    case(
        "cert-outlives-ca",
        "pki.certValidityDays",
        "outlives the CA",
        Some(12),
    ),
    case(
        "unknown-key-type",
        "pki.keyType",
        "expected `rsa-2048` or `ecdsa-p256`",
        Some(11),
    ),
    case("missing-vip", "vip", "missing field `vip`", None),
    case("empty-file", "", "the inventory is empty", None),
    case("list-at-top-level", "", "must be a mapping of fields", None),
    case(
        "tab-indentation",
        "",
        "YAML indents with spaces only",
        Some(4),
    ),
    case("huge-number", "", "too large", Some(7)),
    case("two-documents", "", "more than one YAML document", None),
    case(
        "duplicate-yaml-key",
        "",
        "the key \"vip\" appears twice",
        Some(2),
    ),
    case(
        "node-is-not-a-mapping",
        "nodes[1]",
        "expected a mapping with `name`, `address`, `role`",
        Some(6),
    ),
    // Several independent mistakes in one file: each is reported, in file order.
    case("many-mistakes", "vip.routerId", "use 1-255", Some(5)),
    case("many-mistakes", "ssh.user", "set `ssh.sudo: true`", Some(6)),
    case(
        "many-mistakes",
        "nodes[1].adress",
        "did you mean `address`?",
        Some(9),
    ),
    case(
        "many-mistakes",
        "nodes[2].address",
        "also the address of nodes[0] (cp1)",
        Some(10),
    ),
    case(
        "many-mistakes",
        "networking.serviceSubnet",
        "10.96.0.0/12 (the default serviceSubnet) overlaps podSubnet 10.96.0.0/16",
        Some(11),
    ),
    case(
        "many-mistakes",
        "kubeadm.schedulerExtraArgs[\"--v\"]",
        "without the leading dashes",
        Some(15),
    ),
    case(
        "failover-target-without-unit",
        "failoverTest.scenarios.agentCrash.maxApiUnavailable",
        "give a unit (ms, s or m)",
        Some(10),
    ),
    case(
        "failover-scenario-spelt-as-the-flag",
        "failoverTest.scenarios.agent-crash",
        "did you mean `agentCrash`?",
        Some(10),
    ),
];

fn broken(name: &str) -> PathBuf {
    repo_dir("tests/inventories/broken").join(format!("{name}.yaml"))
}

#[test]
fn each_broken_inventory_reports_its_problem_at_its_path_and_line() {
    let mut failures = Vec::new();
    for c in CASES {
        let result = load(&broken(c.file));
        let rendered = match &result {
            Err(e) => e.render(),
            Ok(_) => String::new(),
        };
        let problems = problems_of(result);
        let hit = problems.iter().find(|p| {
            p.severity == Severity::Error && p.path == c.path && p.message.contains(c.fragment)
        });
        match hit {
            None => failures.push(format!(
                "{}: no error at {:?} with {:?}\n{rendered}",
                c.file, c.path, c.fragment
            )),
            Some(p) if c.line.is_some() && p.line != c.line => failures.push(format!(
                "{}: {:?} at line {:?}, expected {:?}",
                c.file, c.path, p.line, c.line
            )),
            Some(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_file_with_several_mistakes_reports_exactly_those() {
    let problems = problems_of(load(&broken("many-mistakes")));
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "vip.routerId",
            "ssh.user",
            "nodes[1].adress",
            "nodes[2].address",
            "networking.serviceSubnet",
            "kubeadm.schedulerExtraArgs[\"--v\"]",
        ]
    );
}

#[test]
fn every_broken_file_has_a_case_and_every_case_a_file() {
    for file in yaml_files(&repo_dir("tests/inventories/broken")) {
        let stem = file.file_stem().unwrap().to_str().unwrap();
        assert!(
            CASES.iter().any(|c| c.file == stem),
            "{stem}.yaml has no case in CASES"
        );
    }
    for c in CASES {
        assert!(broken(c.file).is_file(), "{} has no file", c.file);
    }
    assert!(CASES.len() >= 20);
}

#[test]
fn the_rendered_error_names_the_file_and_lists_each_problem() {
    let path = broken("duplicate-node-addresses");
    let text = load(&path).unwrap_err().render();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!("{} is not a valid inventory: 1 error", path.display())
    );
    assert_eq!(
        lines.next().unwrap(),
        "  error: nodes[2].address (line 14): 10.0.0.11 is also the address of nodes[0] (cp1); \
         give each node its own address"
    );
    assert_eq!(lines.next(), None);
}

#[test]
fn a_missing_file_says_what_to_do() {
    let err = load(Path::new("/nonexistent/inventory.yaml")).unwrap_err();
    assert!(matches!(err, InventoryError::Read { .. }));
    let text = err.to_string();
    assert!(
        text.contains("/nonexistent/inventory.yaml") && text.contains("hint: check the path"),
        "{text}"
    );
    assert!(err.problems().is_empty());
}

#[test]
fn warnings_alone_do_not_reject_an_inventory() {
    let v = load(&repo_dir("inventories/keepalived-guide-two-masters.yaml")).unwrap();
    let w = &v.warnings[0];
    assert_eq!(
        (w.severity, w.path.as_str(), w.line),
        (Severity::Warning, "nodes", Some(20))
    );
    assert!(w.message.contains("tolerate no failure"), "{}", w.message);
}

#[test]
fn four_control_plane_nodes_tolerate_no_more_than_three() {
    let text = "apiVersion: khactl.io/v1alpha1\nkind: Inventory\ncluster: { name: t, kubernetesVersion: v1.31.2 }\n\
                vip: { address: 10.0.0.100 }\nnodes:\n\
                - { name: a, address: 10.0.0.1, role: control-plane }\n\
                - { name: b, address: 10.0.0.2, role: control-plane }\n\
                - { name: c, address: 10.0.0.3, role: control-plane }\n\
                - { name: d, address: 10.0.0.4, role: control-plane }\n";
    let v = parse(text).unwrap();
    assert!(
        v.warnings[0].message.contains("only 1 failure(s), like 3"),
        "{:?}",
        v.warnings
    );
}

/// Input no inventory should be: each must come back as problems, never a panic.
#[test]
fn odd_documents_are_rejected_without_panicking() {
    let odd = [
        "",
        "~",
        "---\n...\n",
        "0",
        "\"\"",
        "[]",
        "{}",
        "\u{feff}",
        "\t",
        "{",
        "]",
        ": :",
        "a: &a [*a]",
        "a: *missing",
        "apiVersion: !!binary aGVsbG8=",
        "apiVersion: !custom x\nkind: Inventory",
        "nodes: {}\nvip: []\ncluster: 1\nssh: ~\npki: [1]\nkubeadm: x\nsysctls: [a]",
        "nodes: [~, 1, [], {labels: {a: {b: c}}, taints: {}}]",
        "nodes: [{ssh: {bastion: {address: [1]}}, labels: {[1, 2]: x}}]",
        "vip: { address: 10.0.0.1, port: 1e400, routerId: -1, prefixLength: 99 }",
        "vip: { address: 10.0.0.1, port: 99999999999999999999999999999999999999999 }",
        "sysctls: { 1: 2, true: false, ~: x }",
        "pki: { caValidityDays: 4294967296, certValidityDays: -5 }",
        "networking: { podSubnet: 10.0.0.0/33, serviceSubnet: ::/0 }",
        &"- ".repeat(500),
        &format!("{}1{}", "[".repeat(300), "]".repeat(300)),
    ];
    for text in odd {
        let problems = problems_of(parse(text));
        assert!(
            problems
                .iter()
                .any(|p| p.severity == Severity::Error && !p.message.is_empty()),
            "{text:?}: {problems:?}"
        );
    }
}

/// Every prefix of a valid file, and the file with any one line removed, either
/// validates or is rejected with at least one error: a crude fuzzer over realistic text.
#[test]
fn truncated_and_mangled_examples_never_panic() {
    let text =
        std::fs::read_to_string(repo_dir("inventories/three-masters-two-workers.yaml")).unwrap();
    let check = |candidate: &str| match parse(candidate) {
        Ok(_) => {}
        Err(e) => assert!(
            e.problems().iter().any(|p| p.severity == Severity::Error),
            "{candidate:?}: {e}"
        ),
    };
    for (i, _) in text.char_indices().step_by(7) {
        check(&text[..i]);
    }
    let lines: Vec<&str> = text.lines().collect();
    for skip in 0..lines.len() {
        let mangled: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, l)| *l)
            .collect();
        check(&mangled.join("\n"));
    }
}

#[test]
fn only_a_leading_tilde_slash_is_expanded() {
    let home = Some(PathBuf::from("/home/ops"));
    let expand = |p: &str, h: Option<PathBuf>| model::expand_home(Path::new(p), h);
    assert_eq!(
        expand("~/.ssh/k", home.clone()),
        PathBuf::from("/home/ops/.ssh/k")
    );
    assert_eq!(
        expand("/keys/~/k", home.clone()),
        PathBuf::from("/keys/~/k")
    );
    assert_eq!(expand("keys/k", home), PathBuf::from("keys/k"));
    assert_eq!(expand("~/.ssh/k", None), PathBuf::from("~/.ssh/k"));
}

#[test]
fn a_file_that_is_not_utf8_is_an_inventory_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.yaml");
    std::fs::write(
        &path,
        b"apiVersion: khactl.io/v1alpha1\nkind: Inventory\ncluster: { name: caf\xe9 }\n",
    )
    .unwrap();
    let problems = problems_of(load(&path));
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].line, Some(3));
    assert!(problems[0].message.contains("not UTF-8"), "{problems:?}");
}

#[test]
fn map_keys_that_differ_only_in_yaml_type_are_duplicates() {
    let text = "apiVersion: khactl.io/v1alpha1\nkind: Inventory\ncluster: { name: t, kubernetesVersion: v1.31.2 }\n\
                vip: { address: 10.0.0.100 }\n\
                nodes: [{ name: a, address: 10.0.0.1, role: control-plane, labels: { 1: x, \"1\": y } }]\n";
    let problems = problems_of(parse(text));
    assert!(
        problems
            .iter()
            .any(|p| p.path == "nodes[0].labels.1" && p.message.contains("twice")),
        "{problems:?}"
    );
}

#[test]
fn an_empty_label_value_is_the_empty_string() {
    let text = "apiVersion: khactl.io/v1alpha1\nkind: Inventory\ncluster: { name: t, kubernetesVersion: v1.31.2 }\n\
                vip: { address: 10.0.0.100 }\n\
                nodes: [{ name: a, address: 10.0.0.1, role: control-plane, labels: { example.com/edge: } }]\n";
    let inv = parse(text).unwrap().inventory;
    assert_eq!(inv.nodes[0].labels["example.com/edge"], "");
}

/// The typed model written back out is an inventory that reads the same: the
/// serialized names are the documented ones (a tool can print the effective inventory).
#[test]
fn the_model_round_trips_through_yaml() {
    for file in yaml_files(&repo_dir("inventories")) {
        let inv = load(&file).unwrap().inventory;
        let text = serde_yaml_ng::to_string(&inv).unwrap();
        let again = parse(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", file.display()));
        assert_eq!(again.inventory, inv, "{}", file.display());
    }
}
