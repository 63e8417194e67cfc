//! Rules that compare fields: unique node names and addresses, the VIP against the
//! nodes and subnets, control-plane count and etcd quorum, overlapping ranges, sudo
//! for non-root users, certificate lifetimes. They run over a [`Draft`]: every section
//! that parsed on its own, so one typo in `nodes[1]` does not hide a duplicate address
//! in `nodes[3]`. A rule whose inputs did not parse is skipped, never guessed.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use super::model::{
    KubeadmExtras, LbMode, LoadBalancer, Networking, Node, PkiSettings, Role, SshDefaults, Vip,
};
use super::problems::{FieldPath, Findings};
use super::types::Port;

/// The parts of the document that parsed cleanly, by section.
#[derive(Debug, Default)]
pub(super) struct Draft {
    pub vip: Option<Vip>,
    /// Whether the document has a `vip` key at all (parsed or not).
    pub vip_written: bool,
    pub load_balancer: Option<LoadBalancer>,
    pub ssh: Option<SshDefaults>,
    /// One entry per item of `nodes`, `None` where that item has errors; `None` as a
    /// whole when `nodes` is not a list.
    pub nodes: Option<Vec<Option<Node>>>,
    pub networking: Option<Networking>,
    pub pki: Option<PkiSettings>,
    /// The sysctl names as written.
    pub sysctls: Vec<String>,
    pub kubeadm: Option<KubeadmExtras>,
    /// The `networking` fields the user wrote (the others hold defaults).
    pub networking_written: Vec<String>,
    pub stats_page: Option<super::StatsPage>,
    /// `etcd` as written, when it parsed; `None` when left out.
    pub etcd: Option<super::EtcdSettings>,
}

impl Draft {
    pub(super) fn from_document(root: &Value, found: &Findings) -> Self {
        let Value::Mapping(map) = root else {
            return Self::default();
        };
        let root_path = FieldPath::root();
        // A section left out takes its default, as in the model; one with errors is absent.
        let section = |key: &str, default: Option<Value>| -> Option<Value> {
            let path = root_path.key(key);
            match map.get(key) {
                None => default,
                Some(_) if found.has_error_under(&path) => None,
                Some(v) => Some(v.clone()),
            }
        };
        let empty = || Some(Value::Mapping(Default::default()));
        let nodes = match map.get("nodes") {
            Some(Value::Sequence(items)) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let path = root_path.key("nodes").index(i);
                        if found.has_error_under(&path) {
                            None
                        } else {
                            typed(item.clone())
                        }
                    })
                    .collect(),
            ),
            _ => None,
        };
        Self {
            vip: section("vip", None).and_then(typed),
            vip_written: map.contains_key("vip"),
            load_balancer: section("loadBalancer", empty()).and_then(typed),
            ssh: section("ssh", empty()).and_then(typed),
            nodes,
            networking: section("networking", empty()).and_then(typed),
            pki: section("pki", empty()).and_then(typed),
            sysctls: match section("sysctls", None) {
                Some(Value::Mapping(m)) => {
                    m.keys().filter_map(super::checks::scalar_text).collect()
                }
                _ => Vec::new(),
            },
            kubeadm: section("kubeadm", empty()).and_then(typed),
            etcd: section("etcd", None).and_then(typed),
            networking_written: match map.get("networking") {
                Some(Value::Mapping(m)) => m
                    .keys()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            },
            stats_page: section("statsPage", None).and_then(typed),
        }
    }

    /// The nodes with their index, when every one of them parsed (counting rules would
    /// mislead otherwise).
    pub(super) fn all_nodes(&self) -> Option<Vec<(usize, &Node)>> {
        self.nodes
            .as_ref()?
            .iter()
            .enumerate()
            .map(|(i, n)| n.as_ref().map(|n| (i, n)))
            .collect()
    }

    pub(super) fn parsed_nodes(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.nodes
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }
}

fn typed<T: DeserializeOwned>(v: Value) -> Option<T> {
    serde_yaml_ng::from_value(v).ok()
}

pub(super) fn node_path(i: usize) -> FieldPath {
    FieldPath::root().key("nodes").index(i)
}

pub(super) fn who(i: usize, node: &Node) -> String {
    format!("nodes[{i}] ({})", node.name)
}

pub(super) fn check(d: &Draft, out: &mut Findings) {
    control_plane_count(d, out);
    load_balancer_mode(d, out);
    unique_nodes(d, out);
    vip_against_nodes(d, out);
    subnets(d, out);
    pod_subnet_room(d, out);
    sudo_for_non_root(d, out);
    certificate_lifetimes(d, out);
    sysctl_spellings(d, out);
    super::stats_page::port_is_free(d, out);
    super::etcd::external_etcd(d, out);
    dedicated_balancers(d, out);
}

/// A node that never registers with Kubernetes (it runs only `what`) has no labels or taints:
/// refused rather than silently ignored.
pub(super) fn no_kubernetes_fields(i: usize, node: &Node, what: &str, out: &mut Findings) {
    for (field, written) in [
        ("labels", !node.labels.is_empty()),
        ("taints", node.taints.is_some()),
    ] {
        if written {
            out.error(
                &node_path(i).key(field),
                format!(
                    "{} runs only {what} and never registers with Kubernetes, so it has no \
                     {field}; remove `{field}`",
                    who(i, node)
                ),
            );
        }
    }
}

/// The role of the nodes that hold the VIP: `role: loadbalancer` when any node has it, else
/// the control planes.
fn vrrp_role(d: &Draft) -> Role {
    if d.parsed_nodes().any(|(_, n)| n.role == Role::LoadBalancer) {
        Role::LoadBalancer
    } else {
        Role::ControlPlane
    }
}

/// Dedicated load-balancer nodes (the Alpine + keepalived + haproxy guide's) hold khagent's
/// VIP and run nothing of Kubernetes: they need the VIP mode, and what only a Kubernetes node
/// reads is refused on them rather than silently ignored.
fn dedicated_balancers(d: &Draft, out: &mut Findings) {
    let balancers: Vec<(usize, &Node)> = d
        .parsed_nodes()
        .filter(|(_, n)| n.role == Role::LoadBalancer)
        .collect();
    let Some((first, _)) = balancers.first() else {
        return;
    };
    if let Some(lb) = &d.load_balancer
        && lb.mode != LbMode::Vip
    {
        let mode = match lb.mode {
            LbMode::NodeLocal => "node-local",
            _ => "external",
        };
        out.error(
            &node_path(*first).key("role"),
            format!(
                "`role: loadbalancer` nodes hold khagent's VIP, and loadBalancer.mode: {mode} has \
                 none: remove these nodes, or use loadBalancer.mode: vip with a `vip`"
            ),
        );
    }
    for (i, node) in &balancers {
        no_kubernetes_fields(*i, node, "khagent", out);
    }
    if let Some(all) = d.all_nodes()
        && all
            .iter()
            .filter(|(_, n)| n.role == Role::LoadBalancer)
            .count()
            == 1
    {
        out.warning(
            &FieldPath::root().key("nodes"),
            "one `role: loadbalancer` node: when it fails nothing holds the VIP and the API is \
             unreachable through it; add a second (the guides run two), which takes the VIP over \
             within a second",
        );
    }
}

/// etcd needs a majority of members to accept writes: with n members it survives
/// (n-1)/2 failures, so an even n survives no more than n-1 would.
fn control_plane_count(d: &Draft, out: &mut Findings) {
    let Some(nodes) = d.all_nodes() else { return };
    let path = FieldPath::root().key("nodes");
    if nodes.is_empty() {
        out.error(
            &path,
            "the list of nodes is empty; add at least one node with `role: control-plane`",
        );
        return;
    }
    let cps = nodes
        .iter()
        .filter(|(_, n)| n.role == Role::ControlPlane)
        .count();
    if cps == 0 {
        out.error(
            &path,
            "no node has `role: control-plane`; the cluster needs at least one (three to survive \
             the loss of one)",
        );
    } else if cps % 2 == 0 && !nodes.iter().any(|(_, n)| n.role == Role::Etcd) {
        // With `role: etcd` nodes the control planes hold no etcd member: `external_etcd`
        // counts the members instead.
        out.warning(&path, quorum_warning(cps, "control-plane nodes"));
    }
}

/// The warning for an even number of etcd members: with n members etcd survives (n-1)/2
/// failures, so an even n survives no more than n-1 would.
pub(super) fn quorum_warning(n: usize, members: &str) -> String {
    let tolerated = n.saturating_sub(1) / 2;
    let failures = if tolerated == 0 {
        "no failure".to_owned()
    } else {
        format!("only {tolerated} failure(s), like {}", n - 1)
    };
    format!(
        "{n} {members}: etcd needs {} of {n} members for quorum, so they tolerate {failures}; \
         an odd number ({}) is the usual choice",
        n / 2 + 1,
        n + 1
    )
}

/// The VIP, the node-local balancer and an external balancer are three ways to the API
/// servers; each mode has its own fields, and a field of another mode would be silently
/// ignored.
fn load_balancer_mode(d: &Draft, out: &mut Findings) {
    let Some(lb) = &d.load_balancer else { return };
    let path = FieldPath::root().key("loadBalancer");
    let vip = FieldPath::root().key("vip");
    // The name is what `/etc/hosts` maps per node; a resolver never looks an address up
    // there, and a name without a dot is a search-domain candidate.
    if let Some(name) = &lb.dns_name {
        let text = name.to_string();
        if text.parse::<IpAddr>().is_ok() || !text.contains('.') {
            out.error(
                &path.key("dnsName"),
                format!(
                    "{text:?} is not a fully qualified name: each node's /etc/hosts maps the \
                     endpoint's name to where that node reaches the API, so write a name such \
                     as k8s-api.cluster.internal"
                ),
            );
        }
    }
    if lb.mode != LbMode::External && lb.address.is_some() {
        out.error(
            &path.key("address"),
            "loadBalancer.address names an external balancer: set `mode: external` with it, \
             or remove it",
        );
    }
    match lb.mode {
        LbMode::Vip => {
            if !d.vip_written {
                out.error(
                    &vip,
                    "missing field `vip`: write `vip: { address: 192.168.1.100 }`, or set \
                     `loadBalancer: { mode: node-local, dnsName: … }` to balance on every node \
                     without a VIP, or `mode: external` behind a balancer you run",
                );
            }
            for (field, value) in [
                ("port", lb.port.map(|p| p.get().to_string())),
                ("dnsName", lb.dns_name.as_ref().map(ToString::to_string)),
            ] {
                if value.is_some() {
                    out.error(
                        &path.key(field),
                        format!(
                            "loadBalancer.{field} applies to `mode: node-local` and `mode: \
                             external` only; with the VIP write vip.{field}, or set \
                             loadBalancer.mode"
                        ),
                    );
                }
            }
        }
        LbMode::NodeLocal => {
            if d.vip_written {
                out.error(
                    &vip,
                    "a VIP next to node-local balancers (for clients outside the cluster) is \
                     not supported yet: remove `vip`, or use loadBalancer.mode: vip",
                );
            }
            if let Some(p) = lb.port
                && let Err(why) = super::checks::balancer_port(p.get())
            {
                out.error(&path.key("port"), why);
            }
            if lb.dns_name.is_none() {
                out.error(
                    &path.key("dnsName"),
                    "node-local mode needs the API endpoint's name, which every node resolves \
                     to 127.0.0.1: write e.g. `dnsName: k8s-api.cluster.internal`",
                );
            }
        }
        LbMode::External => {
            if d.vip_written {
                out.error(
                    &vip,
                    "an external load balancer holds the API address and khactl runs no VRRP \
                     (no vip.address, no vip.routerId): remove `vip`, or use loadBalancer.mode: \
                     vip",
                );
            }
            if let Some(p) = lb.port
                && p != Port::API_SERVER
            {
                out.error(
                    &path.key("port"),
                    format!(
                        "the external balancer must listen on {api}, the API servers' port: \
                         control planes reach the API name on 127.0.0.1 at the balancer's port, \
                         which is their own API server only on {api}; forward {api} to every \
                         control plane's {api}, or leave `port` out",
                        api = Port::API_SERVER.get()
                    ),
                );
            }
            if lb.dns_name.is_none() {
                out.error(
                    &path.key("dnsName"),
                    "external mode needs the API endpoint's name: control planes resolve it to \
                     127.0.0.1 (a cloud balancer drops a backend's connection to itself), \
                     workers to the balancer; write e.g. `dnsName: k8s-api.cluster.internal`",
                );
            }
            if let Some(address) = lb.address {
                for (i, node) in d.parsed_nodes() {
                    if node.address == IpAddr::V4(address) {
                        out.error(
                            &path.key("address"),
                            format!(
                                "{address} is also the address of {}; write the external \
                                 balancer's own address",
                                who(i, node)
                            ),
                        );
                    }
                }
            }
            if lb.address.is_none() {
                out.warning(
                    &path.key("address"),
                    "no address for the external balancer: workers resolve loadBalancer.dnsName \
                     through DNS, which must answer with the balancer's address",
                );
            }
        }
    }
}

fn unique_nodes(d: &Draft, out: &mut Findings) {
    unique(d, "name", |n| n.name.to_string(), out);
    unique(d, "address", |n| n.address.to_string(), out);
}

/// Reports every node whose `field` repeats an earlier node's, naming that node.
fn unique(d: &Draft, field: &str, value: impl Fn(&Node) -> String, out: &mut Findings) {
    let mut first: HashMap<String, (usize, &Node)> = HashMap::new();
    for (i, node) in d.parsed_nodes() {
        let v = value(node);
        match first.get(&v) {
            Some((j, owner)) => out.error(
                &node_path(i).key(field),
                format!(
                    "{v} is also the {field} of {}; give each node its own {field}",
                    who(*j, owner)
                ),
            ),
            None => {
                first.insert(v, (i, node));
            }
        }
    }
}

fn vip_against_nodes(d: &Draft, out: &mut Findings) {
    let Some(vip) = &d.vip else { return };
    let vip_path = FieldPath::root().key("vip");
    for (i, node) in d.parsed_nodes() {
        if node.address == IpAddr::V4(vip.address) {
            out.error(
                &vip_path.key("address"),
                format!(
                    "{} is also the address of {}; the VIP must be a free address on the \
                     control-plane nodes' subnet",
                    vip.address,
                    who(i, node)
                ),
            );
        }
    }
    // khagent's VRRP is version 3 for IPv4 (RFC 5798 §5.1.1): its adverts leave from, and
    // its peers are, the control planes' IPv4 addresses.
    let role = vrrp_role(d);
    if role == Role::ControlPlane
        && vip.port == Port::API_SERVER
        && let Err(why) = super::checks::balancer_port(vip.port.get())
    {
        out.error(&vip_path.key("port"), why);
    }
    for (i, node) in d
        .parsed_nodes()
        .filter(|(_, n)| n.role == role && n.address.is_ipv6())
    {
        out.error(
            &node_path(i).key("address"),
            format!(
                "{} node {} has an IPv6 address, but the VIP and its VRRP advertisements are \
                 IPv4: give {} its IPv4 address",
                role.as_str(),
                node.address,
                who(i, node)
            ),
        );
    }
    // /31 and /32 have no network or broadcast address (RFC 3021).
    let Some(len) = vip.prefix_length else { return };
    let Ok(net) = Ipv4Net::new(vip.address, len) else {
        return;
    };
    let special = if vip.address == net.network() {
        Some("network")
    } else if vip.address == net.broadcast() {
        Some("broadcast")
    } else {
        None
    };
    if let Some(which) = special.filter(|_| len <= 30) {
        out.error(
            &vip_path.key("address"),
            format!(
                "{} is the {which} address of {}; pick a host address",
                vip.address,
                net.trunc()
            ),
        );
    }
    // VRRP advertisements are link-local multicast: every holder of the VIP must be on it.
    for (i, node) in d.parsed_nodes().filter(|(_, n)| n.role == role) {
        let inside = match node.address {
            IpAddr::V4(a) => net.contains(&a),
            IpAddr::V6(_) => continue, // reported above
        };
        if !inside {
            out.error(
                &node_path(i).key("address"),
                format!(
                    "{role} node {} is outside the VIP's subnet {}; the VIP moves between \
                     {role} nodes on one segment (or correct vip.prefixLength)",
                    node.address,
                    net.trunc(),
                    role = role.as_str()
                ),
            );
        }
    }
}

fn subnets(d: &Draft, out: &mut Findings) {
    let Some(net) = &d.networking else { return };
    let path = FieldPath::root().key("networking");
    let (pods, services) = (net.pod_subnet, net.service_subnet);
    // A range the user never wrote is a default they may not know they chose.
    let shown = |name: &str, subnet: IpNet| {
        if d.networking_written.iter().any(|w| w == name) {
            subnet.to_string()
        } else {
            format!("{subnet} (the default {name})")
        }
    };
    let (pods_shown, services_shown) = (shown("podSubnet", pods), shown("serviceSubnet", services));
    if matches!(
        (pods, services),
        (IpNet::V4(_), IpNet::V6(_)) | (IpNet::V6(_), IpNet::V4(_))
    ) {
        out.error(
            &path.key("serviceSubnet"),
            format!(
                "{services_shown} and podSubnet {pods_shown} are of different IP families; \
                 khactl builds single-stack clusters"
            ),
        );
    } else if pods.contains(&services.network()) || services.contains(&pods.network()) {
        out.error(
            &path.key("serviceSubnet"),
            format!(
                "{services_shown} overlaps podSubnet {pods_shown}; pods and services need \
                 separate ranges"
            ),
        );
    }
    for (name, subnet) in [("podSubnet", pods), ("serviceSubnet", services)] {
        let mut clashes: Vec<String> = d
            .parsed_nodes()
            .filter(|(_, n)| subnet.contains(&n.address))
            .map(|(i, n)| format!("{} {}", who(i, n), n.address))
            .collect();
        if let Some(vip) = &d.vip
            && subnet.contains(&IpAddr::V4(vip.address))
        {
            clashes.push(format!("the VIP {}", vip.address));
        }
        if !clashes.is_empty() {
            out.error(
                &path.key(name),
                format!(
                    "{} contains {}; cluster ranges must not include machine addresses, or \
                     traffic to them is routed into the cluster: set networking.{name} to a \
                     range no machine uses",
                    shown(name, subnet),
                    clashes.join(", ")
                ),
            );
        }
    }
}

/// kubeadm turns on node CIDR allocation when a pod subnet is set, and the controller
/// manager carves a /24 (IPv4) or /64 (IPv6) per node out of it unless told otherwise.
fn pod_subnet_room(d: &Draft, out: &mut Findings) {
    let (Some(net), Some(kubeadm)) = (&d.networking, &d.kubeadm) else {
        return;
    };
    let cm = &kubeadm.controller_manager_extra_args;
    if cm.keys().any(|k| k.starts_with("node-cidr-mask-size")) {
        return;
    }
    let pods = net.pod_subnet;
    let per_node = match pods {
        IpNet::V4(_) => 24,
        IpNet::V6(_) => 64,
    };
    let path = FieldPath::root().key("networking").key("podSubnet");
    if pods.prefix_len() > per_node {
        out.error(
            &path,
            format!(
                "{pods} is smaller than the /{per_node} each node gets; use a /{} or larger range, \
                 e.g. 10.244.0.0/16",
                per_node - 8
            ),
        );
        return;
    }
    let room = 1u128 << u32::from(per_node - pods.prefix_len()).min(100);
    // etcd nodes run no kubelet and get no pod range.
    let etcd = d
        .parsed_nodes()
        .filter(|(_, n)| n.role == Role::Etcd)
        .count();
    let nodes = d.nodes.as_ref().map_or(0, Vec::len).saturating_sub(etcd) as u128;
    if room < nodes {
        out.warning(
            &path,
            format!(
                "{pods} has room for {room} node(s) at a /{per_node} each, but {nodes} are listed"
            ),
        );
    }
}

/// khactl writes files under /etc and loads sysctls: every node needs root, directly or
/// through passwordless sudo.
fn sudo_for_non_root(d: &Draft, out: &mut Findings) {
    let Some(ssh) = &d.ssh else { return };
    let mut default_reported = false;
    for (i, node) in d.parsed_nodes() {
        let user = node.ssh.user.as_deref().unwrap_or(&ssh.user);
        let sudo = node.ssh.sudo.unwrap_or(ssh.sudo);
        if user == "root" || sudo {
            continue;
        }
        if node.ssh.user.is_none() && node.ssh.sudo.is_none() {
            if !default_reported {
                default_reported = true;
                out.error(
                    &FieldPath::root().key("ssh").key("user"),
                    format!(
                        "user {user:?} is not root and ssh.sudo is false; khactl needs root on every \
                         node: set `ssh.sudo: true` (passwordless sudo) or log in as root"
                    ),
                );
            }
        } else {
            out.error(
                &node_path(i).key("ssh"),
                format!(
                    "{} logs in as {user:?}, not root, without sudo; set `sudo: true` in this \
                     node's ssh (or `ssh.sudo: true`) or log in as root",
                    node.name
                ),
            );
        }
    }
}

fn certificate_lifetimes(d: &Draft, out: &mut Findings) {
    let Some(pki) = &d.pki else { return };
    if pki.cert_validity_days > pki.ca_validity_days {
        out.error(
            &FieldPath::root().key("pki").key("certValidityDays"),
            format!(
                "{} days outlives the CA ({} days, caValidityDays); a certificate is worthless once \
                 its CA expires",
                pki.cert_validity_days, pki.ca_validity_days
            ),
        );
    }
}

fn sysctl_spellings(d: &Draft, out: &mut Findings) {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for key in &d.sysctls {
        // `a/b.c/d` and `a.b/c.d` are one key: compare the paths they name.
        let Ok(parsed) = super::types::SysctlKey::parse(key) else {
            continue;
        };
        if let Some(first) = seen.insert(parsed.path().to_owned(), key) {
            out.error(
                &FieldPath::root().key("sysctls").key(key),
                format!("{key:?} is the same sysctl as {first:?}; write it once"),
            );
        }
    }
}
