//! `khagent probe-vrid`: listens on an interface for VRRP adverts carrying one VRID and reports
//! every router heard, one line each ([`Heard::line`]). khactl runs it on a node where khagent
//! has not started yet, to find another VRRP router (a keepalived set up by the guides, whose
//! VRID 51 is also khactl's default) that the new agent would fight for the VIP.
//!
//! It only listens: a receive-only raw socket (the same as the agent's, [`Receiver`]) that joins
//! 224.0.0.18 on the interface, which makes the kernel announce the membership (IGMP) as
//! keepalived does. It sends nothing, changes no address and holds nothing once it exits.
//! What a passive listen cannot see: a router that is backup (backups are silent) and a
//! unicast router that does not list this node as a peer.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::VrrpError;
use super::io::interface_index;
use super::io::socket::Receiver;
use super::packet;
use crate::config::Dur;

/// Longest listen accepted: a probe is a moment of an install, not a monitor.
const MAX_LISTEN: Duration = Duration::from_secs(60);

/// `khagent probe-vrid --interface IF --vrid N --for DURATION`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    pub interface: String,
    pub vrid: u8,
    pub listen_for: Duration,
}

impl Args {
    /// Parses the arguments after `probe-vrid`.
    pub fn parse(mut args: impl Iterator<Item = std::ffi::OsString>) -> Result<Args, String> {
        let (mut interface, mut vrid, mut listen_for) = (None, None, None);
        while let Some(arg) = args.next() {
            let flag = arg.to_str().unwrap_or_default().to_owned();
            let mut value = || {
                args.next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--interface" => interface = Some(value()?),
                "--vrid" => {
                    let v = value()?;
                    vrid = Some(
                        v.parse::<u8>()
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| format!("--vrid {v}: a VRID is a number in 1..=255"))?,
                    );
                }
                "--for" => {
                    let v = value()?;
                    listen_for = Some(
                        Dur::parse(&v)
                            .map(|d| d.0)
                            .filter(|d| !d.is_zero() && *d <= MAX_LISTEN)
                            .ok_or_else(|| format!("--for {v}: give a duration up to 60s"))?,
                    );
                }
                _ => return Err(format!("probe-vrid: unexpected argument {arg:?}")),
            }
        }
        Ok(Args {
            interface: interface.ok_or("probe-vrid needs --interface")?,
            vrid: vrid.ok_or("probe-vrid needs --vrid")?,
            listen_for: listen_for.ok_or("probe-vrid needs --for")?,
        })
    }
}

/// One router heard: its source address and what its last valid advert said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heard {
    pub src: Ipv4Addr,
    pub priority: u8,
    pub max_advert_int_cs: u16,
    pub addresses: Vec<Ipv4Addr>,
}

impl Heard {
    /// The command's output line: `heard SRC priority P interval_cs I addresses A,B`.
    pub fn line(&self) -> String {
        let addresses: Vec<String> = self.addresses.iter().map(ToString::to_string).collect();
        format!(
            "heard {} priority {} interval_cs {} addresses {}",
            self.src,
            self.priority,
            self.max_advert_int_cs,
            addresses.join(",")
        )
    }

    /// Reads back a [`Heard::line`]; `None` for any other line.
    pub fn parse(line: &str) -> Option<Heard> {
        let words: Vec<&str> = line.split(' ').collect();
        let [
            "heard",
            src,
            "priority",
            priority,
            "interval_cs",
            interval,
            "addresses",
            list,
        ] = words[..]
        else {
            return None;
        };
        let addresses = match list {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?,
        };
        Some(Heard {
            src: src.parse().ok()?,
            priority: priority.parse().ok()?,
            max_advert_int_cs: interval.parse().ok()?,
            addresses,
        })
    }
}

/// Listens for `args.listen_for` and returns every router heard advertising `args.vrid`, in
/// address order. Datagrams that fail the byte checks of §7.1 (TTL, checksum…) are ignored.
pub fn listen(args: &Args) -> Result<Vec<Heard>, VrrpError> {
    let interface = &args.interface;
    let ifindex =
        interface_index(interface).map_err(|_| VrrpError::NoSuchInterface(interface.clone()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| VrrpError::io("starting the probe's runtime", e))?;
    runtime.block_on(async {
        let receiver = Receiver::open(interface, ifindex, true)
            .map_err(|e| VrrpError::io(format!("listening for VRRP on {interface}"), e))?;
        let deadline = tokio::time::Instant::now() + args.listen_for;
        let mut heard = BTreeMap::new();
        let mut buf = vec![0u8; 65_535];
        while let Ok(received) = tokio::time::timeout_at(deadline, receiver.recv(&mut buf)).await {
            let len =
                received.map_err(|e| VrrpError::io(format!("receiving on {interface}"), e))?;
            let Some(datagram) = buf.get(..len) else {
                continue;
            };
            if let Ok(r) = packet::decode_ipv4(datagram)
                && r.advert.vrid == args.vrid
            {
                heard.insert(
                    r.src,
                    Heard {
                        src: r.src,
                        priority: r.advert.priority,
                        max_advert_int_cs: r.advert.max_advert_int_cs,
                        addresses: r.advert.addresses,
                    },
                );
            }
        }
        Ok(heard.into_values().collect())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        Args::parse(list.iter().map(Into::into))
    }

    #[test]
    fn parses_its_three_arguments_and_names_what_is_wrong() {
        assert_eq!(
            args(&["--interface", "eth0", "--vrid", "51", "--for", "1500ms"]),
            Ok(Args {
                interface: "eth0".into(),
                vrid: 51,
                listen_for: Duration::from_millis(1500)
            })
        );
        assert!(args(&["--interface", "eth0", "--vrid", "0", "--for", "1s"]).is_err());
        assert!(args(&["--interface", "eth0", "--vrid", "51", "--for", "2m"]).is_err());
        assert_eq!(
            args(&["--vrid", "51", "--for", "1s"]),
            Err("probe-vrid needs --interface".into())
        );
        assert!(
            args(&["--interface"])
                .unwrap_err()
                .contains("needs a value")
        );
    }

    #[test]
    fn a_heard_line_reads_back_as_written() {
        let heard = Heard {
            src: Ipv4Addr::new(10, 0, 0, 5),
            priority: 100,
            max_advert_int_cs: 100,
            addresses: vec![Ipv4Addr::new(10, 0, 0, 200), Ipv4Addr::new(10, 0, 0, 201)],
        };
        assert_eq!(
            heard.line(),
            "heard 10.0.0.5 priority 100 interval_cs 100 addresses 10.0.0.200,10.0.0.201"
        );
        assert_eq!(Heard::parse(&heard.line()), Some(heard.clone()));
        let none = Heard {
            addresses: Vec::new(),
            ..heard
        };
        assert_eq!(Heard::parse(&none.line()), Some(none));
        assert_eq!(Heard::parse("heard 10.0.0.5 priority x"), None);
    }
}
