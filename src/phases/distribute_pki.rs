//! Copy to each node exactly the certificates, keys and kubeconfigs it needs, at kubeadm's
//! paths, so kubeadm finds them and generates nothing. Files already there with the same
//! digest and mode are left alone; keys travel on stdin and are never shown. Workers get
//! nothing (kubeadm join's preflight refuses a `ca.crt` already there); what older khactl
//! placed on a worker that has not joined yet is removed. A node whose roots of trust are
//! another cluster's is refused in preflight, and a file that is replaced is first kept
//! under `/var/lib/khactl/backup/<run>/` ([`super::existing_pki`]).

use std::path::{Path, PathBuf};

use super::kubernetes::{KUBELET_CONF, has_member_files};
use super::{Change, Context, Phase, PhaseFuture, existing_pki};
use crate::facts::{HostFacts, ProbeRequest, sha256_hex};
use crate::inventory::{Node, NodeName, Role};
use crate::pki::{self, PkiFile};

pub struct DistributePki;

impl Phase for DistributePki {
    fn title(&self) -> &'static str {
        "Distribute certificates"
    }

    /// The digests (never the contents) of the files this node should have, the public roots
    /// of trust it holds now, and on workers what older khactl placed there.
    fn facts(&self, ctx: &Context, node: &Node) -> ProbeRequest {
        let mut digests: Vec<PathBuf> = files_for(ctx, node)
            .into_iter()
            .map(|f| f.remote_path)
            .collect();
        if node.role == Role::Worker {
            digests.extend(pki::stale_worker_paths());
            digests.push(KUBELET_CONF.into());
        }
        ProbeRequest {
            files: existing_pki::files_read(),
            digests,
            ..ProbeRequest::default()
        }
    }

    /// A node that holds another cluster's CA stops the run before anything is written.
    fn preflight(&self, ctx: &Context, node: &Node, facts: &HostFacts) -> Vec<String> {
        let Some(pki) = &ctx.pki else {
            return Vec::new();
        };
        let inventory = ctx
            .settings
            .inventory_path
            .as_deref()
            .unwrap_or(Path::new("INVENTORY"));
        existing_pki::problems(pki, node, facts, &ctx.state.pki_dir(), inventory)
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let c = &*ctx;
            // Without the PKI loaded every node would get nothing: a bug, said so.
            c.pki()?;
            let stamp = existing_pki::stamp();
            let results = c
                .fleet()?
                .each(
                    |h| c.in_scope(h.node()),
                    async |host| {
                        let node = c.node(host.node())?;
                        let facts = c.facts_of(host.node())?;
                        let mut changes = plan_node(&files_for(c, node), facts, &stamp);
                        changes.extend(stale_on_worker(node, facts));
                        c.apply(host, &changes).await.map(drop)
                    },
                )
                .await;
            ctx.settle_changes(results)
        })
    }
}

/// A node's files; `super-admin.conf` goes where [`super_admin_node`] says.
pub(super) fn files_for(ctx: &Context, node: &Node) -> Vec<PkiFile> {
    ctx.pki
        .as_ref()
        .map(|p| p.files_for(node, super_admin_node(ctx)))
        .unwrap_or_default()
}

/// Where `super-admin.conf` belongs: only `kubeadm init` needs it, so the first control plane
/// gets it while no control plane is a member yet (init is to come), and keeps it once it has
/// it. A cluster that exists gets no new copy: after its init node was removed, the next `up`
/// does not hand the one credential RBAC cannot restrict to whichever node is now first.
/// Before the facts are in, the first control plane, so its copy is probed.
fn super_admin_node(ctx: &Context) -> Option<&NodeName> {
    let first = pki::default_init_node(&ctx.inventory)?;
    let Ok(facts) = ctx.facts_of(first.as_str()) else {
        return Some(first);
    };
    let path = Path::new("/etc/kubernetes").join(pki::Kubeconfig::SuperAdmin.file_name());
    let has_it = facts.digest(&path).is_some();
    let cluster_exists = ctx.inventory.control_plane().any(|n| {
        ctx.facts_of(n.name.as_str())
            .is_ok_and(|f| has_member_files(&ctx.inventory, n, f))
    });
    (has_it || !cluster_exists).then_some(first)
}

/// Removes what older khactl placed on a worker, before its first join only: once it joined,
/// kubeadm wrote `ca.crt` itself and the kubelet reads it.
pub fn stale_on_worker(node: &Node, facts: &HostFacts) -> Vec<Change> {
    if node.role != Role::Worker || facts.digest(Path::new(KUBELET_CONF)).is_some() {
        return Vec::new();
    }
    pki::stale_worker_paths()
        .into_iter()
        .filter(|p| facts.digest(p).is_some())
        .map(|path| Change::RemoveFile { path })
        .collect()
}

/// The writes a node needs: files missing, different, or with the wrong mode. A file with
/// other content is backed up under the run's `stamp` before it is replaced.
pub fn plan_node(files: &[PkiFile], facts: &HostFacts, stamp: &str) -> Vec<Change> {
    files
        .iter()
        .filter_map(|f| {
            let want = sha256_hex(&f.contents);
            let have = facts.digest(Path::new(&f.remote_path));
            let (current, backup) = match have {
                Some(d) if d.sha256 == want && d.mode == f.mode => return None,
                // Same bytes, wrong mode: the plan says "set mode of".
                Some(d) if d.sha256 == want => (Some(f.contents.clone()), None),
                Some(_) => (
                    Some(Vec::new()),
                    Some(existing_pki::backup_path(stamp, &f.remote_path)),
                ),
                None => (None, None),
            };
            Some(Change::WriteFile {
                path: f.remote_path.clone(),
                contents: f.contents.clone(),
                mode: f.mode,
                secret: f.secret,
                diff: false,
                current,
                backup,
                preview: None,
            })
        })
        .collect()
}
