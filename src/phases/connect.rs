//! Open one multiplexed SSH connection per node, in parallel. Host keys are trusted on
//! first use into the cluster's own known_hosts; a changed key is refused. All or nothing:
//! when one node cannot be reached, every failure is listed and no node is changed.

use std::sync::Arc;

use super::changes::Mode;
use super::{Context, NodesFailed, Phase, PhaseFuture};
use crate::diagnostics::Hinted;
use crate::remote::{Access, ConnectOptions, Fleet, Observer};
use crate::report::Event;
use crate::state::ControlDir;

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
            let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(std::path::PathBuf::from);
            let control = ControlDir::create(
                runtime.as_deref(),
                &ctx.state,
                ctx.inventory.cluster.name.as_str(),
            )?;
            let opts = ConnectOptions {
                known_hosts: ctx.state.known_hosts(),
                control_dir: control.path().to_path_buf(),
                connect_timeout: ctx.settings.connect_timeout,
            };
            ctx.control_dir = Some(control);
            // The remote seam enforces what `--dry-run` promises: no command that is not
            // marked read-only reaches a node.
            let access = match ctx.settings.mode {
                Mode::Plan => Access::ReadOnly,
                Mode::Apply => Access::ReadWrite,
            };
            let observer: Arc<dyn Observer> = Arc::new(ctx.report.clone());
            let connected = Fleet::connect(
                ctx.connector.as_ref(),
                &targets,
                &opts,
                ctx.settings.parallelism,
                access,
                observer,
            )
            .await;
            match connected {
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
                        let mut e = Hinted::new(text);
                        if let Some(h) = f.error.hint() {
                            e = e.hint(h);
                        }
                        listed.push((f.node, anyhow::Error::new(e)));
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
