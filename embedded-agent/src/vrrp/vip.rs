//! The VIP's address operations on a worker thread, so a periodic lifetime refresh waiting on
//! the kernel's rtnl lock (which other processes' namespace and link changes hold, sometimes
//! for tens of milliseconds) never delays an advert. One FIFO queue keeps the order: a refresh
//! queued before a removal runs before it, so a removed VIP is never re-added. Adding and
//! removing wait for their outcome (the VIP is there, or gone, before the instance goes on);
//! refreshes do not.
//!
//! Ownership: the worker records in a [`Marker`] file that this agent added the VIP (before
//! adding it; the record goes once the VIP is removed). At start the agent removes a VIP it
//! finds on its interface only when the record says it added it and the address has a
//! lifetime (khagent never adds one without): see [`left_by_us`].

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use super::io::netlink::{InterfaceAddress, Netlink};
use super::io::set_realtime;
use crate::status::log;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// Add, or refresh the lifetime of, the VIP.
    Add {
        wait: bool,
    },
    Remove,
}

type Outcome = (Op, io::Result<()>);

/// Handle to the worker; the thread ends when this is dropped.
#[derive(Debug)]
pub(super) struct VipWorker {
    ops: mpsc::Sender<Op>,
    outcomes: mpsc::Receiver<Outcome>,
    refresh_failures: Vec<io::Error>,
}

/// What the worker needs to know about the VIP.
pub(super) struct Vip {
    pub ifindex: u32,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub lifetime: Duration,
    pub marker: Marker,
}

/// The record, in the agent's state directory, that this agent added the VIP to its
/// interface: one line, `ADDRESS/PREFIX INTERFACE`. Not synced to disk: it only has to outlive
/// the process, and after a power cut the VIP is gone too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Marker {
    path: PathBuf,
    line: String,
}

/// The record's file name in the state directory.
pub const MARKER_FILE: &str = "vip-added";

/// The record's whole content for `vip/prefix_len` on `interface` (khactl reads it too).
pub fn marker_line(vip: Ipv4Addr, prefix_len: u8, interface: &str) -> String {
    format!("{vip}/{prefix_len} {interface}\n")
}

impl Marker {
    pub fn new(state_dir: &Path, vip: Ipv4Addr, prefix_len: u8, interface: &str) -> Marker {
        Marker {
            path: state_dir.join(MARKER_FILE),
            line: marker_line(vip, prefix_len, interface),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the record names this VIP on this interface.
    pub fn present(&self) -> bool {
        std::fs::read_to_string(&self.path).is_ok_and(|text| text == self.line)
    }

    /// Writes the record (via a temporary file and a rename, so it is whole or absent).
    pub fn write(&self) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, &self.line)?;
        std::fs::rename(&tmp, &self.path)
    }

    pub fn clear(&self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Why a VIP found on the interface at start is not this agent's to remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Foreign {
    /// `valid_lft forever`: khagent always adds the VIP with a lifetime.
    Permanent,
    /// A lifetime, but no record that khagent added it (another tool, or a record that could
    /// not be written); it goes away by itself when its lifetime ends.
    Unrecorded,
}

/// Whether the VIP found on the interface at start was left by an earlier run of this agent
/// (killed before its lifetime ran out), which the agent then removes so it starts as a
/// backup holding nothing; anything else is someone else's and is left alone. Pure.
pub fn left_by_us(found: &InterfaceAddress, recorded: bool) -> Result<(), Foreign> {
    if found.permanent {
        Err(Foreign::Permanent)
    } else if !recorded {
        Err(Foreign::Unrecorded)
    } else {
        Ok(())
    }
}

impl VipWorker {
    /// Starts the worker with its own netlink socket, realtime like the VRRP thread if
    /// `realtime_priority` > 0 (best effort: the refresh has most of a lifetime to spare).
    pub fn start(mut netlink: Netlink, vip: Vip, realtime_priority: u8) -> io::Result<Self> {
        let (ops, op_rx) = mpsc::channel::<Op>();
        let (outcome_tx, outcomes) = mpsc::channel::<Outcome>();
        std::thread::Builder::new()
            .name("khagent-vip".into())
            .spawn(move || {
                if realtime_priority > 0 {
                    // Failure only costs timing slack; the VRRP thread reports the privilege.
                    let _ = set_realtime(realtime_priority);
                }
                for op in op_rx {
                    // The record is written before the VIP is added and cleared after it is
                    // removed, so a VIP of ours is never unrecorded. A record that cannot be
                    // written does not keep the VIP off: the cost is that a restart within the
                    // VIP's lifetime refuses to start until it has expired.
                    let marker = &vip.marker;
                    let result = match op {
                        Op::Add { wait } => {
                            if wait && let Err(e) = marker.write() {
                                log::warn(format_args!(
                                    "vrrp: cannot record that khagent adds {} in {}: {e}",
                                    vip.address,
                                    marker.path().display()
                                ));
                            }
                            netlink.add_address(
                                vip.ifindex,
                                vip.address,
                                vip.prefix_len,
                                vip.lifetime,
                            )
                        }
                        Op::Remove => netlink
                            .delete_address(vip.ifindex, vip.address, vip.prefix_len)
                            .map(|_| {
                                if let Err(e) = marker.clear() {
                                    log::warn(format_args!(
                                        "vrrp: cannot remove {}: {e}",
                                        marker.path().display()
                                    ));
                                }
                            }),
                    };
                    if outcome_tx.send((op, result)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            ops,
            outcomes,
            refresh_failures: Vec::new(),
        })
    }

    /// Adds the VIP and waits until it is on the interface.
    pub fn add(&mut self) -> io::Result<()> {
        self.run(Op::Add { wait: true })
    }

    /// Removes the VIP and waits until it is gone (after any refresh queued before).
    pub fn remove(&mut self) -> io::Result<()> {
        self.run(Op::Remove)
    }

    /// Queues a lifetime refresh without waiting; failures show up in [`Self::failures`].
    pub fn refresh(&mut self) -> io::Result<()> {
        self.ops.send(Op::Add { wait: false }).map_err(|_| gone())
    }

    /// Refresh failures since the last call.
    pub fn failures(&mut self) -> Vec<io::Error> {
        while let Ok(outcome) = self.outcomes.try_recv() {
            self.note(outcome);
        }
        std::mem::take(&mut self.refresh_failures)
    }

    fn run(&mut self, op: Op) -> io::Result<()> {
        self.ops.send(op).map_err(|_| gone())?;
        loop {
            let (done, result) = self.outcomes.recv().map_err(|_| gone())?;
            if done == op {
                return result;
            }
            self.note((done, result));
        }
    }

    fn note(&mut self, (op, result): Outcome) {
        if let (Op::Add { wait: false }, Err(e)) = (op, result) {
            self.refresh_failures.push(e);
        }
    }
}

fn gone() -> io::Error {
    io::Error::other("the VIP worker thread has stopped")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn found(permanent: bool) -> InterfaceAddress {
        InterfaceAddress {
            address: Ipv4Addr::new(10, 0, 0, 100),
            prefix_len: 32,
            secondary: true,
            permanent,
        }
    }

    /// Issue #12, item 12: only a VIP this agent recorded adding, with a lifetime, is removed
    /// at start; a hand-added one (`valid_lft forever`) or an unrecorded one is left alone.
    #[test]
    fn only_a_recorded_vip_with_a_lifetime_was_left_by_us() {
        assert_eq!(left_by_us(&found(false), true), Ok(()));
        assert_eq!(left_by_us(&found(true), true), Err(Foreign::Permanent));
        assert_eq!(left_by_us(&found(true), false), Err(Foreign::Permanent));
        assert_eq!(left_by_us(&found(false), false), Err(Foreign::Unrecorded));
    }

    #[test]
    fn the_record_names_the_vip_and_interface_and_goes_away_cleanly() {
        let dir = std::env::temp_dir().join(format!("khagent-marker-{}", std::process::id()));
        let vip = Ipv4Addr::new(10, 0, 0, 100);
        let marker = Marker::new(&dir.join("state"), vip, 32, "eth0");
        assert!(!marker.present());
        marker.write().unwrap();
        assert!(marker.present());
        assert_eq!(
            std::fs::read_to_string(marker.path()).unwrap(),
            "10.0.0.100/32 eth0\n"
        );
        assert!(!Marker::new(&dir.join("state"), vip, 32, "eth1").present());
        assert!(!Marker::new(&dir.join("state"), vip, 24, "eth0").present());
        marker.clear().unwrap();
        marker.clear().unwrap();
        assert!(!marker.present());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
