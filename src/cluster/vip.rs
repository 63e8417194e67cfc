//! Who holds the virtual IP, and whether the load balancer answers on it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::bail;

use crate::facts::HostFacts;
use crate::inventory::Inventory;
use crate::os::net;
use crate::remote::{Fleet, NodeHandle, RemoteCommand};

/// One poll of one node may not hold up the others.
const POLL_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Which of `nodes` have the VIP on an interface now, in host order, asked side by side.
pub async fn holders(fleet: &Fleet, nodes: &[&str], vip: Ipv4Addr) -> anyhow::Result<Vec<String>> {
    let asked = |h: &NodeHandle| nodes.contains(&h.node());
    let mut out = Vec::new();
    for (node, held) in fleet.each(asked, async |h| holds_on(h, vip).await).await {
        if held? {
            out.push(node);
        }
    }
    Ok(out)
}

/// Whether `host` has `vip` on an interface now.
pub async fn holds_on(host: &NodeHandle, vip: Ipv4Addr) -> anyhow::Result<bool> {
    let cmd = RemoteCommand::new(["ip", "-o", "-4", "addr", "show"])
        .read_only()
        .timeout(POLL_COMMAND_TIMEOUT);
    Ok(holds(&host.run(&cmd).await?.stdout_str(), vip))
}

/// `$1` = VIP, `$2` = port, `$3` = seconds: inserts (once) the iptables rule that drops new
/// connections (SYNs) to the VIP's port on this node, and leaves a process on the node that
/// takes it out after `$3` seconds whatever becomes of khactl (Ctrl-C, a lost connection):
/// a forgotten rule would drop every new connection to a holder that kept the VIP.
const HOLD: &str = r#"rule="INPUT -p tcp -d $1 --dport $2 --syn -m comment --comment khactl-vip-handover -j DROP"
iptables -w 2 -C $rule 2>/dev/null || iptables -w 2 -I $rule || exit
setsid -f sh -c "sleep $3; while iptables -w 2 -D $rule 2>/dev/null; do :; done" \
  </dev/null >/dev/null 2>&1
"#;

/// `$1` = VIP, `$2` = port: takes out every copy of [`HOLD`]'s rule; fails only if one is
/// still there.
const RELEASE: &str = r#"rule="INPUT -p tcp -d $1 --dport $2 --syn -m comment --comment khactl-vip-handover -j DROP"
while iptables -w 2 -D $rule 2>/dev/null; do :; done
! iptables -w 2 -C $rule 2>/dev/null
"#;

/// How long the rule may live at most, whatever happens to the run that set it.
const HOLD_AT_MOST_SECS: u32 = 5;

/// Before a planned handover: new connections to `vip:port` on this holder are dropped,
/// not refused, so their clients send the SYN again a second later (Linux's first
/// retransmission), by then to the next holder, while the requests already in flight here
/// finish. A connection started here just before the VIP moved would be cut: the client's
/// next packets reach the new holder, which never saw it. The rule goes by itself after
/// a few seconds; [`release_new_connections`] takes it out at once.
pub async fn hold_new_connections(
    host: &NodeHandle,
    vip: Ipv4Addr,
    port: u16,
) -> anyhow::Result<()> {
    let cmd = RemoteCommand::script(
        "vip-hold",
        HOLD,
        [
            vip.to_string(),
            port.to_string(),
            HOLD_AT_MOST_SECS.to_string(),
        ],
    )
    .timeout(POLL_COMMAND_TIMEOUT);
    host.run(&cmd).await?;
    Ok(())
}

/// Takes [`hold_new_connections`]'s rule out again (every copy of it).
pub async fn release_new_connections(
    host: &NodeHandle,
    vip: Ipv4Addr,
    port: u16,
) -> anyhow::Result<()> {
    let cmd = RemoteCommand::script("vip-release", RELEASE, [vip.to_string(), port.to_string()])
        .timeout(POLL_COMMAND_TIMEOUT);
    host.run(&cmd).await?;
    Ok(())
}

/// Whether `ip -o -4 addr show` output lists `vip` (`2: eth0    inet 10.0.0.100/24 …`).
pub fn holds(ip_addr_output: &str, vip: Ipv4Addr) -> bool {
    ip_addr_output.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.any(|w| w == "inet")
            && words
                .next()
                .and_then(|cidr| cidr.split('/').next())
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
                == Some(vip)
    })
}

/// Whether a TCP connection from `from` to `vip:port` succeeds.
pub async fn answers(from: &NodeHandle, vip: Ipv4Addr, port: u16) -> anyhow::Result<bool> {
    let cmd = net::tcp_connect(&vip.to_string(), port).timeout(POLL_COMMAND_TIMEOUT);
    let out = from.run_unchecked(&cmd).await?;
    if out.status == Some(net::NO_TCP_TOOL) {
        bail!(
            "{} cannot test a connection to {vip}:{port}: {}",
            from.node(),
            net::tcp_tool_hint()
        );
    }
    Ok(out.success())
}

/// The VRRP node (control plane or load-balancer node) that held the VIP when facts were
/// gathered, if any.
pub fn holder_in_facts<'a>(
    inv: &Inventory,
    facts: &'a BTreeMap<String, HostFacts>,
) -> Option<&'a str> {
    let vip = inv.vip.as_ref()?.address;
    inv.vrrp_nodes().find_map(|n| {
        let (name, f) = facts.get_key_value(n.name.as_str())?;
        f.addresses
            .iter()
            .any(|(_, net)| net.addr() == vip)
            .then_some(name.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP_OUTPUT: &str = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n\
        2: eth0    inet 10.200.40.11/24 brd 10.200.40.255 scope global eth0\\       valid_lft forever preferred_lft forever\n\
        2: eth0    inet 10.200.40.100/24 scope global secondary dynamic eth0\\       valid_lft 1sec preferred_lft 1sec\n";

    #[test]
    fn finds_the_vip_among_a_nodes_addresses() {
        assert!(holds(IP_OUTPUT, Ipv4Addr::new(10, 200, 40, 100)));
        assert!(holds(IP_OUTPUT, Ipv4Addr::new(10, 200, 40, 11)));
    }

    #[test]
    fn an_address_that_merely_starts_like_the_vip_is_not_it() {
        assert!(!holds(IP_OUTPUT, Ipv4Addr::new(10, 200, 40, 10)));
        assert!(!holds(IP_OUTPUT, Ipv4Addr::new(10, 200, 40, 1)));
        assert!(!holds("", Ipv4Addr::new(10, 200, 40, 100)));
    }
}
