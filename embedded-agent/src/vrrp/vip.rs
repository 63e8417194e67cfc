//! The VIP's address operations on a worker thread, so a periodic lifetime refresh waiting on
//! the kernel's rtnl lock (which other processes' namespace and link changes hold, sometimes
//! for tens of milliseconds) never delays an advert. One FIFO queue keeps the order: a refresh
//! queued before a removal runs before it, so a removed VIP is never re-added. Adding and
//! removing wait for their outcome (the VIP is there, or gone, before the instance goes on);
//! refreshes do not.

use std::io;
use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::time::Duration;

use super::io::netlink::Netlink;
use super::io::set_realtime;

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
                    let result = match op {
                        Op::Add { .. } => netlink.add_address(
                            vip.ifindex,
                            vip.address,
                            vip.prefix_len,
                            vip.lifetime,
                        ),
                        Op::Remove => netlink
                            .delete_address(vip.ifindex, vip.address, vip.prefix_len)
                            .map(|_| ()),
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
