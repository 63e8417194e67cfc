//! Read each node's facts in one read-only round trip: OS, init system, architecture,
//! kernel modules, the sysctls and files later phases manage, and digests of the PKI
//! files (never their contents) and of the agent's files.

use super::{Context, Phase, PhaseFuture, install_agent, prepare_hosts};
use crate::facts::{HostFacts, ProbeRequest};

pub struct GatherFacts;

impl Phase for GatherFacts {
    fn title(&self) -> &'static str {
        "Gather facts"
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let c = &*ctx;
            let sysctls: Vec<String> = prepare_hosts::wanted_sysctls(&c.inventory)
                .into_keys()
                .collect();
            let pki = c.pki()?;
            let results = c
                .fleet()?
                .each(
                    |_| true,
                    async |host| {
                        let node = c.node(host.node())?;
                        let req = ProbeRequest {
                            sysctls: sysctls.clone(),
                            files: [prepare_hosts::files_read(), install_agent::files_read()]
                                .concat(),
                            digests: pki
                                .files_for(node, crate::pki::default_init_node(&c.inventory))
                                .into_iter()
                                .map(|f| f.remote_path)
                                .chain(install_agent::digests_read())
                                .collect(),
                        };
                        let facts = HostFacts::gather(host, &req).await?;
                        anyhow::Ok(facts)
                    },
                )
                .await;
            let mut settled = Vec::new();
            for (node, r) in results {
                match r {
                    Ok(facts) => {
                        let summary = format!(
                            "{} {}, {}, {}",
                            facts.os_id, facts.os_version, facts.arch, facts.init
                        );
                        ctx.facts.insert(node.clone(), facts);
                        settled.push((node, Ok(summary)));
                    }
                    Err(e) => settled.push((node, Err(e))),
                }
            }
            ctx.settle(self.title(), settled)
        })
    }
}
