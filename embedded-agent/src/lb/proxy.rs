//! One proxied connection: pick a backend (retrying the next healthy one when a connect fails
//! or times out), then forward both directions with `splice(2)` and half-close, until both
//! sides are done, either side errors, the connection idles past `timeouts.idle`, its backend
//! is marked down, or a drain runs out of time.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::backend::Backend;
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
    let started = Instant::now();
    let last_io = AtomicU64::new(0);
    let end = tokio::select! {
        r = forward(&client, &server, started, &last_io, backend) => {
            if r.is_ok() { End::Done } else { End::Error }
        }
        _ = idle(started, &last_io, generation.timeouts.idle.0) => End::Idle,
        _ = health.wait_for(|up| !*up) => End::BackendDown,
        _ = force.wait_for(|f| *f) => End::Drained,
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
        let connect = TcpStream::connect(backend.address);
        match tokio::time::timeout(generation.timeouts.connect.0, connect).await {
            Ok(Ok(stream)) => {
                backend.total.fetch_add(1, Ordering::Relaxed);
                // Small writes (API requests, watch events) go out at once; throughput does
                // not suffer because splice hands the kernel whole pipe loads.
                let _ignored = stream.set_nodelay(true);
                return Some((active, stream));
            }
            Ok(Err(_)) | Err(_) => {
                backend.connect_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    None
}

async fn forward(
    client: &TcpStream,
    server: &TcpStream,
    started: Instant,
    last_io: &AtomicU64,
    backend: &Backend,
) -> io::Result<()> {
    let up = Pump {
        src: client,
        dst: server,
        started,
        last_io,
        bytes: &backend.bytes_up,
    };
    let down = Pump {
        src: server,
        dst: client,
        started,
        last_io,
        bytes: &backend.bytes_down,
    };
    tokio::try_join!(up.run(), down.run()).map(|_| ())
}

/// Closes the connection once nothing moved either way for `limit`.
async fn idle(started: Instant, last_io: &AtomicU64, limit: Duration) {
    loop {
        let last = started + Duration::from_millis(last_io.load(Ordering::Relaxed));
        let deadline = last + limit;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// One direction of a connection.
struct Pump<'a> {
    src: &'a TcpStream,
    dst: &'a TcpStream,
    started: Instant,
    last_io: &'a AtomicU64,
    bytes: &'a AtomicU64,
}

impl Pump<'_> {
    /// Forwards until end of stream, then half-closes the destination. The pipe is taken only
    /// once the source is readable and returned once it is empty and the source has nothing
    /// more, so an idle direction holds no buffer.
    async fn run(self) -> io::Result<()> {
        let (src_fd, dst_fd) = (self.src.as_raw_fd(), self.dst.as_raw_fd());
        let mut pipe = None;
        loop {
            if pipe.is_none() {
                self.src.readable().await?;
                pipe = Some(sys::take_pipe()?);
            }
            let Some(p) = pipe.as_ref() else { continue };
            let read = self
                .src
                .try_io(Interest::READABLE, || sys::splice_in(src_fd, p, PIPE_SIZE));
            let n = match read {
                Ok(0) => {
                    if let Some(p) = pipe.take() {
                        sys::give_back(p);
                    }
                    return sys::shutdown_write(dst_fd);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Some(p) = pipe.take() {
                        sys::give_back(p);
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            // On error the pipe is dropped with the future, never returned with bytes in it.
            self.drain(p, dst_fd, n).await?;
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
            let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last_io.store(now, Ordering::Relaxed);
        }
    }

    async fn drain(&self, pipe: &sys::Pipe, dst_fd: RawFd, mut left: usize) -> io::Result<()> {
        while left > 0 {
            self.dst.writable().await?;
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
