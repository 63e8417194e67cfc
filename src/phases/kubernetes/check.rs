//! Before any node is touched: what Kubernetes needs on every node (in Preflight, every node
//! and every problem at once, each with the command that fixes it on that node's OS), then
//! every node's kubeadm configuration rendered, read back through kubeadm's types with unknown
//! fields refused, and checked by the node's own `kubeadm config validate` — strict there,
//! while `kubeadm init`/`join` would only warn about a field they do not know.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{
    APISERVER_MANIFEST, BOOTSTRAP_KUBELET_CONF, ETCD_MANIFEST, KUBELET_CONF, kubeadm_command,
    kubeadm_traces, render,
};
use crate::facts::{DirState, HostFacts, InitSystem, ProbeRequest};
use crate::inventory::{KubernetesVersion, Node, Role};
use crate::os::packages::{Need, install_hint};
use crate::phases::{Context, Phase, PhaseFuture};
use crate::pki::catalog::{endpoint_url, local_api_url};
use crate::render::kubeadm::{BootstrapToken, ETCD_DATA_DIR, Purpose};

/// Ports kubeadm's preflight needs free on a node that is not in the cluster yet; a control
/// plane with stacked etcd needs etcd's too (with `etcd.external` kubeadm skips them).
const CONTROL_PLANE_PORTS: [u16; 4] = [6443, 10250, 10257, 10259];
const STACKED_ETCD_PORTS: [u16; 2] = [2379, 2380];
const WORKER_PORTS: [u16; 1] = [10250];
/// kubeadm's own limit is looser; a second is what etcd leases and certificates tolerate.
const MAX_CLOCK_SKEW_SECS: f64 = 1.0;

pub struct CheckKubeadm;

impl Phase for CheckKubeadm {
    fn title(&self) -> &'static str {
        "Check the kubeadm configuration"
    }

    fn facts(&self, ctx: &Context, node: &Node) -> ProbeRequest {
        if !node.role.is_kubernetes_node() {
            return ProbeRequest::default();
        }
        let cp = node.role == Role::ControlPlane;
        let stacked = cp && !ctx.inventory.external_etcd();
        let mut versions = vec!["kubeadm".to_owned(), "kubelet".to_owned()];
        if cp {
            // khactl asks the API and etcd from control planes with these.
            versions.extend(["kubectl".to_owned(), "curl".to_owned()]);
        }
        ProbeRequest {
            versions,
            ports: match (cp, stacked) {
                (true, true) => [&CONTROL_PLANE_PORTS[..], &STACKED_ETCD_PORTS].concat(),
                (true, false) => CONTROL_PLANE_PORTS.to_vec(),
                _ => WORKER_PORTS.to_vec(),
            },
            dirs: if stacked {
                vec![ETCD_DATA_DIR.into()]
            } else {
                Vec::new()
            },
            sockets: vec![cri_socket(ctx)],
            digests: [
                KUBELET_CONF,
                BOOTSTRAP_KUBELET_CONF,
                ETCD_MANIFEST,
                APISERVER_MANIFEST,
                super::CLUSTER_CA,
            ]
            .into_iter()
            .map(PathBuf::from)
            .collect(),
            kubeconfig_servers: if cp {
                vec![KUBELET_CONF.into(), ADMIN_CONF.into()]
            } else {
                vec![KUBELET_CONF.into()]
            },
            ..ProbeRequest::default()
        }
    }

    fn preflight(&self, ctx: &Context, node: &Node, facts: &HostFacts) -> Vec<String> {
        if !node.role.is_kubernetes_node() {
            return Vec::new();
        }
        let mut problems = prerequisites(ctx, node, facts);
        problems.extend(identity_clashes(&ctx.facts, node.name.as_str()));
        problems.extend(endpoint_moved(ctx, node, facts));
        problems
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            // One token per run, made before it is needed so every node's file is checked
            // with the very bytes it will get. It exists in the cluster only once init or
            // `kubeadm token create` puts it there.
            ctx.cluster.join_token = Some(BootstrapToken::generate()?);
            let c = &*ctx;
            let results = c
                .fleet()?
                .each(
                    |h| c.node(h.node()).is_ok_and(|n| n.role.is_kubernetes_node()),
                    async |host| {
                        let node = c.node(host.node())?;
                        let Some(purpose) = Purpose::for_node(&c.inventory, node) else {
                            anyhow::bail!("internal: {} runs no kubeadm", node.name);
                        };
                        // The strict read-back happens inside: a template that kubeadm would
                        // silently half-ignore is an error here, on every node alike.
                        let docs = render(c, node, purpose)?;
                        let token = c.cluster.join_token.as_ref();
                        let check = kubeadm_command(
                            ["config", "validate", "--config", "/dev/stdin"],
                            token,
                        )
                        .secret_stdin(docs.text().as_bytes().to_vec())
                        .read_only();
                        let out = host.run_unchecked(&check).await?;
                        if !out.success() {
                            let said = check.visible_output(&out).tail(12);
                            anyhow::bail!(
                                "kubeadm on this node refuses the {} configuration khactl \
                                 rendered for it (`kubeadm config validate`):\n{said}",
                                purpose.as_str()
                            );
                        }
                        anyhow::Ok(format!(
                            "{} configuration valid ({})",
                            purpose,
                            docs.api().as_str()
                        ))
                    },
                )
                .await;
            ctx.settle(results)
        })
    }
}

/// Where kubeadm (and khactl, before it) wrote the endpoint on a control plane.
const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";

/// A member that reaches the API elsewhere than the inventory's endpoint now says: kubeadm
/// wrote the endpoint into every node's kubelet.conf, every control plane's admin.conf and the
/// cluster's kubeadm-config, and moving the agents to a new port or name would cut every
/// kubelet off. A control plane's kubelet may instead use its own API server (kubeadm's
/// ControlPlaneKubeletLocalMode, on by default since 1.33), so there admin.conf says it. Pure.
pub fn endpoint_moved(ctx: &Context, node: &Node, facts: &HostFacts) -> Option<String> {
    if !super::has_member_files(&ctx.inventory, node, facts) {
        return None;
    }
    let expected = endpoint_url(&ctx.inventory);
    let local = local_api_url(node);
    let cp = node.role == Role::ControlPlane;
    let read = |path: &'static str| facts.kubeconfig_server(Path::new(path)).map(|s| (path, s));
    let (path, found) = [read(KUBELET_CONF), if cp { read(ADMIN_CONF) } else { None }]
        .into_iter()
        .flatten()
        .find(|(path, found)| {
            *found != expected && !(cp && *path == KUBELET_CONF && *found == local)
        })?;
    Some(format!(
        "it reaches the API at {found} ({path}), but the inventory now makes the endpoint \
         {expected}. kubeadm wrote the endpoint into every node's kubelet.conf, the control \
         planes' admin.conf and the cluster's kubeadm-config, and khactl does not move a \
         running cluster to another one: put the inventory's vip (address, dnsName, port) or \
         loadBalancer settings back so the endpoint is {found} again"
    ))
}

/// The CRI socket path kubeadm and the kubelet will dial.
fn cri_socket(ctx: &Context) -> PathBuf {
    let endpoint = ctx.inventory.kubeadm.cri_socket.as_str();
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

/// `v1.31.2` from kubeadm's `v1.31.2` or kubelet's `Kubernetes v1.31.2`.
fn version_in(line: &str) -> Option<KubernetesVersion> {
    line.split_whitespace()
        .filter_map(|w| KubernetesVersion::new(w).ok())
        .next()
}

/// Pure: what `node` lacks for Kubernetes, each with what to do about it there.
pub fn prerequisites(ctx: &Context, node: &Node, facts: &HostFacts) -> Vec<String> {
    let want = &ctx.inventory.cluster.kubernetes_version;
    let cp = node.role == Role::ControlPlane;
    let mut problems = Vec::new();
    let k8s_hint = install_hint(facts, Need::Kubernetes, want.minor());
    match facts.version("kubeadm") {
        None => problems.push(format!("kubeadm is not installed: {k8s_hint}")),
        Some(line) => match version_in(line) {
            Some(v) if (v.major(), v.minor()) == (want.major(), want.minor()) => {}
            Some(v) => problems.push(format!(
                "kubeadm is {v}, but kubernetesVersion is {want}: install kubeadm v1.{}.x \
                 ({k8s_hint})",
                want.minor()
            )),
            None => problems.push(format!("cannot read kubeadm's version ({line:?})")),
        },
    }
    match facts.version("kubelet") {
        None => problems.push(format!("kubelet is not installed: {k8s_hint}")),
        Some(line) => match version_in(line) {
            // The kubelet may be up to three minors older than the control plane, never newer.
            Some(v) if (v.major(), v.minor()) > (want.major(), want.minor()) => {
                problems.push(format!(
                    "kubelet {v} is newer than kubernetesVersion {want}: install kubelet v1.{}.x",
                    want.minor()
                ))
            }
            Some(v) if want.minor().saturating_sub(v.minor()) > 3 || v.major() != want.major() => {
                problems.push(format!(
                    "kubelet {v} is more than three minor releases older than {want}"
                ));
            }
            Some(_) => {}
            None => problems.push(format!("cannot read the kubelet's version ({line:?})")),
        },
    }
    if cp {
        if !facts.has_tool("kubectl") {
            problems.push(format!(
                "kubectl is not installed (khactl checks the cluster with it): {k8s_hint}"
            ));
        }
        if !facts.has_tool("curl") {
            problems.push(format!(
                "curl is not installed (khactl asks etcd and /readyz with it): {}",
                install_hint(facts, Need::Curl, want.minor())
            ));
        }
    }
    if facts.init != InitSystem::Systemd {
        problems.push(format!(
            "its init system is {}: the kubelet configuration khactl renders uses the systemd \
             cgroup driver, so Kubernetes nodes need systemd",
            facts.init
        ));
    }
    let socket = cri_socket(ctx);
    if facts.sockets.get(&socket) != Some(&true) {
        problems.push(format!(
            "no container runtime answers at {} (kubeadm.criSocket): {}",
            socket.display(),
            install_hint(facts, Need::ContainerRuntime, want.minor())
        ));
    }
    // A node already in the cluster runs these; only a newcomer must have them free. A node
    // with leftovers of an earlier attempt is reset before it joins, which frees them.
    if kubeadm_traces(facts).is_empty() {
        let taken: Vec<String> = facts
            .listening
            .iter()
            .filter(|(_, listening)| **listening)
            .map(|(p, _)| p.to_string())
            .collect();
        if !taken.is_empty() {
            problems.push(format!(
                "port(s) {} are in use, and kubeadm needs them free on a new node (see `ss \
                 -ltnp`); stop what listens there",
                taken.join(", ")
            ));
        }
        if cp
            && !ctx.inventory.external_etcd()
            && facts.dirs.get(Path::new(ETCD_DATA_DIR)) == Some(&DirState::NotEmpty)
        {
            problems.push(format!(
                "{ETCD_DATA_DIR} is not empty on a control plane that is not in the cluster: it \
                 holds another etcd's data; move it away (or run `kubeadm reset -f` if it is \
                 this cluster's, left by an earlier attempt)"
            ));
        }
    }
    if let Some(skew) = facts.clock_skew
        && skew.abs() > MAX_CLOCK_SKEW_SECS
    {
        problems.push(format!(
            "its clock is {skew:+.1}s off this machine's: enable time synchronisation \
             (chrony or systemd-timesyncd)"
        ));
    }
    problems
}

/// Another node with the same hostname or machine id as `name` (cloned VMs keep both).
fn identity_clashes(all: &BTreeMap<String, HostFacts>, name: &str) -> Vec<String> {
    let Some(me) = all.get(name) else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    for (other, f) in all.iter().filter(|(n, _)| n.as_str() != name) {
        if !me.hostname.is_empty() && f.hostname == me.hostname {
            problems.push(format!(
                "its hostname {:?} is also {other}'s: give each node its own",
                me.hostname
            ));
        }
        if me.machine_id.is_some() && f.machine_id == me.machine_id {
            problems.push(format!(
                "its /etc/machine-id is also {other}'s (a cloned machine): regenerate it with \
                 `rm /etc/machine-id && systemd-machine-id-setup`"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_kubeadm_and_kubelet_lines() {
        assert_eq!(version_in("v1.31.2").unwrap().minor(), 31);
        assert_eq!(version_in("Kubernetes v1.30.4").unwrap().minor(), 30);
        assert!(version_in("unknown").is_none());
    }

    #[test]
    fn cloned_nodes_are_named_both_ways() {
        let host = |h: &str, id: &str| HostFacts {
            hostname: h.into(),
            machine_id: Some(id.into()),
            ..HostFacts::unprobed()
        };
        let all: BTreeMap<String, HostFacts> = [
            ("cp1".to_owned(), host("node", "aaa")),
            ("cp2".to_owned(), host("node", "aaa")),
            ("cp3".to_owned(), host("cp3", "bbb")),
        ]
        .into();
        let p = identity_clashes(&all, "cp1");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().all(|l| l.contains("cp2")));
        assert!(identity_clashes(&all, "cp3").is_empty());
    }
}
