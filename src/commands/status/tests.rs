//! `status` against recording fake nodes: what it asks, that it only reads, and what it makes
//! of a healthy cluster, a degraded one and a double VIP holder.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use super::*;
use crate::inventory::SshTarget;
use crate::remote::fake::{FakeConnector, Record, Responder, output};
use crate::remote::{ConnectOptions, Host, HostFuture, RemoteCommand, RemoteError};
use crate::report::{Event, Reporter};

const INVENTORY: &str = "\
apiVersion: khactl.io/v1alpha1
kind: Inventory
cluster: { name: fake, kubernetesVersion: v1.31.2 }
vip: { address: 10.0.0.100, prefixLength: 24, interface: eth0 }
pki: { keyType: ecdsa-p256 }
nodes:
  - { name: cp1, address: 10.0.0.11, role: control-plane }
  - { name: cp2, address: 10.0.0.12, role: control-plane }
  - { name: cp3, address: 10.0.0.13, role: control-plane }
  - { name: w1, address: 10.0.0.21, role: worker }
";

#[derive(Clone, Default)]
struct Quiet(Arc<Mutex<Vec<String>>>);

impl Reporter for Quiet {
    fn event(&self, event: &Event<'_>) {
        if let Some(l) = crate::report::plain_line(event, true) {
            self.0.lock().unwrap().push(l);
        }
    }
}

/// How the fake cluster is broken.
#[derive(Default, Clone)]
struct Faults {
    /// Nodes whose SSH does not answer.
    unreachable: BTreeSet<&'static str>,
    /// Control planes whose khagent is stopped.
    agent_stopped: BTreeSet<&'static str>,
    /// Control planes whose etcd is stopped (and so their API server not ready).
    etcd_stopped: BTreeSet<&'static str>,
    /// Nodes that have the VIP on an interface (cp1 when empty).
    holders: BTreeSet<&'static str>,
}

fn octet(node: &str) -> u8 {
    match node {
        "cp1" => 11,
        "cp2" => 12,
        "cp3" => 13,
        _ => 21,
    }
}

fn agent_page(node: &str, f: &Faults) -> String {
    let backends: Vec<String> = ["cp1", "cp2", "cp3"]
        .iter()
        .map(|b| {
            let healthy = !f.etcd_stopped.contains(b);
            format!(
                r#"{{"name":"{b}","address":"10.0.0.{}:6443","healthy":{healthy},"active_connections":1,"last_error":null}}"#,
                octet(b)
            )
        })
        .collect();
    let master = f.holders.contains(node) && node == "cp1";
    let state = if master { "master" } else { "backup" };
    format!(
        r#"{{"version":"0.1.0","uptime_seconds":5,"listener":{{"listening":true,"active_connections":2}},
           "backends":[{}],"track":{{"priority_delta":0,"force_fault":false,"reasons":[]}},
           "vrrp":{{"state":"{state}","base_priority":250,"effective_priority":250,"holds_vip":{master},"master_address":"10.0.0.11"}}}}"#,
        backends.join(",")
    )
}

fn members_json() -> String {
    let m: Vec<String> = ["cp1", "cp2", "cp3"]
        .iter()
        .map(|n| {
            let o = octet(n);
            format!(
                r#"{{"ID":"{o}","name":"{n}","peerURLs":["https://10.0.0.{o}:2380"],"clientURLs":["https://10.0.0.{o}:2379"]}}"#
            )
        })
        .collect();
    format!(r#"{{"members":[{}]}}"#, m.join(","))
}

fn responder(f: Faults) -> Responder {
    Rc::new(move |node: &str, cmd: &RemoteCommand| {
        let label = cmd.label();
        let argv = cmd.argv();
        let up = |n: &str| !f.etcd_stopped.contains(n);
        let out = if label.starts_with("khactl-probe") {
            output(
                0,
                &format!(
                    "os id debian\nos version 12\nos arch x86_64\nos init systemd\nos uid 0\n\
                     swap active 0\naddr eth0 10.0.0.{}/24\n",
                    octet(node)
                ),
            )
        } else if argv[0] == "ip" {
            let mut text = format!(
                "2: eth0    inet 10.0.0.{}/24 scope global eth0\n",
                octet(node)
            );
            if f.holders.contains(node) {
                text.push_str("2: eth0    inet 10.0.0.100/24 scope global secondary eth0\n");
            }
            output(0, &text)
        } else if label.starts_with("service-state") {
            if f.agent_stopped.contains(node) {
                output(0, "enabled\n")
            } else {
                output(0, "enabled\nactive\n")
            }
        } else if argv[0] == "curl" && argv.last().is_some_and(|u| u.ends_with("/status")) {
            output(0, &agent_page(node, &f))
        } else if label.starts_with("readyz") {
            // argv: sh -c SCRIPT readyz HOST PORT ADDRESS
            let address = &argv[6];
            let at_node = ["cp1", "cp2", "cp3"]
                .into_iter()
                .find(|n| *address == format!("10.0.0.{}", octet(n)));
            match at_node {
                Some(n) if !up(n) => output(7, ""),
                _ => output(0, "ok"),
            }
        } else if label.starts_with("etcd-api") {
            if up(node) {
                output(0, &members_json())
            } else {
                output(7, "")
            }
        } else if label.starts_with("etcd-health") {
            let text: String = argv[4..]
                .iter()
                .map(|u| {
                    let n = ["cp1", "cp2", "cp3"]
                        .into_iter()
                        .find(|n| u.contains(&format!(".{}:", octet(n))))
                        .unwrap_or("?");
                    format!("{u} {}\n", if up(n) { "ok" } else { "down" })
                })
                .collect();
            output(0, &text)
        } else if label.starts_with("etcd-status") {
            let text: String = argv[4..]
                .iter()
                .map(|u| {
                    let o: u8 = u.rsplit('.').next().unwrap()[..2].parse().unwrap();
                    let n = ["cp1", "cp2", "cp3"].into_iter().find(|n| octet(n) == o).unwrap();
                    if up(n) {
                        format!(
                            r#"{u} {{"header":{{"member_id":"{o}"}},"version":"3.4.23","dbSize":"20480","leader":"11"}}"#
                        ) + "\n"
                    } else {
                        format!("{u} -\n")
                    }
                })
                .collect();
            output(0, &text)
        } else if argv[0] == "kubectl" {
            let now = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            output(
                0,
                &format!(
                    r#"{{"items":[{{"metadata":{{"name":"kube-controller-manager"}},"spec":{{"holderIdentity":"cp2_a","leaseDurationSeconds":15,"renewTime":"{now}"}}}},
                    {{"metadata":{{"name":"kube-scheduler"}},"spec":{{"holderIdentity":"cp1_b","leaseDurationSeconds":15,"renewTime":"{now}"}}}}]}}"#
                ),
            )
        } else if label.starts_with("cert-expiry") {
            output(0, "")
        } else {
            output(99, &format!("the fake does not know {label}"))
        };
        Ok::<_, RemoteError>(out)
    })
}

/// Connects like the fake, except to the nodes whose SSH is down.
struct Connector {
    inner: FakeConnector,
    down: BTreeSet<&'static str>,
}

impl crate::remote::Connector for Connector {
    fn connect<'a>(
        &'a self,
        target: &'a SshTarget,
        opts: &'a ConnectOptions,
    ) -> HostFuture<'a, Result<Box<dyn Host>, RemoteError>> {
        if self.down.contains(target.node.as_str()) {
            let node = target.node.to_string();
            return Box::pin(async move {
                Err(RemoteError::Connect {
                    node,
                    address: "10.0.0.21".to_owned(),
                    detail: "connection refused".to_owned(),
                })
            });
        }
        self.inner.connect(target, opts)
    }
}

async fn status(faults: Faults) -> (anyhow::Result<StatusResult>, Record, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("inventory.yaml");
    std::fs::write(&inventory, INVENTORY).unwrap();
    let mut faults = faults;
    if faults.holders.is_empty() {
        faults.holders.insert("cp1");
    }
    let record: Record = Rc::new(RefCell::new(Vec::new()));
    let connector = Connector {
        inner: FakeConnector {
            responder: responder(faults.clone()),
            record: Rc::clone(&record),
        },
        down: faults.unreachable.clone(),
    };
    let opts = StatusOptions {
        nodes: NodeOptions {
            inventory,
            parallelism: 10,
            connect_timeout: Duration::from_secs(1),
            state_dir: Some(dir.path().join("state")),
        },
        watch: None,
    };
    let r = run_with(
        &opts,
        Box::new(Quiet::default()),
        None,
        Some(Box::new(connector)),
    )
    .await;
    (r, record, dir)
}

#[tokio::test(flavor = "current_thread")]
async fn a_healthy_cluster_is_healthy_and_status_ran_only_read_only_commands() {
    let (r, record, _dir) = status(Faults::default()).await;
    let r = r.unwrap();
    assert!(r.health.healthy, "{:?}", r.health.problems);
    assert!(r.degraded().is_none());
    assert_eq!(r.health.vip.holders, ["cp1"]);
    assert_eq!(r.health.vip.api_ready, Some(true));
    assert_eq!(r.health.etcd.members.len(), 3);
    assert!(r.health.etcd.members[0].leader && !r.health.etcd.members[1].leader);
    assert_eq!(
        r.health.leaders.controller_manager.as_ref().unwrap().node,
        "cp2"
    );
    let seen = record.borrow();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|s| s.read_only),
        "every command of status is read-only: {:?}",
        seen.iter()
            .filter(|s| !s.read_only)
            .map(|s| &s.label)
            .collect::<Vec<_>>()
    );
    // Each control plane's agent and API server were asked on that node itself.
    for cp in ["cp1", "cp2", "cp3"] {
        assert!(
            seen.iter()
                .any(|s| s.node == cp && s.label.starts_with("service-state"))
        );
        assert!(seen.iter().any(|s| s.node == cp && s.argv[0] == "curl"));
    }
    assert!(
        !seen
            .iter()
            .any(|s| s.node == "w1" && s.label.starts_with("service-state"))
    );
    let log = std::fs::read_to_string(r.log.as_ref().unwrap()).unwrap();
    assert!(
        r.log
            .as_ref()
            .unwrap()
            .to_string_lossy()
            .ends_with("-status.log")
    );
    assert!(
        log.contains("etcd-status"),
        "every command reaches the run log"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_unreachable_node_a_stopped_agent_and_a_stopped_etcd_member_are_all_named() {
    let faults = Faults {
        unreachable: ["w1"].into(),
        agent_stopped: ["cp2"].into(),
        etcd_stopped: ["cp3"].into(),
        ..Faults::default()
    };
    let (r, _, _dir) = status(faults).await;
    let r = r.unwrap();
    assert!(!r.health.healthy);
    let problems: Vec<&str> = r
        .health
        .problems
        .iter()
        .map(|p| p.message.as_str())
        .collect();
    assert!(
        problems.iter().any(|p| p.starts_with("w1 is unreachable")),
        "{problems:?}"
    );
    assert!(
        problems.contains(&"cp2: khagent is not running"),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.starts_with("etcd member cp3 ")),
        "{problems:?}"
    );
    assert!(
        problems.contains(&"cp3: the API server's /readyz is not ok"),
        "{problems:?}"
    );
    let w1 = r.health.nodes.iter().find(|n| n.name == "w1").unwrap();
    assert!(!w1.reachable);
    let e = r.degraded().unwrap();
    assert!(
        e.to_string().starts_with("cluster fake is degraded: "),
        "{e}"
    );
    assert_eq!(e.hints().len(), r.health.problems.len());
    let text = r.text().join("\n");
    assert!(text.contains("w1  worker 10.0.0.21  UNREACHABLE"), "{text}");
}

#[tokio::test(flavor = "current_thread")]
async fn the_vip_on_two_nodes_is_a_double_holder() {
    let faults = Faults {
        holders: ["cp1", "cp3"].into(),
        ..Faults::default()
    };
    let (r, _, _dir) = status(faults).await;
    let r = r.unwrap();
    assert!(!r.health.healthy);
    assert_eq!(r.health.vip.holders, ["cp1", "cp3"]);
    assert!(
        r.health.problems[0].message.contains("double holder"),
        "{:?}",
        r.health.problems
    );
}
