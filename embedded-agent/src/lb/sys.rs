//! The load balancer's only system calls that std and tokio do not wrap for a borrowed socket:
//! `splice(2)` through pipes (zero-copy forwarding), a pool of those pipes, `recv`/`send` on a
//! raw descriptor (copy mode, see `proxy`), `shutdown(SHUT_WR)` through a shared reference
//! (half-close), and the socket options `IP_FREEBIND` (bind the VIP before this node holds it),
//! `TCP_DEFER_ACCEPT` and `TCP_QUICKACK` (fewer wake-ups and packets per connection), and the
//! coarse monotonic clock (a connection's last activity, stamped per message).
//!
//! Why splice: 86-99% of a proxy's CPU is kernel time, and a userspace copy loop pays two copies
//! per byte plus a buffer per connection. A pipe holds page references, not a buffer we own; a
//! direction takes a pipe from the pool only while bytes are in flight and returns it empty, so
//! an idle connection holds no buffer at all.
#![expect(
    unsafe_code,
    reason = "splice(2), pipe2(2), recv/send(2), shutdown(2), fcntl(2), setsockopt(2) and clock_gettime(2) via libc"
)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

/// Pipe capacity requested with F_SETPIPE_SZ (the kernel default is 64 KiB). Bigger pipes move
/// more per splice pair on bulk streams; a pipe only references pages while bytes are in it,
/// and only directions with data in flight hold a pipe.
pub const PIPE_SIZE: usize = 256 * 1024;

/// Pipes kept for reuse. Beyond this, returned pipes are closed; creating one costs two fds and
/// a syscall, so the pool only needs to cover the directions busy at the same moment.
const POOL_MAX: usize = 256;

/// A pipe used as the in-kernel buffer of one direction of one connection.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid, writable array of two c_ints, as pipe2 requires.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A refused resize (pipe-user-pages-soft reached) leaves the default 64 KiB pipe, which
        // still works: splice then moves less per call.
        // SAFETY: F_SETPIPE_SZ takes an int argument; the descriptor is the open pipe.
        let _size = unsafe {
            libc::fcntl(
                write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_SIZE as libc::c_int,
            )
        };
        Ok(Pipe { read, write })
    }
}

/// Pipes that are empty and ready for reuse.
static POOL: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

#[cfg(test)]
thread_local! {
    /// Pipes this thread took and gave back: the pool is shared by every test running at once,
    /// so only a count of its own tells a test where its pipes went.
    static TAKEN_AND_GIVEN_BACK: std::cell::Cell<(usize, usize)> =
        const { std::cell::Cell::new((0, 0)) };
}

/// How many pipes this thread has taken and given back so far.
#[cfg(test)]
pub fn pipes_taken_and_given_back() -> (usize, usize) {
    TAKEN_AND_GIVEN_BACK.with(std::cell::Cell::get)
}

/// Takes an empty pipe from the pool or makes one.
pub fn take_pipe() -> io::Result<Pipe> {
    #[cfg(test)]
    TAKEN_AND_GIVEN_BACK.with(|c| c.set((c.get().0 + 1, c.get().1)));
    let pooled = POOL.lock().ok().and_then(|mut pool| pool.pop());
    match pooled {
        Some(pipe) => Ok(pipe),
        None => Pipe::new(),
    }
}

/// Returns a pipe that is known to be empty. A pipe that may still hold bytes must be dropped
/// instead, or those bytes would leak into another connection.
pub fn give_back(pipe: Pipe) {
    #[cfg(test)]
    TAKEN_AND_GIVEN_BACK.with(|c| c.set((c.get().0, c.get().1 + 1)));
    if let Ok(mut pool) = POOL.lock()
        && pool.len() < POOL_MAX
    {
        pool.push(pipe);
    }
}

/// Number of pipes waiting in the pool (for /metrics).
pub fn pooled_pipes() -> usize {
    POOL.lock().map(|p| p.len()).unwrap_or(0)
}

fn check(rc: isize) -> io::Result<usize> {
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

/// Moves up to `len` bytes from socket `src` into `pipe`. `Ok(0)` is end of stream.
/// Never blocks: `WouldBlock` when the socket has nothing to read.
pub fn splice_in(src: RawFd, pipe: &Pipe, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (the socket is borrowed by
    // the caller, the pipe by `pipe`); null offsets are required for sockets and pipes.
    let rc = unsafe {
        libc::splice(
            src,
            std::ptr::null_mut(),
            pipe.write.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    check(rc)
}

/// Moves up to `len` bytes from `pipe` to socket `dst`. `WouldBlock` when the socket's send
/// buffer is full.
pub fn splice_out(pipe: &Pipe, dst: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: as in `splice_in`.
    let rc = unsafe {
        libc::splice(
            pipe.read.as_raw_fd(),
            std::ptr::null_mut(),
            dst,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    check(rc)
}

/// `recv(2)` into `buf`; `Ok(0)` is end of stream.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, writable region of `buf.len()` bytes for the whole call.
    let rc = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    check(rc)
}

/// `send(2)` of `buf`; MSG_NOSIGNAL turns a peer's reset into EPIPE instead of SIGPIPE.
/// `more` (MSG_MORE) holds the bytes back for the caller's shutdown or close right after, so
/// they share the FIN's segment; only that one send is corked, later pushes are not.
pub fn send(fd: RawFd, buf: &[u8], more: bool) -> io::Result<usize> {
    let mut flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    if more {
        flags |= libc::MSG_MORE;
    }
    // SAFETY: `buf` is a valid, readable region of `buf.len()` bytes for the whole call.
    let rc = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags) };
    check(rc)
}

/// Copies `buf` into an empty pipe (at most [`PIPE_SIZE`] bytes fit without blocking), to
/// hold bytes a full socket did not take.
pub fn fill_pipe(pipe: &Pipe, buf: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &buf[done..];
        // SAFETY: `rest` is valid for reads of `rest.len()` bytes; the pipe's write end is open.
        let rc = unsafe { libc::write(pipe.write.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
        done += check(rc)?;
    }
    Ok(())
}

/// Half-closes a socket for writing (sends FIN) through a shared reference, so the other
/// direction can keep using the socket. An already-disconnected socket is not an error.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: `fd` is an open socket borrowed by the caller; shutdown does not close it.
    let rc = unsafe { libc::shutdown(fd, libc::SHUT_WR) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ENOTCONN) {
            return Err(err);
        }
    }
    Ok(())
}

/// Milliseconds on `CLOCK_MONOTONIC_COARSE`: the time of the kernel's last tick, read from the
/// vDSO without reading the clock hardware. Good to a tick (1-10 ms).
pub fn coarse_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC_COARSE exists on every Linux
    // since 2.6.32 and cannot fail with a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &raw mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs * 1000 + nanos / 1_000_000
}

/// Lets a listening socket bind an address this node does not (yet) hold, the VIP, without the
/// machine-wide `net.ipv4.ip_nonlocal_bind=1`.
pub fn set_freebind(fd: RawFd) -> io::Result<()> {
    set_int_option(fd, libc::IPPROTO_IP, libc::IP_FREEBIND, 1)
}

/// `TCP_QUICKACK` off: the kernel delays ACKs so they ride on the next data segment.
pub fn set_delayed_ack(fd: RawFd) -> io::Result<()> {
    set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_QUICKACK, 0)
}

/// `TCP_DEFER_ACCEPT`: a listener wakes accept() only once a connection's first data arrived
/// (or after about `secs` seconds).
pub fn set_defer_accept(fd: RawFd, secs: libc::c_int) -> io::Result<()> {
    set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, secs)
}

fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is an open socket; the option value points at a live c_int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn splices_bytes_between_sockets_through_a_pooled_pipe() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l2.local_addr().unwrap()).unwrap();
        let (mut d, _) = l2.accept().unwrap();
        a.write_all(b"hello").unwrap();
        let pipe = take_pipe().unwrap();
        let n = loop {
            match splice_in(b.as_raw_fd(), &pipe, PIPE_SIZE) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                other => break other.unwrap(),
            }
        };
        assert_eq!(n, 5);
        assert_eq!(splice_out(&pipe, c.as_raw_fd(), n).unwrap(), 5);
        // Back to the shared pool; the proxy tests check every pipe is returned.
        give_back(pipe);
        let mut buf = [0u8; 5];
        d.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        shutdown_write(c.as_raw_fd()).unwrap();
        assert_eq!(d.read(&mut buf).unwrap(), 0, "FIN reached the peer");
    }
}
