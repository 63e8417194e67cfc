//! The phase runner, the gate and the remote seam, tested with recording fake hosts: what a
//! dry run may run, what reaches the run log, cleanups, Ctrl-C and the rolling restart.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use super::*;
use crate::agent::AgentBinary;
use crate::facts::sha256_hex;
use crate::phases::test_support::fake_probe;
use crate::remote::fake::{FakeConnector, Record, Responder, Seen, output};
use crate::remote::{CommandOutput, RemoteCommand, RemoteError};
use crate::report::Reporter;
use crate::session::{self, NodeOptions};

const INVENTORY: &str = "\
apiVersion: khactl.io/v1alpha1
kind: Inventory
cluster: { name: fake, kubernetesVersion: v1.31.2 }
vip: { address: 10.0.0.100 }
pki: { keyType: ecdsa-p256 }
nodes:
  - { name: cp1, address: 10.0.0.11, role: control-plane }
  - { name: cp2, address: 10.0.0.12, role: control-plane }
  - { name: cp3, address: 10.0.0.13, role: control-plane }
  - { name: w1, address: 10.0.0.21, role: worker }
";

/// Remembers every event's plain line, so tests can read what the user saw.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Reporter for Lines {
    fn event(&self, event: &Event<'_>) {
        if let Some(l) = crate::report::plain_line(event, true) {
            self.0.lock().unwrap().push(l);
        }
    }
}

/// Fresh Debian nodes as the fakes answer them: the probe sees no file of ours, sysctls read
/// back what was written, services start, cp1 ends up holding the VIP. `fail` makes a command
/// whose label starts with the given text fail on the given node.
struct Nodes {
    record: Record,
    responder: Responder,
}

fn last_octet(node: &str) -> u8 {
    match node {
        "cp1" => 11,
        "cp2" => 12,
        "cp3" => 13,
        _ => 21,
    }
}

/// What the fake cluster holds: nodes that ran `kubeadm init` or `join`, in order.
#[derive(Default)]
struct Cluster {
    joined: Vec<String>,
    /// Members etcd lists that no node backs (a wiped machine's), by node name.
    stale: Vec<String>,
    /// Node objects the API still has for machines that are not joined (wiped ones).
    stale_nodes: Vec<String>,
    /// Joined nodes whose Node object the API lacks (deleted by hand).
    unregistered: Vec<String>,
}

impl Cluster {
    fn members_json(&self) -> String {
        let members: Vec<String> = self
            .joined
            .iter()
            .chain(&self.stale)
            .filter(|n| n.starts_with("cp"))
            .map(|n| {
                let o = last_octet(n);
                format!(
                    r#"{{"ID":"{o}","name":"{n}","peerURLs":["https://10.0.0.{o}:2380"],"clientURLs":["https://10.0.0.{o}:2379"]}}"#
                )
            })
            .collect();
        format!(r#"{{"members":[{}]}}"#, members.join(","))
    }

    fn nodes_json(&self) -> String {
        let nodes: Vec<String> = self
            .joined
            .iter()
            .filter(|n| !self.unregistered.contains(n))
            .map(|n| {
                let (labels, taints) = if n.starts_with("cp") {
                    (
                        r#"{"node-role.kubernetes.io/control-plane":""}"#,
                        r#"[{"key":"node-role.kubernetes.io/control-plane","effect":"NoSchedule"}]"#,
                    )
                } else {
                    ("{}", "[]")
                };
                format!(
                    r#"{{"metadata":{{"name":"{n}","labels":{labels}}},"spec":{{"taints":{taints}}},"status":{{"conditions":[{{"type":"Ready","status":"True"}}]}}}}"#
                )
            })
            .collect();
        format!(r#"{{"items":[{}]}}"#, nodes.join(","))
    }
}

/// `kubectl … VERB node NAME …`: the NAME.
fn verb_node(argv: &[String], verb: &str) -> Option<String> {
    argv.windows(3)
        .find(|w| w[0] == verb && w[1] == "node")
        .map(|w| w[2].clone())
}

/// The probe's answer on `node`: a fresh Debian host with Kubernetes installed, plus the
/// kubeadm files of a node in `cluster.joined`.
fn probe_output(node: &str, cmd: &RemoteCommand, cluster: &Cluster) -> String {
    let joined = cluster.joined.iter().any(|n| n == node);
    fake_probe(u64::from(last_octet(node)), cmd, |kind, path| match kind {
        "hash" => {
            let kubeadms = path.starts_with("/etc/kubernetes/kubelet.conf")
                || path.starts_with("/etc/kubernetes/manifests/")
                // A member control plane runs khagent (an older build: its digest differs).
                || (path == "/usr/local/bin/khagent" && node.starts_with("cp"));
            (kubeadms && joined).then(|| format!("sum 00  {path}\nmode 600 {path}"))
        }
        "server" => {
            // A member's kubelet reaches the API through the endpoint it joined with; control
            // planes' kubelets use their own API server (ControlPlaneKubeletLocalMode, 1.33+),
            // while their admin.conf names the endpoint.
            let server = match path {
                "/etc/kubernetes/kubelet.conf" if joined && node.starts_with("cp") => {
                    format!("https://10.0.0.{}:6443", last_octet(node))
                }
                "/etc/kubernetes/kubelet.conf" | "/etc/kubernetes/admin.conf" if joined => {
                    "https://10.0.0.100:8443".to_owned()
                }
                _ => "-".to_owned(),
            };
            Some(format!("server {path} {server}"))
        }
        _ => None,
    })
}

impl Nodes {
    fn new(fail: Option<(&'static str, &'static str)>) -> Self {
        Self::with_cluster(fail.into_iter().collect(), Cluster::default())
    }

    /// `fail`: (node, label prefix) pairs whose commands fail.
    fn with_cluster(fail: Vec<(&'static str, &'static str)>, cluster: Cluster) -> Self {
        let record: Record = Rc::new(RefCell::new(Vec::new()));
        let sysctls: Rc<RefCell<BTreeMap<String, String>>> = Rc::default();
        let cluster: Rc<RefCell<Cluster>> = Rc::new(RefCell::new(cluster));
        let responder: Responder = Rc::new(move |node: &str, cmd: &RemoteCommand| {
            let label = cmd.label();
            if fail
                .iter()
                .any(|(on, what)| node == *on && label.starts_with(what))
            {
                return Ok(output(1, "injected failure"));
            }
            let argv = cmd.argv();
            let out = match argv.first().map(String::as_str) {
                _ if label.starts_with("sysctl-write") => {
                    for pair in argv[4..].chunks(2) {
                        if let [k, v] = pair {
                            sysctls
                                .borrow_mut()
                                .insert(format!("{node}/{k}"), v.clone());
                        }
                    }
                    output(0, "")
                }
                Some("ip") if node == "cp1" => output(
                    0,
                    "2: eth0    inet 10.0.0.11/24 scope global eth0\n\
                     2: eth0    inet 10.0.0.100/24 scope global secondary eth0\n",
                ),
                Some("ip") => output(0, "2: eth0    inet 10.0.0.12/24 scope global eth0\n"),
                _ if label.starts_with("khactl-probe") => {
                    output(0, &probe_output(node, cmd, &cluster.borrow()))
                }
                _ if label.starts_with("kubeadm-with-config") => {
                    // argv: sh -c SCRIPT NAME FILE LIMIT VERB…; the file comes on stdin.
                    let verb = argv.get(6).map(String::as_str);
                    if matches!(verb, Some("init" | "join")) {
                        cluster.borrow_mut().joined.push(node.to_owned());
                    }
                    // Like kubeadm, say the token back: the log must never keep it.
                    let file = String::from_utf8_lossy(cmd.stdin.as_deref().unwrap_or_default());
                    let token = file
                        .lines()
                        .find_map(|l| l.trim().strip_prefix("- token: "))
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_owned();
                    CommandOutput {
                        status: Some(0),
                        stdout: format!("kubeadm join 10.0.0.100:8443 --token {token}\n")
                            .into_bytes(),
                        stderr: format!("[bootstrap-token] Using token: {token}\n").into_bytes(),
                    }
                }
                Some("kubeadm") if argv.get(1).is_some_and(|a| a == "reset") => {
                    // As with kubeadm: the node's files go, its Node object stays.
                    let mut c = cluster.borrow_mut();
                    if c.joined.iter().any(|n| n == node) {
                        c.stale_nodes.push(node.to_owned());
                    }
                    c.joined.retain(|n| n != node);
                    output(0, "")
                }
                _ if label.contains("/v3/cluster/member/remove") => {
                    let mut c = cluster.borrow_mut();
                    let id: String = argv[4 + 2].chars().filter(char::is_ascii_digit).collect();
                    let gone = |n: &String| last_octet(n).to_string() == id;
                    c.stale.retain(|n| !gone(n));
                    // Its Node object stays until someone deletes it.
                    let left: Vec<String> = c.joined.iter().filter(|n| gone(n)).cloned().collect();
                    c.stale_nodes.extend(left);
                    c.joined.retain(|n| !gone(n));
                    output(0, "{}")
                }
                Some("kubectl") if argv.contains(&"--raw".to_owned()) => {
                    output(0, &cluster.borrow().nodes_json())
                }
                Some("kubectl") if argv.iter().any(|a| a == "drain") => {
                    // As kubectl: a Node that does not exist cannot be drained.
                    let c = cluster.borrow();
                    let name = argv
                        .windows(2)
                        .find(|w| w[0] == "drain")
                        .map(|w| w[1].clone())
                        .unwrap_or_default();
                    let exists = c.joined.iter().chain(&c.stale_nodes).any(|n| *n == name)
                        && !c.unregistered.contains(&name);
                    if exists {
                        output(0, "")
                    } else {
                        output(
                            1,
                            &format!("Error from server (NotFound): nodes \"{name}\" not found"),
                        )
                    }
                }
                Some("kubectl") if verb_node(argv, "get").is_some() => {
                    let c = cluster.borrow();
                    let name = verb_node(argv, "get").unwrap_or_default();
                    let exists = c.joined.iter().chain(&c.stale_nodes).any(|n| *n == name)
                        && !c.unregistered.contains(&name);
                    output(
                        0,
                        &if exists {
                            format!("node/{name}\n")
                        } else {
                            String::new()
                        },
                    )
                }
                Some("kubectl") if verb_node(argv, "delete").is_some() => {
                    let mut c = cluster.borrow_mut();
                    let name = verb_node(argv, "delete").unwrap_or_default();
                    c.stale_nodes.retain(|n| *n != name);
                    c.joined.retain(|n| *n != name);
                    output(0, "")
                }
                _ if label.starts_with("cluster-lock") => output(0, "locked\n"),
                // cp3 leads etcd.
                _ if label.contains("/v3/maintenance/status") => output(0, r#"{"leader":"13"}"#),
                _ if label.contains("/v3/maintenance/transfer-leadership") => output(0, "{}"),
                _ if label.starts_with("etcd-api") => output(0, &cluster.borrow().members_json()),
                _ if label.starts_with("etcd-health") => {
                    let text: String = argv[4..].iter().map(|u| format!("{u} ok\n")).collect();
                    output(0, &text)
                }
                _ if label.starts_with("readyz") => output(0, "ok"),
                _ if label.starts_with("sysctl-read-back") => {
                    let known = sysctls.borrow();
                    let text: String = argv[4..]
                        .iter()
                        .map(|k| {
                            let v = known
                                .get(&format!("{node}/{k}"))
                                .cloned()
                                .unwrap_or_default();
                            format!("{k}={v}\n")
                        })
                        .collect();
                    output(0, &text)
                }
                _ => output(0, ""),
            };
            Ok::<_, RemoteError>(out)
        });
        Self { record, responder }
    }

    fn seen(&self) -> Vec<Seen> {
        self.record.borrow().clone()
    }

    fn connector(&self) -> Box<FakeConnector> {
        Box::new(FakeConnector {
            responder: Rc::clone(&self.responder),
            record: Rc::clone(&self.record),
        })
    }
}

/// A context for the fake nodes, with its state directory (and run log) in `dir`.
fn context(dir: &std::path::Path, mode: Mode, nodes: &Nodes, lines: &Lines) -> Context {
    let inventory = dir.join("inventory.yaml");
    std::fs::write(&inventory, INVENTORY).unwrap();
    let opts = NodeOptions {
        inventory,
        parallelism: 10,
        connect_timeout: std::time::Duration::from_secs(1),
        state_dir: Some(dir.join("state")),
    };
    let mut ctx = session::load(&opts)
        .unwrap()
        .start_with("up", mode, Box::new(lines.clone()), nodes.connector())
        .unwrap();
    let contents = {
        // A little-endian ELF64 header for x86_64: enough for the architecture check.
        let mut b = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        b.resize(18, 0);
        b.extend_from_slice(&62u16.to_le_bytes());
        b.resize(64, 0);
        b
    };
    ctx.settings.agent_binary = Some(Arc::new(AgentBinary {
        path: "/build/khagent".into(),
        sha256: sha256_hex(&contents),
        contents,
        arch: "x86_64".into(),
    }));
    ctx
}

fn up_phases() -> Vec<Box<dyn Phase>> {
    crate::commands::up::phases()
}

/// A phase that tries to change a node directly instead of through the gate.
struct Sneaky;

impl Phase for Sneaky {
    fn title(&self) -> &'static str {
        "Sneaky"
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let host = &ctx.fleet()?.hosts()[0];
            host.run(&RemoteCommand::new(["touch", "/etc/changed"]))
                .await?;
            Ok(())
        })
    }
}

#[tokio::test(flavor = "current_thread")]
async fn plan_mode_refuses_a_mutating_command_with_an_internal_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::new(None);
    let mut ctx = context(dir.path(), Mode::Plan, &nodes, &Lines::default());
    let err = run(&mut ctx, vec![Box::new(Connect), Box::new(Sneaky)])
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("internal error"), "{text}");
    assert!(text.contains("touch /etc/changed"), "{text}");
    assert!(
        nodes.seen().iter().all(|s| s.argv[0] != "touch"),
        "the command never reached the node"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_up_phases_in_plan_mode_run_only_read_only_commands() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::new(None);
    let lines = Lines::default();
    let mut ctx = context(dir.path(), Mode::Plan, &nodes, &lines);
    run(&mut ctx, up_phases()).await.unwrap();
    let seen = nodes.seen();
    assert!(
        seen.iter().any(|s| s.label.starts_with("khactl-probe")),
        "the plan probed the nodes: {seen:?}"
    );
    let writes: Vec<&Seen> = seen.iter().filter(|s| !s.read_only).collect();
    assert!(writes.is_empty(), "a dry run ran {writes:?}");
    let (total, _) = ctx.totals();
    assert!(total > 0, "a fresh cluster has changes to plan");
    assert!(
        ctx.journal().values().flatten().all(|c| !c.done),
        "nothing is recorded as done"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn every_remote_command_of_an_up_reaches_the_run_log() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::new(None);
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    run(&mut ctx, up_phases()).await.unwrap();
    let log_path = ctx.report.log_path().unwrap().to_path_buf();
    session::finish(ctx, Ok(())).await.unwrap();
    let log = std::fs::read_to_string(log_path).unwrap();
    let seen = nodes.seen();
    let logged = log.lines().filter(|l| l.contains(": $ ")).count();
    assert!(seen.len() > 20, "{} commands", seen.len());
    assert_eq!(logged, seen.len(), "every command, once:\n{log}");
    for kind in [
        "khactl-probe",
        "write-files",
        "service-state",
        "tcp-connect",
    ] {
        assert!(log.contains(kind), "{kind} is in the log");
    }
    assert!(!log.contains("BEGIN"), "no key material in the log");
}

#[tokio::test(flavor = "current_thread")]
async fn a_secret_output_never_reaches_the_run_log() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::new(None);
    let ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    // The fake prints nothing for these: make it print the token like kubeadm would.
    let token = "abcdef.0123456789abcdef";
    let printing: Responder = Rc::new(move |_, _| Ok(output(0, &format!("--token {token}\n"))));
    let fake = crate::remote::fake::FakeHost::new("cp1", printing, Rc::clone(&nodes.record));
    let handle = crate::remote::NodeHandle::new(
        Box::new(fake),
        crate::remote::Access::ReadWrite,
        Arc::new(ctx.report.clone()),
    );
    let created = handle
        .run(&RemoteCommand::new(["kubeadm", "token", "create"]).secret_stdout())
        .await
        .unwrap();
    assert!(created.stdout_str().contains(token), "the caller gets it");
    handle
        .run(&RemoteCommand::new(["kubeadm", "init"]).redacting(token))
        .await
        .unwrap();
    let log = std::fs::read_to_string(ctx.report.log_path().unwrap()).unwrap();
    assert!(!log.contains("0123456789abcdef"), "{log}");
    assert!(
        log.contains("kubeadm token create"),
        "the command is logged: {log}"
    );
    assert!(log.contains("--token <redacted>"), "{log}");
}

/// A phase that records its cleanup in `cleaned` and fails when `fail` is set.
struct Step {
    title: &'static str,
    fail: bool,
    cleaned: Rc<RefCell<Vec<&'static str>>>,
}

impl Phase for Step {
    fn title(&self) -> &'static str {
        self.title
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            if self.title == "interrupted here" {
                ctx.settings.interrupt.raise();
            }
            if self.fail {
                anyhow::bail!("{} failed", self.title)
            }
            Ok(())
        })
    }

    fn cleanup<'a>(&'a self, _ctx: &'a mut Context) -> Option<PhaseFuture<'a>> {
        Some(Box::pin(async move {
            self.cleaned.borrow_mut().push(self.title);
            Ok(())
        }))
    }
}

fn steps(
    cleaned: &Rc<RefCell<Vec<&'static str>>>,
    titles: &[(&'static str, bool)],
) -> Vec<Box<dyn Phase>> {
    titles
        .iter()
        .map(|(title, fail)| {
            Box::new(Step {
                title,
                fail: *fail,
                cleaned: Rc::clone(cleaned),
            }) as Box<dyn Phase>
        })
        .collect()
}

/// Runs phases that only record their cleanups; returns the run's end and the cleanups.
async fn run_steps(titles: &[(&'static str, bool)]) -> (anyhow::Result<()>, Vec<&'static str>) {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::new(None);
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    let cleaned = Rc::default();
    let result = run(&mut ctx, steps(&cleaned, titles)).await;
    let cleaned = cleaned.borrow().clone();
    (result, cleaned)
}

#[tokio::test(flavor = "current_thread")]
async fn cleanups_run_last_first_for_the_phases_that_started_including_the_one_that_failed() {
    let (result, cleaned) =
        run_steps(&[("first", false), ("second", true), ("never", false)]).await;
    assert_eq!(result.unwrap_err().to_string(), "second failed");
    assert_eq!(cleaned, ["second", "first"]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_successful_run_cleans_nothing_up() {
    let (result, cleaned) = run_steps(&[("first", false), ("second", false)]).await;
    result.unwrap();
    assert!(cleaned.is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn ctrl_c_stops_before_the_next_phase_cleans_up_and_names_the_phase() {
    let (result, cleaned) = run_steps(&[
        ("first", false),
        ("interrupted here", false),
        ("never", false),
    ])
    .await;
    let err = result.unwrap_err();
    let stopped = err
        .downcast_ref::<RunInterrupted>()
        .expect("an interrupted run");
    assert_eq!(stopped.phase, "interrupted here");
    assert_eq!(stopped.nodes.len(), 4, "every node's state is said");
    assert_eq!(cleaned, ["interrupted here", "first"]);
}

#[tokio::test(flavor = "current_thread")]
async fn the_gate_stops_a_node_between_steps_once_ctrl_c_was_pressed() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::new(None);
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    run(&mut ctx, vec![Box::new(Connect)]).await.unwrap();
    ctx.settings.interrupt.raise();
    let host = &ctx.fleet().unwrap().hosts()[0];
    let before = nodes.seen().len();
    let err = ctx
        .apply(host, &[Change::SwapOff, Change::SwapOff])
        .await
        .unwrap_err();
    assert!(err.is::<crate::interrupt::Interrupted>(), "{err:#}");
    assert_eq!(nodes.seen().len(), before, "no command after the interrupt");
}

#[tokio::test(flavor = "current_thread")]
async fn a_step_runs_only_in_apply_mode_and_returns_its_value() {
    let dir = tempfile::tempdir().unwrap();
    for (mode, want) in [(Mode::Plan, None), (Mode::Apply, Some(42))] {
        let nodes = Nodes::new(None);
        let lines = Lines::default();
        let mut ctx = context(dir.path(), mode, &nodes, &lines);
        run(&mut ctx, vec![Box::new(Connect)]).await.unwrap();
        let host = &ctx.fleet().unwrap().hosts()[0];
        let ran = Rc::new(RefCell::new(false));
        let got = ctx
            .step(host, "kubeadm init on cp1", async |_| {
                *ran.borrow_mut() = true;
                Ok(42)
            })
            .await
            .unwrap();
        assert_eq!(got, want, "{mode:?}");
        assert_eq!(*ran.borrow(), want.is_some(), "{mode:?}");
        let journal = ctx.journal();
        let rec = &journal["cp1"][0];
        assert_eq!((rec.kind, rec.done), ("step", want.is_some()));
        if mode == Mode::Plan {
            assert!(
                lines
                    .0
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.contains("kubeadm init on cp1"))
            );
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_rolling_start_stops_at_the_first_node_that_fails_and_names_it_to_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::new(Some(("cp2", "systemctl enable --now khagent")));
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    let err = run(&mut ctx, up_phases()).await.unwrap_err();
    let failed = err.downcast_ref::<NodesFailed>().expect("nodes failed");
    assert_eq!(failed.phase, "Install the agent");
    let names: Vec<&str> = failed.failures.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["cp2", "cp3"]);
    assert!(
        format!("{:#}", failed.failures[1].1).contains("stopped at cp2"),
        "{:#}",
        failed.failures[1].1
    );
    let started: Vec<String> = nodes
        .seen()
        .iter()
        .filter(|s| s.label.starts_with("systemctl enable"))
        .map(|s| s.node.clone())
        .collect();
    assert_eq!(started, ["cp1", "cp2"], "cp3 was never started");
}

fn seen_labels(nodes: &Nodes, on: &str) -> Vec<String> {
    nodes
        .seen()
        .iter()
        .filter(|s| s.node == on)
        .map(|s| s.label.clone())
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn the_join_token_reaches_nodes_only_inside_files_never_argv_or_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::new(None);
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    run(&mut ctx, up_phases()).await.unwrap();
    let token = ctx.cluster.join_token.as_ref().unwrap().reveal();
    let seen = nodes.seen();
    let in_files = seen
        .iter()
        .filter(|s| {
            s.stdin
                .as_ref()
                .is_some_and(|i| String::from_utf8_lossy(i).contains(&token))
        })
        .count();
    assert!(
        in_files >= 5,
        "every node's kubeadm file carries it ({in_files})"
    );
    for s in &seen {
        assert!(
            s.argv.iter().all(|a| !a.contains(&token)),
            "the token is in argv: {:?}",
            s.label
        );
    }
    let log = std::fs::read_to_string(ctx.report.log_path().unwrap()).unwrap();
    assert!(!log.contains(&token), "the token is in the log");
    assert!(
        !log.contains(token.split('.').nth(1).unwrap()),
        "its secret half is in the log"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_dry_run_shows_each_nodes_kubeadm_documents_with_the_token_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::new(None);
    let lines = Lines::default();
    let mut ctx = context(dir.path(), Mode::Plan, &nodes, &lines);
    run(&mut ctx, up_phases()).await.unwrap();
    let token = ctx.cluster.join_token.as_ref().unwrap().reveal();
    let shown = lines.0.lock().unwrap().join("\n");
    for want in [
        "cp1: kubeadm init (with the certificates khactl placed)",
        "with /run/khactl/kubeadm-init.yaml (0600, removed when kubeadm ends):",
        "kind: InitConfiguration",
        "cp2: kubeadm join as a control plane",
        "w1: kubeadm join as a worker",
        "cp1: kubeadm init",
        "<redacted>",
    ] {
        assert!(shown.contains(want), "missing {want:?} in\n{shown}");
    }
    assert!(!shown.contains(&token), "the dry run shows the token");
}

#[tokio::test(flavor = "current_thread")]
async fn a_stale_member_of_a_wiped_control_plane_is_removed_before_it_joins_again() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster {
        joined: vec!["cp1".into(), "cp3".into(), "w1".into()],
        stale: vec!["cp2".into()],
        stale_nodes: vec!["cp2".into()],
        unregistered: Vec::new(),
    };
    let nodes = Nodes::with_cluster(Vec::new(), cluster);
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    run(&mut ctx, up_phases()).await.unwrap();
    let on_cp1 = seen_labels(&nodes, "cp1");
    assert!(
        on_cp1
            .iter()
            .any(|l| l.contains("/v3/cluster/member/remove")),
        "{on_cp1:?}"
    );
    assert!(
        !on_cp1.iter().any(|l| l.starts_with("kubeadm init")),
        "no second init"
    );
    let order: Vec<String> = nodes
        .seen()
        .iter()
        .filter(|s| {
            s.label.contains("member/remove")
                || s.label.contains("delete node")
                || (s.node == "cp2"
                    && s.label.starts_with("kubeadm-with-config")
                    && s.argv[6] == "join")
        })
        .map(|s| {
            format!(
                "{}: {}",
                s.node,
                s.label.split(' ').next().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        order,
        ["cp1: etcd-api", "cp1: kubectl", "cp2: kubeadm-with-config"],
        "member removed, then its old Node object deleted (kubeadm refuses to join over a \
         Ready one), then joined"
    );
    assert!(
        seen_labels(&nodes, "cp3")
            .iter()
            .all(|l| !l.starts_with("kubeadm join")),
        "cp3 is a member: left alone"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_join_is_reset_and_stops_the_control_planes_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::new(Some((
        "cp2",
        "kubeadm-with-config /run/khactl/kubeadm-join.yaml",
    )));
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    let err = run(&mut ctx, up_phases()).await.unwrap_err();
    let failed = err.downcast_ref::<NodesFailed>().expect("nodes failed");
    assert_eq!(failed.phase, "Join control planes");
    let names: Vec<&str> = failed.failures.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["cp2", "cp3"]);
    let cp2 = format!("{:#}", failed.failures[0].1);
    assert!(cp2.contains("was reset"), "{cp2}");
    assert!(
        seen_labels(&nodes, "cp2")
            .iter()
            .any(|l| l.starts_with("kubeadm reset -f"))
    );
    assert!(
        seen_labels(&nodes, "cp3")
            .iter()
            .all(|l| !l.starts_with("kubeadm join"))
    );
}

fn built() -> Cluster {
    Cluster {
        joined: vec!["cp1".into(), "cp2".into(), "cp3".into(), "w1".into()],
        stale: Vec::new(),
        stale_nodes: Vec::new(),
        unregistered: Vec::new(),
    }
}

fn kubeadm_runs(nodes: &Nodes) -> Vec<String> {
    nodes
        .seen()
        .iter()
        .filter(|s| s.label.starts_with("kubeadm") && !s.label.contains("config validate"))
        .map(|s| format!("{}: {}", s.node, s.label))
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn an_etcd_down_on_the_first_control_plane_is_asked_elsewhere_and_nothing_is_reset() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::with_cluster(vec![("cp1", "etcd-api")], built());
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    run(&mut ctx, up_phases()).await.unwrap();
    assert!(
        kubeadm_runs(&nodes).is_empty(),
        "{:?}",
        kubeadm_runs(&nodes)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_cluster_whose_etcd_answers_nowhere_is_never_initialised_again() {
    let dir = tempfile::tempdir().unwrap();
    let fail = vec![
        ("cp1", "etcd-api"),
        ("cp2", "etcd-api"),
        ("cp3", "etcd-api"),
    ];
    let nodes = Nodes::with_cluster(fail, built());
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    let err = run(&mut ctx, up_phases()).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("etcd answers on none"),
        "{err:#}"
    );
    assert!(
        kubeadm_runs(&nodes).is_empty(),
        "{:?}",
        kubeadm_runs(&nodes)
    );
}

/// A built cluster whose members reach the inventory's endpoint (control planes' kubelets
/// their own API server) passes preflight and needs no kubeadm.
#[tokio::test(flavor = "current_thread")]
async fn a_second_up_on_a_built_cluster_runs_no_kubeadm_and_no_token_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::with_cluster(Vec::new(), built());
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    run(&mut ctx, up_phases()).await.unwrap();
    let ran = kubeadm_runs(&nodes);
    assert!(ran.is_empty(), "{ran:?}");
}

/// The nodes `super-admin.conf` was written to.
fn super_admin_written(nodes: &Nodes) -> Vec<String> {
    nodes
        .seen()
        .iter()
        .filter(|s| !s.read_only && s.argv.iter().any(|a| a.ends_with("/super-admin.conf")))
        .map(|s| s.node.clone())
        .collect()
}

/// Only `kubeadm init` needs the one credential RBAC cannot restrict: a fresh cluster's first
/// control plane gets it; once the cluster exists, removing its init node does not hand a new
/// copy to whichever control plane is now first.
#[tokio::test(flavor = "current_thread")]
async fn super_admin_conf_goes_to_the_init_node_of_a_fresh_cluster_only() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::new(None);
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    run(&mut ctx, up_phases()).await.unwrap();
    assert_eq!(super_admin_written(&nodes), ["cp1"]);

    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::with_cluster(Vec::new(), built());
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    ctx.inventory.nodes.retain(|n| n.name.as_str() != "cp1");
    // Up to the certificates: the fake answers that only cp1 holds the VIP.
    let mut phases = up_phases();
    let distribute = phases
        .iter()
        .position(|p| p.title() == "Distribute certificates")
        .unwrap();
    phases.truncate(distribute + 1);
    run(&mut ctx, phases).await.unwrap();
    let written = super_admin_written(&nodes);
    assert!(written.is_empty(), "written to {written:?}");
}

/// kubeadm wrote the endpoint into every kubelet.conf: a changed `vip.port` on a running
/// cluster would move the agents away from every kubelet. `up` stops before any change,
/// naming the members and the way back (an unchanged endpoint passes:
/// `a_second_up_on_a_built_cluster_runs_no_kubeadm_and_no_token_is_made`).
#[tokio::test(flavor = "current_thread")]
async fn up_refuses_to_move_a_running_clusters_endpoint_before_any_change() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::with_cluster(Vec::new(), built());
    let lines = Lines::default();
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &lines);
    ctx.inventory.vip.as_mut().unwrap().port = crate::inventory::Port::new(9443).unwrap();
    let err = run(&mut ctx, up_phases()).await.unwrap_err();
    let text = format!("{err:#} {}", lines.0.lock().unwrap().join("\n"));
    for node in ["cp1", "w1"] {
        assert!(text.contains(node), "{node} not named: {text}");
    }
    assert!(
        text.contains("https://10.0.0.100:8443") && text.contains("https://10.0.0.100:9443"),
        "{text}"
    );
    assert!(text.contains("put the inventory's vip"), "{text}");
    assert!(text.contains("/etc/kubernetes/admin.conf"), "{text}");
    assert!(changed_nodes(&nodes).is_empty(), "{:?}", nodes.seen());
}

#[tokio::test(flavor = "current_thread")]
async fn ctrl_c_after_kubeadm_init_keeps_the_node_and_advises_no_manual_reset() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::new(None);
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    // Ctrl-C arrives while kubeadm init runs: it finishes, then the run stops.
    let interrupt = ctx.settings.interrupt.clone();
    let raising: Responder = {
        let inner = Rc::clone(&nodes.responder);
        Rc::new(move |node, cmd| {
            let out = inner(node, cmd);
            if cmd.label().starts_with("kubeadm-with-config") {
                interrupt.raise();
            }
            out
        })
    };
    ctx.connector = Box::new(FakeConnector {
        responder: raising,
        record: Rc::clone(&nodes.record),
    });
    let err = run(&mut ctx, up_phases()).await.unwrap_err();
    assert!(err.is::<RunInterrupted>(), "{err:#}");
    let text = format!("{err:#}");
    assert!(!text.contains("by hand"), "{text}");
    assert!(
        !kubeadm_runs(&nodes)
            .iter()
            .any(|l| l.contains("kubeadm reset")),
        "the node that was initialised is not reset: {:?}",
        kubeadm_runs(&nodes)
    );
}

/// Fake nodes as [`Nodes::new`] makes them, except that `answer` may replace the answer to a
/// command on a node (`None`: the usual one).
fn nodes_answering(answer: impl Fn(&str, &RemoteCommand) -> Option<String> + 'static) -> Nodes {
    let usual = Nodes::new(None);
    let inner = Rc::clone(&usual.responder);
    Nodes {
        record: usual.record,
        responder: Rc::new(move |node, cmd| match answer(node, cmd) {
            Some(text) => Ok(output(0, &text)),
            None => inner(node, cmd),
        }),
    }
}

/// Issue #12, item 12: a VIP someone else put on a control plane (keepalived, an admin) stops
/// `up` in preflight, before any node changes, naming the node and how to remove it.
#[tokio::test(flavor = "current_thread")]
async fn up_stops_before_any_change_when_a_node_already_holds_the_vip() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes_answering(|node, cmd| {
        (node == "cp2" && cmd.label().starts_with("khactl-probe"))
            .then(|| probe_output(node, cmd, &Cluster::default()) + "addr eth0 10.0.0.100/24\n")
    });
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    let err = run(&mut ctx, up_phases()).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("Preflight checks: failed on cp2"), "{text}");
    assert!(
        text.contains("`ip addr del 10.0.0.100/24 dev eth0`"),
        "{text}"
    );
    let writes: Vec<Seen> = nodes.seen().into_iter().filter(|s| !s.read_only).collect();
    assert!(writes.is_empty(), "changed nodes: {writes:?}");
}

/// Issue #12, item 12: before an agent first starts on a node, khactl listens there for
/// another VRRP router with the cluster's VRID; one heard stops the install before any agent
/// starts anywhere, naming the router and what to do.
#[tokio::test(flavor = "current_thread")]
async fn up_starts_no_agent_when_another_router_uses_our_vrid() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes_answering(|node, cmd| {
        (node == "cp3" && cmd.argv().iter().any(|a| a == "probe-vrid"))
            .then(|| "heard 10.0.0.5 priority 100 interval_cs 100 addresses 10.0.0.200\n".into())
    });
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    let err = run(&mut ctx, up_phases()).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("Install the agent: failed on cp3"), "{text}");
    assert!(
        text.contains("another VRRP router uses VRID 51 on eth0: 10.0.0.5"),
        "{text}"
    );
    let seen = nodes.seen();
    let listened: Vec<&str> = seen
        .iter()
        .filter(|s| s.argv.iter().any(|a| a == "probe-vrid"))
        .map(|s| {
            assert!(s.read_only, "the listen is read-only");
            s.node.as_str()
        })
        .collect();
    assert_eq!(listened, ["cp1", "cp2", "cp3"]);
    let started: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.argv.iter().any(|a| a == "khagent") && s.argv.iter().any(|a| a == "enable"))
        .collect();
    assert!(started.is_empty(), "an agent was started: {started:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_second_run_on_the_same_state_dir_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::new(None);
    let first = context(dir.path(), Mode::Plan, &nodes, &Lines::default());
    let opts = NodeOptions {
        inventory: dir.path().join("inventory.yaml"),
        parallelism: 10,
        connect_timeout: std::time::Duration::from_secs(1),
        state_dir: Some(dir.path().join("state")),
    };
    let second = session::load(&opts).unwrap().start_with(
        "up",
        Mode::Apply,
        Box::new(Lines::default()),
        nodes.connector(),
    );
    let Err(err) = second else {
        panic!("two runs held the state directory at once");
    };
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!("PID {}", std::process::id())) && text.contains("khactl up"),
        "names the holder: {text}"
    );
    assert!(
        !err.chain().any(|c| c.is::<session::UsageError>()),
        "exit 1, not 2: the inventory is fine, the directory is busy"
    );
    drop(first);
    let logs = std::fs::read_dir(dir.path().join("state/fake/logs")).unwrap();
    assert_eq!(logs.count(), 1, "the refused run made no log of its own");
}

/// Raises the Ctrl-C flag, as the signal listener does.
struct PressCtrlC;

impl Phase for PressCtrlC {
    fn title(&self) -> &'static str {
        "Press Ctrl-C"
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            ctx.settings.interrupt.raise();
            Ok(())
        })
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_dry_run_keeps_its_scratch_pki_in_the_state_dir_and_removes_it_however_it_ends() {
    for interrupted in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let nodes = Nodes::new(None);
        let mut ctx = context(dir.path(), Mode::Plan, &nodes, &Lines::default());
        let scratch = ctx.state.scratch_path();
        assert!(scratch.starts_with(dir.path().join("state")));
        let mut phases: Vec<Box<dyn Phase>> = vec![Box::new(GeneratePki)];
        if interrupted {
            phases.push(Box::new(PressCtrlC));
            phases.push(Box::new(Connect));
        }
        let result = run(&mut ctx, phases).await;
        assert!(
            scratch.join("pki/ca.key").exists(),
            "the plan's CA key is in the scratch while the run lasts"
        );
        assert_eq!(result.is_err(), interrupted);
        let finished = session::finish(ctx, result).await;
        assert_eq!(finished.is_err(), interrupted);
        assert!(!scratch.exists(), "interrupted: {interrupted}");
        assert!(
            !dir.path().join("state/fake/pki/ca.key").exists(),
            "a dry run never creates the state's own PKI"
        );
    }
}

impl Nodes {
    /// The same nodes, with `on` holding `contents` at `path` as the probe reads it.
    fn holding(mut self, on: &'static str, path: &'static str, contents: Vec<u8>) -> Self {
        use base64::Engine as _;
        let inner = Rc::clone(&self.responder);
        let b64 = base64::engine::general_purpose::STANDARD.encode(contents);
        self.responder = Rc::new(move |node: &str, cmd: &RemoteCommand| {
            let mut out = inner(node, cmd)?;
            if node == on && cmd.label().starts_with("khactl-probe") {
                let text = out.stdout_str().replace(
                    &format!("file {path} -\n"),
                    &format!("file {path} ={b64}\n"),
                );
                out.stdout = text.into_bytes();
            }
            Ok(out)
        });
        self
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_node_with_another_clusters_ca_stops_up_before_any_change() {
    let other = tempfile::tempdir().unwrap();
    let inventory = crate::inventory::parse(INVENTORY).unwrap().inventory;
    let (theirs, _) = crate::pki::ensure(other.path(), &inventory).unwrap();
    let cp2 = inventory.node("cp2").unwrap();
    let ca = theirs
        .files_for(cp2, None)
        .into_iter()
        .find(|f| f.remote_path.ends_with("pki/ca.crt"))
        .unwrap()
        .contents;
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::new(None).holding("cp2", "/etc/kubernetes/pki/ca.crt", ca);
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    let err = run(&mut ctx, up_phases()).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("Preflight checks: failed on cp2"), "{text}");
    assert!(text.contains("khactl adopt-pki -i"), "{text}");
    assert!(text.contains("--from cp2"), "{text}");
    assert!(text.contains("--state-dir"), "{text}");
    let writes: Vec<Seen> = nodes.seen().into_iter().filter(|s| !s.read_only).collect();
    assert!(writes.is_empty(), "nothing may change: {writes:?}");
}

impl Nodes {
    /// The same nodes, with `on` answering the probe as if khagent's binary were installed and
    /// `ip` with the VIP on an interface when `holds_vip`.
    fn with_agent(mut self, on: &'static str, holds_vip: bool) -> Self {
        let inner = Rc::clone(&self.responder);
        self.responder = Rc::new(move |node: &str, cmd: &RemoteCommand| {
            let mut out = inner(node, cmd)?;
            if node != on {
                return Ok(out);
            }
            if cmd.label().starts_with("khactl-probe") {
                let text = out.stdout_str().replace(
                    "hash /usr/local/bin/khagent -\n",
                    "sum abc  /usr/local/bin/khagent\nmode 755 /usr/local/bin/khagent\n",
                );
                out.stdout = text.into_bytes();
            } else if cmd.argv().first().map(String::as_str) == Some("ip") {
                let vip = if holds_vip {
                    "2: eth0    inet 10.0.0.100/24 scope global secondary eth0\n"
                } else {
                    ""
                };
                out = output(
                    0,
                    &format!("2: eth0    inet 10.0.0.19/24 scope global eth0\n{vip}"),
                );
            }
            Ok(out)
        });
        self
    }
}

/// Records that khactl once installed its agent on cp9, a node the inventory no longer lists.
fn record_former_cp9(dir: &std::path::Path) -> std::path::PathBuf {
    use crate::state::record::{Placed, Placements};
    let state = crate::state::StateDir::locate(Some(&dir.join("state")), "fake").unwrap();
    state.create().unwrap();
    let target = crate::inventory::SshTarget {
        node: crate::inventory::NodeName::new("cp9").unwrap(),
        address: "10.0.0.19".parse().unwrap(),
        user: "root".into(),
        port: crate::inventory::Port::new(22).unwrap(),
        identity_file: None,
        sudo: false,
        bastion: None,
    };
    let mut record = Placements::load(&state.placements_path()).unwrap();
    record
        .nodes
        .insert("cp9".into(), Placed::control_plane(&target));
    record.save(&state.placements_path()).unwrap();
    state.placements_path()
}

fn recorded(path: &std::path::Path) -> Vec<String> {
    let record = crate::state::record::Placements::load(path).unwrap();
    record.nodes.into_keys().collect()
}

#[tokio::test(flavor = "current_thread")]
async fn up_does_not_succeed_while_a_removed_control_plane_still_has_its_agent() {
    let dir = tempfile::tempdir().unwrap();
    let record = record_former_cp9(dir.path());
    let nodes = Nodes::new(None).with_agent("cp9", false);
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    let err = run(&mut ctx, up_phases()).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("cp9 should no longer hold what khactl placed there"),
        "{text}"
    );
    let hints = crate::diagnostics::hints_of(&err, |_| Vec::new());
    assert!(
        hints.iter().any(|h| h.contains("khactl remove-node cp9")),
        "{hints:?}"
    );
    assert!(
        hints
            .iter()
            .any(|h| h.contains("systemctl disable --now khagent"))
    );
    // The VIP was polled on cp9 too: it is counted among the possible holders.
    assert!(
        nodes
            .seen()
            .iter()
            .any(|s| s.node == "cp9" && s.argv.first().map(String::as_str) == Some("ip")),
        "cp9 was asked whether it holds the VIP"
    );
    // Still recorded (its agent is there), next to today's control planes.
    assert_eq!(recorded(&record), ["cp1", "cp2", "cp3", "cp9"]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_removed_control_plane_holding_the_vip_fails_the_wait_at_once() {
    let dir = tempfile::tempdir().unwrap();
    record_former_cp9(dir.path());
    let nodes = Nodes::new(None).with_agent("cp9", true);
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    let err = run(&mut ctx, up_phases()).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("10.0.0.100 is held by cp9, which should no longer run khagent"),
        "{text}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_removed_control_plane_found_clean_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let record = record_former_cp9(dir.path());
    let nodes = Nodes::new(None);
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    run(&mut ctx, up_phases()).await.unwrap();
    assert_eq!(recorded(&record), ["cp1", "cp2", "cp3"]);
}

/// `remove-node NAME` on the fake nodes, the worker left out of the run as the command does.
async fn remove_node(
    dir: &std::path::Path,
    mode: Mode,
    nodes: &Nodes,
    name: &str,
) -> anyhow::Result<()> {
    let mut ctx = context(dir, mode, nodes, &Lines::default());
    let node = ctx.inventory.node(name).unwrap().clone();
    ctx.inventory.nodes.retain(|n| n.name.as_str() != "w1");
    let leaving = kubernetes::Leaving {
        node,
        unreachable: false,
    };
    run(&mut ctx, crate::commands::remove_node::phases(&leaving)).await
}

fn grow_options(
    node: &str,
    role: crate::inventory::Role,
    yes: bool,
) -> crate::commands::grow::GrowOptions {
    crate::commands::grow::GrowOptions {
        nodes: NodeOptions {
            inventory: "unused".into(),
            parallelism: 10,
            connect_timeout: std::time::Duration::from_secs(1),
            state_dir: None,
        },
        node: node.to_owned(),
        role,
        dry_run: false,
        yes,
        agent_binary: None,
    }
}

/// Nodes a run changed through the gate (file writes, sysctls, services, kubeadm).
fn changed_nodes(nodes: &Nodes) -> std::collections::BTreeSet<String> {
    nodes
        .seen()
        .iter()
        .filter(|s| {
            s.label.starts_with("write-files")
                || s.label.starts_with("sysctl-write")
                || s.label
                    .starts_with("kubeadm-with-config /run/khactl/kubeadm-join")
                || s.label.contains("service khagent")
        })
        .map(|s| s.node.clone())
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn add_master_prepares_and_joins_only_the_new_node_and_never_contacts_a_worker() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster {
        joined: vec!["cp1".into(), "cp2".into(), "w1".into()],
        ..Cluster::default()
    };
    let nodes = Nodes::with_cluster(Vec::new(), cluster);
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    let opts = grow_options("cp3", crate::inventory::Role::ControlPlane, false);
    crate::commands::grow::narrow(&mut ctx, "cp3");
    run(&mut ctx, crate::commands::grow::phases(&opts))
        .await
        .unwrap();
    assert!(
        nodes.seen().iter().all(|s| s.node != "w1"),
        "no worker is contacted"
    );
    let prepared: std::collections::BTreeSet<String> = nodes
        .seen()
        .iter()
        .filter(|s| {
            s.label.starts_with("sysctl-write")
                || (s.label.starts_with("write-files")
                    && s.argv.iter().any(|a| {
                        a.starts_with("/etc/kubernetes/pki/") || a.starts_with("/etc/sysctl.d/")
                    }))
        })
        .map(|s| s.node.clone())
        .collect();
    // (The other control planes get the agent's new config: that is the reload.)
    assert_eq!(
        prepared,
        std::collections::BTreeSet::from(["cp3".to_owned()]),
        "only cp3 is prepared and given certificates"
    );
    let joins: Vec<String> = nodes
        .seen()
        .iter()
        .filter(|s| s.label.starts_with("kubeadm-with-config") && s.argv[6] == "join")
        .map(|s| s.node.clone())
        .collect();
    assert_eq!(joins, ["cp3"]);
}

#[tokio::test(flavor = "current_thread")]
async fn add_master_to_an_even_size_is_refused_without_yes_before_any_change() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster {
        joined: vec!["cp1".into(), "w1".into()],
        ..Cluster::default()
    };
    let nodes = Nodes::with_cluster(Vec::new(), cluster);
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    // The inventory's cp3 is not joined either: drop it, as a user growing 1 -> 2 would.
    ctx.inventory.nodes.retain(|n| n.name.as_str() != "cp3");
    let opts = grow_options("cp2", crate::inventory::Role::ControlPlane, false);
    crate::commands::grow::narrow(&mut ctx, "cp2");
    let err = run(&mut ctx, crate::commands::grow::phases(&opts))
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("etcd would have 2 members"), "{text}");
    assert!(changed_nodes(&nodes).is_empty(), "{:?}", nodes.seen());
}

#[tokio::test(flavor = "current_thread")]
async fn add_master_refuses_while_another_control_plane_of_the_inventory_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster {
        joined: vec!["cp1".into(), "w1".into()],
        ..Cluster::default()
    };
    let nodes = Nodes::with_cluster(Vec::new(), cluster);
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    let opts = grow_options("cp3", crate::inventory::Role::ControlPlane, true);
    crate::commands::grow::narrow(&mut ctx, "cp3");
    let err = run(&mut ctx, crate::commands::grow::phases(&opts))
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("cp2 is in the inventory but not in the cluster"),
        "{text}"
    );
    assert!(changed_nodes(&nodes).is_empty(), "{:?}", nodes.seen());
}

#[tokio::test(flavor = "current_thread")]
async fn remove_node_removes_the_etcd_member_before_its_reset_and_reloads_agents_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::with_cluster(Vec::new(), built());
    remove_node(dir.path(), Mode::Apply, &nodes, "cp3")
        .await
        .unwrap();
    assert!(
        nodes.seen().iter().all(|s| s.node != "w1"),
        "no worker contacted"
    );
    let order: Vec<String> = nodes
        .seen()
        .iter()
        .filter(|s| {
            s.label.contains("member/remove")
                || s.label.contains("transfer-leadership")
                || s.label.starts_with("kubeadm reset")
                || s.label.contains("delete node")
        })
        .map(|s| {
            let words: Vec<&str> = s.label.split(' ').collect();
            format!(
                "{}: {} {}",
                s.node,
                words[0],
                words.get(2).copied().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            "cp3: etcd-api /v3/maintenance/transfer-leadership",
            "cp1: etcd-api /v3/cluster/member/remove",
            "cp3: kubeadm -f",
            "cp1: kubectl /etc/kubernetes/admin.conf",
        ],
        "the leader hands over, its member goes before its etcd stops, the Node last"
    );
    let cp3_agent_writes = nodes
        .seen()
        .iter()
        .filter(|s| {
            s.node == "cp3"
                && (s.argv.iter().any(|a| a == "/etc/khagent/khagent.yaml")
                    || s.label.contains("reload khagent")
                    || s.label.contains("restart khagent"))
                && !s.label.starts_with("khactl-probe")
        })
        .count();
    assert_eq!(
        cp3_agent_writes,
        0,
        "the leaving node's agent is not re-configured: {:?}",
        seen_labels(&nodes, "cp3")
    );
    let cp1_config = nodes
        .seen()
        .iter()
        .filter(|s| s.node == "cp1" && s.label.starts_with("write-files"))
        .map(|s| String::from_utf8_lossy(s.stdin.as_deref().unwrap_or_default()).into_owned())
        .collect::<String>();
    assert!(
        cp1_config.contains("10.0.0.12") && !cp1_config.contains("10.0.0.13:6443"),
        "cp1's agent balances to cp2 and no longer to cp3"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_cluster_locked_by_another_khactl_stops_up_before_any_change_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::new(None);
    let fresh = Rc::clone(&nodes.responder);
    let busy: Responder = Rc::new(move |node: &str, cmd: &RemoteCommand| {
        if cmd.label().starts_with("cluster-lock") {
            Ok(output(
                0,
                "busy khactl up (pid 42 on ws2, since 2026-12-05T04:00:00Z)\n",
            ))
        } else {
            fresh(node, cmd)
        }
    });
    let connector = Box::new(FakeConnector {
        responder: busy,
        record: Rc::clone(&nodes.record),
    });
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    ctx.connector = connector;
    let err = run(&mut ctx, up_phases()).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("locked on cp1 by khactl up (pid 42 on ws2"),
        "{text}"
    );
    let changed: Vec<String> = nodes
        .seen()
        .iter()
        .filter(|s| !s.read_only && !s.label.starts_with("cluster-lock"))
        .map(|s| s.label.clone())
        .collect();
    assert!(changed.is_empty(), "nothing changed: {changed:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_leaving_control_plane_s_agent_stops_before_the_others_forget_it() {
    // Found by review: a non-holder's agent kept running while the others were reloaded
    // without it; hearing no one, it took the VIP (a second holder).
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::with_cluster(Vec::new(), built());
    remove_node(dir.path(), Mode::Apply, &nodes, "cp2")
        .await
        .unwrap();
    let seen = nodes.seen();
    let others_reconfigured = seen
        .iter()
        .position(|s| {
            s.node != "cp2"
                && s.label.starts_with("write-files")
                && s.argv.iter().any(|a| a == "/etc/khagent/khagent.yaml")
        })
        .expect("the others get a config without cp2");
    let stopped = seen
        .iter()
        .position(|s| s.node == "cp2" && s.label.contains("stop") && s.label.contains("khagent"));
    assert!(
        stopped.is_some_and(|i| i < others_reconfigured),
        "cp2's agent stops (at {stopped:?}) before the others drop it (at {others_reconfigured})"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn remove_node_run_twice_finishes_the_second_time_without_a_drain() {
    // Found by review: a second run failed at `kubectl drain` of a Node already deleted.
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::with_cluster(Vec::new(), built());
    for round in 0..2 {
        let r = remove_node(dir.path(), Mode::Apply, &nodes, "cp3").await;
        assert!(r.is_ok(), "round {round}: {:#}", r.unwrap_err());
    }
}

#[tokio::test(flavor = "current_thread")]
async fn add_master_never_touches_another_control_plane_that_is_an_incomplete_member() {
    // Found by review: cp2, a healthy voter whose Node object is gone, was reset and rejoined
    // by `add-master cp3`. Now the gate refuses and names it.
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster {
        joined: vec!["cp1".into(), "cp2".into(), "w1".into()],
        unregistered: vec!["cp2".into()],
        ..Cluster::default()
    };
    let nodes = Nodes::with_cluster(Vec::new(), cluster);
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    let opts = grow_options("cp3", crate::inventory::Role::ControlPlane, false);
    crate::commands::grow::narrow(&mut ctx, "cp3");
    let err = run(&mut ctx, crate::commands::grow::phases(&opts))
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("cp2 is an etcd voter but not a complete member"),
        "{text}"
    );
    assert!(changed_nodes(&nodes).is_empty(), "{:?}", nodes.seen());
}

#[tokio::test(flavor = "current_thread")]
async fn dry_runs_of_add_master_and_remove_node_pass_the_read_only_seam() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::with_cluster(Vec::new(), built());
    remove_node(dir.path(), Mode::Plan, &nodes, "cp2")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster {
        joined: vec!["cp1".into(), "cp2".into(), "w1".into()],
        ..Cluster::default()
    };
    let nodes = Nodes::with_cluster(Vec::new(), cluster);
    let mut ctx = context(dir.path(), Mode::Plan, &nodes, &Lines::default());
    let opts = grow_options("cp3", crate::inventory::Role::ControlPlane, false);
    crate::commands::grow::narrow(&mut ctx, "cp3");
    run(&mut ctx, crate::commands::grow::phases(&opts))
        .await
        .unwrap();
    assert!(changed_nodes(&nodes).is_empty());
}

/// A node still in the inventory that holds more than it should (here w1, once a control
/// plane, with khagent left): the way out is removing that by hand, never `remove-node`,
/// which would take w1 out of the cluster.
#[tokio::test(flavor = "current_thread")]
async fn a_node_still_listed_with_a_leftover_agent_is_told_to_remove_it_by_hand() {
    use crate::state::record::{Placed, Placements};
    let dir = tempfile::tempdir().unwrap();
    let path = record_former_cp9(dir.path());
    let mut record = Placements::load(&path).unwrap();
    let cp9 = record.nodes.remove("cp9").unwrap();
    let w1 = Placed {
        address: "10.0.0.21".parse().unwrap(),
        ..cp9
    };
    record.nodes.insert("w1".into(), w1);
    record.save(&path).unwrap();
    let nodes = Nodes::new(None).with_agent("w1", false);
    let mut ctx = context(dir.path(), Mode::Apply, &nodes, &Lines::default());
    let err = run(&mut ctx, up_phases()).await.unwrap_err();
    let hints = crate::diagnostics::hints_of(&err, |_| Vec::new());
    assert!(
        !hints.iter().any(|h| h.contains("remove-node w1")),
        "{hints:?}"
    );
    let by_hand = hints
        .iter()
        .find(|h| h.starts_with("w1 stays in the cluster"))
        .unwrap_or_else(|| panic!("{hints:?}"));
    assert!(
        by_hand.contains("systemctl disable --now khagent"),
        "{by_hand}"
    );
    // Its CA keys were not found there: nothing to remove.
    assert!(!by_hand.contains("ca.key"), "{by_hand}");
}
