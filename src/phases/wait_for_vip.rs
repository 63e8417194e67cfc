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
use crate::remote::{Fleet, RemoteCommand, SshHost};

/// How long the agents get to elect a holder and answer on the VIP.
const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(250);
/// Two holders for longer than this is a split brain, not an election in progress: many
/// advert intervals (100 ms by default) have passed without either yielding.
const SPLIT_BRAIN_AFTER: Duration = Duration::from_secs(3);

/// One poll of one node may not hold up the others or the deadline.
const POLL_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a TCP connection to `$1:$2` with what the node has: `bash`'s `/dev/tcp` (Debian,
/// Ubuntu, RHEL), else `nc -z` (Alpine's BusyBox); exit 127 when it has neither.
const TCP_CONNECT: &str = r#"if command -v bash >/dev/null 2>&1; then
  exec timeout 2 bash -c 'exec 3<>/dev/tcp/$0/$1' "$1" "$2"
elif command -v nc >/dev/null 2>&1; then
  exec nc -z -w 2 "$1" "$2"
fi
exit 127
"#;

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
                let seen = holders(c.fleet()?, &cps, vip).await?;
                let outcome = match seen.as_slice() {
                    [one] => {
                        // Connect from another node when there is one: that crosses the
                        // network (ARP for the VIP included), as kubelets will.
                        let from = cps
                            .iter()
                            .find(|h| h.node() != one.as_str())
                            .or_else(|| cps.first());
                        let answered = match from {
                            Some(h) => answers(h, vip, port).await?,
                            None => false,
                        };
                        if answered {
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
                        format!(
                            "{one} holds {vip}, but {vip}:{port} does not accept connections \
                             (khagent's listener on {one})"
                        )
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

/// Which of `cps` have the VIP on an interface now, in host order, asked side by side.
async fn holders(fleet: &Fleet, cps: &[&SshHost], vip: Ipv4Addr) -> anyhow::Result<Vec<String>> {
    let cmd = RemoteCommand::new(["ip", "-o", "-4", "addr", "show"])
        .read_only()
        .timeout(POLL_COMMAND_TIMEOUT);
    let is_cp = |h: &SshHost| cps.iter().any(|cp| cp.node() == h.node());
    let mut out = Vec::new();
    for (node, output) in fleet.each(is_cp, async |h| h.run(&cmd).await).await {
        if holds(&output?.stdout_str(), vip) {
            out.push(node);
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
    let cmd = RemoteCommand::script(
        "tcp-connect",
        TCP_CONNECT,
        [vip.to_string(), port.to_string()],
    )
    .read_only()
    .timeout(POLL_COMMAND_TIMEOUT);
    let out = from.run_unchecked(&cmd).await?;
    if out.status == Some(127) {
        bail!(
            "{} cannot test a connection to {vip}:{port}: it needs bash (with timeout) or nc; \
             install one of them (Alpine: apk add bash) and run again",
            from.node()
        );
    }
    Ok(out.success())
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

    /// Runs the connection test as the node would, here on loopback, with `path` as PATH.
    fn tcp_connect(port: u16, path: &str) -> Option<i32> {
        std::process::Command::new("/bin/sh")
            .args([
                "-c",
                TCP_CONNECT,
                "tcp-connect",
                "127.0.0.1",
                &port.to_string(),
            ])
            .env("PATH", path)
            .status()
            .unwrap()
            .code()
    }

    #[test]
    fn the_connection_test_tells_an_open_port_from_a_closed_one_and_missing_tools() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap().port();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let path = std::env::var("PATH").unwrap_or_default();
        assert_eq!(tcp_connect(open, &path), Some(0));
        assert_ne!(tcp_connect(closed, &path), Some(0));
        assert_eq!(
            tcp_connect(open, "/nonexistent"),
            Some(127),
            "neither bash nor nc"
        );
    }

    #[test]
    fn an_address_that_merely_starts_like_the_vip_is_not_it() {
        assert!(!holds(IP_OUTPUT, Ipv4Addr::new(10, 200, 40, 10)));
        assert!(!holds(IP_OUTPUT, Ipv4Addr::new(10, 200, 40, 1)));
        assert!(!holds("", Ipv4Addr::new(10, 200, 40, 100)));
    }
}
