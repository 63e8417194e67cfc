//! The Kubernetes half of `up`: kubeadm driven as on any machine, after the VIP answers.
//!
//! - [`CheckKubeadm`]: what Kubernetes needs on every node (kubeadm, kubelet, a container
//!   runtime, free ports, an empty etcd dir, unique identities, clocks in step), reported for
//!   every node at once in Preflight; then every node's kubeadm configuration rendered, read
//!   back strictly, and checked by the node's own `kubeadm config validate`, before any node
//!   is touched.
//! - [`InitCluster`]: `kubeadm init` on the first control plane unless the cluster exists.
//! - [`JoinControlPlanes`]: one at a time (etcd admits one learner), each after the etcd
//!   members are read, a stale member of the same name or peer URL removed, and quorum
//!   checked; a failed join is reset on its node.
//! - [`JoinWorkers`]: side by side, `--parallel` at a time.
//! - [`VerifyCluster`]: every node registered and Ready, labelled and tainted as the
//!   inventory says, etcd with one voter per control plane.
//!
//! Secrets: the bootstrap token is made with a CSPRNG for each run that joins nodes, lives
//! 1 h, reaches a node only inside a 0600 file under `/run/khactl` (never argv), which is
//! removed after use, and is blanked in every output khactl logs or shows.

mod check;
mod grow;
mod init;
mod join_control_planes;
mod join_workers;
mod leave;
mod verify;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use check::CheckKubeadm;
pub use grow::CheckGrowth;
pub use init::InitCluster;
pub use join_control_planes::JoinControlPlanes;
pub use join_workers::JoinWorkers;
pub use leave::{FinishRemoval, LeaveCluster, Leaving, etcd_quorum_after, hand_over_leadership};
pub use verify::VerifyCluster;

use super::{Context, Mode};
use crate::cluster::etcd;
use crate::facts::HostFacts;
use crate::inventory::{Inventory, Node, Role};
use crate::remote::{NodeHandle, RemoteCommand};
use crate::render::kubeadm::{self, BootstrapToken, KubeadmDocuments, Purpose};

pub const KUBELET_CONF: &str = "/etc/kubernetes/kubelet.conf";
pub const BOOTSTRAP_KUBELET_CONF: &str = "/etc/kubernetes/bootstrap-kubelet.conf";
pub const ETCD_MANIFEST: &str = "/etc/kubernetes/manifests/etcd.yaml";
pub const APISERVER_MANIFEST: &str = "/etc/kubernetes/manifests/kube-apiserver.yaml";
pub const CLUSTER_CA: &str = "/etc/kubernetes/pki/ca.crt";
/// Where kubeadm configuration files live while kubeadm runs: tmpfs on systemd hosts, gone
/// at the next boot at the latest.
pub const CONFIG_DIR: &str = "/run/khactl";
/// A token lives an hour; past this age a run makes another before the next join.
const TOKEN_REFRESH_AFTER: Duration = Duration::from_secs(40 * 60);
/// `kubeadm init` and `join` pull images and wait for static pods: give them time.
const KUBEADM_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The kubeadm files a node has of an earlier init or join (empty on a fresh node).
pub fn kubeadm_traces(facts: &HostFacts) -> Vec<&'static str> {
    [
        KUBELET_CONF,
        BOOTSTRAP_KUBELET_CONF,
        ETCD_MANIFEST,
        APISERVER_MANIFEST,
    ]
    .into_iter()
    .filter(|p| facts.digest(Path::new(p)).is_some())
    .collect()
}

/// What the node's own files say: a complete member has its kubelet.conf (and, on a control
/// plane, its etcd manifest, the last kubeadm writes; with external etcd kubeadm writes none,
/// and the API server's is the control plane's). Control planes of a stacked etcd must also
/// be etcd voters; see [`is_member`]. An etcd node is never a Kubernetes member.
pub fn has_member_files(inv: &Inventory, node: &Node, facts: &HostFacts) -> bool {
    let present = |p: &str| facts.digest(Path::new(p)).is_some();
    let manifest = if inv.external_etcd() {
        APISERVER_MANIFEST
    } else {
        ETCD_MANIFEST
    };
    node.role.is_kubernetes_node()
        && present(KUBELET_CONF)
        && (node.role == Role::Worker || present(manifest))
}

/// Whether `node` is a complete member: its files are in place and, for a control plane of a
/// stacked etcd, etcd lists it as a started voter.
pub fn is_member(
    inv: &Inventory,
    node: &Node,
    facts: &HostFacts,
    members: &[etcd::Member],
) -> bool {
    if !has_member_files(inv, node, facts) {
        return false;
    }
    node.role == Role::Worker
        || inv.external_etcd()
        || members.iter().any(|m| {
            m.is_node(node.name.as_str(), &node.address.to_string())
                && !m.is_learner
                && !m.name.is_empty()
        })
}

/// The file a purpose's kubeadm configuration is written to on the node.
pub fn config_path(purpose: &str) -> PathBuf {
    Path::new(CONFIG_DIR).join(format!("kubeadm-{purpose}.yaml"))
}

/// A kubeadm command: long timeout, the run's token blanked in its output.
pub fn kubeadm_command<I, S>(args: I, token: Option<&BootstrapToken>) -> RemoteCommand
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut argv = vec!["kubeadm".to_owned()];
    argv.extend(args.into_iter().map(Into::into));
    let cmd = RemoteCommand::new(argv).timeout(KUBEADM_TIMEOUT);
    match token {
        Some(t) => cmd.redacting(t.reveal()),
        None => cmd,
    }
}

/// Runs `kubeadm VERB… --config FILE AFTER…` on the node, FILE being the node's configuration:
/// the node writes it from stdin (0600, under [`CONFIG_DIR`]) and removes it when kubeadm
/// ends, however it ends (an error, a signal, the SSH connection gone), so the token is on disk
/// only while kubeadm runs. kubeadm itself is bounded on the node a little within khactl's own
/// timeout, so it never outlives the command that started it.
const KUBEADM_WITH_FILE: &str = r#"set -eu
f=$1; limit=$2; shift 2
umask 077
mkdir -p "$(dirname "$f")"
trap 'rm -f "$f"' EXIT
trap 'rm -f "$f"; exit 129' HUP INT TERM
cat > "$f"
timeout "$limit" kubeadm "$@"
"#;

/// Runs kubeadm with `docs` as its `--config` file, as a gated step; see [`KUBEADM_WITH_FILE`].
/// A dry run shows the step and the file with the token blanked.
pub async fn kubeadm_with_config(
    ctx: &Context,
    host: &NodeHandle,
    docs: &KubeadmDocuments,
    file: &str,
    headline: &str,
    verb: &[&str],
    after: &[&str],
) -> anyhow::Result<()> {
    let token = ctx.cluster.join_token.as_ref();
    let path = config_path(file).display().to_string();
    let limit = KUBEADM_TIMEOUT
        .saturating_sub(Duration::from_secs(30))
        .as_secs();
    let mut args: Vec<String> = vec![path.clone(), format!("{limit}s")];
    args.extend(verb.iter().map(|s| (*s).to_owned()));
    args.extend(["--config".to_owned(), path.clone()]);
    args.extend(after.iter().map(|s| (*s).to_owned()));
    let mut details = vec![format!("with {path} (0600, removed when kubeadm ends):")];
    details.extend(docs.redacted().lines().map(str::to_owned));
    ctx.step_detailed(host, headline, details, async |h| {
        let mut cmd = RemoteCommand::script("kubeadm-with-config", KUBEADM_WITH_FILE, args)
            .secret_stdin(docs.text().as_bytes().to_vec())
            .timeout(KUBEADM_TIMEOUT);
        // Whatever kubeadm prints of the token stays out of the log: blanked, and `token
        // create`'s stdout (the token itself) dropped.
        if let Some(t) = token {
            cmd = cmd.redacting(t.reveal());
        }
        if verb == ["token", "create"] {
            cmd = cmd.secret_stdout();
        }
        h.run(&cmd).await?;
        Ok(())
    })
    .await?;
    Ok(())
}

/// Renders `node`'s configuration for `purpose` with the run's token.
pub fn render(ctx: &Context, node: &Node, purpose: Purpose) -> anyhow::Result<KubeadmDocuments> {
    let token = ctx
        .cluster
        .join_token
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("internal: no bootstrap token was made for this run"))?;
    let hash = ctx.pki()?.discovery_hash();
    Ok(kubeadm::render_node(
        &ctx.inventory,
        node,
        purpose,
        token,
        &hash,
    )?)
}

/// `kubeadm reset -f` on a node, through the gate as a step: for a half-joined node before it
/// joins again, or after a join that failed. kubeadm removes its own etcd member when it can
/// (and only warns when it cannot); khactl removes what is left by peer URL.
pub async fn reset(ctx: &Context, host: &NodeHandle, why: &str) -> anyhow::Result<()> {
    kubeadm_reset(ctx, host, why).await?;
    // kubeadm reset empties /etc/kubernetes/pki: put back what khactl placed there, or a
    // control plane's next join has no shared certificates (and kubeadm would make new ones).
    let node = ctx.node(host.node())?;
    let files = crate::phases::distribute_pki::files_for(ctx, node);
    if !files.is_empty() {
        let restore = crate::phases::distribute_pki::plan_node(
            &files,
            &crate::facts::HostFacts::unprobed(),
            "",
        );
        ctx.apply(host, &restore).await?;
    }
    // kubeadm leaves the Node object; while it still says Ready, the node's next join is
    // refused ("a Node with name … and status Ready already exists"). kubespray deletes it too.
    delete_node_object(ctx, host.node()).await
}

/// Deletes the Node object `name` if the cluster has one (asked on a member control plane):
/// what a node being (re)joined must not find, since a reinstalled machine's old Node still
/// says Ready for a while and kubeadm refuses the join. Nothing to do on a fresh cluster.
pub async fn delete_node_object(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let Some(member) = member_control_plane(ctx, Some(name)) else {
        return Ok(());
    };
    if !node_object_exists(ctx, member, name).await? {
        return Ok(());
    }
    let headline = format!(
        "delete the Node object {name} (kubectl, on {})",
        member.node()
    );
    let cmd = member_kubectl(ctx, member, &["delete", "node", name, "--ignore-not-found"])?;
    ctx.step(member, &headline, async |m| {
        m.run(&cmd).await?;
        Ok(())
    })
    .await?;
    Ok(())
}

/// `kubectl ARGS…` with `admin.conf` against `member`'s own API server, not the VIP: while a
/// node joins or leaves, the load balancer may pick that node's API server as it goes down.
pub fn member_kubectl(
    ctx: &Context,
    member: &NodeHandle,
    args: &[&str],
) -> anyhow::Result<RemoteCommand> {
    let server = format!(
        "--server=https://{}:{}",
        ctx.node(member.node())?.address,
        crate::render::kubeadm::API_SERVER_PORT
    );
    let argv = [server.as_str()].into_iter().chain(args.iter().copied());
    Ok(crate::cluster::api::kubectl(argv).timeout(Duration::from_secs(60)))
}

/// Whether the API has a Node object `name`, asked on `member`'s own API server.
pub async fn node_object_exists(
    ctx: &Context,
    member: &NodeHandle,
    name: &str,
) -> anyhow::Result<bool> {
    let get = member_kubectl(
        ctx,
        member,
        &["get", "node", name, "--ignore-not-found", "-o", "name"],
    )?;
    let out = member.run(&get.read_only()).await?;
    Ok(!out.stdout_str().trim().is_empty())
}

/// Only the `kubeadm reset -f` step of [`reset`], with the inventory's CRI socket (a node with
/// two makes kubeadm refuse to guess); `why` is shown with it.
pub async fn kubeadm_reset(ctx: &Context, host: &NodeHandle, why: &str) -> anyhow::Result<()> {
    let headline = format!("kubeadm reset -f ({why})");
    let cri = ctx.inventory.kubeadm.cri_socket.as_str().to_owned();
    ctx.step(host, &headline, async |h| {
        h.run(&kubeadm_command(
            ["reset", "-f", "--cri-socket", cri.as_str()],
            None,
        ))
        .await?;
        Ok(())
    })
    .await?;
    Ok(())
}

/// Resets a node that has files of an earlier init or join (an attempt cut short), so kubeadm
/// starts it clean; a fresh node is left alone.
pub async fn reset_leftovers(ctx: &Context, host: &NodeHandle) -> anyhow::Result<()> {
    let traces = kubeadm_traces(ctx.facts_of(host.node())?);
    if traces.is_empty() {
        // A wiped or reinstalled machine may still have its old Node object, which kubeadm
        // refuses to join over while it says Ready.
        return delete_node_object(ctx, host.node()).await;
    }
    let why = format!("an earlier attempt left {}", traces.join(", "));
    reset(ctx, host, &why).await
}

/// Removes every etcd member that is `node` (by name or peer URL), asked on `from`.
pub async fn remove_member(
    ctx: &Context,
    from: &NodeHandle,
    node: &Node,
    members: &[etcd::Member],
) -> anyhow::Result<usize> {
    let stale: Vec<&etcd::Member> = members
        .iter()
        .filter(|m| m.is_node(node.name.as_str(), &node.address.to_string()))
        .collect();
    for m in &stale {
        let headline = format!(
            "remove etcd member {} ({:x}, {}) of {}",
            if m.name.is_empty() {
                "(unstarted)"
            } else {
                &m.name
            },
            m.id,
            m.peer_urls.first().map(String::as_str).unwrap_or("?"),
            node.name
        );
        let id = m.id;
        let interrupt = ctx.settings.interrupt.clone();
        ctx.step(from, &headline, async |h| {
            // etcd answers 503 while it cannot yet vouch that enough members stay connected
            // (right after a leader change, or with a peer that just went); kubeadm retries
            // the removal too.
            let started = std::time::Instant::now();
            loop {
                match etcd::remove(h, id).await {
                    Ok(()) => return Ok(()),
                    Err(e)
                        if format!("{e:#}").contains("503")
                            && started.elapsed() < Duration::from_secs(20) =>
                    {
                        interrupt.check()?;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        })
        .await?;
    }
    Ok(stale.len())
}

/// The node to ask about etcd: with a stacked etcd a member control plane (its local etcd
/// answers), the one that answered last first; with external etcd an etcd node, likewise.
pub fn etcd_witness<'a>(ctx: &'a Context, except: Option<&str>) -> Option<&'a NodeHandle> {
    if !ctx.inventory.external_etcd() {
        return member_control_plane(ctx, except);
    }
    last_answer_or_first(ctx, ctx.inventory.etcd_nodes(), |name| Some(name) != except)
}

/// A control plane in the cluster, to run kubeadm and kubectl on: the one etcd answered on
/// last (stacked), else the first member in inventory order.
pub fn member_control_plane<'a>(ctx: &'a Context, except: Option<&str>) -> Option<&'a NodeHandle> {
    let usable = |name: &str| Some(name) != except && ctx.cluster.members.contains(name);
    last_answer_or_first(ctx, ctx.inventory.control_plane(), usable)
}

/// The connected node etcd answered on last, if `usable`, else the first usable connected one
/// of `candidates`.
fn last_answer_or_first<'a, 'n>(
    ctx: &'a Context,
    mut candidates: impl Iterator<Item = &'n Node>,
    usable: impl Fn(&str) -> bool,
) -> Option<&'a NodeHandle> {
    let fleet = ctx.fleet().ok()?;
    let last = ctx
        .cluster
        .etcd_answers_on
        .as_deref()
        .filter(|n| usable(n))
        .and_then(|n| fleet.host(n));
    last.or_else(|| {
        candidates.find_map(|n| {
            usable(n.name.as_str())
                .then(|| fleet.host(n.name.as_str()))
                .flatten()
        })
    })
}

/// The etcd members as a member control plane sees them, or none when there is no member
/// yet (a fresh cluster).
pub async fn read_members(
    ctx: &Context,
    except: Option<&str>,
) -> anyhow::Result<Vec<etcd::Member>> {
    match etcd_witness(ctx, except) {
        Some(h) => etcd::members(h).await,
        None => Ok(Vec::new()),
    }
}

/// Makes sure the run's token exists in the cluster before a node joins with it: made by
/// `kubeadm init`, or now with `kubeadm token create --config` on a member control plane (the
/// token goes in the 0600 file, never in argv).
pub async fn ensure_token(ctx: &mut Context) -> anyhow::Result<()> {
    let fresh = ctx
        .cluster
        .token_made
        .is_some_and(|t| t.elapsed() < TOKEN_REFRESH_AFTER);
    if ctx.cluster.token_in_cluster && fresh {
        return Ok(());
    }
    if ctx.cluster.token_in_cluster {
        // Made over 40 minutes ago: a join (up to 5 minutes of discovery) must not meet it
        // expired. A new token, a new file.
        ctx.cluster.join_token = Some(BootstrapToken::generate()?);
        ctx.cluster.token_in_cluster = false;
    }
    let c = &*ctx;
    let Some(host) = member_control_plane(c, None) else {
        if c.settings.mode == Mode::Plan {
            // A dry run on a fresh cluster: init will put the token there.
            return Ok(());
        }
        anyhow::bail!("no control plane is a member yet to create a join token");
    };
    let node = c.node(host.node())?;
    // The InitConfiguration carries the token: `token create --config` creates exactly it.
    let docs = render(c, node, Purpose::Init)?;
    let headline = "kubeadm token create (a join token for 1 h)";
    kubeadm_with_config(c, host, &docs, "token", headline, &["token", "create"], &[]).await?;
    if ctx.settings.mode == Mode::Apply {
        ctx.cluster.token_in_cluster = true;
        ctx.cluster.token_made = Some(std::time::Instant::now());
    }
    Ok(())
}
