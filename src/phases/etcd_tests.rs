//! The external etcd's phases against recording fake etcd nodes: a fake cluster that keeps
//! its members, leader and each node's service, and notes every restart that would have cost
//! a vote while another was already missing.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use super::*;
use crate::phases::test_support::fake_probe;
use crate::remote::fake::{FakeConnector, Record, Responder, Seen, output};
use crate::remote::{CommandOutput, RemoteCommand, RemoteError};
use crate::render::etcd::{CONFIG_FILE, PACKAGE_BINARY};
use crate::session::{self, NodeOptions};

const INVENTORY: &str = "\
apiVersion: khactl.io/v1alpha1
kind: Inventory
cluster: { name: fake, kubernetesVersion: v1.31.2 }
vip: { address: 10.0.0.100 }
pki: { keyType: ecdsa-p256 }
nodes:
  - { name: cp1, address: 10.0.0.11, role: control-plane }
  - { name: e1, address: 10.0.0.31, role: etcd }
  - { name: e2, address: 10.0.0.32, role: etcd }
  - { name: e3, address: 10.0.0.33, role: etcd }
  - { name: e4, address: 10.0.0.34, role: etcd }
";

fn octet(node: &str) -> u64 {
    match node {
        "cp1" => 11,
        "e1" => 31,
        "e2" => 32,
        "e3" => 33,
        "e4" => 34,
        _ => 99,
    }
}

#[derive(Clone, Debug)]
struct M {
    id: u64,
    /// Empty until the learner's etcd starts.
    name: String,
    peer: String,
    learner: bool,
    /// Health checks it still fails (a member coming back after a restart).
    down_for: u32,
}

/// The fake etcd cluster and its nodes.
#[derive(Default)]
struct Fake {
    members: Vec<M>,
    leader: u64,
    running: BTreeSet<String>,
    /// The member config each node has, as the probe reads it.
    configs: BTreeMap<String, String>,
    /// Nodes whose data directory holds something.
    data: BTreeSet<String>,
    /// Nodes without the etcd binary.
    no_binary: BTreeSet<String>,
    /// Answers to the next promotions: "lost" (promoted, but the answer is an error) or
    /// "not found".
    promote_script: Vec<&'static str>,
    /// Restarts that would have lost a vote while another was missing, or restarted the leader.
    violations: Vec<String>,
}

fn peer(o: u64) -> String {
    format!("https://10.0.0.{o}:2380")
}

impl Fake {
    /// A running cluster of `voters`, `leader` leading.
    fn running(voters: &[&str], leader: &str) -> Self {
        let mut f = Fake {
            leader: octet(leader),
            ..Fake::default()
        };
        for n in voters {
            f.members.push(M {
                id: octet(n),
                name: (*n).to_owned(),
                peer: peer(octet(n)),
                learner: false,
                down_for: 0,
            });
            f.running.insert((*n).to_owned());
            f.data.insert((*n).to_owned());
        }
        f
    }

    fn member_of(&self, node: &str) -> Option<&M> {
        self.members.iter().find(|m| m.peer == peer(octet(node)))
    }

    /// A member on a machine outside the test's nodes runs.
    fn healthy(&self, m: &M) -> bool {
        let node = ["e1", "e2", "e3", "e4"]
            .into_iter()
            .find(|n| peer(octet(n)) == m.peer);
        !m.name.is_empty() && m.down_for == 0 && node.is_none_or(|n| self.running.contains(n))
    }

    fn list_json(&self) -> String {
        let ms: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                let client = if m.name.is_empty() {
                    String::new()
                } else {
                    m.peer.replace("2380", "2379")
                };
                format!(
                    r#"{{"ID":"{}","name":"{}","peerURLs":["{}"],"clientURLs":[{}],"isLearner":{}}}"#,
                    m.id,
                    m.name,
                    m.peer,
                    if client.is_empty() {
                        String::new()
                    } else {
                        format!("\"{client}\"")
                    },
                    m.learner
                )
            })
            .collect();
        format!(r#"{{"members":[{}]}}"#, ms.join(","))
    }

    fn probe(&self, node: &str, cmd: &RemoteCommand) -> String {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        fake_probe(octet(node), cmd, |kind, path| match kind {
            "file" => self
                .configs
                .get(node)
                .filter(|_| path == CONFIG_FILE)
                .map(|c| format!("file {path} ={}", b64(c))),
            "hash" => ((path == PACKAGE_BINARY && !self.no_binary.contains(node))
                || (path.starts_with("/etc/") && self.configs.contains_key(node)))
            .then(|| format!("sum 00  {path}\nmode 644 {path}")),
            "dir" => self.data.contains(node).then(|| format!("dir {path} full")),
            _ => None,
        })
    }

    fn answer(&mut self, node: &str, cmd: &RemoteCommand) -> CommandOutput {
        let label = cmd.label();
        let argv: Vec<String> = cmd.argv().to_vec();
        let words: Vec<&str> = argv.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["systemctl", "restart", "etcd"] => {
                // Another voter down (restarting a down member itself is its repair).
                let me = peer(octet(node));
                if self
                    .members
                    .iter()
                    .any(|m| !m.learner && m.peer != me && !self.healthy(m))
                {
                    self.violations
                        .push(format!("{node} restarted while a voter was down"));
                }
                if self.member_of(node).is_some_and(|m| m.id == self.leader) {
                    self.violations
                        .push(format!("{node} restarted as the leader"));
                    self.leader = 0;
                }
                let me = peer(octet(node));
                for m in &mut self.members {
                    if m.peer == me {
                        m.down_for = 2;
                    }
                }
                if self.leader == 0 {
                    self.leader = self
                        .members
                        .iter()
                        .find(|m| m.peer != me)
                        .map_or(0, |m| m.id);
                }
                return output(0, "");
            }
            ["systemctl", "enable", "--now", "etcd"] => {
                self.running.insert(node.to_owned());
                let me = peer(octet(node));
                for m in &mut self.members {
                    if m.peer == me && m.name.is_empty() {
                        m.name = node.to_owned();
                    }
                }
                self.data.insert(node.to_owned());
                return output(0, "");
            }
            ["systemctl", "stop", "etcd"] => {
                self.running.remove(node);
                return output(0, "");
            }
            ["systemctl", "is-active", "etcd"] => {
                return output(if self.running.contains(node) { 0 } else { 3 }, "");
            }
            ["find", dir, ..] | ["rm", "-rf", "--one-file-system", dir]
                if *dir == "/var/lib/etcd" =>
            {
                self.data.remove(node);
                return output(0, "");
            }
            _ => {}
        }
        if label.starts_with("khactl-probe") {
            return output(0, &self.probe(node, cmd));
        }
        if label.starts_with("service-state") {
            let running = self.running.contains(node);
            return output(0, if running { "enabled\nactive\n" } else { "" });
        }
        if label.starts_with("etcd-health") {
            let text: String = argv[4..]
                .iter()
                .map(|u| {
                    let ok = self
                        .members
                        .iter()
                        .any(|m| m.peer.replace("2380", "2379") == *u && self.healthy(m));
                    format!("{u} {}\n", if ok { "ok" } else { "down" })
                })
                .collect();
            for m in &mut self.members {
                m.down_for = m.down_for.saturating_sub(1);
            }
            return output(0, &text);
        }
        if label.starts_with("etcd-api") {
            // The local member answers only while its etcd runs.
            if !self.running.contains(node) {
                return output(7, "curl: (7) Failed to connect: Connection refused");
            }
            let path = argv[5].as_str();
            let body = argv[6].as_str();
            let id_in = |key: &str| -> u64 {
                let v: serde_json::Value = serde_json::from_str(body).unwrap();
                v[key].as_str().unwrap().parse().unwrap()
            };
            return match path {
                "/v3/cluster/member/list" => output(0, &self.list_json()),
                "/v3/maintenance/status" => {
                    output(0, &format!(r#"{{"leader":"{}"}}"#, self.leader))
                }
                "/v3/maintenance/transfer-leadership" => {
                    if self.member_of(node).is_some_and(|m| m.id == self.leader) {
                        self.leader = id_in("targetID");
                        output(0, "{}")
                    } else {
                        output(22, "not the leader")
                    }
                }
                "/v3/cluster/member/add" => {
                    let v: serde_json::Value = serde_json::from_str(body).unwrap();
                    let url = v["peerURLs"][0].as_str().unwrap().to_owned();
                    let id = url[15..17].parse().unwrap();
                    self.members.push(M {
                        id,
                        name: String::new(),
                        peer: url,
                        learner: true,
                        down_for: 0,
                    });
                    output(0, &format!(r#"{{"member":{{"ID":"{id}"}}}}"#))
                }
                "/v3/cluster/member/promote" => {
                    let id = id_in("ID");
                    let next = if self.promote_script.is_empty() {
                        ""
                    } else {
                        self.promote_script.remove(0)
                    };
                    if next == "not found" {
                        // Someone removed it meanwhile.
                        self.members.retain(|m| m.id != id);
                        return output(22, r#"{"error":"etcdserver: member not found"}"#);
                    }
                    if self.members.iter().any(|m| m.id == id && !m.learner) {
                        return output(
                            22,
                            r#"{"error":"etcdserver: can only promote a learner member"}"#,
                        );
                    }
                    for m in &mut self.members {
                        if m.id == id {
                            m.learner = false;
                        }
                    }
                    if next == "lost" {
                        output(28, "curl: (28) Operation timed out")
                    } else {
                        output(0, "{}")
                    }
                }
                "/v3/cluster/member/remove" => {
                    let id = id_in("ID");
                    self.members.retain(|m| m.id != id);
                    output(0, "{}")
                }
                _ => output(0, "{}"),
            };
        }
        output(0, "")
    }
}

struct Nodes {
    record: Record,
    fake: Rc<RefCell<Fake>>,
    responder: Responder,
}

impl Nodes {
    fn new(fake: Fake) -> Self {
        let fake = Rc::new(RefCell::new(fake));
        let f = Rc::clone(&fake);
        let responder: Responder = Rc::new(move |node: &str, cmd: &RemoteCommand| {
            Ok::<_, RemoteError>(f.borrow_mut().answer(node, cmd))
        });
        Self {
            record: Rc::default(),
            fake,
            responder,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.record.borrow().clone()
    }

    /// The labels of the commands that ran on `node`, probes left out.
    fn labels(&self, node: &str) -> Vec<String> {
        self.seen()
            .iter()
            .filter(|s| s.node == node && !s.label.starts_with("khactl-probe"))
            .map(|s| s.label.clone())
            .collect()
    }

    /// A context on the fake nodes for the inventory's nodes in `keep`.
    fn context(&self, dir: &std::path::Path, keep: &[&str]) -> Context {
        let inventory = dir.join("inventory.yaml");
        std::fs::write(&inventory, INVENTORY).unwrap();
        let opts = NodeOptions {
            inventory,
            parallelism: 10,
            connect_timeout: std::time::Duration::from_secs(1),
            state_dir: Some(dir.join("state")),
        };
        let connector = Box::new(FakeConnector {
            responder: Rc::clone(&self.responder),
            record: Rc::clone(&self.record),
        });
        let mut ctx = session::load(&opts)
            .unwrap()
            .start_with("up", Mode::Apply, Box::new(Quiet), connector)
            .unwrap();
        ctx.inventory
            .nodes
            .retain(|n| keep.contains(&n.name.as_str()));
        ctx
    }
}

struct Quiet;

impl crate::report::Reporter for Quiet {
    fn event(&self, _: &crate::report::Event<'_>) {}
}

/// The member config `up` writes on `node` for a cluster founded by `founders`, with
/// `tweak` applied (a setting the inventory has since changed).
fn founding_config(ctx: &Context, node: &str, founders: &[&str], tweak: &str) -> String {
    let inv = &ctx.inventory;
    let members: Vec<&crate::inventory::Node> = inv
        .etcd_nodes()
        .filter(|n| founders.contains(&n.name.as_str()))
        .collect();
    let member = crate::render::etcd::EtcdMember::new(
        inv,
        inv.node(node).unwrap(),
        members,
        crate::render::etcd::ClusterState::New,
    );
    format!("{}{tweak}", member.render_config().unwrap())
}

fn install_phases() -> Vec<Box<dyn Phase>> {
    vec![
        Box::new(Connect),
        Box::new(GatherFacts),
        Box::new(InstallEtcd),
    ]
}

#[tokio::test(flavor = "current_thread")]
async fn a_rolling_restart_waits_for_each_member_to_be_healthy_and_restarts_the_leader_last() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::new(Fake::running(&["e1", "e2", "e3"], "e1"));
    let mut ctx = nodes.context(dir.path(), &["e1", "e2", "e3"]);
    for n in ["e1", "e2", "e3"] {
        // An old config: every member's files changed, so each restarts.
        let old = founding_config(&ctx, n, &["e1", "e2", "e3"], "# old\n");
        nodes.fake.borrow_mut().configs.insert(n.to_owned(), old);
    }
    let r = run(&mut ctx, install_phases()).await;
    assert!(r.is_ok(), "{:#}", r.unwrap_err());
    let restarts: Vec<String> = nodes
        .seen()
        .iter()
        .filter(|s| s.label == "systemctl restart etcd")
        .map(|s| s.node.clone())
        .collect();
    assert_eq!(restarts.len(), 3, "{restarts:?}");
    assert_eq!(
        restarts.last().map(String::as_str),
        Some("e1"),
        "the leader last"
    );
    let fake = nodes.fake.borrow();
    assert!(fake.violations.is_empty(), "{:?}", fake.violations);
}

#[tokio::test(flavor = "current_thread")]
async fn a_member_that_is_down_restarts_first_and_a_serving_one_waits_for_the_others() {
    // e3 is down and every config changed: e3 first (its repair), then e2, the leader last.
    let dir = tempfile::tempdir().unwrap();
    let mut fake = Fake::running(&["e1", "e2", "e3"], "e1");
    fake.members[2].down_for = 1000;
    let nodes = Nodes::new(fake);
    let mut ctx = nodes.context(dir.path(), &["e1", "e2", "e3"]);
    for n in ["e1", "e2", "e3"] {
        let old = founding_config(&ctx, n, &["e1", "e2", "e3"], "# old\n");
        nodes.fake.borrow_mut().configs.insert(n.to_owned(), old);
    }
    let r = run(&mut ctx, install_phases()).await;
    assert!(r.is_ok(), "{:#}", r.unwrap_err());
    let restarts: Vec<String> = nodes
        .seen()
        .iter()
        .filter(|s| s.label == "systemctl restart etcd")
        .map(|s| s.node.clone())
        .collect();
    assert_eq!(restarts, ["e3", "e2", "e1"]);
    assert!(
        nodes.fake.borrow().violations.is_empty(),
        "{:?}",
        nodes.fake.borrow().violations
    );

    // e3 down: a serving e1 may not restart (it could cost the quorum); e3 itself may.
    let dir = tempfile::tempdir().unwrap();
    let mut fake = Fake::running(&["e1", "e2", "e3"], "e1");
    fake.members[2].down_for = 1000;
    let nodes = Nodes::new(fake);
    let mut ctx = nodes.context(dir.path(), &["e1", "e2", "e3"]);
    run(&mut ctx, vec![Box::new(Connect)]).await.unwrap();
    let fleet = ctx.fleet().unwrap();
    let err = super::install_etcd::others_healthy(&ctx, fleet.host("e1").unwrap())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("e3"), "{err:#}");
}

/// `add-etcd NODE` from its gate on (the node prepared and given its certificates already).
async fn add_etcd(nodes: &Nodes, dir: &std::path::Path, node: &str) -> anyhow::Result<()> {
    let mut ctx = nodes.context(dir, &["e1", "e2", "e3", "e4"]);
    let phases: Vec<Box<dyn Phase>> = vec![
        Box::new(Connect),
        Box::new(GatherFacts),
        Box::new(CheckEtcdGrowth {
            node: node.to_owned(),
            allow_even: true,
        }),
        Box::new(JoinEtcdMember {
            node: node.to_owned(),
        }),
    ];
    run(&mut ctx, phases).await
}

/// The hints of every node's failure, as `main` prints them.
fn hints(err: &anyhow::Error) -> String {
    crate::diagnostics::hints_of(err, |cause| {
        cause
            .downcast_ref::<NodesFailed>()
            .map(|f| {
                f.failures
                    .iter()
                    .flat_map(|(_, e)| crate::diagnostics::hints_of(e, |_| Vec::new()))
                    .collect()
            })
            .unwrap_or_default()
    })
    .join(" ")
}

fn count(nodes: &Nodes, what: &str) -> usize {
    nodes
        .seen()
        .iter()
        .filter(|s| s.label.contains(what))
        .count()
}

#[tokio::test(flavor = "current_thread")]
async fn add_etcd_refuses_a_node_that_is_a_voter_even_a_down_one_and_keeps_its_member_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = Fake::running(&["e1", "e2", "e3"], "e1");
    fake.running.remove("e3");
    let nodes = Nodes::new(fake);
    let err = add_etcd(&nodes, dir.path(), "e3").await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("refusing to add e3: it is already an etcd voter"),
        "{text}"
    );
    let hinted = hints(&err);
    assert!(hinted.contains("khactl remove-node e3"), "{hinted}");
    assert_eq!(count(&nodes, "member/remove"), 0);
    assert_eq!(
        nodes
            .labels("e3")
            .iter()
            .filter(|l| l.starts_with("find") || l.starts_with("rm"))
            .count(),
        0
    );
    let fake = nodes.fake.borrow();
    assert_eq!(fake.members.len(), 3);
    assert!(fake.data.contains("e3"), "its data stays");
}

#[tokio::test(flavor = "current_thread")]
async fn add_etcd_of_a_non_member_stops_its_old_etcd_and_empties_its_data_before_the_learner_is_added()
 {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = Fake::running(&["e1", "e2", "e3"], "e1");
    // e4 still runs an etcd of an earlier membership, its data there.
    fake.running.insert("e4".into());
    fake.data.insert("e4".into());
    let nodes = Nodes::new(fake);
    let r = add_etcd(&nodes, dir.path(), "e4").await;
    assert!(r.is_ok(), "{:#}", r.unwrap_err());
    let seen = nodes.seen();
    let at = |pred: &dyn Fn(&Seen) -> bool| seen.iter().position(pred);
    let stop = at(&|s| s.node == "e4" && s.label == "systemctl stop etcd");
    let empty = at(&|s| s.node == "e4" && s.argv.first().is_some_and(|a| a == "find"));
    let add = at(&|s| s.label.contains("member/add")).unwrap();
    assert!(
        stop.is_some_and(|i| i < add),
        "stopped first: {stop:?} < {add}"
    );
    assert!(
        empty.is_some_and(|i| i < add),
        "emptied first: {empty:?} < {add}"
    );
    let find = &seen[empty.unwrap()].argv;
    assert!(
        find.contains(&"-mindepth".to_owned()),
        "the contents, not the dir: {find:?}"
    );
    let fake = nodes.fake.borrow();
    assert!(fake.members.iter().any(|m| m.name == "e4" && !m.learner));
}

#[tokio::test(flavor = "current_thread")]
async fn a_promotion_whose_answer_was_lost_is_recognised_as_done() {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = Fake::running(&["e1", "e2", "e3"], "e1");
    fake.promote_script = vec!["lost"];
    let nodes = Nodes::new(fake);
    let started = std::time::Instant::now();
    let r = add_etcd(&nodes, dir.path(), "e4").await;
    assert!(r.is_ok(), "{:#}", r.unwrap_err());
    assert_eq!(count(&nodes, "member/promote"), 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[tokio::test(flavor = "current_thread")]
async fn a_promotion_stops_at_once_when_the_learner_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = Fake::running(&["e1", "e2", "e3"], "e1");
    fake.promote_script = vec!["not found"];
    let nodes = Nodes::new(fake);
    let started = std::time::Instant::now();
    let err = add_etcd(&nodes, dir.path(), "e4").await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("no longer a member"), "{text}");
    assert_eq!(count(&nodes, "member/promote"), 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[tokio::test(flavor = "current_thread")]
async fn the_joining_members_initial_cluster_comes_from_the_live_member_list() {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = Fake::running(&["e1", "e2", "e3"], "e1");
    // e3's member was founded under another name.
    fake.members[2].name = "old3".into();
    let nodes = Nodes::new(fake);
    let r = add_etcd(&nodes, dir.path(), "e4").await;
    assert!(r.is_ok(), "{:#}", r.unwrap_err());
    let config: String = nodes
        .seen()
        .iter()
        .filter(|s| s.node == "e4" && s.label.starts_with("write-files"))
        .map(|s| String::from_utf8_lossy(s.stdin.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert!(
        config.contains(
            "e1=https://10.0.0.31:2380,e2=https://10.0.0.32:2380,old3=https://10.0.0.33:2380,\
             e4=https://10.0.0.34:2380"
        ),
        "{config}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn add_etcd_refuses_while_a_running_member_is_not_in_the_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = Fake::running(&["e1", "e2"], "e1");
    fake.members.push(M {
        id: 99,
        name: "x9".into(),
        peer: peer(99),
        learner: false,
        down_for: 0,
    });
    let nodes = Nodes::new(fake);
    let err = add_etcd(&nodes, dir.path(), "e4").await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("x9"), "{text}");
    let hinted = hints(&err);
    assert!(hinted.contains("remove-node x9 --unreachable"), "{hinted}");
    assert_eq!(count(&nodes, "member/add"), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn up_refuses_an_etcd_node_the_running_etcd_does_not_count_as_a_member() {
    // e4 was removed with `remove-node` and left in the inventory: the others were founded
    // with it, so their configs still list it.
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::new(Fake::running(&["e1", "e2", "e3"], "e1"));
    let all = ["e1", "e2", "e3", "e4"];
    let mut ctx = nodes.context(dir.path(), &all);
    for n in ["e1", "e2", "e3"] {
        let config = founding_config(&ctx, n, &all, "");
        nodes.fake.borrow_mut().configs.insert(n.to_owned(), config);
    }
    let err = run(&mut ctx, install_phases()).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("e4 is not a member of the running etcd"),
        "{text}"
    );
    assert!(
        hints(&err).contains("khactl add-etcd e4"),
        "{}",
        hints(&err)
    );
    let e4 = nodes.labels("e4");
    assert!(
        e4.iter()
            .all(|l| !l.starts_with("write-files") && !l.contains("systemctl")),
        "nothing changes on e4: {e4:?}"
    );
}

#[test]
fn a_node_is_listed_in_an_initial_cluster_only_by_a_whole_entry() {
    let config = "name: \"myetcd1\"\ninitial-cluster: \"myetcd1=https://10.0.0.31:2380,e2=https://10.0.0.32:2380\"\n";
    assert!(!super::install_etcd::lists(
        config,
        "etcd1=https://10.0.0.31:2380"
    ));
    assert!(super::install_etcd::lists(
        config,
        "e2=https://10.0.0.32:2380"
    ));
    assert!(super::install_etcd::lists(
        config,
        "myetcd1=https://10.0.0.31:2380"
    ));
}

#[test]
fn remove_node_clears_exactly_the_keys_khactl_places_on_an_etcd_node() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = crate::inventory::parse(INVENTORY).unwrap().inventory;
    let (pki, _) = crate::pki::ensure(dir.path(), &inventory).unwrap();
    let placed: BTreeSet<String> = pki
        .files_for(inventory.node("e1").unwrap(), None)
        .iter()
        .map(|f| f.remote_path.display().to_string())
        .collect();
    let removed: BTreeSet<String> = super::etcd_membership::MEMBER_PKI
        .iter()
        .map(|p| (*p).to_owned())
        .collect();
    assert_eq!(placed, removed);
}

/// `remove-node NODE` of an etcd node, which must succeed.
async fn remove_etcd(ctx: &mut Context, node: &str) {
    let leaving = kubernetes::Leaving {
        node: ctx.inventory.node(node).unwrap().clone(),
        unreachable: false,
    };
    let r = run(ctx, crate::commands::remove_node::etcd_phases(&leaving)).await;
    assert!(r.is_ok(), "{:#}", r.unwrap_err());
}

#[tokio::test(flavor = "current_thread")]
async fn remove_node_of_an_etcd_node_removes_its_keys_after_its_member() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::new(Fake::running(&["e1", "e2", "e3"], "e1"));
    let mut ctx = nodes.context(dir.path(), &["e1", "e2", "e3"]);
    let config = founding_config(&ctx, "e3", &["e1", "e2", "e3"], "");
    nodes.fake.borrow_mut().configs.insert("e3".into(), config);
    remove_etcd(&mut ctx, "e3").await;
    let removed: BTreeSet<String> = nodes
        .seen()
        .iter()
        .filter(|s| s.node == "e3" && s.argv.first().is_some_and(|a| a == "rm"))
        .filter_map(|s| s.argv.last().cloned())
        .filter(|p| p.starts_with("/etc/kubernetes/pki/"))
        .collect();
    let expected: BTreeSet<String> = super::etcd_membership::MEMBER_PKI
        .iter()
        .map(|p| (*p).to_owned())
        .collect();
    assert_eq!(removed, expected);
    assert_eq!(nodes.fake.borrow().members.len(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn remove_node_of_the_etcd_leader_hands_the_leadership_over_before_its_member_goes() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::new(Fake::running(&["e1", "e2", "e3"], "e1"));
    let mut ctx = nodes.context(dir.path(), &["e1", "e2", "e3"]);
    remove_etcd(&mut ctx, "e1").await;
    let order: Vec<String> = nodes
        .seen()
        .iter()
        .filter(|s| s.label.contains("transfer-leadership") || s.label.contains("member/remove"))
        .map(|s| format!("{}: {}", s.node, s.argv[5]))
        .collect();
    assert_eq!(
        order,
        [
            "e1: /v3/maintenance/transfer-leadership",
            "e2: /v3/cluster/member/remove"
        ]
    );
    assert_eq!(nodes.fake.borrow().leader, 32, "e2 leads");
}

#[tokio::test(flavor = "current_thread")]
async fn add_etcd_checks_the_etcd_prerequisites_before_anything_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = Fake::running(&["e1", "e2", "e3"], "e1");
    fake.no_binary.insert("e4".into());
    let nodes = Nodes::new(fake);
    let mut ctx = nodes.context(dir.path(), &["cp1", "e1", "e2", "e3", "e4"]);
    let opts = crate::commands::grow::GrowOptions {
        nodes: NodeOptions {
            inventory: "unused".into(),
            parallelism: 10,
            connect_timeout: std::time::Duration::from_secs(1),
            state_dir: None,
        },
        node: "e4".to_owned(),
        role: crate::inventory::Role::Etcd,
        dry_run: false,
        yes: true,
        agent_binary: None,
    };
    crate::commands::grow::narrow(&mut ctx, "e4");
    let err = run(&mut ctx, crate::commands::grow::phases(&opts))
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("etcd is not installed"), "{text}");
    let changed: Vec<String> = nodes
        .seen()
        .iter()
        .filter(|s| !s.read_only)
        .map(|s| format!("{}: {}", s.node, s.label))
        .collect();
    assert!(changed.is_empty(), "nothing changed: {changed:?}");
}
