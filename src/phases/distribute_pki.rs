//! Copy to each node exactly the certificates and keys it needs, at kubeadm's paths,
//! so kubeadm finds them and generates nothing. Files already there with the same
//! digest and mode are left alone; keys travel on stdin and are never shown. A node whose
//! roots of trust are another cluster's is refused in preflight, and a file that is replaced
//! is first kept under `/var/lib/khactl/backup/<run>/` ([`super::existing_pki`]).

use std::path::Path;

use super::{Change, Context, Phase, PhaseFuture, existing_pki};
use crate::facts::{HostFacts, ProbeRequest, sha256_hex};
use crate::inventory::Node;
use crate::pki::PkiFile;

pub struct DistributePki;

impl Phase for DistributePki {
    fn title(&self) -> &'static str {
        "Distribute certificates"
    }

    /// The digests (never the contents) of the files this node should have, and the public
    /// roots of trust it holds now.
    fn facts(&self, ctx: &Context, node: &Node) -> ProbeRequest {
        ProbeRequest {
            files: existing_pki::files_read(),
            digests: ctx
                .pki
                .as_ref()
                .map(|pki| {
                    pki.files_for(node)
                        .into_iter()
                        .map(|f| f.remote_path)
                        .collect()
                })
                .unwrap_or_default(),
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
            let pki = c.pki()?;
            let stamp = existing_pki::stamp();
            let results = c
                .fleet()?
                .each(
                    |_| true,
                    async |host| {
                        let node = c.node(host.node())?;
                        let facts = c.facts_of(host.node())?;
                        let changes = plan_node(&pki.files_for(node), facts, &stamp);
                        c.apply(host, &changes).await.map(drop)
                    },
                )
                .await;
            ctx.settle_changes(results)
        })
    }
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
            })
        })
        .collect()
}
