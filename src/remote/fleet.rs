//! All nodes of a run, connected, with bounded parallelism over them.

use std::sync::Arc;

use futures_util::stream::{self, StreamExt};

use super::error::RemoteError;
use super::host::{Access, Host, NodeHandle, Observer};
use super::ssh::{ConnectOptions, Connector};
use crate::inventory::SshTarget;

/// A node that failed a step, with the error that says why.
#[derive(Debug)]
pub struct NodeFailure<E> {
    pub node: String,
    pub error: E,
}

pub struct Fleet {
    hosts: Vec<NodeHandle>,
    parallelism: usize,
}

impl Fleet {
    /// Connects to every target, `parallelism` at a time. All or nothing: when any node
    /// cannot be reached, the others are disconnected and every failure is returned.
    pub async fn connect(
        connector: &dyn Connector,
        targets: &[SshTarget],
        opts: &ConnectOptions,
        parallelism: usize,
        access: Access,
        observer: Arc<dyn Observer>,
    ) -> Result<Self, Vec<NodeFailure<RemoteError>>> {
        let (fleet, failures) =
            Self::connect_reachable(connector, targets, opts, parallelism, access, observer).await;
        if failures.is_empty() {
            Ok(fleet)
        } else {
            fleet.close().await;
            Err(failures)
        }
    }

    /// Connects to every target it can, `parallelism` at a time: the nodes that answered,
    /// and a failure for each that did not (a read-only view such as `status` shows both).
    pub async fn connect_reachable(
        connector: &dyn Connector,
        targets: &[SshTarget],
        opts: &ConnectOptions,
        parallelism: usize,
        access: Access,
        observer: Arc<dyn Observer>,
    ) -> (Self, Vec<NodeFailure<RemoteError>>) {
        let parallelism = parallelism.max(1);
        let results = in_order(
            stream::iter(targets.iter().enumerate())
                .map(|(i, t)| async move { (i, connector.connect(t, opts).await) })
                .buffer_unordered(parallelism)
                .collect()
                .await,
        );
        let mut hosts = Vec::new();
        let mut failures = Vec::new();
        for (target, r) in targets.iter().zip(results) {
            match r {
                Ok(h) => hosts.push(NodeHandle::new(h, access, Arc::clone(&observer))),
                Err(error) => failures.push(NodeFailure {
                    node: target.node.to_string(),
                    error,
                }),
            }
        }
        (Self { hosts, parallelism }, failures)
    }

    /// A fleet of hosts already connected (tests pass fakes here).
    pub fn from_hosts(
        hosts: Vec<Box<dyn Host>>,
        parallelism: usize,
        access: Access,
        observer: Arc<dyn Observer>,
    ) -> Self {
        Self {
            hosts: hosts
                .into_iter()
                .map(|h| NodeHandle::new(h, access, Arc::clone(&observer)))
                .collect(),
            parallelism: parallelism.max(1),
        }
    }

    pub fn hosts(&self) -> &[NodeHandle] {
        &self.hosts
    }

    pub fn host(&self, node: &str) -> Option<&NodeHandle> {
        self.hosts.iter().find(|h| h.node() == node)
    }

    pub fn parallelism(&self) -> usize {
        self.parallelism
    }

    /// Runs `f` on each selected host, `parallelism` at a time, and returns every
    /// result in host order. A failing node does not cancel the others: each node's
    /// step runs to its end, so nothing is left half-done.
    pub async fn each<'a, T, E, F>(
        &'a self,
        select: impl Fn(&NodeHandle) -> bool,
        f: F,
    ) -> Vec<(String, Result<T, E>)>
    where
        F: AsyncFn(&'a NodeHandle) -> Result<T, E>,
    {
        let selected: Vec<&NodeHandle> = self.hosts.iter().filter(|h| select(h)).collect();
        let f = &f;
        // Unordered, so a slot freed by a quick node goes to the next one at once (an
        // ordered buffer would hold it until the slowest node ahead finished).
        in_order(
            stream::iter(selected.into_iter().enumerate())
                .map(|(i, h)| async move { (i, (h.node().to_owned(), f(h).await)) })
                .buffer_unordered(self.parallelism)
                .collect()
                .await,
        )
    }

    pub async fn close(self) {
        for h in self.hosts {
            h.close().await;
        }
    }
}

/// Results tagged with their position, back in that order.
fn in_order<T>(mut tagged: Vec<(usize, T)>) -> Vec<T> {
    tagged.sort_by_key(|(i, _)| *i);
    tagged.into_iter().map(|(_, t)| t).collect()
}
