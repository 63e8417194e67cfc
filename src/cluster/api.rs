//! The Kubernetes API, asked from a control plane: `curl` for `/readyz` with TLS verified
//! against the cluster CA (through the VIP and its DNS name, or one node's API server), and
//! `kubectl` with `admin.conf` for the Node objects.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

use crate::remote::{NodeHandle, RemoteCommand};

/// `$1` = host name to verify, `$2` = port, `$3` = address to connect to (the VIP for the
/// DNS name). Exit 0 with `ok` printed when `/readyz` answers 200 over TLS verified against
/// the cluster CA.
const READYZ: &str = r#"exec curl -sS --max-time 5 --cacert /etc/kubernetes/pki/ca.crt \
  --resolve "$1:$2:$3" "https://$1:$2/readyz"
"#;

/// Where kubectl keeps its HTTP and discovery cache when khactl runs it: tmpfs, gone at the
/// next boot, instead of root's `~/.kube/cache`, so khactl leaves no file of kubectl's in
/// root's home.
pub const KUBECTL_CACHE: &str = "/run/khactl/kubectl-cache";

/// `kubectl --kubeconfig /etc/kubernetes/admin.conf --cache-dir KUBECTL_CACHE ARGS…` on a
/// control plane (not yet marked read-only, with the default timeout).
pub fn kubectl<I, S>(args: I) -> RemoteCommand
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut argv: Vec<String> = [
        "kubectl",
        "--kubeconfig",
        "/etc/kubernetes/admin.conf",
        "--cache-dir",
        KUBECTL_CACHE,
    ]
    .map(str::to_owned)
    .into();
    argv.extend(args.into_iter().map(Into::into));
    RemoteCommand::new(argv)
}

/// Whether `/readyz` answers `ok` at `host:port` reached at `address`, with the serving
/// certificate verified for `host` against the cluster CA (which `from` must have).
pub async fn ready(
    from: &NodeHandle,
    host: &str,
    port: u16,
    address: &str,
) -> anyhow::Result<bool> {
    let cmd = RemoteCommand::script(
        "readyz",
        READYZ,
        [host.to_owned(), port.to_string(), address.to_owned()],
    )
    .read_only()
    .timeout(Duration::from_secs(10));
    let out = from.run_unchecked(&cmd).await?;
    Ok(out.success() && out.stdout_str().trim() == "ok")
}

/// Who holds a leader-election Lease (`kube-controller-manager`, `kube-scheduler`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Leader {
    /// The Lease's name.
    pub lease: String,
    /// `holderIdentity` as the component wrote it (`<hostname>_<uuid>`).
    pub holder: String,
    /// The node part of the identity.
    pub node: String,
    /// The holder renewed it within its duration, as of the API server's answer.
    pub fresh: bool,
}

/// The leader-election Leases of kube-system, read with `admin.conf` against `server` (a
/// node's own API server, so the answer does not depend on the VIP).
pub async fn leaders(from: &NodeHandle, server: &str) -> anyhow::Result<Vec<Leader>> {
    let cmd = kubectl([
        "--server",
        server,
        "--request-timeout",
        "5s",
        "get",
        "--raw",
        "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases",
    ])
    .read_only()
    .timeout(Duration::from_secs(20));
    let out = from.run(&cmd).await.context("reading the leader Leases")?;
    parse_leaders(&out.stdout_str(), time::OffsetDateTime::now_utc())
}

/// The Leases of `kube-controller-manager` and `kube-scheduler` in a LeaseList, judged fresh
/// against `now`.
pub fn parse_leaders(json: &str, now: time::OffsetDateTime) -> anyhow::Result<Vec<Leader>> {
    let v: Value = serde_json::from_str(json).context("the Lease list is not JSON")?;
    let items = v
        .get("items")
        .and_then(Value::as_array)
        .context("the Lease list has no items")?;
    let wanted = ["kube-controller-manager", "kube-scheduler"];
    Ok(items
        .iter()
        .filter_map(|l| {
            let name = l["metadata"]["name"].as_str()?;
            if !wanted.contains(&name) {
                return None;
            }
            let spec = &l["spec"];
            let holder = spec["holderIdentity"].as_str().unwrap_or_default();
            let renew = spec["renewTime"].as_str().and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            });
            let duration = spec["leaseDurationSeconds"].as_i64().unwrap_or(15);
            let fresh =
                !holder.is_empty() && renew.is_some_and(|r| (now - r).whole_seconds() <= duration);
            Some(Leader {
                lease: name.to_owned(),
                holder: holder.to_owned(),
                node: holder.split('_').next().unwrap_or_default().to_owned(),
                fresh,
            })
        })
        .collect())
}

/// A Node object as `verify` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiNode {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `key=value:effect` (`key:effect` without a value), as kubectl shows them.
    pub taints: Vec<String>,
    pub ready: bool,
    /// Why the kubelet says it is not Ready (the Ready condition's message).
    pub not_ready_because: Option<String>,
}

impl ApiNode {
    /// NotReady only because no pod network (CNI plugin) is installed yet: kubeadm leaves
    /// that to the user, so the node has joined all the same.
    pub fn waits_for_a_network(&self) -> bool {
        !self.ready
            && self.not_ready_because.as_deref().is_some_and(|m| {
                let m = m.to_ascii_lowercase();
                m.contains("network plugin") || m.contains("cni")
            })
    }
}

/// Every Node the API knows, read with the node's `admin.conf`.
pub async fn nodes(from: &NodeHandle) -> anyhow::Result<Vec<ApiNode>> {
    let cmd = kubectl(["get", "--raw", "/api/v1/nodes"])
        .read_only()
        .timeout(Duration::from_secs(30));
    let out = from.run(&cmd).await.context("listing the Nodes")?;
    parse_nodes(&out.stdout_str())
}

pub fn parse_nodes(json: &str) -> anyhow::Result<Vec<ApiNode>> {
    let v: Value = serde_json::from_str(json).context("the Node list is not JSON")?;
    let items = v
        .get("items")
        .and_then(Value::as_array)
        .context("the Node list has no items")?;
    Ok(items
        .iter()
        .map(|n| {
            let meta = &n["metadata"];
            let labels = meta["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let taints = n["spec"]["taints"]
                .as_array()
                .map(|ts| ts.iter().map(taint_text).collect())
                .unwrap_or_default();
            let condition = n["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
            let ready = condition.is_some_and(|c| c["status"] == "True");
            let not_ready_because = condition
                .filter(|_| !ready)
                .and_then(|c| c["message"].as_str())
                .map(str::to_owned);
            ApiNode {
                name: meta["name"].as_str().unwrap_or_default().to_owned(),
                labels,
                taints,
                ready,
                not_ready_because,
            }
        })
        .collect())
}

fn taint_text(t: &Value) -> String {
    let key = t["key"].as_str().unwrap_or_default();
    let effect = t["effect"].as_str().unwrap_or_default();
    match t["value"].as_str() {
        Some(v) if !v.is_empty() => format!("{key}={v}:{effect}"),
        _ => format!("{key}:{effect}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_taints_and_readiness() {
        let json = r#"{"kind":"NodeList","items":[
          {"metadata":{"name":"cp1","labels":{"node-role.kubernetes.io/control-plane":""}},
           "spec":{"taints":[{"key":"node-role.kubernetes.io/control-plane","effect":"NoSchedule"}]},
           "status":{"conditions":[{"type":"Ready","status":"True"}]}},
          {"metadata":{"name":"w1"},"spec":{},"status":{"conditions":[{"type":"Ready","status":"False"}]}}]}"#;
        let nodes = parse_nodes(json).unwrap();
        assert_eq!(nodes[0].name, "cp1");
        assert_eq!(
            nodes[0].taints,
            ["node-role.kubernetes.io/control-plane:NoSchedule"]
        );
        assert!(
            nodes[0]
                .labels
                .contains_key("node-role.kubernetes.io/control-plane")
        );
        assert!(nodes[0].ready && !nodes[1].ready);
        assert!(!nodes[1].waits_for_a_network());
    }

    #[test]
    fn leaders_are_read_from_their_leases_and_a_lapsed_one_is_not_fresh() {
        let json = r#"{"items":[
          {"metadata":{"name":"kube-controller-manager"},"spec":{"holderIdentity":"cp2_8f1c",
            "leaseDurationSeconds":15,"renewTime":"2026-12-05T00:56:08.280920Z"}},
          {"metadata":{"name":"kube-scheduler"},"spec":{"holderIdentity":"cp1_77aa",
            "leaseDurationSeconds":15,"renewTime":"2026-12-05T00:55:00.000000Z"}},
          {"metadata":{"name":"cp1"},"spec":{"holderIdentity":"cp1"}}]}"#;
        let now = time::macros::datetime!(2026-12-05 00:56:10 UTC);
        let leaders = parse_leaders(json, now).unwrap();
        assert_eq!(leaders.len(), 2, "node Leases are not leaders: {leaders:?}");
        assert_eq!(leaders[0].lease, "kube-controller-manager");
        assert_eq!(leaders[0].node, "cp2");
        assert!(leaders[0].fresh);
        assert_eq!(leaders[1].node, "cp1");
        assert!(!leaders[1].fresh, "renewed 70 s ago with a 15 s lease");
    }

    #[test]
    fn a_node_waiting_only_for_a_pod_network_is_told_apart() {
        let json = r#"{"items":[{"metadata":{"name":"w1"},"spec":{},"status":{"conditions":[
          {"type":"Ready","status":"False","reason":"KubeletNotReady",
           "message":"container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"}]}}]}"#;
        let nodes = parse_nodes(json).unwrap();
        assert!(nodes[0].waits_for_a_network());
    }
}
