//! The L4 TCP load balancer in front of the API servers.
//!
//! Flow: [`Lb::bind`] opens the listener (IP_FREEBIND, so it can hold the VIP's port on every
//! node) → [`Lb::run`] accepts while a `max_connections` permit is free and spawns one task per
//! connection ([`proxy`]) → each task reads the current [`Generation`] (backend set + timeouts)
//! once and keeps it. [`Lb::swap`] publishes a new generation on reload: new connections use it
//! at once; established ones are not touched, including those to backends the reload removed
//! (they finish or idle out on their own: closing them would break watches for nothing, and a
//! removed backend that really is gone fails its sockets anyway). [`Lb::drain`] waits for
//! connections after the listener closed, then closes the rest.
//!
//! Health lives in `crate::health`, which flips [`backend::Backend`] health; this module only
//! reads it (to pick) and watches it (to close connections of a backend marked down).

pub mod backend;
mod gate;
mod proxy;
pub mod sys;

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Semaphore, watch};

use crate::config::{Config, Timeouts};
use crate::status::log;
use backend::BackendSet;

/// What new connections use: replaced whole on reload.
#[derive(Debug)]
pub struct Generation {
    pub set: BackendSet,
    pub timeouts: Timeouts,
}

/// Listener counters for status and metrics.
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub accepted: AtomicU64,
    /// Accepted connections not yet closed.
    pub active: AtomicUsize,
    /// Accepted connections closed at once because no backend was healthy or reachable.
    pub no_backend: AtomicU64,
    pub closed_done: AtomicU64,
    pub closed_error: AtomicU64,
    pub closed_idle: AtomicU64,
    pub closed_drained: AtomicU64,
    /// accept() failures for lack of descriptors or memory (each followed by a back-off).
    pub accept_exhausted: AtomicU64,
    pub listening: AtomicBool,
}

#[derive(Debug)]
struct Shared {
    current: watch::Sender<Arc<Generation>>,
    stats: ListenerStats,
    /// Set when a drain runs out of time: every connection closes.
    force_close: watch::Sender<bool>,
    permits: Arc<Semaphore>,
    max_connections: u32,
}

/// Handle to the load balancer; cheap to clone.
#[derive(Debug, Clone)]
pub struct Lb {
    shared: Arc<Shared>,
}

/// Back-off after accept() fails for lack of descriptors: long enough that the loop does not
/// spin at 100% CPU, short enough that service resumes quickly once connections close.
const EXHAUSTED_BACKOFF: Duration = Duration::from_millis(100);

impl Lb {
    pub fn new(config: &Config) -> Lb {
        let max = u32::try_from(config.max_connections).unwrap_or(u32::MAX);
        let generation = Generation {
            set: BackendSet::new(&config.backends, config.balance, None),
            timeouts: config.timeouts,
        };
        Lb {
            shared: Arc::new(Shared {
                current: watch::Sender::new(Arc::new(generation)),
                stats: ListenerStats::default(),
                force_close: watch::Sender::new(false),
                permits: Arc::new(Semaphore::new(max as usize)),
                max_connections: max,
            }),
        }
    }

    /// Opens the listening socket. `IP_FREEBIND` lets every node bind the VIP whether or not
    /// it holds it now; SO_REUSEADDR lets a restarted agent bind while old connections linger
    /// in TIME_WAIT.
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = tcp_socket(addr)?;
        socket.set_reuseaddr(true)?;
        // Accepted sockets inherit TCP_NODELAY from the listener on Linux: one setsockopt here
        // instead of one per connection.
        socket.set_nodelay(true)?;
        // API clients speak first (the TLS ClientHello), so a connection is handed to accept()
        // only once its first bytes are there: one wake-up of this thread per connection
        // instead of two, and the request is read right after connecting to the backend. A
        // silent client is still accepted after about a second (the kernel's first SYN-ACK
        // retransmission), so nothing waits forever. haproxy calls this `defer-accept`.
        sys::set_defer_accept(socket.as_raw_fd(), 1)?;
        if addr.is_ipv4() {
            sys::set_freebind(socket.as_raw_fd())?;
        }
        socket.bind(addr)?;
        // A deep backlog absorbs connection bursts (every kubelet reconnecting after a failover).
        socket.listen(4096)
    }

    /// The generation new connections use.
    pub fn current(&self) -> Arc<Generation> {
        self.shared.current.borrow().clone()
    }

    /// Subscribes to generation swaps (the health module restarts its checks on each).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Generation>> {
        self.shared.current.subscribe()
    }

    /// Publishes the backend set and timeouts of a reloaded config. Established connections
    /// keep their backend; backends with unchanged name and address keep health and counters.
    pub fn swap(&self, config: &Config) {
        let old = self.current();
        let generation = Generation {
            set: BackendSet::new(&config.backends, config.balance, Some(&old.set)),
            timeouts: config.timeouts,
        };
        self.shared.current.send_replace(Arc::new(generation));
    }

    pub fn stats(&self) -> &ListenerStats {
        &self.shared.stats
    }

    /// Connections being proxied (or connecting) now.
    pub fn active(&self) -> usize {
        self.shared.stats.active.load(Ordering::Relaxed)
    }

    pub fn max_connections(&self) -> usize {
        self.shared.max_connections as usize
    }

    /// Accepts until `shutdown` turns true. Never returns an error: a failing accept is counted
    /// and retried (after a back-off when descriptors or memory ran out), so one bad moment does
    /// not take the node's API access down.
    pub async fn run(&self, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
        let stats = &self.shared.stats;
        stats.listening.store(true, Ordering::Relaxed);
        loop {
            // Waiting for a permit before accept() leaves excess clients in the kernel's
            // backlog, like haproxy's maxconn, instead of accepting and dropping them.
            let permit = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                p = Arc::clone(&self.shared.permits).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((client, _peer)) => {
                    stats.accepted.fetch_add(1, Ordering::Relaxed);
                    stats.active.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(proxy::serve(client, Arc::clone(&self.shared), permit));
                }
                Err(e) if is_exhaustion(&e) => {
                    if stats
                        .accept_exhausted
                        .fetch_add(1, Ordering::Relaxed)
                        .is_multiple_of(100)
                    {
                        log::warn(format_args!(
                            "accept on {}: {e}; backing off {EXHAUSTED_BACKOFF:?} (raise LimitNOFILE or lower max_connections)",
                            listener
                                .local_addr()
                                .map_or_else(|_| "?".into(), |a| a.to_string())
                        ));
                    }
                    tokio::select! {
                        _ = shutdown.wait_for(|s| *s) => break,
                        () = tokio::time::sleep(EXHAUSTED_BACKOFF) => {}
                    }
                }
                // ECONNABORTED and friends concern one client only.
                Err(_) => {}
            }
        }
        stats.listening.store(false, Ordering::Relaxed);
    }

    /// After the listener closed: waits up to `timeout` for every connection to end, then
    /// closes the rest. Returns how many had to be closed.
    pub async fn drain(&self, timeout: Duration) -> usize {
        let permits = &self.shared.permits;
        let all = self.shared.max_connections;
        if tokio::time::timeout(timeout, permits.acquire_many(all))
            .await
            .is_ok()
        {
            return 0;
        }
        let left = self.active();
        self.shared.force_close.send_replace(true);
        // Forced connections close as soon as their task runs; this bound only guards against
        // a task that cannot be scheduled.
        let _closed = tokio::time::timeout(Duration::from_secs(1), permits.acquire_many(all)).await;
        left
    }
}

/// A TCP socket of `addr`'s family (the listener's, a backend's, or a health check's).
pub(crate) fn tcp_socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
}

/// Errors that mean this process or host ran out of descriptors, memory or local ports
/// (`EADDRNOTAVAIL` from a connect: no ephemeral port left).
pub(crate) fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_an_address_this_node_does_not_hold() {
        // 192.0.2.0/24 is TEST-NET-1 (RFC 5737); binding and listening send no packet.
        let vip: SocketAddr = "192.0.2.10:7443".parse().unwrap();
        let nonlocal_bind = std::fs::read_to_string("/proc/sys/net/ipv4/ip_nonlocal_bind")
            .is_ok_and(|v| v.trim() == "1");
        if !nonlocal_bind {
            let plain = std::net::TcpListener::bind(vip).unwrap_err();
            assert_eq!(plain.kind(), std::io::ErrorKind::AddrNotAvailable);
        }
        let listener = Lb::bind(vip).unwrap();
        assert_eq!(listener.local_addr().unwrap(), vip);
    }

    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let listener = Lb::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
