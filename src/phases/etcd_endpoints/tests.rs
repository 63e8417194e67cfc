//! The rewrites (pure) and the phase against fake nodes.

use super::*;

fn urls(hosts: &[&str]) -> Vec<String> {
    hosts.iter().map(|h| format!("https://{h}:2379")).collect()
}

const MANIFEST: &str = "\
apiVersion: v1
kind: Pod
spec:
  containers:
  - command:
    - kube-apiserver
    - --advertise-address=10.0.0.11
    - --etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt
    - --etcd-servers=https://10.0.0.21:2379,https://10.0.0.22:2379
    - --secure-port=6443
";

#[test]
fn only_the_etcd_servers_value_of_the_manifest_changes() {
    let new = with_etcd_servers(MANIFEST, &urls(&["10.0.0.22", "10.0.0.23"]))
        .unwrap()
        .unwrap();
    assert_eq!(
        new,
        MANIFEST.replace(
            "https://10.0.0.21:2379,https://10.0.0.22:2379",
            "https://10.0.0.22:2379,https://10.0.0.23:2379"
        )
    );
}

#[test]
fn a_manifest_that_lists_the_members_is_not_rewritten() {
    let same = with_etcd_servers(MANIFEST, &urls(&["10.0.0.21", "10.0.0.22"])).unwrap();
    assert_eq!(same, None);
}

#[test]
fn a_quoted_argument_keeps_its_quotes_and_crlf_its_line_ends() {
    let m = "    - \"--etcd-servers=https://10.0.0.21:2379\"\r\n    - --x=1\r\n";
    let new = with_etcd_servers(m, &urls(&["10.0.0.23"]))
        .unwrap()
        .unwrap();
    assert_eq!(
        new,
        "    - \"--etcd-servers=https://10.0.0.23:2379\"\r\n    - --x=1\r\n"
    );
}

#[test]
fn a_manifest_without_or_with_two_etcd_servers_is_refused() {
    let none = with_etcd_servers("spec: {}\n", &urls(&["10.0.0.21"]));
    assert!(none.unwrap_err().contains("no --etcd-servers"));
    let two = format!("{MANIFEST}    - --etcd-servers=https://10.0.0.9:2379\n");
    assert!(
        with_etcd_servers(&two, &urls(&["10.0.0.21"]))
            .unwrap_err()
            .contains("2 --etcd-servers")
    );
}

/// As kubeadm (and the lab's stand-in) uploads it: block style, indentless sequences.
const CLUSTER: &str = "\
apiServer:
  certSANs:
  - 10.0.0.100
apiVersion: kubeadm.k8s.io/v1beta4
controlPlaneEndpoint: 10.0.0.100:6443
etcd:
  external:
    caFile: /etc/kubernetes/pki/etcd/ca.crt
    certFile: /etc/kubernetes/pki/apiserver-etcd-client.crt
    endpoints:
    - https://10.0.0.21:2379
    - https://10.0.0.22:2379
    keyFile: /etc/kubernetes/pki/apiserver-etcd-client.key
kind: ClusterConfiguration
networking:
  podSubnet: 10.244.0.0/16
";

#[test]
fn only_the_endpoints_lines_of_the_cluster_configuration_change() {
    let new = cluster_configuration_with_endpoints(
        CLUSTER,
        &urls(&["10.0.0.22", "10.0.0.23", "10.0.0.24"]),
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        new,
        CLUSTER.replace(
            "    - https://10.0.0.21:2379\n    - https://10.0.0.22:2379\n",
            "    - https://10.0.0.22:2379\n    - https://10.0.0.23:2379\n    - \
             https://10.0.0.24:2379\n"
        )
    );
}

#[test]
fn a_cluster_configuration_that_lists_the_members_is_left_alone() {
    let same = cluster_configuration_with_endpoints(CLUSTER, &urls(&["10.0.0.21", "10.0.0.22"]));
    assert_eq!(same.unwrap(), None);
}

#[test]
fn an_unusual_layout_is_written_again_with_every_other_value_kept() {
    let flow = CLUSTER.replace(
        "    endpoints:\n    - https://10.0.0.21:2379\n    - https://10.0.0.22:2379\n",
        "    endpoints: [https://10.0.0.21:2379]\n",
    );
    let new = cluster_configuration_with_endpoints(&flow, &urls(&["10.0.0.23"]))
        .unwrap()
        .unwrap();
    let mut want: Value = serde_yaml_ng::from_str(&flow).unwrap();
    want["etcd"]["external"]["endpoints"] =
        Value::Sequence(vec![Value::String("https://10.0.0.23:2379".into())]);
    assert_eq!(serde_yaml_ng::from_str::<Value>(&new).unwrap(), want);
}

#[test]
fn a_stacked_cluster_configuration_is_refused() {
    let stacked = "etcd:\n  local:\n    dataDir: /var/lib/etcd\n";
    assert!(
        cluster_configuration_with_endpoints(stacked, &urls(&["10.0.0.21"]))
            .unwrap_err()
            .contains("no etcd.external")
    );
}

mod phase {
    use std::cell::RefCell;
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;
    use std::rc::Rc;

    use super::super::*;
    use super::{CLUSTER, MANIFEST};
    use crate::phases::test_support::debian_host;
    use crate::phases::{Connect, run};
    use crate::remote::RemoteError;
    use crate::remote::fake::{FakeConnector, Record, Responder, output};
    use crate::report::{Event, Reporter};
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
  - { name: etcd1, address: 10.0.0.21, role: etcd }
  - { name: etcd2, address: 10.0.0.22, role: etcd }
  - { name: etcd3, address: 10.0.0.23, role: etcd }
";
    const OLD: &str = "https://10.0.0.21:2379,https://10.0.0.22:2379,https://10.0.0.23:2379";
    const NEW: &str = "https://10.0.0.22:2379,https://10.0.0.23:2379";

    struct Silent;

    impl Reporter for Silent {
        fn event(&self, _: &Event<'_>) {}
    }

    /// The cluster as the fakes keep it: each kubelet's running manifest hash, the API
    /// servers that never come back, kubeadm-config's ClusterConfiguration.
    #[derive(Default)]
    struct Fake {
        /// The started voters etcd lists (all three when empty).
        members: Vec<String>,
        hash: BTreeMap<String, String>,
        down: BTreeSet<String>,
        cluster_configuration: String,
    }

    fn manifest(servers: &str) -> String {
        MANIFEST.replace("https://10.0.0.21:2379,https://10.0.0.22:2379", servers)
    }

    /// Fake nodes: a write of the manifest is a restart (a new mirror pod hash); `kubectl`
    /// reads the mirror pod and kubeadm-config and applies the JSON patch.
    fn responder(fake: Rc<RefCell<Fake>>) -> Responder {
        Rc::new(move |node: &str, cmd: &crate::remote::RemoteCommand| {
            let argv = cmd.argv();
            let mut f = fake.borrow_mut();
            let out = if cmd.label().starts_with("etcd-api")
                && argv.iter().any(|a| a == "/v3/cluster/member/list")
            {
                // The three etcd nodes, started voters (etcd1 still one: remove-node points
                // the API servers away from it before its member goes).
                let members: Vec<String> = (1..=3)
                    .filter(|i| f.members.is_empty() || f.members.contains(&format!("etcd{i}")))
                    .map(|i| {
                        format!(
                            r#"{{"ID":"{i}","name":"etcd{i}","peerURLs":["https://10.0.0.2{i}:2380"],"clientURLs":["https://10.0.0.2{i}:2379"]}}"#
                        )
                    })
                    .collect();
                output(0, &format!(r#"{{"members":[{}]}}"#, members.join(",")))
            } else if cmd.label().starts_with("etcd-health") {
                output(0, "")
            } else if cmd.label().starts_with("write-files") {
                let len = cmd.stdin.as_ref().map_or(0, Vec::len);
                f.hash.insert(node.to_owned(), format!("written-{len}"));
                output(0, "")
            } else if cmd.label().starts_with("readyz") {
                if f.down.contains(node) {
                    output(7, "connection refused")
                } else {
                    output(0, "ok")
                }
            } else if argv.iter().any(|a| a.ends_with("/pods/kube-apiserver-cp1"))
                || argv.iter().any(|a| a.ends_with("/pods/kube-apiserver-cp2"))
            {
                let hash = f.hash.get(node).cloned().unwrap_or("first".into());
                output(
                    0,
                    &serde_json::json!({"metadata": {"annotations": {CONFIG_HASH: hash}}})
                        .to_string(),
                )
            } else if argv.iter().any(|a| a == CONFIG_MAP_PATH) {
                let data =
                    serde_json::json!({"data": {"ClusterConfiguration": f.cluster_configuration}});
                output(0, &data.to_string())
            } else if argv.iter().any(|a| a == "patch") {
                let ops: serde_json::Value = serde_json::from_str(argv.last().unwrap()).unwrap();
                assert_eq!(ops[0]["value"], f.cluster_configuration.as_str());
                f.cluster_configuration = ops[1]["value"].as_str().unwrap().to_owned();
                output(0, "configmap/kubeadm-config patched")
            } else {
                output(0, "")
            };
            Ok::<_, RemoteError>(out)
        })
    }

    /// A connected context whose control planes' manifests list `servers`.
    async fn context(
        dir: &Path,
        mode: Mode,
        fake: &Rc<RefCell<Fake>>,
        record: &Record,
        servers: &str,
    ) -> Context {
        let inventory = dir.join("inventory.yaml");
        std::fs::write(&inventory, INVENTORY).unwrap();
        let opts = NodeOptions {
            inventory,
            parallelism: 10,
            connect_timeout: Duration::from_secs(1),
            state_dir: Some(dir.join("state")),
        };
        let connector = Box::new(FakeConnector {
            responder: responder(Rc::clone(fake)),
            record: Rc::clone(record),
        });
        let mut ctx = session::load(&opts)
            .unwrap()
            .start_with("remove-node", mode, Box::new(Silent), connector)
            .unwrap();
        run(&mut ctx, vec![Box::new(Connect)]).await.unwrap();
        for node in ["cp1", "cp2", "etcd1", "etcd2", "etcd3"] {
            let mut facts = debian_host();
            if node.starts_with("cp") {
                facts.files.insert(
                    APISERVER_MANIFEST.into(),
                    Some(manifest(servers).into_bytes()),
                );
            }
            ctx.facts.insert(node.to_owned(), facts);
        }
        ctx
    }

    fn removing_etcd1() -> Vec<Box<dyn Phase>> {
        vec![Box::new(UpdateEtcdEndpoints::new(Some("etcd1".into())))]
    }

    /// What the fakes saw, as `node: what` lines (writes, readiness checks, patches).
    fn steps(record: &Record) -> Vec<String> {
        record
            .borrow()
            .iter()
            .filter_map(|s| {
                let what = if s.label.starts_with("write-files") {
                    "write"
                } else if s.label.starts_with("readyz") {
                    "readyz"
                } else if s.argv.iter().any(|a| a == "patch") {
                    "patch"
                } else {
                    return None;
                };
                Some(format!("{}: {what}", s.node))
            })
            .collect()
    }

    fn fake() -> Rc<RefCell<Fake>> {
        Rc::new(RefCell::new(Fake {
            cluster_configuration: CLUSTER.replace(
                "    - https://10.0.0.22:2379\n",
                "    - https://10.0.0.22:2379\n    - https://10.0.0.23:2379\n",
            ),
            ..Fake::default()
        }))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn each_api_server_is_rewritten_and_ready_before_the_next_then_kubeadm_config() {
        let dir = tempfile::tempdir().unwrap();
        let (fake, record) = (fake(), Record::default());
        let mut ctx = context(dir.path(), Mode::Apply, &fake, &record, OLD).await;
        run(&mut ctx, removing_etcd1()).await.unwrap();
        // Each serving API server is asked first (the unready go first); before a restart
        // the node itself and every other one must answer; after it, the node again.
        assert_eq!(
            steps(&record),
            [
                "cp1: readyz",
                "cp2: readyz",
                "cp1: readyz",
                "cp2: readyz",
                "cp1: write",
                "cp1: readyz",
                "cp2: readyz",
                "cp1: readyz",
                "cp2: write",
                "cp2: readyz",
                "cp1: patch"
            ]
        );
        let written: Vec<String> = record
            .borrow()
            .iter()
            .filter(|s| s.label.starts_with("write-files"))
            .map(|s| String::from_utf8(s.stdin.clone().unwrap()).unwrap())
            .collect();
        assert_eq!(written, [manifest(NEW), manifest(NEW)]);
        let endpoints: Value =
            serde_yaml_ng::from_str(&fake.borrow().cluster_configuration).unwrap();
        assert_eq!(
            endpoints["etcd"]["external"]["endpoints"],
            serde_yaml_ng::from_str::<Value>("[https://10.0.0.22:2379, https://10.0.0.23:2379]")
                .unwrap()
        );

        // The next run sees the manifests it wrote and the ConfigMap patched: no change.
        drop(ctx);
        let mut again = context(dir.path(), Mode::Apply, &fake, &record, NEW).await;
        record.borrow_mut().clear();
        run(&mut again, removing_etcd1()).await.unwrap();
        assert_eq!(steps(&record), Vec::<String>::new());
        assert!(again.journal().values().all(Vec::is_empty));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dry_run_shows_the_manifest_diffs_and_the_config_map_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (fake, record) = (fake(), Record::default());
        let mut ctx = context(dir.path(), Mode::Plan, &fake, &record, OLD).await;
        run(&mut ctx, removing_etcd1()).await.unwrap();
        assert_eq!(steps(&record), Vec::<String>::new());
        let journal = ctx.journal();
        for cp in ["cp1", "cp2"] {
            let write = &journal[cp][0];
            assert_eq!((write.kind, write.done), ("write-file", false));
            assert!(
                write
                    .details
                    .contains(&format!("+    - --etcd-servers={NEW}")),
                "{cp}: {write:?}"
            );
        }
        let patch = &journal["cp1"][1];
        assert!(patch.headline.contains("kubeadm-config"), "{patch:?}");
        assert!(
            patch
                .details
                .contains(&"-    - https://10.0.0.21:2379".to_owned()),
            "{patch:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_api_server_that_does_not_come_back_stops_the_phase_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (fake, record) = (fake(), Record::default());
        fake.borrow_mut().down.insert("cp1".into());
        let mut ctx = context(dir.path(), Mode::Apply, &fake, &record, OLD).await;
        let phase = UpdateEtcdEndpoints {
            leaving: Some("etcd1".into()),
            deadline: Duration::ZERO,
        };
        let err = run(&mut ctx, vec![Box::new(phase)]).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("the API server of cp1 is not ready"),
            "{text}"
        );
        assert!(text.contains("cp1 failed"), "{text}");
        // cp1 does not answer, so it goes first (a repair costs nothing), without waiting for
        // the others; cp2 untouched, kubeadm-config untouched.
        assert_eq!(
            steps(&record),
            [
                "cp1: readyz",
                "cp2: readyz",
                "cp1: readyz",
                "cp1: write",
                "cp1: readyz"
            ]
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_serving_api_server_is_not_restarted_while_another_does_not_answer() {
        // cp1 already lists the new endpoints but does not answer (a re-run after it failed to
        // come back): restarting cp2 now could leave no API server.
        let dir = tempfile::tempdir().unwrap();
        let (fake, record) = (fake(), Record::default());
        fake.borrow_mut().down.insert("cp1".into());
        let mut ctx = context(dir.path(), Mode::Apply, &fake, &record, OLD).await;
        ctx.facts
            .get_mut("cp1")
            .unwrap()
            .files
            .insert(APISERVER_MANIFEST.into(), Some(manifest(NEW).into_bytes()));
        let err = run(&mut ctx, removing_etcd1()).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("the API server of cp1 does not answer ready"),
            "{text}"
        );
        assert!(
            steps(&record).iter().all(|s| !s.ends_with("write")),
            "{:?}",
            steps(&record)
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn only_members_that_are_started_voters_become_endpoints() {
        // etcd3 is in the inventory (and, by hand, in the manifests) but not a member: the
        // API servers are pointed at the two that are.
        let dir = tempfile::tempdir().unwrap();
        let (fake, record) = (fake(), Record::default());
        fake.borrow_mut().members = vec!["etcd1".into(), "etcd2".into()];
        let mut ctx = context(dir.path(), Mode::Apply, &fake, &record, OLD).await;
        let phase = UpdateEtcdEndpoints::new(None);
        run(&mut ctx, vec![Box::new(phase)]).await.unwrap();
        let written: Vec<String> = record
            .borrow()
            .iter()
            .filter(|s| s.label.starts_with("write-files"))
            .map(|s| String::from_utf8(s.stdin.clone().unwrap()).unwrap())
            .collect();
        assert_eq!(written.len(), 2, "{written:?}");
        for w in &written {
            assert!(
                w.contains("--etcd-servers=https://10.0.0.21:2379,https://10.0.0.22:2379\n"),
                "{w}"
            );
        }
    }
}
