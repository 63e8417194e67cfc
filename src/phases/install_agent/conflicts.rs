//! What on a control plane would fight the agent khactl is about to install, found before
//! anything changes (issue #12, item 12) and reported with what to do:
//!
//! - the VIP already on one of its interfaces, not recorded by khagent as its own (a keepalived,
//!   an `ip addr add`): the agent would refuse to start there ([`vip_held_by_another`]);
//! - a TCP listener on the VIP's port at the VIP or a wildcard address (the guides' haproxy):
//!   the agent could not bind it ([`port_taken`]);
//! - a keepalived set up for this VIP or VRID, running or as a static pod, and the guides'
//!   haproxy static pod ([`keepalived_or_haproxy`]);
//! - another VRRP router advertising our VRID on the segment ([`foreign_routers`]): that needs
//!   a listen on the node, which `InstallAgent::run` does with `khagent probe-vrid` once the
//!   binary is in place and before the agent first starts.
//!
//! Everything here is pure: it reads facts (files the probe returned, `/proc/net/*` among them)
//! and what the probe heard.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use khagent::vrrp::probe::Heard;

use crate::agent::AGENT_CONFIG;
use crate::facts::HostFacts;
use crate::inventory::{Inventory, Node};

const TCP: &str = "/proc/net/tcp";
const TCP6: &str = "/proc/net/tcp6";
const RAW: &str = "/proc/net/raw";
const KEEPALIVED_PID: &str = "/run/keepalived.pid";
const KEEPALIVED_CONF: &str = "/etc/keepalived/keepalived.conf";
const HAPROXY_PID: &str = "/run/haproxy.pid";
/// The kubeadm HA guide's "static pods" option runs both from the kubelet's manifests.
const KEEPALIVED_POD: &str = "/etc/kubernetes/manifests/keepalived.yaml";
const HAPROXY_POD: &str = "/etc/kubernetes/manifests/haproxy.yaml";

/// The agent's record of a VIP it added (see docs/vrrp.md), at khactl's rendering (default
/// `state_dir`).
fn marker_path() -> String {
    format!(
        "{}/{}",
        khagent::vrrp::DEFAULT_STATE_DIR,
        khagent::vrrp::MARKER_FILE
    )
}

/// The files preflight reads on a control plane. `/proc/net/tcp*` list every TCP socket, so on
/// a busy node they are the largest of the probe's reads (about 150 bytes a socket).
pub fn files() -> Vec<String> {
    [
        TCP,
        TCP6,
        RAW,
        KEEPALIVED_PID,
        KEEPALIVED_CONF,
        HAPROXY_PID,
        KEEPALIVED_POD,
        HAPROXY_POD,
    ]
    .iter()
    .map(|p| (*p).to_owned())
    .chain([marker_path()])
    .collect()
}

fn text<'a>(facts: &'a HostFacts, path: &str) -> Option<std::borrow::Cow<'a, str>> {
    facts.file(Path::new(path)).map(String::from_utf8_lossy)
}

fn present(facts: &HostFacts, path: &str) -> bool {
    facts.file(Path::new(path)).is_some()
}

/// Whether khactl installed an agent on this node before (its config is there).
fn agent_installed(facts: &HostFacts) -> bool {
    present(facts, AGENT_CONFIG)
}

/// Every conflict on `node`, one message each.
pub fn problems(inv: &Inventory, facts: &HostFacts) -> Vec<String> {
    let mut out = vip_held_by_another(inv, facts);
    out.extend(port_taken(inv, facts));
    out.extend(keepalived_or_haproxy(inv, facts));
    out
}

/// The VIP on an interface of this node, and the agent's record does not name it there.
pub fn vip_held_by_another(inv: &Inventory, facts: &HostFacts) -> Vec<String> {
    let Some(vip) = inv.vip.as_ref().map(|v| v.address) else {
        return Vec::new();
    };
    let record = text(facts, &marker_path());
    facts
        .addresses
        .iter()
        .filter(|(_, net)| net.addr() == vip)
        .filter(|(dev, net)| {
            let ours = khagent::vrrp::marker_line(vip, net.prefix_len(), dev);
            record.as_deref() != Some(ours.as_str())
        })
        .map(|(dev, net)| {
            format!(
                "vip.address {vip} is already on {dev} of this node and khagent did not add it \
                 (keepalived, or an `ip addr add`?): khagent removes only a VIP it added and \
                 would not start here. Stop whatever holds it, or remove it: `ip addr del \
                 {vip}/{} dev {dev}`",
                net.prefix_len()
            )
        })
        .collect()
}

/// Listening TCP sockets in a `/proc/net/tcp` or `/proc/net/tcp6` text. Addresses are printed
/// as 32-bit words in the node's byte order: little-endian on both architectures khactl
/// supports (x86_64, aarch64).
pub fn listeners(table: &str) -> Vec<SocketAddr> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            (fields.nth(1)? == LISTEN).then_some(())?;
            let (addr, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let mut bytes = Vec::with_capacity(16);
            for word in addr.as_bytes().chunks(8) {
                let word = u32::from_str_radix(std::str::from_utf8(word).ok()?, 16).ok()?;
                bytes.extend_from_slice(&word.to_le_bytes());
            }
            let ip = match bytes.len() {
                4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
                16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
                _ => return None,
            };
            Some(SocketAddr::new(ip, port))
        })
        .collect()
}

/// A listener that would keep the agent from binding VIP:port, or take its clients: on a
/// wildcard address (never the agent's), or on the VIP itself where no agent was installed.
pub fn port_taken(inv: &Inventory, facts: &HostFacts) -> Vec<String> {
    let (vip, port, field) = match (&inv.vip, inv.node_local()) {
        (Some(v), None) => (v.address, v.port.get(), "vip.port"),
        (_, nl) => (
            Ipv4Addr::LOCALHOST,
            nl.map_or(crate::inventory::Port::NODE_LOCAL_DEFAULT, |n| n.port)
                .get(),
            "loadBalancer.port",
        ),
    };
    let who = if present(facts, HAPROXY_PID) {
        format!(" (haproxy runs here: {HAPROXY_PID})")
    } else {
        String::new()
    };
    [TCP, TCP6]
        .iter()
        .filter_map(|table| text(facts, table))
        .flat_map(|t| listeners(&t))
        .filter(|a| a.port() == port)
        .filter(|a| match a.ip().to_canonical() {
            ip if ip.is_unspecified() => true,
            ip => ip == IpAddr::V4(vip) && !agent_installed(facts),
        })
        .map(|a| {
            format!(
                "something already listens on {a}{who}: khagent could not serve \
                 {vip}:{port} here. Stop it (the kubeadm guides' haproxy is what khagent \
                 replaces: `systemctl disable --now haproxy`), or choose another {field}"
            )
        })
        .collect()
}

/// Whether a `/proc/net/raw` text shows a raw socket for IP protocol 112 (VRRP): its "port"
/// column is the protocol.
pub fn vrrp_socket_open(raw: &str) -> bool {
    raw.lines().skip(1).any(|line| {
        line.split_whitespace()
            .nth(1)
            .and_then(|local| local.split_once(':'))
            .is_some_and(|(_, proto)| u16::from_str_radix(proto, 16) == Ok(112))
    })
}

/// A keepalived that serves this VIP or VRID (running, or the guides' static pod), and the
/// guides' haproxy static pod, which would take the VIP's port once the kubelet runs.
pub fn keepalived_or_haproxy(inv: &Inventory, facts: &HostFacts) -> Vec<String> {
    let mut out = Vec::new();
    let vrrp_speaker =
        !agent_installed(facts) && text(facts, RAW).is_some_and(|r| vrrp_socket_open(&r));
    let running = [
        (present(facts, KEEPALIVED_PID), KEEPALIVED_PID),
        (present(facts, KEEPALIVED_POD), KEEPALIVED_POD),
        (
            vrrp_speaker,
            "a raw socket for VRRP (IP protocol 112) is open",
        ),
    ]
    .into_iter()
    .find_map(|(found, how)| found.then_some(how));
    if let (Some(how), Some(vip)) = (running, &inv.vip) {
        let id = vip.router_id.get();
        let ours = match text(facts, KEEPALIVED_CONF) {
            // Without its config, it may be ours: say so rather than guess.
            None => Some(format!(
                "(no {KEEPALIVED_CONF} to tell which VIP it serves)"
            )),
            Some(conf) => {
                let words: Vec<&str> = conf.split_whitespace().collect();
                let vrid = words
                    .windows(2)
                    .any(|w| w[0] == "virtual_router_id" && w[1] == id.to_string());
                let vip = vip.address.to_string();
                let holds_vip = words
                    .iter()
                    .any(|w| w.split('/').next() == Some(vip.as_str()));
                (vrid || holds_vip).then(|| {
                    format!(
                        "configured for this cluster's VIP {vip} or VRID {id} in {KEEPALIVED_CONF}"
                    )
                })
            }
        };
        if let Some(what) = ours {
            out.push(format!(
                "keepalived runs on this node ({how}), {what}: khagent replaces it, and the two \
                 would fight for the VIP. Stop and disable it (`systemctl disable --now \
                 keepalived`, or move {KEEPALIVED_POD} out of the kubelet's manifests), or give \
                 this cluster another vip.routerId"
            ));
        }
    }
    if present(facts, HAPROXY_POD) {
        out.push(format!(
            "the kubelet runs haproxy as a static pod ({HAPROXY_POD}): khagent replaces it, and \
             it would take the VIP's port; move it out of the kubelet's manifests"
        ));
    }
    out
}

/// Routers heard advertising our VRID that are not our VRRP nodes (control planes or
/// load-balancer nodes): they would fight our agents for the VIP, or be dropped as strangers
/// while they hold it.
pub fn foreign_routers(inv: &Inventory, interface: &str, heard: &[Heard]) -> Vec<String> {
    let ours: Vec<IpAddr> = inv.vrrp_nodes().map(|n: &Node| n.address).collect();
    let Some(id) = inv.vip.as_ref().map(|v| v.router_id.get()) else {
        return Vec::new();
    };
    heard
        .iter()
        .filter(|h| !ours.contains(&IpAddr::V4(h.src)))
        .map(|h| {
            let addresses: Vec<String> = h.addresses.iter().map(ToString::to_string).collect();
            format!(
                "another VRRP router uses VRID {id} on {interface}: {} (priority {}, advertising \
                 {}). khagent would fight it for the VIP. Give this cluster a VRID no one else \
                 uses on the segment (vip.routerId; {id} is also the keepalived guides' \
                 default), or stop that router",
                h.src,
                h.priority,
                addresses.join(", ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::phases::test_support::debian_host;

    // cp1..cp3 at 10.0.0.11-13, VIP 10.0.0.100 on port 8443, VRID 61.
    use super::super::tests::inventory;

    const TABLE_HEAD: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

    /// A fresh node: nothing listens on 8443, no VRRP, only its own address.
    fn node(files: &[(&str, &str)]) -> HostFacts {
        let mut all: BTreeMap<PathBuf, Option<Vec<u8>>> = super::files()
            .into_iter()
            .map(|p| (p.into(), None))
            .collect();
        all.insert(AGENT_CONFIG.into(), None);
        for (path, content) in files {
            all.insert((*path).into(), Some(content.as_bytes().to_vec()));
        }
        HostFacts {
            addresses: vec![("eth0".into(), "10.0.0.11/24".parse().unwrap())],
            files: all,
            ..debian_host()
        }
    }

    /// `/proc/net/tcp` as the kernel prints it on little-endian machines: 0.0.0.0:8443 and
    /// 127.0.0.1:9901 listening, one established connection to 10.0.0.100:8443.
    const TCP_TABLE: &str = "   0: 00000000:20FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   1: 0100007F:26AD 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n   2: 6400000A:20FB 0B00000A:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1\n";

    #[test]
    fn reads_listeners_from_proc_net_tcp_in_both_families() {
        let v4 = listeners(&format!("{TABLE_HEAD}{TCP_TABLE}"));
        assert_eq!(
            v4,
            [
                "0.0.0.0:8443".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:9901".parse().unwrap()
            ]
        );
        let v6 = listeners(&format!(
            "{TABLE_HEAD}   0: 00000000000000000000000000000000:20FB 00000000000000000000000000000000:0000 0A 0 0 0 0 0 1\n   1: 0000000000000000FFFF00006400000A:20FB 00000000000000000000000000000000:0000 0A 0 0 0 0 0 1\n"
        ));
        assert_eq!(
            v6,
            [
                "[::]:8443".parse::<SocketAddr>().unwrap(),
                "[::ffff:10.0.0.100]:8443".parse().unwrap()
            ]
        );
    }

    #[test]
    fn a_wildcard_listener_on_the_vip_port_is_reported_naming_haproxy() {
        let inv = inventory();
        let facts = node(&[
            (TCP, &format!("{TABLE_HEAD}{TCP_TABLE}")),
            (HAPROXY_PID, "42\n"),
        ]);
        let p = port_taken(&inv, &facts);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("something already listens on 0.0.0.0:8443 (haproxy runs here"),
            "{p:?}"
        );
        // On another port it is none of our business.
        let other = TCP_TABLE.replace("20FB 00000000:0000 0A", "1F90 00000000:0000 0A");
        assert!(port_taken(&inv, &node(&[(TCP, &format!("{TABLE_HEAD}{other}"))])).is_empty());
    }

    #[test]
    fn a_listener_on_the_vip_is_foreign_only_where_no_agent_was_installed() {
        let inv = inventory();
        let table = format!(
            "{TABLE_HEAD}   0: 6400000A:20FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1\n"
        );
        assert_eq!(port_taken(&inv, &node(&[(TCP, &table)])).len(), 1);
        let ours = node(&[(TCP, &table), (AGENT_CONFIG, "listen: 10.0.0.100:8443\n")]);
        assert!(port_taken(&inv, &ours).is_empty());
    }

    #[test]
    fn a_vip_on_the_node_is_ours_only_when_the_agent_recorded_it() {
        let inv = inventory();
        let mut held = node(&[]);
        held.addresses
            .push(("eth0".into(), "10.0.0.100/24".parse().unwrap()));
        let p = vip_held_by_another(&inv, &held);
        assert_eq!(p.len(), 1);
        assert!(
            p[0].contains("`ip addr del 10.0.0.100/24 dev eth0`"),
            "{p:?}"
        );
        held.files
            .insert(marker_path().into(), Some(b"10.0.0.100/24 eth0\n".to_vec()));
        assert!(vip_held_by_another(&inv, &held).is_empty());
        // A record for another interface does not cover it.
        held.files
            .insert(marker_path().into(), Some(b"10.0.0.100/24 eth1\n".to_vec()));
        assert_eq!(vip_held_by_another(&inv, &held).len(), 1);
    }

    #[test]
    fn keepalived_is_reported_when_it_serves_our_vrid_or_vip_or_cannot_be_told() {
        let inv = inventory();
        let guide = "vrrp_instance VI_1 {\n  state MASTER\n  interface eth0\n  virtual_router_id 61\n  priority 101\n  virtual_ipaddress {\n    10.0.0.200\n  }\n}\n";
        let p = keepalived_or_haproxy(
            &inv,
            &node(&[(KEEPALIVED_PID, "7\n"), (KEEPALIVED_CONF, guide)]),
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("keepalived runs on this node (/run/keepalived.pid), configured"),
            "{p:?}"
        );
        let other = guide.replace("virtual_router_id 61", "virtual_router_id 7");
        assert!(
            keepalived_or_haproxy(
                &inv,
                &node(&[(KEEPALIVED_PID, "7\n"), (KEEPALIVED_CONF, &other)])
            )
            .is_empty()
        );
        let our_vip = other.replace("10.0.0.200", "10.0.0.100/24");
        assert_eq!(
            keepalived_or_haproxy(
                &inv,
                &node(&[(KEEPALIVED_PID, "7\n"), (KEEPALIVED_CONF, &our_vip)])
            )
            .len(),
            1
        );
        // A VRRP socket with no khagent installed and no keepalived.conf to read.
        let raw = format!(
            "{TABLE_HEAD}  112: 00000000:0070 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 9 2 0 0\n"
        );
        assert!(vrrp_socket_open(&raw));
        let p = keepalived_or_haproxy(&inv, &node(&[(RAW, &raw)]));
        assert!(
            p[0].contains("a raw socket for VRRP") && p[0].contains("no /etc/keepalived"),
            "{p:?}"
        );
        // Once khagent is installed, that socket is its own.
        assert!(keepalived_or_haproxy(&inv, &node(&[(RAW, &raw), (AGENT_CONFIG, "x")])).is_empty());
        assert!(keepalived_or_haproxy(&inv, &node(&[(RAW, TABLE_HEAD)])).is_empty());
        let pod = keepalived_or_haproxy(&inv, &node(&[(HAPROXY_POD, "kind: Pod\n")]));
        assert!(pod[0].contains("haproxy as a static pod"), "{pod:?}");
    }

    #[test]
    fn routers_heard_with_our_vrid_are_foreign_unless_they_are_our_control_planes() {
        let inv = inventory();
        let heard = |src: [u8; 4]| Heard {
            src: Ipv4Addr::from(src),
            priority: 100,
            max_advert_int_cs: 100,
            addresses: vec![Ipv4Addr::new(10, 0, 0, 200)],
        };
        assert!(foreign_routers(&inv, "eth0", &[heard([10, 0, 0, 12])]).is_empty());
        let p = foreign_routers(&inv, "eth0", &[heard([10, 0, 0, 12]), heard([10, 0, 0, 5])]);
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("another VRRP router uses VRID 61 on eth0: 10.0.0.5 (priority 100, advertising 10.0.0.200)"),
            "{p:?}"
        );
    }
}
