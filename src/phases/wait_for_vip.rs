//! Wait until the agents agree: exactly one control-plane node holds the VIP on an interface,
//! and a TCP connection to VIP:port from a node succeeds (the load balancer answers there).
//! Only then can kubeadm use the VIP as the control-plane endpoint.
//!
//! Two holders at once is normal for an instant (a preempting master adds the VIP before
//! the old one has read its advert), so it fails the phase only when it lasts.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::changes::Mode;
use super::{Context, Phase, PhaseFuture};
use crate::remote::{RemoteCommand, SshHost};

/// How long the agents get to elect a holder and answer on the VIP.
const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(250);
/// Two holders for longer than this is a split brain, not an election in progress: many
/// advert intervals (100 ms by default) have passed without either yielding.
const SPLIT_BRAIN_AFTER: Duration = Duration::from_secs(3);

/// `bash` opens the TCP connection itself; the VIP and port arrive as `$0` and `$1`.
const TCP_CONNECT: &str = "exec 3<>/dev/tcp/$0/$1";

pub struct WaitForVip;

impl Phase for WaitForVip {
    fn title(&self) -> &'static str {
        "Wait for the virtual IP"
    }

    fn skip_reason(&self, ctx: &Context) -> Option<String> {
        (ctx.settings.mode == Mode::Plan)
            .then(|| "dry run: no agent was started, so there is no VIP to wait for".to_owned())
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let c = &*ctx;
            let vip = c.inventory.vip.address;
            let port = c.inventory.vip.port.get();
            let cps: Vec<&SshHost> = c
                .inventory
                .control_plane()
                .filter_map(|n| c.fleet().ok()?.host(n.name.as_str()))
                .collect();
            let started = Instant::now();
            let mut split_since: Option<Instant> = None;
            let last = loop {
                let seen = holders(&cps, vip).await?;
                let outcome = match seen.as_slice() {
                    [one] => {
                        // Connect from another node when there is one: that crosses the
                        // network (ARP for the VIP included), as kubelets will.
                        let from = cps
                            .iter()
                            .find(|h| h.node() != one.as_str())
                            .or_else(|| cps.first());
                        match from {
                            Some(h) if answers(h, vip, port).await? => {
                                let summaries = cps
                                    .iter()
                                    .map(|h| {
                                        let s = if h.node() == one.as_str() {
                                            format!("holds {vip}; {vip}:{port} answers")
                                        } else {
                                            "does not hold the VIP".to_owned()
                                        };
                                        (h.node().to_owned(), Ok(s))
                                    })
                                    .collect();
                                return ctx.settle(self.title(), summaries);
                            }
                            _ => format!(
                                "{one} holds {vip}, but {vip}:{port} does not accept connections \
                                 (khagent's listener on {one})"
                            ),
                        }
                    }
                    [] => format!("no control-plane node holds {vip}"),
                    many => {
                        let since = *split_since.get_or_insert_with(Instant::now);
                        let text = format!("{vip} is held by {} at once", many.join(" and "));
                        if since.elapsed() > SPLIT_BRAIN_AFTER {
                            bail!(
                                "{text} for over {}s: the agents do not hear each other's \
                                 adverts (VRRP is IP protocol 112, unicast between the \
                                 control-plane addresses; check firewalls and vip.routerId)",
                                SPLIT_BRAIN_AFTER.as_secs()
                            );
                        }
                        text
                    }
                };
                if seen.len() < 2 {
                    split_since = None;
                }
                if started.elapsed() > DEADLINE {
                    break outcome;
                }
                tokio::time::sleep(POLL).await;
            };
            bail!(
                "{last} after {}s\n  hint: look at the agent on the control-plane nodes: \
                 `systemctl status khagent` or `journalctl -u khagent` (OpenRC: \
                 /var/log/khagent.log), and `curl -s 127.0.0.1:9901/status` there",
                DEADLINE.as_secs()
            )
        })
    }
}

/// The control-plane nodes that have the VIP on an interface now, in inventory order.
async fn holders(cps: &[&SshHost], vip: Ipv4Addr) -> anyhow::Result<Vec<String>> {
    let cmd = RemoteCommand::new(["ip", "-o", "-4", "addr", "show"]).read_only();
    let mut out = Vec::new();
    for host in cps {
        let text = host.run(&cmd).await?.stdout_str();
        if holds(&text, vip) {
            out.push(host.node().to_owned());
        }
    }
    Ok(out)
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

async fn answers(from: &SshHost, vip: Ipv4Addr, port: u16) -> anyhow::Result<bool> {
    let cmd = RemoteCommand::new([
        "timeout".to_owned(),
        "2".to_owned(),
        "bash".to_owned(),
        "-c".to_owned(),
        TCP_CONNECT.to_owned(),
        vip.to_string(),
        port.to_string(),
    ])
    .read_only();
    Ok(from.run_unchecked(&cmd).await?.success())
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
