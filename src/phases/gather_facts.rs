//! Read each node's facts in one read-only round trip: the fixed facts (OS, init system,
//! architecture, kernel modules, addresses) and whatever the command's phases said they read
//! ([`super::Phase::facts`]): sysctls, text files, and digests of files whose contents must
//! not travel (keys).

use super::{Context, Phase, PhaseFuture};
use crate::facts::{HostFacts, ProbeRequest};

pub struct GatherFacts;

impl Phase for GatherFacts {
    fn title(&self) -> &'static str {
        "Gather facts"
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let c = &*ctx;
            let phases = c.phases.clone();
            let results = c
                .fleet()?
                .each(
                    |_| true,
                    async |host| {
                        let node = c.node(host.node())?;
                        let mut req = ProbeRequest::default();
                        for phase in phases.iter() {
                            req.merge(phase.facts(c, node));
                        }
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
            ctx.settle(settled)
        })
    }
}
