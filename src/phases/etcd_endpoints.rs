//! External etcd only: the API servers' etcd endpoints follow the membership. kubeadm writes
//! `--etcd-servers` into each control plane's `kube-apiserver.yaml` from ClusterConfiguration
//! `etcd.external.endpoints` once, at init or join, and keeps that ClusterConfiguration in
//! `kube-system/kubeadm-config`, which a later `kubeadm join --control-plane` reads instead of
//! its own file. Neither follows `add-etcd` or `remove-node` of an etcd node by itself: after a
//! few replacements every API server would list only removed members, an API outage with a
//! healthy etcd. [`UpdateEtcdEndpoints`] rewrites both to the inventory's etcd nodes:
//!
//! - each control plane **one at a time**: only the `--etcd-servers=` argument of its
//!   manifest changes (every other byte kept), written through the gate (0600, as kubeadm
//!   writes it); the kubelet restarts the static pod, and the next control plane waits until
//!   this one's mirror pod carries the new manifest's hash (what `kubeadm upgrade` waits for)
//!   and its API server answers `/readyz` on its node address. One that does not come back
//!   stops the phase, the others untouched;
//! - then `kubeadm-config`: only `etcd.external.endpoints` of its ClusterConfiguration, by
//!   `kubectl patch` with a JSON-patch `test` of the text read, so a concurrent writer is not
//!   overwritten.
//!
//! A manifest kubeadm wrote in this run (init, join) is already rendered from the inventory
//! and is left alone. What already lists the members is not a change: a second run changes
//! nothing.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_yaml_ng::Value;
use similar::TextDiff;

use super::kubernetes::{APISERVER_MANIFEST, member_kubectl};
use super::{Change, Context, InitCluster, JoinControlPlanes, Mode, Phase, PhaseFuture, rolling};
use crate::cluster::api;
use crate::facts::ProbeRequest;
use crate::inventory::{Node, Role};
use crate::remote::NodeHandle;
use crate::render::kubeadm::{API_SERVER_PORT, external_etcd_endpoints};

/// How long an API server may take to be restarted by its kubelet and answer ready.
pub const RESTART_DEADLINE: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_secs(1);
const ETCD_SERVERS: &str = "--etcd-servers=";
/// kubeadm's manifests are 0600 (they may carry secrets in flags).
const MANIFEST_MODE: u32 = 0o600;
const CONFIG_MAP_PATH: &str = "/api/v1/namespaces/kube-system/configmaps/kubeadm-config";
/// The annotation the kubelet puts on a static pod's mirror pod: the hash of the manifest it
/// runs. kubeadm upgrade waits for it to change after rewriting a manifest.
const CONFIG_HASH: &str = "kubernetes.io/config.hash";

/// Points every API server, and `kubeadm-config`, at the inventory's etcd nodes.
pub struct UpdateEtcdEndpoints {
    /// The etcd node `remove-node` takes out: never an endpoint, even while the run still
    /// lists it.
    pub leaving: Option<String>,
    /// How long each API server may take to come back ready ([`RESTART_DEADLINE`]).
    pub deadline: Duration,
}

impl UpdateEtcdEndpoints {
    pub fn new(leaving: Option<String>) -> Self {
        Self {
            leaving,
            deadline: RESTART_DEADLINE,
        }
    }
}

impl Phase for UpdateEtcdEndpoints {
    fn title(&self) -> &'static str {
        "Point the API servers at the etcd members"
    }

    fn facts(&self, ctx: &Context, node: &Node) -> ProbeRequest {
        if !ctx.inventory.external_etcd() || node.role != Role::ControlPlane {
            return ProbeRequest::default();
        }
        ProbeRequest {
            files: vec![APISERVER_MANIFEST.into()],
            ..ProbeRequest::default()
        }
    }

    fn skip_reason(&self, ctx: &Context) -> Option<String> {
        (!ctx.inventory.external_etcd())
            .then(|| "etcd is stacked: each API server uses its own member".to_owned())
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let endpoints = self.endpoints(ctx).await?;
            if endpoints.is_empty() {
                bail!(
                    "no etcd node of the inventory is a started voter to point the API servers \
                     at; see `khactl status`"
                );
            }
            let c = &*ctx;
            let mut rewrite: Vec<(String, bool)> = Vec::new();
            for n in c.inventory.control_plane() {
                let name = n.name.as_str();
                let stale = manifest(c, name)
                    .and_then(|m| std::str::from_utf8(m).ok())
                    .is_some_and(|text| !matches!(with_etcd_servers(text, &endpoints), Ok(None)));
                if written_this_run(c, name) || !stale {
                    continue;
                }
                let serving = c.settings.mode == Mode::Apply && ready(c, n).await;
                rewrite.push((name.to_string(), serving));
            }
            // API servers that do not answer first: rewriting one costs nothing, and may be
            // its repair (a manifest listing only removed members).
            rewrite.sort_by_key(|(_, serving)| *serving);
            let rewrite: Vec<(String, ())> = rewrite.into_iter().map(|(n, _)| (n, ())).collect();
            let mut results = rolling::one_at_a_time(
                rewrite,
                &c.settings.interrupt,
                async |name, ()| {
                    point_api_server(c, c.node(name)?, &endpoints, self.deadline).await
                },
                |stopped_at, ()| match stopped_at {
                    Some(at) => Err(anyhow::anyhow!(
                        "not changed: API servers change one at a time and {at} failed; run \
                         the command again once it is fixed"
                    )),
                    None => Err(crate::interrupt::Interrupted.into()),
                },
            )
            .await;
            if results.iter().all(|(_, r)| r.is_ok())
                && let Some(member) = api_node(c)
            {
                let name = member.node().to_owned();
                let updated = update_kubeadm_config(c, member, &endpoints).await;
                match results.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, r)) => {
                        *r = match (std::mem::replace(r, Ok(String::new())), updated) {
                            (Ok(a), Ok(b)) => Ok(format!("{a}; {b}")),
                            (_, Err(e)) | (Err(e), _) => Err(e),
                        };
                    }
                    None => results.push((name, updated)),
                }
            }
            ctx.settle(results)
        })
    }
}

impl UpdateEtcdEndpoints {
    /// The etcd nodes of the run's inventory without the leaving one, as render writes them,
    /// and (a real run) only those etcd counts as started voters now: an etcd node written
    /// into the inventory ahead of its `add-etcd`, or a learner, would get requests it cannot
    /// serve (writes to a learner fail).
    async fn endpoints(&self, ctx: &Context) -> anyhow::Result<Vec<String>> {
        let mut inventory = ctx.inventory.clone();
        if let Some(leaving) = &self.leaving {
            inventory.nodes.retain(|n| n.name.as_str() != leaving);
        }
        let listed = external_etcd_endpoints(&inventory);
        if ctx.settings.mode == Mode::Plan {
            return Ok(listed);
        }
        let members = live_members(ctx, self.leaving.as_deref()).await?;
        Ok(listed
            .into_iter()
            .filter(|url| {
                members
                    .iter()
                    .any(|m| !m.is_learner && !m.name.is_empty() && m.client_urls.contains(url))
            })
            .collect())
    }
}

/// The member list as the first answering etcd node (not `leaving`) sees it.
async fn live_members(
    ctx: &Context,
    leaving: Option<&str>,
) -> anyhow::Result<Vec<crate::cluster::etcd::Member>> {
    let mut failures = Vec::new();
    for node in ctx
        .inventory
        .etcd_nodes()
        .filter(|n| Some(n.name.as_str()) != leaving)
    {
        let Some(host) = ctx.fleet()?.host(node.name.as_str()) else {
            continue;
        };
        match crate::cluster::etcd::members(host).await {
            Ok(members) => return Ok(members),
            Err(e) => failures.push(format!("{}: {e:#}", node.name)),
        }
    }
    bail!(
        "no etcd node answers, so the API servers cannot be pointed at its members ({})",
        failures.join("; ")
    )
}

/// Whether `node`'s own API server answers `/readyz` (false when it cannot be asked).
async fn ready(ctx: &Context, node: &Node) -> bool {
    let Ok(Some(host)) = ctx.fleet().map(|f| f.host(node.name.as_str())) else {
        return false;
    };
    let address = node.address.to_string();
    api::ready(host, &address, API_SERVER_PORT, &address)
        .await
        .unwrap_or(false)
}

/// Before a serving API server is restarted: every other one must answer ready, or its
/// restart could leave none (and one already on the new endpoints that does not answer says
/// the new list is wrong). One that does not answer itself is restarted regardless.
async fn others_ready(ctx: &Context, node: &Node) -> anyhow::Result<()> {
    if !ready(ctx, node).await {
        return Ok(());
    }
    for other in ctx
        .inventory
        .control_plane()
        .filter(|n| n.name != node.name)
    {
        if manifest(ctx, other.name.as_str()).is_some() && !ready(ctx, other).await {
            bail!(
                "the API server of {} does not answer ready, and restarting {}'s now could leave \
                 the cluster with none; bring {} back first (its kubelet's log, `crictl ps -a \
                 --name kube-apiserver` there), then run the command again",
                other.name,
                node.name,
                other.name
            );
        }
    }
    Ok(())
}

/// The manifest the facts saw on `node`, if any.
fn manifest<'a>(ctx: &'a Context, node: &str) -> Option<&'a [u8]> {
    ctx.facts
        .get(node)?
        .file(std::path::Path::new(APISERVER_MANIFEST))
}

/// Whether kubeadm init or join ran on `node` in this run: its manifest is then rendered from
/// the inventory, and the facts' copy is older than the file.
fn written_this_run(ctx: &Context, node: &str) -> bool {
    let kubeadm = [InitCluster.title(), JoinControlPlanes.title()];
    ctx.journal()
        .get(node)
        .is_some_and(|records| records.iter().any(|r| kubeadm.contains(&r.phase)))
}

/// A control plane with an API server to run kubectl against: the first whose manifest the
/// facts saw, else the first member of the cluster (joined in this run).
fn api_node(ctx: &Context) -> Option<&NodeHandle> {
    let fleet = ctx.fleet().ok()?;
    let with_manifest = ctx
        .inventory
        .control_plane()
        .find(|n| manifest(ctx, n.name.as_str()).is_some());
    let member = || {
        ctx.inventory
            .control_plane()
            .find(|n| ctx.cluster.members.contains(n.name.as_str()))
    };
    fleet.host(with_manifest.or_else(member)?.name.as_str())
}

/// One control plane: its manifest's `--etcd-servers` rewritten, then (apply mode) its API
/// server waited for until the kubelet restarted it and it answers ready.
async fn point_api_server(
    ctx: &Context,
    node: &Node,
    endpoints: &[String],
    deadline: Duration,
) -> anyhow::Result<String> {
    let name = node.name.as_str();
    let host = ctx
        .fleet()?
        .host(name)
        .ok_or_else(|| anyhow::anyhow!("internal: {name} is not connected"))?;
    let current = manifest(ctx, name)
        .ok_or_else(|| anyhow::anyhow!("internal: no {APISERVER_MANIFEST} on {name}"))?;
    let text = std::str::from_utf8(current)
        .with_context(|| format!("{APISERVER_MANIFEST} on {name} is not UTF-8"))?;
    let Some(new) = with_etcd_servers(text, endpoints)
        .map_err(|why| anyhow::anyhow!("{APISERVER_MANIFEST} on {name}: {why}"))?
    else {
        return Ok("--etcd-servers lists the etcd members".to_owned());
    };
    let before = match ctx.settings.mode {
        Mode::Apply => {
            others_ready(ctx, node).await?;
            mirror_pod_hash(ctx, host, name).await
        }
        Mode::Plan => None,
    };
    let write = Change::WriteFile {
        path: APISERVER_MANIFEST.into(),
        contents: new.into_bytes(),
        mode: MANIFEST_MODE,
        secret: false,
        diff: true,
        current: Some(current.to_vec()),
        backup: None,
        preview: None,
    };
    ctx.apply(host, &[write]).await?;
    if ctx.settings.mode == Mode::Plan {
        return Ok("--etcd-servers rewrite planned, then a wait for its API server".to_owned());
    }
    wait_restarted(ctx, host, node, before.as_deref(), deadline).await?;
    Ok(format!(
        "--etcd-servers={}; API server restarted and ready",
        endpoints.join(",")
    ))
}

/// Until the kubelet runs the new manifest (the mirror pod's hash differs from `before`) and
/// the API server answers `/readyz` on the node's address. Without a hash from before (its
/// API server was down, say with only removed members listed) any ready answer is the new
/// one's.
async fn wait_restarted(
    ctx: &Context,
    host: &NodeHandle,
    node: &Node,
    before: Option<&str>,
    deadline: Duration,
) -> anyhow::Result<()> {
    let name = node.name.as_str();
    let address = node.address.to_string();
    let started = Instant::now();
    loop {
        ctx.settings.interrupt.check()?;
        let restarted = match before {
            None => true,
            Some(old) => mirror_pod_hash(ctx, host, name)
                .await
                .is_some_and(|h| h != old),
        };
        if restarted && api::ready(host, &address, API_SERVER_PORT, &address).await? {
            return Ok(());
        }
        if started.elapsed() > deadline {
            bail!(
                "the API server of {name} is not {} {}s after its --etcd-servers changed; the \
                 control planes after it were not changed (look at its kubelet's log and at \
                 `crictl ps -a --name kube-apiserver` there)",
                if restarted {
                    "ready"
                } else {
                    "restarted by its kubelet"
                },
                deadline.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The hash of the manifest the kubelet on `node` runs, from its API server's mirror pod;
/// `None` while that cannot be read.
async fn mirror_pod_hash(ctx: &Context, host: &NodeHandle, node: &str) -> Option<String> {
    let path = format!("/api/v1/namespaces/kube-system/pods/kube-apiserver-{node}");
    let get = ["--request-timeout=5s", "get", "--raw", path.as_str()];
    let cmd = member_kubectl(ctx, host, &get).ok()?.read_only();
    let out = host.run(&cmd).await.ok()?;
    let pod: serde_json::Value = serde_json::from_str(&out.stdout_str()).ok()?;
    pod["metadata"]["annotations"][CONFIG_HASH]
        .as_str()
        .map(str::to_owned)
}

/// `kubeadm-config`'s ClusterConfiguration with `etcd.external.endpoints` set, read and
/// patched with kubectl on `member`.
async fn update_kubeadm_config(
    ctx: &Context,
    member: &NodeHandle,
    endpoints: &[String],
) -> anyhow::Result<String> {
    let get = member_kubectl(
        ctx,
        member,
        &["--request-timeout=10s", "get", "--raw", CONFIG_MAP_PATH],
    )?
    .read_only();
    let read = member
        .run(&get)
        .await
        .context("reading kube-system/kubeadm-config");
    let out = match read {
        Ok(out) => out,
        // A dry run against an API that does not answer (its servers list only removed
        // members): the update is shown, its contents cannot be.
        Err(e) if ctx.settings.mode == Mode::Plan => {
            let headline = "update etcd.external.endpoints in kube-system/kubeadm-config";
            let why = format!("(it cannot be read now: {e:#})");
            ctx.step_detailed(member, headline, vec![why], async |_| Ok(()))
                .await?;
            return Ok("kubeadm-config update planned".to_owned());
        }
        Err(e) => return Err(e),
    };
    let config_map: serde_json::Value =
        serde_json::from_str(&out.stdout_str()).context("kubeadm-config is not JSON")?;
    let old = config_map["data"]["ClusterConfiguration"]
        .as_str()
        .context("kubeadm-config has no ClusterConfiguration")?;
    let Some(new) = cluster_configuration_with_endpoints(old, endpoints)
        .map_err(|why| anyhow::anyhow!("kubeadm-config's ClusterConfiguration: {why}"))?
    else {
        return Ok("kubeadm-config lists the etcd members".to_owned());
    };
    // `test` first: if someone changed the ConfigMap since it was read, nothing is written.
    let ops = serde_json::json!([
        {"op": "test", "path": "/data/ClusterConfiguration", "value": old},
        {"op": "replace", "path": "/data/ClusterConfiguration", "value": new},
    ])
    .to_string();
    let patch = member_kubectl(
        ctx,
        member,
        &[
            "--request-timeout=10s",
            "patch",
            "configmap",
            "kubeadm-config",
            "--namespace",
            "kube-system",
            "--type",
            "json",
            "--patch",
            &ops,
        ],
    )?;
    let headline = format!(
        "update etcd.external.endpoints in kube-system/kubeadm-config (kubectl, on {})",
        member.node()
    );
    let diff = TextDiff::from_lines(old, new.as_str())
        .unified_diff()
        .context_radius(2)
        .to_string();
    let details = diff.lines().map(str::to_owned).collect();
    ctx.step_detailed(member, &headline, details, async |m| {
        m.run(&patch).await?;
        Ok(())
    })
    .await?;
    Ok(match ctx.settings.mode {
        Mode::Plan => "kubeadm-config update planned",
        Mode::Apply => "kubeadm-config lists the etcd members now",
    }
    .to_owned())
}

/// `manifest` with its one `--etcd-servers=` argument set to `endpoints`, every other byte
/// as it was; `None` when it already is.
pub fn with_etcd_servers(manifest: &str, endpoints: &[String]) -> Result<Option<String>, String> {
    let mut found = Vec::new();
    let mut offset = 0;
    for line in manifest.split_inclusive('\n') {
        let item = line.trim_start().trim_start_matches("- ").trim_start();
        let item = item.trim_start_matches(['"', '\'']);
        if item.starts_with(ETCD_SERVERS) {
            let start = offset + line.find(ETCD_SERVERS).unwrap_or_default() + ETCD_SERVERS.len();
            let rest = &manifest[start..offset + line.len()];
            let len = rest
                .find(['"', '\'', '\r', '\n', ' ', '\t', '#'])
                .unwrap_or(rest.len());
            found.push(start..start + len);
        }
        offset += line.len();
    }
    let value = match found.as_slice() {
        [one] => one.clone(),
        [] => return Err("it has no --etcd-servers= argument".to_owned()),
        _ => return Err(format!("it has {} --etcd-servers= arguments", found.len())),
    };
    let wanted = endpoints.join(",");
    if manifest[value.clone()] == wanted {
        return Ok(None);
    }
    let mut out = String::with_capacity(manifest.len() + wanted.len());
    out.push_str(&manifest[..value.start]);
    out.push_str(&wanted);
    out.push_str(&manifest[value.end..]);
    Ok(Some(out))
}

/// ClusterConfiguration text with `etcd.external.endpoints` set to `endpoints`; `None` when
/// it already lists them. The list's lines are replaced in place (kubeadm's block style);
/// a layout that edit does not fit is written out again from the parsed document, which
/// changes its formatting, never another value. Either way the result is checked to parse
/// to the document read with only the endpoints changed.
pub fn cluster_configuration_with_endpoints(
    text: &str,
    endpoints: &[String],
) -> Result<Option<String>, String> {
    let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let current = doc
        .get("etcd")
        .and_then(|e| e.get("external"))
        .ok_or("it has no etcd.external (a stacked etcd?)")?
        .get("endpoints");
    let wanted = Value::Sequence(endpoints.iter().cloned().map(Value::String).collect());
    if current == Some(&wanted) {
        return Ok(None);
    }
    let mut expected = doc.clone();
    if let Some(Value::Mapping(external)) =
        expected.get_mut("etcd").and_then(|e| e.get_mut("external"))
    {
        external.insert(Value::String("endpoints".into()), wanted);
    }
    if let Some(edited) = replace_block_list(text, &["etcd", "external", "endpoints"], endpoints)
        && serde_yaml_ng::from_str::<Value>(&edited).ok() == Some(expected.clone())
    {
        return Ok(Some(edited));
    }
    serde_yaml_ng::to_string(&expected)
        .map(Some)
        .map_err(|e| format!("cannot write it back: {e}"))
}

/// `text` with the block sequence under the mapping path `keys` replaced by `items`, each
/// line outside it kept; `None` when the path or a block sequence under it is not found.
fn replace_block_list(text: &str, keys: &[&str], items: &[String]) -> Option<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let indent = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let blank = |l: &str| l.trim().is_empty() || l.trim_start().starts_with('#');
    // Walk down the keys: each a direct child of the one before (at the indent of the first
    // line of its block), searched only inside that block.
    let (mut at, mut parent) = (0, None::<usize>);
    for key in keys {
        let first = (at..lines.len()).find(|&i| !blank(lines[i]))?;
        let child = indent(lines[first]);
        if parent.is_some_and(|p| child <= p) {
            return None;
        }
        let mut hit = None;
        for (i, l) in lines.iter().enumerate().skip(first) {
            if blank(l) {
                continue;
            }
            let n = indent(l);
            if n < child {
                break;
            }
            if n == child && l.trim().trim_end_matches(':') == *key && l.trim().ends_with(':') {
                hit = Some(i);
                break;
            }
        }
        let i = hit?;
        at = i + 1;
        parent = Some(child);
    }
    let key_indent = parent?;
    // The items: `- …` lines at one indent (kubeadm's: the key's own), with deeper lines
    // continuing them.
    let first = (at..lines.len()).find(|&i| !blank(lines[i]))?;
    let item_indent = indent(lines[first]);
    if item_indent < key_indent || !lines[first].trim_start().starts_with("- ") {
        return None;
    }
    let mut end = first;
    while end < lines.len() {
        let l = lines[end];
        if !blank(l) {
            let n = indent(l);
            if n < item_indent || (n == item_indent && !l.trim_start().starts_with("- ")) {
                break;
            }
        }
        end += 1;
    }
    let pad = " ".repeat(item_indent);
    let mut out: String = lines[..first].concat();
    for item in items {
        out.push_str(&format!("{pad}- {item}\n"));
    }
    out.push_str(&lines[end..].concat());
    Some(out)
}

#[cfg(test)]
mod tests;
