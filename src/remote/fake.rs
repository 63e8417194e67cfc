//! A recording fake [`Host`] for unit tests of phases: it answers each command with what a
//! test's responder says and records every command it was asked to run, so a test can state
//! "plan mode ran no mutating command" or "the rolling restart stopped at the first failure"
//! without a lab. It stands in for the node, never for the code under test.

use std::cell::RefCell;
use std::rc::Rc;

use super::command::{CommandOutput, RemoteCommand};
use super::error::RemoteError;
use super::host::{Host, HostFuture};
use super::ssh::{ConnectOptions, Connector};
use crate::inventory::SshTarget;

/// A command as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub node: String,
    pub argv: Vec<String>,
    pub label: String,
    pub read_only: bool,
    pub stdin: Option<Vec<u8>>,
}

/// What every fake host of a test saw, in order.
pub type Record = Rc<RefCell<Vec<Seen>>>;

/// Answers a command on a node.
pub type Responder = Rc<dyn Fn(&str, &RemoteCommand) -> Result<CommandOutput, RemoteError>>;

pub struct FakeHost {
    node: String,
    responder: Responder,
    record: Record,
}

impl FakeHost {
    pub fn new(node: &str, responder: Responder, record: Record) -> Self {
        Self {
            node: node.to_owned(),
            responder,
            record,
        }
    }
}

impl Host for FakeHost {
    fn node(&self) -> &str {
        &self.node
    }

    fn exec<'a>(
        &'a self,
        cmd: &'a RemoteCommand,
    ) -> HostFuture<'a, Result<CommandOutput, RemoteError>> {
        self.record.borrow_mut().push(Seen {
            node: self.node.clone(),
            argv: cmd.argv.clone(),
            label: cmd.label(),
            read_only: cmd.read_only,
            stdin: cmd.stdin.clone(),
        });
        let out = (self.responder)(&self.node, cmd);
        Box::pin(async move { out })
    }

    fn close(self: Box<Self>) -> HostFuture<'static, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// Hands out fake hosts that share one responder and one record.
pub struct FakeConnector {
    pub responder: Responder,
    pub record: Record,
}

impl Connector for FakeConnector {
    fn connect<'a>(
        &'a self,
        target: &'a SshTarget,
        _opts: &'a ConnectOptions,
    ) -> HostFuture<'a, Result<Box<dyn Host>, RemoteError>> {
        let host = FakeHost::new(
            target.node.as_str(),
            Rc::clone(&self.responder),
            Rc::clone(&self.record),
        );
        Box::pin(async move { Ok(Box::new(host) as Box<dyn Host>) })
    }
}

/// A finished command's output.
pub fn output(status: i32, stdout: &str) -> CommandOutput {
    CommandOutput {
        status: Some(status),
        stdout: stdout.as_bytes().to_vec(),
        stderr: Vec::new(),
    }
}
