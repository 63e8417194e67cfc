//! Prepare hosts for Kubernetes: on the RHEL family SELinux permissive and firewalld opened
//! or stopped ([`rhel`]); kernel settings in a sysctl drop-in (applied, read back,
//! and checked against what the other sysctl.d files would set at boot), the `overlay` and `br_netfilter` modules loaded and persisted where the kernel
//! can, swap off now and in fstab (with a backup), and an `/etc/hosts` entry for the API
//! DNS name pointing at the VIP. Each item is compared with the node's facts first, so a
//! second run changes nothing.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::bail;

use super::changes::{Change, SysctlChange, normalise};
use super::kubernetes::KUBELET_CONF;
use super::{Context, Phase, PhaseFuture};
use crate::facts::{HostFacts, ProbeRequest};
use crate::inventory::{Inventory, Node, Role, SysctlKey};
use crate::report::Event;

mod boot_sysctls;
pub mod rhel;

/// Named to sort after Debian's `99-sysctl.conf` (the link to /etc/sysctl.conf), so at boot
/// systemd-sysctl applies it last and its values win.
pub const SYSCTL_DROP_IN: &str = "/etc/sysctl.d/99-zz-khactl.conf";
/// Where earlier khactl versions put the drop-in; removed when the new one is written.
pub const OLD_SYSCTL_DROP_IN: &str = "/etc/sysctl.d/99-khactl.conf";
pub const MODULES_LOAD: &str = "/etc/modules-load.d/khactl.conf";
pub const HOSTS: &str = "/etc/hosts";
/// The first `/etc/hosts` khactl changed, kept once, like fstab's.
pub const HOSTS_BACKUP: &str = "/etc/hosts.khactl.bak";
pub const FSTAB: &str = "/etc/fstab";
pub const FSTAB_BACKUP: &str = "/etc/fstab.khactl.bak";
/// Marks the lines khactl owns in shared files such as /etc/hosts.
const MARK: &str = "# khactl";

/// Modules Kubernetes networking needs, and the sysctls that exist only with them.
const MODULES: [&str; 2] = ["overlay", "br_netfilter"];

/// The sysctls every node gets, before the inventory's extras.
/// `ip_nonlocal_bind` lets the agent listen on the VIP on nodes that do not hold it.
const BASE_SYSCTLS: [(&str, &str); 4] = [
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv4.ip_nonlocal_bind", "1"),
];

/// The module a sysctl key depends on, if any.
fn needs_module(key: &SysctlKey) -> Option<&'static str> {
    key.path()
        .starts_with("net/bridge/")
        .then_some("br_netfilter")
}

/// Every sysctl khactl wants on a node, by its path under /proc/sys: the base set, then the
/// inventory's (which win). Keys the inventory wrote differently but that name the same file
/// (`net.ipv4.ip_forward`, `net/ipv4/ip_forward`) are one key.
pub fn wanted_sysctls(inv: &Inventory) -> anyhow::Result<BTreeMap<SysctlKey, String>> {
    let mut m = BTreeMap::new();
    for (k, v) in BASE_SYSCTLS {
        m.insert(
            SysctlKey::parse(k).map_err(anyhow::Error::msg)?,
            v.to_owned(),
        );
    }
    for (k, v) in inventory_sysctls(inv)? {
        m.insert(k, v);
    }
    Ok(m)
}

/// The inventory's own sysctls (validated when it was loaded).
fn inventory_sysctls(inv: &Inventory) -> anyhow::Result<BTreeMap<SysctlKey, String>> {
    inv.sysctls
        .iter()
        .map(|(k, v)| {
            let key = SysctlKey::parse(k).map_err(|e| anyhow::anyhow!("internal: {e}"))?;
            Ok((key, v.clone()))
        })
        .collect()
}

/// Files this phase reads to decide what to change.
pub fn files_read() -> Vec<PathBuf> {
    [
        SYSCTL_DROP_IN,
        OLD_SYSCTL_DROP_IN,
        boot_sysctls::SYSCTL_CONF,
        MODULES_LOAD,
        HOSTS,
        FSTAB,
        rhel::SELINUX_CONFIG,
    ]
    .iter()
    .map(PathBuf::from)
    .collect()
}

/// The drop-in file. Keys that need a module are written with a leading `-`, which
/// tells `sysctl --system` at boot to ignore them if the module is not there.
pub fn render_sysctl_drop_in(wanted: &BTreeMap<SysctlKey, String>) -> String {
    let mut s = String::from(
        "# Managed by khactl: kernel settings for Kubernetes. Edits here are overwritten;\n\
         # change `sysctls` in the inventory instead.\n",
    );
    for (k, v) in wanted {
        let dash = if needs_module(k).is_some() { "-" } else { "" };
        s.push_str(&format!("{dash}{k} = {v}\n"));
    }
    s
}

pub fn render_modules_load() -> String {
    let mut s = String::from("# Managed by khactl: modules Kubernetes networking needs.\n");
    for m in MODULES {
        s.push_str(m);
        s.push('\n');
    }
    s
}

/// The lines of a text file with their line ends, as bytes: a file that is not UTF-8 (a
/// Latin-1 comment in /etc/hosts) passes through unchanged, never via a lossy conversion.
fn lines_of(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split_inclusive(|b| *b == b'\n')
}

fn without_newline(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

/// The `/etc/hosts` line for the API's DNS name on `node`: the VIP; with node-local
/// balancers 127.0.0.1, so every node (control planes too) reaches the API through its own
/// balancer; behind an external balancer, 127.0.0.1 on a control plane (its own API server:
/// such a balancer drops a backend's connection to itself) and the balancer's address on a
/// worker. `via`: a control plane not yet in the cluster reaches the API through that
/// member's address until its own API server is up (see [`joining_via`]). None on an etcd
/// node.
pub fn hosts_entry(inv: &Inventory, node: &Node, via: Option<IpAddr>) -> Option<String> {
    // An external etcd node never dials the API.
    if !node.role.is_kubernetes_node() {
        return None;
    }
    let dns = inv.api_dns_name()?;
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let address = match (inv.external_lb(), &inv.vip) {
        (Some(ext), _) if node.role == Role::Worker => IpAddr::V4(ext.address?),
        (Some(_), _) => via.unwrap_or(loopback),
        (None, Some(vip)) if inv.node_local().is_none() => IpAddr::V4(vip.address),
        (None, _) => loopback,
    };
    Some(format!("{address} {dns}"))
}

/// Behind an external balancer, the member a control plane that is not in the cluster yet
/// reaches the API name through while it joins: kubeadm's discovery, check-etcd and the
/// kubelet's TLS bootstrap all dial the name, which on a control plane is 127.0.0.1, where
/// nothing answers until the join is done (the guides point the name at the first master,
/// then at 127.0.0.1). `None` for a member (or the node `kubeadm init` runs on), and in every
/// other mode. `in_cluster`: whether a node holds a kubelet.conf.
pub fn joining_via(
    inv: &Inventory,
    node: &Node,
    in_cluster: impl Fn(&Node) -> bool,
) -> Option<IpAddr> {
    if inv.external_lb().is_none() || node.role != Role::ControlPlane || in_cluster(node) {
        return None;
    }
    let mut members = inv.control_plane().filter(|n| in_cluster(n));
    let via = match members.next() {
        Some(member) => member,
        // A fresh cluster: `kubeadm init` runs on the first control plane.
        None => inv.control_plane().next()?,
    };
    (via.name != node.name).then_some(via.address)
}

/// Behind an external balancer, the `/etc/hosts` write that points a joining control plane's
/// API name at member `to` while it joins, or (`to` = `None`) at 127.0.0.1 once its own API
/// server is ready, from the line it had pointing at `from` (the same encoding). `None` when
/// nothing changes, for workers, and in the other modes.
pub fn hosts_for_join(
    inv: &Inventory,
    node: &Node,
    facts: &HostFacts,
    from: Option<IpAddr>,
    to: Option<IpAddr>,
) -> Option<Change> {
    if inv.external_lb().is_none() || node.role != Role::ControlPlane || from == to {
        return None;
    }
    let original = facts.file(Path::new(HOSTS)).unwrap_or_default();
    Some(Change::WriteFile {
        path: HOSTS.into(),
        contents: render_hosts(original, hosts_entry(inv, node, to).as_deref()),
        mode: 0o644,
        secret: false,
        diff: true,
        current: Some(render_hosts(
            original,
            hosts_entry(inv, node, from).as_deref(),
        )),
        backup: Some(HOSTS_BACKUP.into()),
        preview: None,
    })
}

/// Whether a node holds a kubelet.conf: it joined (or is joining) the cluster.
pub fn in_cluster(facts: &HostFacts) -> bool {
    facts.digest(Path::new(KUBELET_CONF)).is_some()
}

/// [`joining_via`] with what the run's facts say of every node.
pub fn join_route(ctx: &Context, node: &Node) -> Option<IpAddr> {
    joining_via(&ctx.inventory, node, |n| {
        ctx.facts.get(n.name.as_str()).is_some_and(in_cluster)
    })
}

/// The change that gives `/etc/hosts` khactl's line `entry` (or takes it out), if any.
pub fn hosts_change(facts: &HostFacts, entry: Option<&str>) -> Option<Change> {
    let current_hosts = facts.file(Path::new(HOSTS));
    let hosts = render_hosts(current_hosts.unwrap_or_default(), entry);
    (current_hosts != Some(hosts.as_slice()) && !(current_hosts.is_none() && hosts.is_empty()))
        .then(|| Change::WriteFile {
            path: HOSTS.into(),
            contents: hosts,
            mode: 0o644,
            secret: false,
            diff: true,
            current: current_hosts.map(<[u8]>::to_vec),
            backup: Some(HOSTS_BACKUP.into()),
            preview: None,
        })
}

/// `/etc/hosts` with khactl's lines replaced by `entry` (or removed when `None`); every other
/// byte as it was.
pub fn render_hosts(current: &[u8], entry: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(current.len() + 80);
    for line in lines_of(current) {
        if !without_newline(line)
            .trim_ascii_end()
            .ends_with(MARK.as_bytes())
        {
            out.extend_from_slice(line);
        }
    }
    if let Some(e) = entry {
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.extend_from_slice(format!("{e} {MARK}\n").as_bytes());
    }
    out
}

/// `/etc/fstab` with active swap entries commented out; `None` when there are none. Bytes
/// in, bytes out, like `/etc/hosts`.
pub fn render_fstab_without_swap(current: &[u8]) -> Option<Vec<u8>> {
    let mut changed = false;
    let mut out = Vec::with_capacity(current.len() + 80);
    for line in lines_of(current) {
        let body = without_newline(line);
        let mut fields = body
            .split(|b| b.is_ascii_whitespace())
            .filter(|f| !f.is_empty());
        let commented = body.trim_ascii_start().starts_with(b"#");
        if !commented && fields.nth(2) == Some(b"swap".as_slice()) {
            changed = true;
            out.extend_from_slice(b"# ");
            out.extend_from_slice(body);
            out.extend_from_slice(format!(" {MARK}{SWAP_MARK}\n").as_bytes());
        } else {
            out.extend_from_slice(body);
            out.push(b'\n');
        }
    }
    changed.then_some(out)
}

/// The suffix `render_fstab_without_swap` puts on each swap line it comments out.
const SWAP_MARK: &str = ": swap off for the kubelet";

/// `/etc/fstab` with the swap lines khactl commented out active again; `None` when there are
/// none. Every other byte as it was.
pub fn render_fstab_with_swap(current: &[u8]) -> Option<Vec<u8>> {
    let suffix = format!(" {MARK}{SWAP_MARK}");
    let mut changed = false;
    let mut out = Vec::with_capacity(current.len());
    for line in lines_of(current) {
        let body = without_newline(line);
        let restored = body
            .strip_prefix(b"# ")
            .and_then(|b| b.strip_suffix(suffix.as_bytes()));
        match restored {
            Some(original) => {
                changed = true;
                out.extend_from_slice(original);
                out.push(b'\n');
            }
            None => out.extend_from_slice(line),
        }
    }
    changed.then_some(out)
}

pub struct PrepareHosts;

impl Phase for PrepareHosts {
    fn title(&self) -> &'static str {
        "Prepare hosts"
    }

    fn facts(&self, ctx: &Context, _node: &Node) -> ProbeRequest {
        ProbeRequest {
            sysctls: wanted_sysctls(&ctx.inventory)
                .map(|w| w.into_keys().map(|k| k.path().to_owned()).collect())
                .unwrap_or_default(),
            files: files_read(),
            conf_dirs: boot_sysctls::DIRS.iter().map(PathBuf::from).collect(),
            // Which control planes are in the cluster: see `joining_via`.
            digests: vec![KUBELET_CONF.into()],
            ..ProbeRequest::default()
        }
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let c = &*ctx;
            let results = c
                .fleet()?
                .each(
                    |h| c.in_scope(h.node()),
                    async |host| {
                        let facts = c.facts_of(host.node())?;
                        let node = c.node(host.node())?;
                        let (mut changes, mut warnings) = rhel::plan(&c.inventory, node, facts)?;
                        let via = join_route(c, node);
                        let (more, more_warnings) = plan_node(&c.inventory, node, facts, via)?;
                        changes.extend(more);
                        warnings.extend(more_warnings);
                        for w in &warnings {
                            c.report.event(Event::Warning {
                                node: Some(host.node()),
                                message: w,
                            });
                        }
                        c.apply(host, &changes).await.map(drop)
                    },
                )
                .await;
            ctx.settle_changes(results)
        })
    }
}

fn file_change(facts: &HostFacts, path: &str, contents: String, mode: u32) -> Option<Change> {
    let current = facts.file(Path::new(path)).map(<[u8]>::to_vec);
    (current.as_deref() != Some(contents.as_bytes())).then(|| Change::WriteFile {
        path: path.into(),
        contents: contents.into_bytes(),
        mode,
        secret: false,
        diff: true,
        current,
        backup: None,
        preview: None,
    })
}

/// Decides a node's changes from its facts (`via`: see [`joining_via`]). Pure: unit-tested
/// without a node.
pub fn plan_node(
    inv: &Inventory,
    node: &Node,
    facts: &HostFacts,
    via: Option<IpAddr>,
) -> anyhow::Result<(Vec<Change>, Vec<String>)> {
    let mut changes = Vec::new();
    let mut warnings = Vec::new();
    // A dedicated load-balancer node runs only khagent: none of the kubelet's modules,
    // sysctls or swap rules, and no API name to resolve; only the inventory's own sysctls.
    let balancer = node.role == Role::LoadBalancer;

    // Modules first: the bridge sysctls only exist once br_netfilter is in.
    let mut missing_modules = Vec::new();
    for m in MODULES.into_iter().filter(|_| !balancer) {
        if !facts.has_module(m) {
            if facts.can_modprobe {
                changes.push(Change::LoadModule { name: m.to_owned() });
            } else {
                missing_modules.push(m);
                warnings.push(format!(
                    "the kernel has no {m} and cannot load modules; skipping what depends on it"
                ));
            }
        }
    }
    if !balancer {
        changes.extend(file_change(
            facts,
            MODULES_LOAD,
            render_modules_load(),
            0o644,
        ));
    }

    let from_inventory = inventory_sysctls(inv)?;
    let wanted = if balancer {
        from_inventory.clone()
    } else {
        wanted_sysctls(inv)?
    };
    if !wanted.is_empty() {
        let drop_in = render_sysctl_drop_in(&wanted);
        warnings.extend(boot_sysctls::overridden(facts, &wanted, drop_in.as_bytes()));
        changes.extend(file_change(facts, SYSCTL_DROP_IN, drop_in, 0o644));
    }
    if facts.file(Path::new(OLD_SYSCTL_DROP_IN)).is_some() {
        // Left where it is, it would still be applied at boot, before Debian's sysctl.conf.
        changes.push(Change::RemoveFile {
            path: OLD_SYSCTL_DROP_IN.into(),
        });
    }
    let mut sysctls = Vec::new();
    for (key, to) in &wanted {
        let from = facts.sysctl(key.path());
        if let Some(m) = needs_module(key) {
            if missing_modules.contains(&m) {
                continue;
            }
        } else if from.is_none() && from_inventory.contains_key(key) {
            bail!(
                "sysctl {key} (from the inventory's `sysctls`) does not exist on this kernel; \
                 check its spelling or remove it"
            );
        }
        if from.map(normalise) != Some(normalise(to)) {
            sysctls.push(SysctlChange {
                key: key.clone(),
                from: from.map(str::to_owned),
                to: to.clone(),
            });
        }
    }
    if !sysctls.is_empty() {
        changes.push(Change::SetSysctls { values: sysctls });
    }

    if balancer {
        return Ok((changes, warnings));
    }
    if facts.swap_active > 0 {
        changes.push(Change::SwapOff);
    }
    if let Some(fstab) = facts.file(Path::new(FSTAB))
        && let Some(new) = render_fstab_without_swap(fstab)
    {
        changes.push(Change::WriteFile {
            path: FSTAB.into(),
            contents: new,
            mode: 0o644,
            secret: false,
            diff: true,
            current: Some(fstab.to_vec()),
            backup: Some(FSTAB_BACKUP.into()),
            preview: None,
        });
    }

    changes.extend(hosts_change(facts, hosts_entry(inv, node, via).as_deref()));
    Ok((changes, warnings))
}

#[cfg(test)]
mod tests;
