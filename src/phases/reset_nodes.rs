//! Tear every node down to what it was before khactl: `kubeadm reset -f` where kubeadm left
//! anything (workers side by side, then the control planes one at a time, so each removes its
//! own etcd member while the others still hold quorum), then, per node, exactly what the
//! node's manifest ([`super::manifest`]) says khactl wrote, undone through the gate:
//!
//! - services khactl enabled (khagent) stopped and disabled, and the agent's own state
//!   directory removed;
//! - files khactl created removed; files it replaced put back from the copy it kept; in
//!   `/etc/hosts` only khactl's line removed, in `/etc/fstab` the swap lines it commented out
//!   made active again (other edits since are kept), then their backups removed;
//! - sysctls khactl changed set back to the values the manifest noted before the change;
//! - swap on again if khactl turned it off; directories khactl's writes created removed if
//!   empty; last, `/var/lib/khactl` (the manifest, PKI backups).
//!
//! On an external etcd node (`role: etcd`), once its etcd service is stopped and its files
//! gone, the member's data directory is removed too, as `kubeadm reset` removes a stacked
//! member's: a later `up` founds a new etcd instead of reviving the old cluster's data.
//!
//! The manifest goes last, so a reset cut short is finished by the next; a node without a
//! manifest has nothing of khactl's to undo, and a second reset changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::changes::{Change, ServiceAction, SysctlChange, normalise};
use super::kubernetes::{
    APISERVER_MANIFEST, BOOTSTRAP_KUBELET_CONF, ETCD_MANIFEST, KUBELET_CONF, kubeadm_traces,
};
use super::manifest::{self, Before, Manifest};
use super::prepare_hosts::{
    FSTAB, FSTAB_BACKUP, HOSTS, HOSTS_BACKUP, render_fstab_with_swap, render_hosts,
};
use super::{Context, Phase, PhaseFuture};
use crate::agent::{OPENRC_SCRIPT, SERVICE, SYSTEMD_UNIT};
use crate::facts::{HostFacts, InitSystem, ProbeRequest};
use crate::inventory::{Node, Role, SysctlKey};
use crate::remote::{NodeHandle, RemoteCommand};
use crate::render::etcd::{
    CONFIG_FILE as ETCD_CONFIG, DATA_DIR as ETCD_DATA_DIR, SYSTEMD_UNIT as ETCD_UNIT,
};

/// khagent's own state directory (systemd's `StateDirectory=khagent`: its VIP record).
pub const AGENT_STATE_DIR: &str = "/var/lib/khagent";

/// Prints each path given that exists (a file, a directory or a link).
const EXISTING: &str = r#"for p in "$@"; do
  if [ -e "$p" ] || [ -L "$p" ]; then printf '%s\n' "$p"; fi
done
"#;

/// Removes each directory given if it is empty.
const RMDIR_EMPTY: &str = r#"for d in "$@"; do rmdir "$d" 2>/dev/null || true; done
"#;

pub struct ResetNodes;

impl Phase for ResetNodes {
    fn title(&self) -> &'static str {
        "Reset nodes"
    }

    fn facts(&self, _ctx: &Context, node: &Node) -> ProbeRequest {
        ProbeRequest {
            dirs: if node.role == Role::Etcd {
                vec![ETCD_DATA_DIR.into()]
            } else {
                Vec::new()
            },
            files: [HOSTS, FSTAB, manifest::PATH]
                .iter()
                .map(PathBuf::from)
                .collect(),
            digests: [
                KUBELET_CONF,
                BOOTSTRAP_KUBELET_CONF,
                ETCD_MANIFEST,
                APISERVER_MANIFEST,
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
            ..ProbeRequest::default()
        }
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let c = &*ctx;
            let role = |h: &NodeHandle| c.node(h.node()).map(|n| n.role).ok();
            // Workers side by side, then control planes one at a time.
            let mut results = c
                .fleet()?
                .each(
                    |h| role(h) == Some(Role::Worker),
                    async |host| kubeadm_reset(c, host).await,
                )
                .await;
            for cp in c.inventory.control_plane() {
                if let Some(host) = c.fleet()?.host(cp.name.as_str()) {
                    c.settings.interrupt.check()?;
                    results.push((cp.name.to_string(), kubeadm_reset(c, host).await));
                }
            }
            let failed: Vec<(String, anyhow::Result<()>)> =
                results.into_iter().filter(|(_, r)| r.is_err()).collect();
            if !failed.is_empty() {
                return ctx.settle_changes(failed);
            }
            let results = c
                .fleet()?
                .each(
                    |_| true,
                    async |host| {
                        // Read before the undo takes the manifest away.
                        let ours = installed_etcd(c.facts_of(host.node())?);
                        undo_khactl(c, host).await?;
                        // Only the data of an etcd khactl installed: a `role: etcd` host
                        // running an etcd of its own keeps it.
                        if role(host) == Some(Role::Etcd) && ours {
                            super::etcd_membership::remove_data(c, host, false).await?;
                        }
                        anyhow::Ok(())
                    },
                )
                .await;
            ctx.settle_changes(results)
        })
    }
}

/// Whether the node's manifest says khactl wrote its etcd config (so the etcd there and
/// its data are khactl's).
fn installed_etcd(facts: &HostFacts) -> bool {
    facts.file(Path::new(manifest::PATH)).is_some_and(|text| {
        Manifest::parse(&String::from_utf8_lossy(text))
            .files
            .iter()
            .any(|(path, _)| path == ETCD_CONFIG)
    })
}

/// `kubeadm reset -f` on a node kubeadm left files on.
async fn kubeadm_reset(ctx: &Context, host: &NodeHandle) -> anyhow::Result<()> {
    let traces = kubeadm_traces(ctx.facts_of(host.node())?);
    if traces.is_empty() {
        return Ok(());
    }
    let why = format!("kubeadm left {}", traces.join(", "));
    super::kubernetes::kubeadm_reset(ctx, host, &why).await
}

/// Undoes what the node's manifest says khactl wrote.
async fn undo_khactl(ctx: &Context, host: &NodeHandle) -> anyhow::Result<()> {
    let facts = ctx.facts_of(host.node())?;
    let Some(text) = facts.file(Path::new(manifest::PATH)) else {
        return Ok(());
    };
    let m = Manifest::parse(&String::from_utf8_lossy(text));
    let existing = existing(host, &asked_paths(&m)).await?;
    let now = current_sysctls(host, m.sysctls.keys()).await?;
    let plan = plan_node(&m, &existing, &now, facts)?;

    ctx.apply(host, &plan.services).await?;
    ctx.apply(host, &plan.files).await?;
    if m.swap_off {
        ctx.step(host, "turn swap on again (swapon -a)", async |h| {
            h.run(&RemoteCommand::new(["swapon", "-a"])).await?;
            Ok(())
        })
        .await?;
    }
    if !plan.dirs.is_empty() {
        let headline = format!(
            "remove the directories khactl created, where empty: {}",
            plan.dirs.join(", ")
        );
        let dirs = plan.dirs.clone();
        ctx.step(host, &headline, async |h| {
            h.run(&RemoteCommand::script("rmdir-empty", RMDIR_EMPTY, dirs))
                .await?;
            Ok(())
        })
        .await?;
    }
    for dir in &plan.trees {
        let headline = format!("remove {dir}");
        ctx.step(host, &headline, async |h| {
            h.run(&RemoteCommand::new(["rm", "-rf", "--", dir.as_str()]))
                .await?;
            Ok(())
        })
        .await?;
    }
    Ok(())
}

/// Every path whose existence decides a change.
fn asked_paths(m: &Manifest) -> Vec<String> {
    let mut paths: Vec<String> = Vec::new();
    for (path, before) in &m.files {
        paths.push(path.clone());
        if let Before::Existed(Some(b)) = before {
            paths.push(b.clone());
        }
    }
    paths.extend(m.dirs.iter().cloned());
    paths.extend([HOSTS_BACKUP, FSTAB_BACKUP, AGENT_STATE_DIR, manifest::DIR].map(str::to_owned));
    paths
}

/// Which of `paths` exist on the node.
async fn existing(host: &NodeHandle, paths: &[String]) -> anyhow::Result<BTreeSet<String>> {
    let cmd = RemoteCommand::script("existing", EXISTING, paths.to_vec())
        .read_only()
        .timeout(Duration::from_secs(30));
    let out = host.run(&cmd).await?.stdout_str();
    Ok(out.lines().map(str::to_owned).collect())
}

/// The current value of each sysctl (`None` when the key does not exist).
async fn current_sysctls(
    host: &NodeHandle,
    keys: impl Iterator<Item = &String>,
) -> anyhow::Result<BTreeMap<String, Option<String>>> {
    let keys: Vec<String> = keys.cloned().collect();
    if keys.is_empty() {
        return Ok(BTreeMap::new());
    }
    let cmd = RemoteCommand::script(
        "sysctl-read-back",
        super::changes::SYSCTL_READ_BACK,
        keys.clone(),
    )
    .read_only();
    let out = host.run(&cmd).await?.stdout_str();
    Ok(keys
        .into_iter()
        .map(|k| {
            let v = out
                .lines()
                .find_map(|l| l.strip_prefix(k.as_str()).and_then(|r| r.strip_prefix('=')))
                .map(str::to_owned);
            (k, v)
        })
        .collect())
}

/// What to do on one node, in order.
#[derive(Debug, Default, PartialEq)]
pub struct ResetPlan {
    /// Services khactl enabled: stopped, then disabled.
    pub services: Vec<Change>,
    /// Files removed or put back, shared files edited back, sysctls set back, unit files
    /// forgotten by the init system.
    pub files: Vec<Change>,
    /// Directories khactl's writes created, deepest first, removed if empty.
    pub dirs: Vec<String>,
    /// Directories removed whole, last: the agent's state, then khactl's own (the manifest).
    pub trees: Vec<String>,
}

/// Decides a node's reset from its manifest, which of the paths exist, the current sysctls
/// and the node's facts (`/etc/hosts`, `/etc/fstab`, the init system). Pure.
pub fn plan_node(
    m: &Manifest,
    existing: &BTreeSet<String>,
    sysctls_now: &BTreeMap<String, Option<String>>,
    facts: &HostFacts,
) -> anyhow::Result<ResetPlan> {
    let mut plan = ResetPlan::default();
    let exists = |p: &str| existing.contains(p);
    let unit_files = [SYSTEMD_UNIT, OPENRC_SCRIPT];
    for name in &m.services {
        // Still installed: the unit (or script) is there.
        let installed = name != SERVICE || unit_files.iter().any(|u| exists(u));
        if installed && facts.init != InitSystem::Unknown {
            for action in [ServiceAction::Stop, ServiceAction::Disable] {
                plan.services.push(Change::Service {
                    name: name.clone(),
                    init: facts.init,
                    action,
                    check_first: None,
                });
            }
        }
    }

    let mut unit_removed = false;
    for (path, before) in m.files.iter().rev() {
        match path.as_str() {
            HOSTS => {
                if let Some(current) = facts.file(Path::new(HOSTS)) {
                    let without = render_hosts(current, None);
                    if without != current {
                        plan.files.push(write(HOSTS, current, without));
                    }
                }
                if exists(HOSTS_BACKUP) {
                    plan.files.push(Change::RemoveFile {
                        path: HOSTS_BACKUP.into(),
                    });
                }
            }
            FSTAB => {
                if let Some(current) = facts.file(Path::new(FSTAB))
                    && let Some(with_swap) = render_fstab_with_swap(current)
                {
                    plan.files.push(write(FSTAB, current, with_swap));
                }
                if exists(FSTAB_BACKUP) {
                    plan.files.push(Change::RemoveFile {
                        path: FSTAB_BACKUP.into(),
                    });
                }
            }
            _ => match before {
                Before::Absent if exists(path) => {
                    unit_removed |= path == SYSTEMD_UNIT || path == ETCD_UNIT;
                    plan.files.push(Change::RemoveFile { path: path.into() });
                }
                Before::Existed(Some(backup)) if exists(backup) => {
                    plan.files.push(Change::RestoreFile {
                        path: path.into(),
                        backup: backup.into(),
                    });
                }
                // Gone already, or there before khactl with no copy kept: left as it is.
                _ => {}
            },
        }
    }
    if unit_removed && facts.init == InitSystem::Systemd {
        plan.files.push(Change::Service {
            name: SERVICE.to_owned(),
            init: facts.init,
            action: ServiceAction::DaemonReload,
            check_first: None,
        });
    }

    let mut values = Vec::new();
    for (key, before) in &m.sysctls {
        let (Some(before), Some(Some(now))) = (before, sysctls_now.get(key)) else {
            continue;
        };
        if normalise(now) != normalise(before) {
            values.push(SysctlChange {
                key: SysctlKey::parse(key).map_err(anyhow::Error::msg)?,
                from: Some(now.clone()),
                to: before.clone(),
            });
        }
    }
    if !values.is_empty() {
        plan.files.push(Change::SetSysctls { values });
    }

    plan.dirs = m.dirs.iter().rev().filter(|d| exists(d)).cloned().collect();
    if m.services.iter().any(|s| s == SERVICE) && exists(AGENT_STATE_DIR) {
        plan.trees.push(AGENT_STATE_DIR.to_owned());
    }
    if exists(manifest::DIR) {
        plan.trees.push(manifest::DIR.to_owned());
    }
    Ok(plan)
}

fn write(path: &str, current: &[u8], contents: Vec<u8>) -> Change {
    Change::WriteFile {
        path: path.into(),
        contents,
        mode: 0o644,
        secret: false,
        diff: true,
        current: Some(current.to_vec()),
        backup: None,
        preview: None,
    }
}

#[cfg(test)]
mod tests;
