//! Copy to each node exactly the certificates and keys it needs, at kubeadm's paths,
//! so kubeadm finds them and generates nothing. Files already there with the same
//! digest and mode are left alone; keys travel on stdin and are never shown.

use std::path::Path;

use super::{Change, Context, Phase, PhaseFuture};
use crate::facts::{HostFacts, sha256_hex};
use crate::pki::PkiFile;

pub struct DistributePki;

impl Phase for DistributePki {
    fn title(&self) -> &'static str {
        "Distribute certificates"
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let c = &*ctx;
            let pki = c.pki()?;
            let results = c
                .fleet()?
                .each(
                    |_| true,
                    async |host| {
                        let node = c.node(host.node())?;
                        let facts = c.facts_of(host.node())?;
                        let changes = plan_node(
                            &pki.files_for(node, crate::pki::default_init_node(&c.inventory)),
                            facts,
                        );
                        c.apply(host, &changes).await
                    },
                )
                .await;
            ctx.settle_changes(self.title(), results)
        })
    }
}

/// The writes a node needs: files missing, different, or with the wrong mode.
pub fn plan_node(files: &[PkiFile], facts: &HostFacts) -> Vec<Change> {
    files
        .iter()
        .filter_map(|f| {
            let want = sha256_hex(&f.contents);
            let have = facts.digest(Path::new(&f.remote_path));
            let current = match have {
                Some(d) if d.sha256 == want && d.mode == f.mode => return None,
                // Same bytes, wrong mode: the plan says "set mode of".
                Some(d) if d.sha256 == want => Some(f.contents.clone()),
                Some(_) => Some(Vec::new()),
                None => None,
            };
            Some(Change::WriteFile {
                path: f.remote_path.clone(),
                contents: f.contents.clone(),
                mode: f.mode,
                secret: f.secret,
                diff: false,
                current,
                backup: None,
            })
        })
        .collect()
}
