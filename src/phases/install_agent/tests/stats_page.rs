//! `statsPage`: the agent's `stats:` section and its password file.

use super::*;

const PASSWORD: &[u8] = b"Zq9-not-in-any-config-Zq9";

fn with_stats(extra: &str) -> Inventory {
    let text = format!("{INVENTORY}statsPage: {{ realm: HAProxy Statistics{extra} }}\n");
    crate::inventory::parse(&text).unwrap().inventory
}

fn plan(inv: &Inventory, facts: &HostFacts, state: ServiceState, pw: Option<&[u8]>) -> NodePlan {
    plan_node_with(inv, node(inv, "cp1"), facts, &binary(), state, None, pw).unwrap()
}

fn written<'a>(changes: &'a [Change], want: &str) -> Option<&'a Change> {
    changes
        .iter()
        .find(|c| matches!(c, Change::WriteFile { path, .. } if path.as_os_str() == want))
}

#[test]
fn the_password_is_a_secret_0600_file_written_before_the_config_that_names_it() {
    let inv = with_stats("");
    let p = plan(&inv, &fresh(11), ServiceState::default(), Some(PASSWORD));
    assert_eq!(
        paths(&p.files),
        [
            "/usr/local/bin/khagent 755",
            "/etc/khagent/stats.password 600",
            "/etc/khagent/khagent.yaml 600",
            "/etc/systemd/system/khagent.service 644",
            "reload systemd unit files (for khagent)",
        ]
    );
    let Some(Change::WriteFile {
        contents, secret, ..
    }) = written(&p.files, STATS_PASSWORD)
    else {
        panic!("no password file")
    };
    assert!(*secret, "shown and logged by size only");
    assert_eq!(contents.as_slice(), [PASSWORD, b"\n"].concat());
    let Some(Change::WriteFile { contents, .. }) = written(&p.files, AGENT_CONFIG) else {
        panic!("no config")
    };
    let config = String::from_utf8(contents.clone()).unwrap();
    assert!(
        config.contains(
            "stats:\n  listen: \"10.0.0.11:9000\"\n  uri: \"/stats\"\n  realm: \"HAProxy \
             Statistics\"\n  user: \"admin\"\n  password_file: \"/etc/khagent/stats.password\"\n"
        ),
        "{config}"
    );
    assert!(!config.contains("Zq9"), "the password is not in the config");
    // The agent's own parser and rules accept what khactl renders.
    let parsed = khagent::config::Config::parse(&config).unwrap();
    assert!(parsed.problems().is_empty(), "{:?}", parsed.problems());
}

#[test]
fn bind_all_and_loopback_choose_the_listen_address() {
    for (bind, listen) in [("all", "0.0.0.0:9100"), ("loopback", "127.0.0.1:9100")] {
        let inv = with_stats(&format!(", bind: {bind}, port: 9100"));
        let stats = agent_config(&inv, node(&inv, "cp2"), &fresh(12))
            .unwrap()
            .stats
            .unwrap();
        assert_eq!(stats.listen.to_string(), listen);
    }
}

#[test]
fn a_new_password_alone_is_a_reload_and_the_same_one_is_no_change() {
    let inv = with_stats("");
    let first = plan(&inv, &fresh(11), ServiceState::default(), Some(PASSWORD));
    let facts = applied(fresh(11), &first.files);

    let same = plan(&inv, &facts, RUNNING, Some(PASSWORD));
    assert_eq!(same, NodePlan::default());

    let new = plan(&inv, &facts, RUNNING, Some(b"another"));
    assert_eq!(
        paths(&new.files),
        [
            "/var/lib/khagent/restart-pending 600",
            "/etc/khagent/stats.password 600"
        ]
    );
    assert_eq!(
        paths(&new.service)[0],
        "reload service khagent (systemd), after \
         `/usr/local/bin/khagent check --config /etc/khagent/khagent.yaml` passes"
    );
}

#[test]
fn dropping_the_stats_page_removes_the_password_after_the_config_and_restarts() {
    let inv = with_stats("");
    let first = plan(&inv, &fresh(11), ServiceState::default(), Some(PASSWORD));
    let facts = applied(fresh(11), &first.files);
    let without = inventory();
    let p = plan(&without, &facts, RUNNING, None);
    assert_eq!(
        paths(&p.files),
        [
            "/var/lib/khagent/restart-pending 600",
            "/etc/khagent/khagent.yaml 600",
            "remove /etc/khagent/stats.password",
        ]
    );
    assert_eq!(paths(&p.service), CHECKED_RESTART_THEN_UNMARK);
}
