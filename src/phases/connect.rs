//! Open one multiplexed SSH connection per node, in parallel. Host keys are trusted on
//! first use into the cluster's own known_hosts; a changed key is refused. [`Connect`] is all
//! or nothing: when one node cannot be reached, every failure is listed and no node is
//! changed. [`ConnectReachable`] (read-only views such as `status`) keeps the nodes that
//! answered and records the others in `ctx.cluster.unreachable`.

use std::sync::Arc;

use super::changes::Mode;
use super::{Context, NodesFailed, Phase, PhaseFuture};
use crate::diagnostics::Hinted;
use crate::inventory::SshTarget;
use crate::remote::{Access, ConnectOptions, Fleet, NodeFailure, Observer, RemoteError};
use crate::report::Event;
use crate::state::ControlDir;

pub struct Connect;

impl Phase for Connect {
    fn title(&self) -> &'static str {
        "Connect to nodes"
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let (fleet, failures) = dial(ctx).await?;
            if failures.is_empty() {
                ctx.fleet = Some(fleet);
                return Ok(());
            }
            fleet.close().await;
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
        })
    }
}

/// Connects to every node that answers, announcing each; returns them and the failures.
async fn dial(ctx: &mut Context) -> anyhow::Result<(Fleet, Vec<NodeFailure<RemoteError>>)> {
    let Dialing {
        targets,
        opts,
        access,
        observer,
    } = prepare(ctx)?;
    let (fleet, failures) = Fleet::connect_reachable(
        ctx.connector.as_ref(),
        &targets,
        &opts,
        ctx.settings.parallelism,
        access,
        observer,
    )
    .await;
    for h in fleet.hosts() {
        ctx.report.event(Event::NodeDone {
            node: h.node(),
            summary: "connected",
        });
    }
    Ok((fleet, failures))
}

/// Announces each target and makes the run's SSH control directory: what both connect phases
/// need before they dial.
fn prepare(ctx: &mut Context) -> anyhow::Result<Dialing> {
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
    Ok(Dialing {
        targets,
        opts,
        access,
        observer,
    })
}

/// What dialing the nodes takes.
struct Dialing {
    targets: Vec<SshTarget>,
    opts: ConnectOptions,
    access: Access,
    observer: Arc<dyn Observer>,
}

/// Connects to every node that answers; the others are recorded with the reason in
/// `ctx.cluster.unreachable` and reported, and the run goes on with the rest.
pub struct ConnectReachable;

impl Phase for ConnectReachable {
    fn title(&self) -> &'static str {
        "Connect to nodes"
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let (fleet, failures) = dial(ctx).await?;
            for f in failures {
                let text = f.error.to_string();
                ctx.report.event(Event::Warning {
                    node: Some(&f.node),
                    message: &format!("unreachable: {text}"),
                });
                ctx.cluster.unreachable.insert(f.node, text);
            }
            ctx.fleet = Some(fleet);
            Ok(())
        })
    }
}
