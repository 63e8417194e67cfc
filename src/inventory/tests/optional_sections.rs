//! `statsPage` and `hostPreparation`: defaults, and each bad value named by its path.

use super::super::*;

const HEAD: &str = "apiVersion: khactl.io/v1alpha1\nkind: Inventory\n\
                    cluster: { name: t, kubernetesVersion: v1.31.2 }\n\
                    vip: { address: 10.0.0.100, port: 16443 }\n\
                    nodes:\n\
                    - { name: cp1, address: 10.0.0.11, role: control-plane }\n";

fn with(section: &str) -> Result<Validated, InventoryError> {
    parse(&format!("{HEAD}{section}"))
}

/// `(path, message)` of every error.
fn errors(section: &str) -> Vec<(String, String)> {
    super::problems_of(with(section))
        .into_iter()
        .filter(|p| p.severity == Severity::Error)
        .map(|p| (p.path, p.message))
        .collect()
}

#[test]
fn stats_page_defaults_to_the_guides_port_path_and_user_on_the_nodes_address() {
    let inv = with("statsPage: {}\n").unwrap().inventory;
    let page = inv.stats_page.unwrap();
    assert_eq!(page.bind, StatsBind::Node);
    assert_eq!(page.port.get(), 9000);
    assert_eq!(
        (page.path.as_str(), page.user.as_str()),
        ("/stats", "admin")
    );
    assert!(
        page.password_file.is_none(),
        "generated into the state directory"
    );
    assert!(with("").unwrap().inventory.stats_page.is_none());
}

#[test]
fn stats_page_values_the_agent_would_refuse_are_errors_at_their_field() {
    let errs = errors(
        "statsPage:\n  bind: everywhere\n  path: stats\n  realm: 'a \"b\"'\n  user: 'ad:min'\n  \
         passwordFile: ''\n  password: hunter2\n",
    );
    let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "statsPage.bind",
            "statsPage.path",
            "statsPage.realm",
            "statsPage.user",
            "statsPage.passwordFile",
            "statsPage.password",
        ],
        "{errs:?}"
    );
    let message = |path: &str| &errs.iter().find(|(p, _)| p == path).unwrap().1;
    assert!(message("statsPage.path").contains("must start with `/`"));
    assert!(message("statsPage.user").contains("`:`"));
    // The password itself has no field: only a file, or a generated one.
    assert!(message("statsPage.password").contains("passwordFile"));
}

#[test]
fn stats_page_port_may_not_be_the_load_balancers_or_the_control_planes() {
    for (port, what) in [
        (6443, "the API server's port"),
        (16443, "the API load balancer's"),
        (2379, "etcd's client port"),
        (10250, "the kubelet's port"),
        (9901, "khagent's own status port"),
    ] {
        let errs = errors(&format!("statsPage: {{ port: {port} }}\n"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "statsPage.port");
        assert!(errs[0].1.contains(what), "{port}: {}", errs[0].1);
    }
}

#[test]
fn host_preparation_defaults_to_open_ports_and_permissive_and_names_bad_values() {
    let inv = with("").unwrap().inventory;
    assert_eq!(inv.host_preparation.firewalld, FirewalldAction::OpenPorts);
    assert_eq!(inv.host_preparation.selinux, SelinuxAction::Permissive);
    let inv = with("hostPreparation: { firewalld: stop, selinux: leave }\n")
        .unwrap()
        .inventory;
    assert_eq!(inv.host_preparation.firewalld, FirewalldAction::Stop);
    assert_eq!(inv.host_preparation.selinux, SelinuxAction::Leave);
    let errs = errors("hostPreparation: { firewalld: disabled, selinux: disabled }\n");
    assert_eq!(
        errs.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["hostPreparation.firewalld", "hostPreparation.selinux"],
        "{errs:?}"
    );
    assert!(errs[0].1.contains("open-ports"), "{}", errs[0].1);
}
