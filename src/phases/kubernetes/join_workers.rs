//! Workers join side by side, `--parallel` at a time, with token discovery through the VIP
//! endpoint pinned to the CA's key hash khactl computed itself. A worker that was part-way
//! through an earlier join is reset first; one whose join fails is reset after, so the next
//! run starts it clean.

use super::{ensure_token, kubeadm_with_config, render, reset, reset_leftovers};
use crate::inventory::Role;
use crate::phases::{Context, Mode, Phase, PhaseFuture};
use crate::remote::NodeHandle;
use crate::render::kubeadm::Purpose;

pub struct JoinWorkers;

impl Phase for JoinWorkers {
    fn title(&self) -> &'static str {
        "Join workers"
    }

    fn skip_reason(&self, ctx: &Context) -> Option<String> {
        (ctx.inventory.workers().count() == 0).then(|| "the inventory has no worker".to_owned())
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let any_new = ctx
                .inventory
                .workers()
                .any(|n| !ctx.cluster.members.contains(n.name.as_str()));
            if any_new {
                ensure_token(ctx).await?;
            }
            let c = &*ctx;
            let is_worker = |h: &NodeHandle| c.node(h.node()).is_ok_and(|n| n.role == Role::Worker);
            let results = c
                .fleet()?
                .each(is_worker, async |host| {
                    let name = host.node();
                    if c.cluster.members.contains(name) {
                        return anyhow::Ok("in the cluster".to_owned());
                    }
                    join_one(c, host).await
                })
                .await;
            for (name, r) in &results {
                if r.is_ok() && ctx.settings.mode == Mode::Apply {
                    ctx.cluster.members.insert(name.clone());
                }
            }
            ctx.settle(results)
        })
    }
}

async fn join_one(ctx: &Context, host: &NodeHandle) -> anyhow::Result<String> {
    let name = host.node();
    let node = ctx.node(name)?;
    reset_leftovers(ctx, host).await?;
    let docs = render(ctx, node, Purpose::JoinWorker)?;
    let headline = "kubeadm join as a worker";
    let ran = kubeadm_with_config(ctx, host, &docs, "join", headline, &["join"], &[]).await;
    match ran {
        Ok(_) if ctx.settings.mode == Mode::Plan => Ok("join planned".to_owned()),
        Ok(_) => Ok("joined".to_owned()),
        Err(e) if e.chain().any(|c| c.is::<crate::interrupt::Interrupted>()) => Err(e),
        Err(e) => match reset(ctx, host, "its join failed").await {
            Ok(()) => Err(e.context(format!("{name} was reset"))),
            Err(u) => Err(e.context(format!(
                "and resetting it failed too ({u:#}); run `kubeadm reset -f` on {name}"
            ))),
        },
    }
}
