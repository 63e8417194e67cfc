//! `statsPage`: khagent's HTML stats page on each control plane's own address, port 9000,
//! behind basic auth, fetched with curl through the lab's bridge: 401 with the realm
//! without credentials, 200 with them. The password khactl generated is in the state
//! directory (0600) and on the nodes (0600) and nowhere else: not in the inventory, the
//! config, the run log, khactl's output or the agent's argv. A new password (from
//! `passwordFile`) reaches the running agents by reload, not restart; `reset` removes it.

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::run::{agent_pid, cluster_state, khactl_with, sh, text};
use crate::support::{Lab, indexes, require_root};

const CONTROL_PLANES: [&str; 3] = ["cp1", "cp2", "cp3"];
const REALM: &str = "HAProxy Statistics";

/// `(status code, headers, body)` of `GET http://ADDRESS:9000/stats` from the root namespace
/// over the lab's bridge. Credentials go to curl on its stdin (`-K -`), never in its argv.
fn fetch(lab: &Lab, address: Ipv4Addr, password: Option<&str>) -> (u16, String, String) {
    assert!(
        lab.bridge_up(),
        "lab traffic only while the lab's bridge is up"
    );
    let url = format!("http://{address}:9000/stats");
    let mut curl = Command::new("curl")
        .args(["-sS", "--max-time", "3", "-D", "-", "-K", "-", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl");
    let config = password
        .map(|pw| format!("user = \"admin:{pw}\"\n"))
        .unwrap_or_default();
    curl.stdin
        .take()
        .unwrap()
        .write_all(config.as_bytes())
        .unwrap();
    let out = curl.wait_with_output().unwrap();
    assert!(out.status.success(), "curl {url}: {}", text(&out));
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {all}"));
    (code, head.to_owned(), body.to_owned())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Everything a run wrote where a password must not be: khactl's output and run logs, each
/// node's agent config, argv and journal.
fn places_a_password_must_not_be(lab: &Lab, state: &Path, outputs: &str) -> String {
    let mut all = outputs.to_owned();
    for log in std::fs::read_dir(state.join("logs")).unwrap().flatten() {
        all.push_str(&std::fs::read_to_string(log.path()).unwrap());
    }
    for node in CONTROL_PLANES {
        all.push_str(&lab.read_file(node, "/etc/khagent/khagent.yaml").unwrap());
        let pid = agent_pid(lab, node);
        all.push_str(&sh(
            lab,
            node,
            &format!("tr '\\0' ' ' < /proc/{pid}/cmdline"),
        ));
        all.push_str(&lab.unit_log(node, "khagent"));
    }
    all
}

#[test]
fn the_stats_page_asks_for_the_password_and_a_new_one_arrives_by_reload() {
    require_root();
    let lab = Lab::up("stats-page", indexes::STATS_PAGE, 3, 0);
    let base = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("inventory.yaml");
    let lab_inventory = std::fs::read_to_string(lab.inventory_path()).unwrap();
    std::fs::write(
        &inventory,
        format!("{lab_inventory}statsPage: {{ realm: {REALM} }}\n"),
    )
    .unwrap();

    let first = khactl_with(&lab, &["up"], &inventory, base.path(), &[]);
    assert!(first.status.success(), "{}", text(&first));
    let state = cluster_state(base.path()).unwrap();
    let kept = state.join("stats-password");
    assert_eq!(mode(&kept), 0o600, "the generated password is private");
    let password = std::fs::read_to_string(&kept)
        .unwrap()
        .trim_end()
        .to_owned();
    assert_eq!(password.len(), 32, "{password:?}");
    // `up` says where the page is and where its password is read.
    let said = format!(
        "stats page: http://{}:9000/stats (and on each node running khagent), user admin, \
         password in {}",
        lab.node_address("cp1"),
        kept.display()
    );
    assert!(text(&first).contains(&said), "{}", text(&first));

    for (i, node) in CONTROL_PLANES.iter().enumerate() {
        let address = lab.node_address(node);
        let (code, head, body) = fetch(&lab, address, None);
        assert_eq!(code, 401, "{node} without credentials: {head}");
        assert!(
            head.contains(&format!("WWW-Authenticate: Basic realm=\"{REALM}\"")),
            "{head}"
        );
        assert!(
            !body.contains("cp1"),
            "nothing of the page without credentials"
        );
        assert_eq!(fetch(&lab, address, Some("wrong")).0, 401);
        let (code, _, page) = fetch(&lab, address, Some(&password));
        assert_eq!(code, 200, "{node} with credentials");
        assert!(page.contains("<h2>Backends</h2>"), "{page}");
        for backend in CONTROL_PLANES {
            assert!(
                page.contains(&format!("<td class=l>{backend}</td>")),
                "{page}"
            );
        }
        if i == 0 {
            let on_node = sh(&lab, node, "stat -c %a /etc/khagent/stats.password");
            assert_eq!(on_node, "600");
        }
    }
    let outputs = text(&first) + &lab_inventory;
    let everywhere = places_a_password_must_not_be(&lab, &state, &outputs);
    assert!(
        !everywhere.contains(&password),
        "the password leaked into output, logs, config, argv or journal"
    );

    // A password of the user's own, in a 0600 file: a reload, no restart.
    let mine = dir.path().join("stats.password");
    std::fs::write(&mine, "my-own-stats-password\n").unwrap();
    std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        &inventory,
        format!(
            "{lab_inventory}statsPage: {{ realm: {REALM}, passwordFile: {} }}\n",
            mine.display()
        ),
    )
    .unwrap();
    let pids: Vec<String> = CONTROL_PLANES.iter().map(|n| agent_pid(&lab, n)).collect();
    let second = khactl_with(&lab, &["up"], &inventory, base.path(), &[]);
    assert!(second.status.success(), "{}", text(&second));
    assert!(!text(&second).contains("my-own-stats-password"));
    for node in CONTROL_PLANES {
        let address = lab.node_address(node);
        assert_eq!(
            fetch(&lab, address, Some(&password)).0,
            401,
            "{node}: old one"
        );
        assert_eq!(
            fetch(&lab, address, Some("my-own-stats-password")).0,
            200,
            "{node}: new one"
        );
    }
    let now: Vec<String> = CONTROL_PLANES.iter().map(|n| agent_pid(&lab, n)).collect();
    assert_eq!(pids, now, "reloaded in place, not restarted");

    // Nothing left to change.
    let third = khactl_with(&lab, &["up"], &inventory, base.path(), &[]);
    assert!(third.status.success(), "{}", text(&third));
    assert!(
        text(&third).contains("up: nothing to change"),
        "the same password is no change: {}",
        text(&third)
    );

    // reset takes the password off the nodes with the rest of khactl's files.
    let reset = khactl_with(&lab, &["reset"], &inventory, base.path(), &["--yes"]);
    assert!(reset.status.success(), "{}", text(&reset));
    for node in CONTROL_PLANES {
        assert!(
            lab.read_file(node, "/etc/khagent/stats.password").is_none(),
            "{node} still has the password"
        );
    }
}
