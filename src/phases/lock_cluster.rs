//! One cluster-changing khactl at a time per cluster, not only per state directory: two
//! workstations (or two state directories) driving the same nodes would interleave joins,
//! agent restarts and etcd membership changes. After connecting, a command that changes the
//! cluster holds an exclusive `flock` on `/run/khactl/cluster.lock` on the first control plane
//! the inventory names, through a remote command that runs as long as the run does (its stdin
//! held open); when khactl ends, however it ends — even SIGKILLed, since the SSH channel then
//! closes — the command ends and the kernel releases the lock. Never stale, like the state
//! directory's lock. A dry run takes no lock.

use super::{Context, Mode, Phase, PhaseFuture};
use crate::diagnostics::Hinted;
use crate::inventory::Role;
use crate::remote::RemoteCommand;

/// `$1` = who we are. Prints `locked`, or `busy` and the holder's description; then, when
/// locked, waits on stdin with the lock held (fd 9 stays open in `cat`).
const LOCK: &str = r#"umask 077
mkdir -p /run/khactl || exit 1
exec 9>>/run/khactl/cluster.lock || exit 1
if ! flock -n 9; then
  printf 'busy %s\n' "$(cat /run/khactl/cluster.lock.holder 2>/dev/null)"
  exit 0
fi
printf '%s\n' "$1" > /run/khactl/cluster.lock.holder
echo locked
exec cat > /dev/null
"#;

pub struct LockCluster;

impl Phase for LockCluster {
    fn title(&self) -> &'static str {
        "Lock the cluster"
    }

    fn skip_reason(&self, ctx: &Context) -> Option<String> {
        (ctx.settings.mode == Mode::Plan).then(|| "a dry run changes nothing".to_owned())
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let fleet = ctx.fleet()?;
            let Some(host) = ctx
                .inventory
                .nodes
                .iter()
                .filter(|n| n.role == Role::ControlPlane)
                .find_map(|n| fleet.host(n.name.as_str()))
            else {
                return Ok(());
            };
            let me = format!(
                "khactl {} (pid {} on {}, since {})",
                ctx.settings.verb,
                std::process::id(),
                workstation(),
                crate::state::lock::now_rfc3339()
            );
            let cmd = RemoteCommand::script("cluster-lock", LOCK, [me]);
            let (first, held) = host.hold(&cmd).await?;
            let node = host.node().to_owned();
            if first == "locked" {
                ctx.cluster_lock = Some(held);
                return ctx.settle(vec![(node, Ok("locked".to_owned()))]);
            }
            let holder = first.strip_prefix("busy ").unwrap_or(&first).trim();
            let holder = if holder.is_empty() {
                "another khactl"
            } else {
                holder
            };
            Err(Hinted::new(format!(
                "the cluster is locked on {node} by {holder}; nothing was changed"
            ))
            .hint("wait until that run ends (the lock goes with it, even if it is killed), then run this again")
            .into())
        })
    }
}

/// This machine's name, for the holder's description.
fn workstation() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this machine".to_owned())
}
