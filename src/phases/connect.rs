//! Open one multiplexed SSH connection per node, in parallel. Host keys are trusted on
//! first use into the cluster's own known_hosts; a changed key is refused.

use anyhow::anyhow;

use super::{Context, NodesFailed, Phase, PhaseFuture};
use crate::remote::{ConnectOptions, Fleet};
use crate::report::Event;

pub struct Connect;

impl Phase for Connect {
    fn title(&self) -> &'static str {
        "Connect to nodes"
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let targets: Vec<_> = ctx
                .inventory
                .nodes
                .iter()
                .map(|n| ctx.inventory.ssh_for(n))
                .collect();
            for t in &targets {
                let msg = format!("connecting to {}@{}:{}", t.user, t.address, t.port);
                ctx.report.event(Event::NodeStep {
                    node: t.node.as_str(),
                    message: &msg,
                });
            }
            let opts = ConnectOptions {
                known_hosts: ctx.state.known_hosts(),
                control_dir: crate::state::control_dir()?,
                connect_timeout: ctx.settings.connect_timeout,
            };
            match Fleet::connect(&targets, &opts, ctx.settings.parallelism).await {
                Ok(fleet) => {
                    for t in &targets {
                        ctx.report.event(Event::NodeDone {
                            node: t.node.as_str(),
                            summary: "connected",
                        });
                    }
                    ctx.fleet = Some(fleet);
                    Ok(())
                }
                Err(failures) => {
                    let mut listed = Vec::new();
                    for f in failures {
                        let text = f.error.to_string();
                        ctx.report.event(Event::NodeFailed {
                            node: &f.node,
                            error: &text,
                        });
                        let e = match f.error.hint() {
                            Some(h) => anyhow!("{text}\n    hint: {h}"),
                            None => anyhow!(text),
                        };
                        listed.push((f.node, e));
                    }
                    Err(NodesFailed {
                        phase: self.title(),
                        failures: listed,
                    }
                    .into())
                }
            }
        })
    }
}
