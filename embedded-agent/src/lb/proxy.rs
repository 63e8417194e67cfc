//! One proxied connection: pick a backend (retrying the next healthy one when a connect fails
//! or times out), then forward both directions (copy for small messages, `splice(2)` for bulk)
//! with half-close, until both
//! sides are done, either side errors, the connection idles past `timeouts.idle`, its backend
//! is marked down, or a drain runs out of time.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::backend::Backend;
use super::gate::Gated;
use super::sys::{self, PIPE_SIZE};
use super::{Generation, Shared};

/// Why a proxied connection ended (counted in listener stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Done,
    Error,
    Idle,
    BackendDown,
    Drained,
}

/// Keeps the listener's active count right however the task ends.
struct Counted(Arc<Shared>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.stats.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Keeps a backend's active count right however the connection ends.
struct Active(Arc<Backend>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) async fn serve(client: TcpStream, shared: Arc<Shared>, permit: OwnedSemaphorePermit) {
    let _counted = Counted(Arc::clone(&shared));
    let generation = shared.current.borrow().clone();
    let Some((active, server)) = connect_any(&generation).await else {
        shared.stats.no_backend.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let backend = &active.0;
    let mut health = backend.watch_health();
    let mut force = shared.force_close.subscribe();
    let activity = Activity::new();
    let end = {
        // The branches that end a connection early fire once in its life: gated, so that a
        // message's wake-up does not poll them (see `gate`).
        let ends = std::pin::pin!(async {
            tokio::select! {
                _ = idle(&activity, generation.timeouts.idle.0) => End::Idle,
                _ = health.wait_for(|up| !*up) => End::BackendDown,
                _ = force.wait_for(|f| *f) => End::Drained,
            }
        });
        let mut ends = Gated::new(ends);
        let mut forwarding = std::pin::pin!(forward(&client, &server, &activity, backend));
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = forwarding.as_mut().poll(cx) {
                return Poll::Ready(if r.is_ok() { End::Done } else { End::Error });
            }
            ends.poll(cx)
        })
        .await
    };
    let counter = match end {
        End::Done => &shared.stats.closed_done,
        End::Error => &shared.stats.closed_error,
        End::Idle => &shared.stats.closed_idle,
        End::BackendDown => &backend.closed_on_down,
        End::Drained => &shared.stats.closed_drained,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    // Sockets close here, before the permit is released, so a drain that sees every permit
    // back knows every connection is closed.
    drop((client, server, active));
    drop(permit);
}

/// Opens a connection to a backend. Small writes (API requests, watch events) go out at once
/// (`TCP_NODELAY`; bulk throughput does not suffer, splice hands the kernel whole pipe loads).
/// Delayed ACKs (`TCP_QUICKACK` off) let the handshake's last ACK ride on the request and the
/// ACK of a response ride on the next segment, two packets fewer per short connection, as
/// haproxy's `tcp-smart-connect`; the client has always spoken first here (see `Lb::bind`).
async fn connect(addr: std::net::SocketAddr) -> io::Result<TcpStream> {
    let socket = super::tcp_socket(addr)?;
    socket.set_nodelay(true)?;
    // Only an optimisation: a kernel that refuses it sends the two ACKs, nothing else changes.
    let _ignored = sys::set_delayed_ack(socket.as_raw_fd());
    socket.connect(addr).await
}

/// Connects to a healthy backend, moving on to the next healthy one after a failure, each
/// backend at most once.
async fn connect_any(generation: &Generation) -> Option<(Active, TcpStream)> {
    let set = &generation.set;
    let mut tried = 0u64;
    for _ in 0..set.backends.len() {
        let i = set.pick(tried)?;
        if i < 64 {
            tried |= 1 << i;
        }
        let backend = &set.backends[i];
        backend.active.fetch_add(1, Ordering::Relaxed);
        let active = Active(Arc::clone(backend));
        let connect = connect(backend.address);
        match tokio::time::timeout(generation.timeouts.connect.0, connect).await {
            Ok(Ok(stream)) => {
                backend.total.fetch_add(1, Ordering::Relaxed);
                return Some((active, stream));
            }
            Ok(Err(e)) => {
                backend.connect_failures.fetch_add(1, Ordering::Relaxed);
                // Running out of descriptors or ports is this host's fault, not the backend's.
                if !super::is_exhaustion(&e) {
                    backend.set_last_error(Some(format!("a client's connect failed: {e}")));
                    backend.connect_failed.notify_one();
                }
            }
            Err(_) => {
                backend.connect_failures.fetch_add(1, Ordering::Relaxed);
                backend.set_last_error(Some(format!(
                    "a client's connect got no answer within {:?}",
                    generation.timeouts.connect.0
                )));
                backend.connect_failed.notify_one();
            }
        }
    }
    None
}

async fn forward(
    client: &TcpStream,
    server: &TcpStream,
    activity: &Activity,
    backend: &Backend,
) -> io::Result<()> {
    let finished = AtomicU8::new(0);
    let up = Pump {
        src: client,
        dst: server,
        activity,
        finished: &finished,
        bytes: &backend.bytes_up,
    };
    let down = Pump {
        src: server,
        dst: client,
        activity,
        finished: &finished,
        bytes: &backend.bytes_down,
    };
    // Each direction is polled only when its own sockets woke it (see `gate`).
    let (up, down) = (std::pin::pin!(up.run()), std::pin::pin!(down.run()));
    let mut directions = [Some(Gated::new(up)), Some(Gated::new(down))];
    std::future::poll_fn(|cx| {
        for slot in &mut directions {
            if let Some(direction) = slot
                && let Poll::Ready(r) = direction.poll(cx)
            {
                r?;
                *slot = None;
            }
        }
        if directions.iter().all(Option::is_none) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Whether the socket's peer has sent its FIN, as the last poll saw it (`EPOLLRDHUP`; tokio keeps
/// the closed state once seen). No syscall: only the readiness already recorded is looked at.
fn peer_closed(stream: &TcpStream) -> bool {
    let ready = std::pin::pin!(stream.ready(Interest::READABLE));
    matches!(
        ready.poll(&mut Context::from_waker(Waker::noop())),
        Poll::Ready(Ok(r)) if r.is_read_closed()
    )
}

/// Closes the connection once nothing moved either way for `limit`.
async fn idle(activity: &Activity, limit: Duration) {
    loop {
        let deadline = activity.last() + limit;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// When a connection last moved bytes. Stamped on every message, so it reads the coarse clock
/// (the kernel's last tick, from the vDSO): a precise clock read and the conversion to
/// milliseconds cost about as much user time as the rest of forwarding a small message, and an
/// idle timeout does not need better than a tick (1-10 ms).
struct Activity {
    started: Instant,
    started_coarse_ms: u64,
    last_coarse_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        let now = sys::coarse_ms();
        Activity {
            started: Instant::now(),
            started_coarse_ms: now,
            last_coarse_ms: AtomicU64::new(now),
        }
    }

    fn touch(&self) {
        self.last_coarse_ms
            .store(sys::coarse_ms(), Ordering::Relaxed);
    }

    /// The last activity on the precise clock the timers use (both clocks advance together;
    /// the coarse one lags by less than a tick).
    fn last(&self) -> Instant {
        let since_start = self
            .last_coarse_ms
            .load(Ordering::Relaxed)
            .saturating_sub(self.started_coarse_ms);
        self.started + Duration::from_millis(since_start)
    }
}

/// Bytes read in one go in copy mode. A read that fills it marks a bulk transfer, and the
/// direction switches to splice.
const SCRATCH: usize = 16 * 1024;

thread_local! {
    /// Copy-mode buffer shared by every connection on the thread: it is only used between a
    /// `recv` and the `send` right after it, never across an await, so one per thread suffices
    /// and idle connections own no buffer. Const-initialised: no lazy-init check per message.
    static SCRATCH_BUF: RefCell<[u8; SCRATCH]> = const { RefCell::new([0; SCRATCH]) };
}

/// What one copy-mode step did.
enum Step {
    Eof,
    /// Nothing to read (readiness cleared).
    Idle,
    /// `n` bytes forwarded; `more` when the read filled the buffer (bulk data, likely more).
    Sent {
        n: usize,
        more: bool,
    },
    /// The last `n` bytes of the stream were handed to the destination with `MSG_MORE`: the
    /// half-close (or close) that must follow at once sends them in the FIN's segment.
    Last {
        n: usize,
    },
    /// The destination did not take everything: `left` bytes wait in `pipe`.
    Parked {
        n: usize,
        pipe: sys::Pipe,
        left: usize,
    },
}

/// One direction of a connection.
struct Pump<'a> {
    src: &'a TcpStream,
    dst: &'a TcpStream,
    activity: &'a Activity,
    /// How many of the connection's two directions reached end of stream.
    finished: &'a AtomicU8,
    bytes: &'a AtomicU64,
}

impl Pump<'_> {
    /// Forwards until end of stream, then half-closes the destination.
    ///
    /// Two modes. Copy mode (`recv` into a per-thread buffer, `send` at once) serves the small
    /// messages of API traffic in two syscalls, and a short read proves the socket drained, as
    /// in tokio's own `poll_read`, so no third call has to see EAGAIN. A read that fills the
    /// buffer switches to splice mode, which moves bulk data through a pipe without copying it
    /// to user space; the pipe is taken from the pool only then and returned empty when the
    /// source runs dry, and the direction goes back to copy mode. (Splice cannot use the
    /// short-read rule: a pipe can run out of slots before the socket is empty.)
    async fn run(self) -> io::Result<()> {
        let (src_fd, dst_fd) = (self.src.as_raw_fd(), self.dst.as_raw_fd());
        let mut bulk = false;
        loop {
            // The socket's own reader slot, not `ready()`: that future links itself into the
            // socket's waiter list under its lock on every wait and unlinks on drop, which cost
            // more user time per small message than the recv and send wrappers together.
            std::future::poll_fn(|cx| self.src.poll_read_ready(cx)).await?;
            if bulk {
                if self.splice_burst(src_fd, dst_fd).await? {
                    return self.end_of_stream(dst_fd, false);
                }
                bulk = false;
                continue;
            }
            match self.copy_step(src_fd, dst_fd, peer_closed(self.src))? {
                Step::Eof => return self.end_of_stream(dst_fd, false),
                Step::Idle => {}
                Step::Sent { n, more } => {
                    self.account(n);
                    bulk = more;
                }
                Step::Last { n } => {
                    self.account(n);
                    return self.end_of_stream(dst_fd, true);
                }
                Step::Parked { n, pipe, left } => {
                    self.drain(&pipe, dst_fd, left).await?;
                    sys::give_back(pipe);
                    self.account(n);
                }
            }
        }
    }

    /// Forwards the end of stream as a half-close. Two cases leave that to `close()`, which
    /// sends the FIN anyway (the receive queues are empty then, so no RST) and saves a syscall
    /// per connection: the other direction already ended, so both sockets close right after
    /// this; or the destination's own FIN has arrived, so the other direction only has bytes
    /// already received left to forward and ends by itself, and the FIN follows then. `corked`
    /// (bytes just sent with `MSG_MORE`) always half-closes at once, which pushes them out.
    fn end_of_stream(&self, dst_fd: RawFd, corked: bool) -> io::Result<()> {
        let first = self.finished.fetch_add(1, Ordering::Relaxed) == 0;
        if first && (corked || !peer_closed(self.dst)) {
            sys::shutdown_write(dst_fd)
        } else {
            Ok(())
        }
    }

    fn account(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        self.activity.touch();
    }

    /// One `recv` + `send` through the per-thread buffer; no await inside.
    ///
    /// `src_closed` says the source's FIN has arrived (`EPOLLRDHUP`). A short read then took
    /// the last bytes there will ever be, so they go out with `MSG_MORE` and the caller ends the
    /// direction at once: data and FIN leave in one segment and no `recv` has to return 0, as
    /// haproxy does. (The closed state is final in tokio's readiness, never cleared.)
    fn copy_step(&self, src_fd: RawFd, dst_fd: RawFd, src_closed: bool) -> io::Result<Step> {
        SCRATCH_BUF.with(|cell| {
            let mut buf = cell.borrow_mut();
            let mut n = 0;
            // The syscall runs inside try_io so that readiness is cleared against the state seen
            // before it: on WouldBlock, and on a short read (the socket is drained).
            let read = self.src.try_io(Interest::READABLE, || {
                n = sys::recv(src_fd, &mut buf[..])?;
                if n > 0 && n < buf.len() {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(n)
                }
            });
            match read {
                Ok(0) => return Ok(Step::Eof),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && n == 0 => return Ok(Step::Idle),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let last = src_closed && n < buf.len();
            let sent = match sys::send(dst_fd, &buf[..n], last) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            if sent == n {
                return Ok(if last {
                    Step::Last { n }
                } else {
                    Step::Sent {
                        n,
                        more: n == buf.len(),
                    }
                });
            }
            // The destination is full: park the rest in a pipe (the one buffer this
            // connection owns until the destination takes it).
            let pipe = sys::take_pipe()?;
            sys::fill_pipe(&pipe, &buf[sent..n])?;
            Ok(Step::Parked {
                n,
                pipe,
                left: n - sent,
            })
        })
    }

    /// Splices until the source has nothing more (returns false) or ends (returns true).
    async fn splice_burst(&self, src_fd: RawFd, dst_fd: RawFd) -> io::Result<bool> {
        let pipe = sys::take_pipe()?;
        loop {
            let read = self.src.try_io(Interest::READABLE, || {
                sys::splice_in(src_fd, &pipe, PIPE_SIZE)
            });
            let n = match read {
                Ok(0) => {
                    sys::give_back(pipe);
                    return Ok(true);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sys::give_back(pipe);
                    return Ok(false);
                }
                Err(e) => return Err(e),
            };
            // On error the pipe is dropped, never returned to the pool with bytes in it.
            self.drain(&pipe, dst_fd, n).await?;
            self.account(n);
        }
    }

    async fn drain(&self, pipe: &sys::Pipe, dst_fd: RawFd, mut left: usize) -> io::Result<()> {
        while left > 0 {
            std::future::poll_fn(|cx| self.dst.poll_write_ready(cx)).await?;
            match self
                .dst
                .try_io(Interest::WRITABLE, || sys::splice_out(pipe, dst_fd, left))
            {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::BackendConfig;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair. With `small` buffers a slow reader pushes back on the proxy at once
    /// and reads stay below the copy buffer (copy mode, bytes parked in a pipe); with default
    /// buffers reads fill it (splice mode).
    async fn pair(small_buffers: bool) -> (TcpStream, TcpStream) {
        let small = |s: &tokio::net::TcpSocket| {
            if small_buffers {
                s.set_send_buffer_size(4096).unwrap();
                s.set_recv_buffer_size(4096).unwrap();
            }
        };
        let ls = tokio::net::TcpSocket::new_v4().unwrap();
        small(&ls);
        ls.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let l: TcpListener = ls.listen(8).unwrap();
        let cs = tokio::net::TcpSocket::new_v4().unwrap();
        small(&cs);
        let a = cs.connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    /// Messages of every size from 1 byte to past the copy buffer, so both modes and the
    /// switches between them run.
    fn payload(seed: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut size = 1usize;
        let mut x = seed;
        while out.len() < 6_000_000 {
            for _ in 0..size {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                out.push((x >> 16) as u8);
            }
            size = (size * 3 + 7) % 70_000 + 1;
        }
        out
    }

    /// Writes `data` in uneven chunks, then half-closes.
    async fn send_all(mut s: tokio::net::tcp::OwnedWriteHalf, data: Vec<u8>) {
        let mut at = 0;
        let mut chunk = 1;
        while at < data.len() {
            let end = (at + chunk).min(data.len());
            s.write_all(&data[at..end]).await.unwrap();
            at = end;
            chunk = (chunk * 7 + 3) % 90_000 + 1;
        }
        s.shutdown().await.unwrap();
    }

    /// Reads to the end in small pieces, yielding often, so the proxy's destination fills up
    /// and bytes have to wait in a pipe.
    async fn slow_read(mut s: tokio::net::tcp::OwnedReadHalf) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 3000];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
            tokio::task::yield_now().await;
        }
    }

    /// A backend to count bytes on (nothing connects to its address).
    fn test_backend() -> Arc<Backend> {
        Backend::new(&BackendConfig {
            name: "b".into(),
            address: "127.0.0.1:1".parse().unwrap(),
        })
    }

    /// Each direction's (sent, received) bytes are equal, and the backend counted them.
    fn assert_intact(backend: &Backend, up: (&[u8], &[u8]), down: (&[u8], &[u8])) {
        assert!(up.0 == up.1, "client to server bytes differ");
        assert!(down.0 == down.1, "server to client bytes differ");
        assert_eq!(backend.bytes_up.load(Ordering::Relaxed), up.0.len() as u64);
        assert_eq!(
            backend.bytes_down.load(Ordering::Relaxed),
            down.0.len() as u64
        );
    }

    #[tokio::test]
    async fn copy_mode_forwards_both_directions_intact_under_backpressure() {
        forwards_intact_then_half_closes(true).await;
    }

    #[tokio::test]
    async fn splice_mode_forwards_both_directions_intact() {
        forwards_intact_then_half_closes(false).await;
    }

    async fn forwards_intact_then_half_closes(small_buffers: bool) {
        let (client, proxy_client_side) = pair(small_buffers).await;
        let (proxy_server_side, server) = pair(small_buffers).await;
        let backend = test_backend();
        let (up_data, down_data) = (payload(1), payload(2));
        let (client_r, client_w) = client.into_split();
        let (server_r, server_w) = server.into_split();
        let up_writer = tokio::spawn(send_all(client_w, up_data.clone()));
        let down_writer = tokio::spawn(send_all(server_w, down_data.clone()));
        let up_reader = tokio::spawn(slow_read(server_r));
        let down_reader = tokio::spawn(slow_read(client_r));
        forward(
            &proxy_client_side,
            &proxy_server_side,
            &Activity::new(),
            &backend,
        )
        .await
        .unwrap();
        // As in `serve`: the sockets close when forwarding ends (the last FIN rides on close).
        drop((proxy_client_side, proxy_server_side));
        up_writer.await.unwrap();
        down_writer.await.unwrap();
        let (up_got, down_got) = (up_reader.await.unwrap(), down_reader.await.unwrap());
        assert_intact(&backend, (&up_data, &up_got), (&down_data, &down_got));
        let (taken, given_back) = sys::pipes_taken_and_given_back();
        assert!(taken > 0, "bulk data went through splice");
        assert_eq!(taken, given_back, "every pipe went back to the pool, empty");
    }

    /// Small messages, written one at a time with a pause between them, like watch events and
    /// short requests: each arrives alone and wakes only its own direction.
    async fn trickle(mut s: tokio::net::tcp::OwnedWriteHalf, seed: u32, count: usize) -> Vec<u8> {
        let mut sent = Vec::new();
        let mut x = seed;
        for _ in 0..count {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let len = 1 + (x >> 16) as usize % 400;
            let msg: Vec<u8> = (0..len).map(|i| (x as usize + i) as u8).collect();
            s.write_all(&msg).await.unwrap();
            sent.extend_from_slice(&msg);
            tokio::task::yield_now().await;
        }
        s.shutdown().await.unwrap();
        sent
    }

    #[tokio::test]
    async fn many_small_messages_each_way_arrive_intact_and_in_order() {
        let (client, proxy_client_side) = pair(false).await;
        let (proxy_server_side, server) = pair(false).await;
        let backend = test_backend();
        let (client_r, client_w) = client.into_split();
        let (server_r, server_w) = server.into_split();
        let up = tokio::spawn(trickle(client_w, 7, 3000));
        let down = tokio::spawn(trickle(server_w, 9, 3000));
        let up_read = tokio::spawn(slow_read(server_r));
        let down_read = tokio::spawn(slow_read(client_r));
        let activity = Activity::new();
        let forwarding = forward(&proxy_client_side, &proxy_server_side, &activity, &backend);
        // A lost wake-up would stall forwarding for good: fail, do not hang.
        tokio::time::timeout(Duration::from_secs(30), forwarding)
            .await
            .expect("forwarding stalled")
            .unwrap();
        drop((proxy_client_side, proxy_server_side));
        let (up_sent, down_sent) = (up.await.unwrap(), down.await.unwrap());
        let (up_got, down_got) = (up_read.await.unwrap(), down_read.await.unwrap());
        assert_intact(&backend, (&up_sent, &up_got), (&down_sent, &down_got));
        let (taken, given_back) = sys::pipes_taken_and_given_back();
        assert_eq!(taken, given_back, "every pipe went back to the pool");
    }

    #[tokio::test]
    async fn small_messages_a_full_destination_cannot_take_wait_in_a_pipe_until_it_drains() {
        let (client, proxy_client_side) = pair(false).await;
        // Small buffers toward the server: a reader that stops fills them within a few events.
        let (proxy_server_side, server) = pair(true).await;
        let backend = test_backend();
        let (_client_r, client_w) = client.into_split();
        let (server_r, _server_w) = server.into_split();
        let writer = trickle(client_w, 5, 2000);
        let reader = async {
            // The server reads nothing until the proxy had to park bytes that its full socket
            // did not take (a partial send), then reads everything.
            let deadline = Instant::now() + Duration::from_secs(10);
            while sys::pipes_taken_and_given_back().0 == 0 {
                assert!(Instant::now() < deadline, "the destination never filled up");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            slow_read(server_r).await
        };
        let activity = Activity::new();
        let forwarding = async {
            let up = Pump {
                src: &proxy_client_side,
                dst: &proxy_server_side,
                activity: &activity,
                finished: &AtomicU8::new(0),
                bytes: &backend.bytes_up,
            };
            let r = tokio::time::timeout(Duration::from_secs(30), up.run()).await;
            // As in `serve`: the socket closes when forwarding ends.
            drop(proxy_server_side);
            r
        };
        let (sent, got, forwarded) = tokio::join!(writer, reader, forwarding);
        forwarded.expect("forwarding stalled").unwrap();
        assert!(got == sent, "client to server bytes differ");
        let (taken, given_back) = sys::pipes_taken_and_given_back();
        assert!(taken > 0, "a partial send parked bytes in a pipe");
        assert_eq!(
            taken, given_back,
            "and the pipe went back to the pool, empty"
        );
    }

    #[tokio::test]
    async fn an_answer_and_fin_already_there_go_out_together_and_the_client_may_still_send() {
        let (client, proxy_client_side) = pair(false).await;
        let (proxy_server_side, server) = pair(false).await;
        let backend = test_backend();
        let (mut client_r, mut client_w) = client.into_split();
        let (mut server_r, mut server_w) = server.into_split();
        // The server answers and half-closes before the proxy looks: the answer and its FIN
        // wait together, which is the case for sending them in one segment.
        server_w.write_all(b"answer").await.unwrap();
        server_w.shutdown().await.unwrap();
        let backend_ref = &backend;
        let proxy = async move {
            let (a, b) = (proxy_client_side, proxy_server_side);
            let forwarded = forward(&a, &b, &Activity::new(), backend_ref).await;
            // As in `serve`: the sockets close when forwarding ends (the last FIN rides on it).
            drop((a, b));
            forwarded
        };
        let client = async {
            let mut answer = Vec::new();
            client_r.read_to_end(&mut answer).await.unwrap();
            assert_eq!(answer, b"answer", "the answer, then end of stream");
            // Half-closed is not closed: the other direction still reaches the server.
            client_w.write_all(b"after").await.unwrap();
            client_w.shutdown().await.unwrap();
            let mut rest = Vec::new();
            server_r.read_to_end(&mut rest).await.unwrap();
            rest
        };
        let both = async { tokio::join!(proxy, client) };
        let (forwarded, rest) = tokio::time::timeout(Duration::from_secs(10), both)
            .await
            .expect("the answer, its FIN and the client's bytes all got through");
        forwarded.unwrap();
        assert_eq!(rest, b"after");
        assert_eq!(backend.bytes_down.load(Ordering::Relaxed), 6);
        assert_eq!(backend.bytes_up.load(Ordering::Relaxed), 5);
    }
}
