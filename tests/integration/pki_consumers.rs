//! The certificates khactl distributes, proven by their real consumers: `openssl verify`
//! on the nodes (also of the kubeconfigs' client certificates), and a three-member etcd (Debian's etcd-server) with client- and
//! peer-certificate authentication, answering `etcdctl endpoint health` over TLS with
//! our client certificate and refusing one from another CA.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{Lab, indexes, khactl_bin, require_root, wait_for};

const PKI: &str = "/etc/kubernetes/pki";

fn ok(o: &Output) -> bool {
    o.status.success()
}

fn show(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn install(lab: &Lab, state: &Path) {
    assert!(lab.is_up());
    let out = Command::new(khactl_bin())
        .args(["up", "-i"])
        .arg(lab.inventory_path())
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap();
    assert!(ok(&out), "khactl up failed: {}", show(&out));
}

fn etcd_args(lab: &Lab, node: &str, cluster: &str) -> Vec<String> {
    let ip = lab.node_address(node);
    let e = format!("{PKI}/etcd");
    [
        format!("--name={node}"),
        "--data-dir=/var/lib/etcd".into(),
        format!("--listen-client-urls=https://{ip}:2379"),
        format!("--advertise-client-urls=https://{ip}:2379"),
        format!("--listen-peer-urls=https://{ip}:2380"),
        format!("--initial-advertise-peer-urls=https://{ip}:2380"),
        format!("--initial-cluster={cluster}"),
        "--initial-cluster-state=new".into(),
        format!("--cert-file={e}/server.crt"),
        format!("--key-file={e}/server.key"),
        format!("--trusted-ca-file={e}/ca.crt"),
        "--client-cert-auth=true".into(),
        format!("--peer-cert-file={e}/peer.crt"),
        format!("--peer-key-file={e}/peer.key"),
        format!("--peer-trusted-ca-file={e}/ca.crt"),
        "--peer-client-cert-auth=true".into(),
    ]
    .into()
}

/// `etcdctl` (v3 API) with this client certificate against `endpoints`, run on this machine.
fn etcdctl(endpoints: &str, ca: &Path, cert: &Path, key: &Path, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg(format!("--cacert={}", ca.display()))
        .arg(format!("--cert={}", cert.display()))
        .arg(format!("--key={}", key.display()))
        .args(["--dial-timeout=2s", "--command-timeout=3s"])
        .args(args)
        .output()
        .unwrap()
}

fn etcdctl_health(endpoints: &str, ca: &Path, cert: &Path, key: &Path) -> Output {
    etcdctl(endpoints, ca, cert, key, &["endpoint", "health"])
}

#[test]
fn distributed_chains_verify_with_openssl_on_every_control_plane_node() {
    require_root();
    let lab = Lab::up("pki-openssl", indexes::PKI_OPENSSL, 3, 0);
    let state = tempfile::tempdir().unwrap();
    install(&lab, state.path());
    for node in ["cp1", "cp2", "cp3"] {
        for (ca, leaves) in [
            (
                "etcd/ca.crt",
                "etcd/server.crt etcd/peer.crt etcd/healthcheck-client.crt apiserver-etcd-client.crt",
            ),
            ("ca.crt", "apiserver.crt apiserver-kubelet-client.crt"),
            ("front-proxy-ca.crt", "front-proxy-client.crt"),
        ] {
            let script = format!("cd {PKI} && openssl verify -CAfile {ca} {leaves}");
            let out = lab.exec(node, &["sh", "-c", &script]);
            assert!(ok(&out), "{node}: {script}: {}", show(&out));
        }
        // A leaf does not verify against another of the cluster's CAs.
        let out = lab.exec(
            node,
            &[
                "sh",
                "-c",
                &format!("cd {PKI} && openssl verify -CAfile ca.crt etcd/server.crt"),
            ],
        );
        assert!(
            !ok(&out),
            "{node}: etcd server cert verified against the Kubernetes CA"
        );

        let sans = lab.exec(
            node,
            &[
                "openssl",
                "x509",
                "-noout",
                "-ext",
                "subjectAltName",
                "-in",
                &format!("{PKI}/apiserver.crt"),
            ],
        );
        let sans = show(&sans);
        let vip = lab.vip();
        for want in [
            format!("IP Address:{vip}"),
            "DNS:kubernetes.default.svc.cluster.local".into(),
            format!("DNS:{node},"),
            format!("IP Address:{}", lab.node_address(node)),
        ] {
            assert!(
                sans.contains(&want),
                "{node}: apiserver SANs lack {want}: {sans}"
            );
        }
        // The kubeconfigs kubeadm would write, private, with kubeadm's server URLs and a
        // client certificate from the cluster CA.
        let here = format!("https://{}:6443", lab.node_address(node));
        let endpoint = format!("https://k8s-api.{}.local:8443", lab.name());
        for (conf, server) in [
            ("admin.conf", &endpoint),
            ("controller-manager.conf", &here),
            ("scheduler.conf", &here),
        ] {
            let path = format!("/etc/kubernetes/{conf}");
            let script = format!(
                "set -e; stat -c %a {path}; grep -F 'server: {server}' {path}; \
                 sed -n 's/^ *client-certificate-data: //p' {path} | base64 -d >/tmp/client.crt; \
                 openssl verify -purpose sslclient -CAfile {PKI}/ca.crt /tmp/client.crt"
            );
            let out = lab.exec(node, &["sh", "-c", &script]);
            let text = show(&out);
            assert!(
                ok(&out) && text.starts_with("600\n") && text.contains(": OK"),
                "{node}: {conf}: {text}"
            );
        }
        let super_admin = lab.read_file(node, "/etc/kubernetes/super-admin.conf");
        assert_eq!(
            super_admin.is_some(),
            node == "cp1",
            "{node}: super-admin.conf belongs on the init node only"
        );

        // kubeadm's rule: a node's API server cert names that node only.
        for other in ["cp1", "cp2", "cp3"].into_iter().filter(|o| *o != node) {
            let theirs = format!("IP Address:{}", lab.node_address(other));
            assert!(
                !sans.split(", ").any(|s| s.trim() == theirs),
                "{node}: apiserver SANs name {other}: {sans}"
            );
        }
    }
}

#[test]
fn three_member_etcd_runs_on_our_certificates_and_refuses_a_foreign_client() {
    require_root();
    let lab = Lab::up("pki-etcd", indexes::ETCD, 3, 0);
    let state = tempfile::tempdir().unwrap();
    install(&lab, state.path());

    let nodes = ["cp1", "cp2", "cp3"];
    let cluster: Vec<String> = nodes
        .iter()
        .map(|n| format!("{n}=https://{}:2380", lab.node_address(n)))
        .collect();
    let cluster = cluster.join(",");
    for node in nodes {
        let args = etcd_args(&lab, node, &cluster).join(" ");
        let script = format!("nohup etcd {args} >/var/log/etcd.log 2>&1 &");
        let out = lab.exec(node, &["sh", "-c", &script]);
        assert!(ok(&out), "{node}: starting etcd: {}", show(&out));
    }

    // The client cert and CA as distributed to cp1, copied out to the test's side.
    let local = tempfile::tempdir().unwrap();
    for f in [
        "etcd/ca.crt",
        "etcd/healthcheck-client.crt",
        "etcd/healthcheck-client.key",
    ] {
        let body = lab.read_file("cp1", &format!("{PKI}/{f}")).unwrap();
        std::fs::write(local.path().join(f.replace('/', "_")), body).unwrap();
    }
    let ca = local.path().join("etcd_ca.crt");
    let cert = local.path().join("etcd_healthcheck-client.crt");
    let key = local.path().join("etcd_healthcheck-client.key");
    let endpoints: Vec<String> = nodes
        .iter()
        .map(|n| format!("https://{}:2379", lab.node_address(n)))
        .collect();
    let endpoints = endpoints.join(",");

    assert!(lab.is_up());
    let mut last = String::new();
    wait_for(
        "a healthy three-member etcd",
        Duration::from_secs(60),
        || {
            let out = etcdctl_health(&endpoints, &ca, &cert, &key);
            last = show(&out);
            ok(&out) && last.matches("is healthy").count() == 3
        },
    );
    // Three healthy endpoints could be three one-member clusters (a data dir left over from
    // an earlier etcd would make each ignore --initial-cluster): they must be one cluster,
    // whose members reached each other over peer TLS and agree on a leader.
    let status = etcdctl(&endpoints, &ca, &cert, &key, &["endpoint", "status"]);
    assert!(ok(&status), "{}", show(&status));
    let rows: Vec<Vec<String>> = String::from_utf8_lossy(&status.stdout)
        .lines()
        .map(|l| l.split(", ").map(str::to_owned).collect())
        .collect();
    assert_eq!(rows.len(), 3, "{}", show(&status));
    // `endpoint status` columns: endpoint, member id, version, db size, is leader, …
    let leaders = rows
        .iter()
        .filter(|r| r.get(4).map(String::as_str) == Some("true"));
    assert_eq!(leaders.count(), 1, "exactly one leader: {}", show(&status));
    let members = etcdctl(&endpoints, &ca, &cert, &key, &["member", "list"]);
    let list = String::from_utf8_lossy(&members.stdout).into_owned();
    assert!(ok(&members), "{}", show(&members));
    for node in nodes {
        let peer = format!("{node}, https://{}:2380", lab.node_address(node));
        assert!(
            list.lines()
                .any(|l| l.contains("started") && l.contains(&peer)),
            "{node} is not a started member with a TLS peer URL: {list}"
        );
    }

    // A client certificate from a different CA is refused.
    let foreign = local.path();
    let made = Command::new("sh")
        .current_dir(foreign)
        .arg("-c")
        .arg(
            "set -e
             openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.crt -days 1 -subj /CN=other-ca 2>/dev/null
             openssl req -newkey rsa:2048 -nodes -keyout other.key -out other.csr -subj /CN=intruder 2>/dev/null
             printf 'extendedKeyUsage=clientAuth\\n' > ext
             openssl x509 -req -in other.csr -CA other-ca.crt -CAkey other-ca.key -CAcreateserial -out other.crt -days 1 -extfile ext 2>/dev/null",
        )
        .output()
        .unwrap();
    assert!(ok(&made), "{}", show(&made));
    let out = etcdctl_health(
        &endpoints,
        &ca,
        &foreign.join("other.crt"),
        &foreign.join("other.key"),
    );
    assert!(
        !ok(&out),
        "etcd accepted a client certificate from a foreign CA: {}",
        show(&out)
    );
    assert!(!show(&out).contains("is healthy"), "{}", show(&out));
    // The refusal is the certificate's, not a cluster gone down meanwhile.
    let ours = etcdctl_health(&endpoints, &ca, &cert, &key);
    assert!(ok(&ours), "our client is refused too now: {}", show(&ours));
}
