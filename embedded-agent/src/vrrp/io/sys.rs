//! Thin, checked wrappers over the libc calls the edge needs.

use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Turns a C return value into `io::Result`, reading `errno` on failure.
pub(super) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Same for calls returning `ssize_t`.
pub(super) fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// A new close-on-exec socket.
pub(super) fn socket(
    domain: libc::c_int,
    ty: libc::c_int,
    proto: libc::c_int,
) -> io::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments.
    let fd = cvt(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) })?;
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setsockopt(2)` with a value of any plain type.
pub(super) fn setsockopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<T>()).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `value` points to a live `T` of exactly `len` bytes for the whole call, and the
    // kernel only reads it.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            len,
        )
    })?;
    Ok(())
}

/// `SO_BINDTODEVICE`: only traffic of this interface reaches the socket, and what it sends
/// leaves through it.
pub(super) fn bind_to_device(fd: &OwnedFd, interface: &str) -> io::Result<()> {
    let name = interface.as_bytes();
    let len = libc::socklen_t::try_from(name.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `name` is a live byte slice of `len` bytes; the kernel copies it.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            len,
        )
    })?;
    Ok(())
}

/// An IPv4 socket address in the kernel's layout.
pub(super) fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap_or_default(),
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.octets()),
        },
        sin_zero: [0; 8],
    }
}

/// `bind(2)` for any sockaddr type.
pub(super) fn bind<T>(fd: &OwnedFd, addr: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<T>()).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `addr` is a live, fully initialised sockaddr of `len` bytes; the kernel reads it.
    cvt(unsafe { libc::bind(fd.as_raw_fd(), std::ptr::from_ref(addr).cast(), len) })?;
    Ok(())
}

/// `sendto(2)` for any sockaddr type.
pub(super) fn send_to<T>(fd: &OwnedFd, buf: &[u8], addr: &T) -> io::Result<usize> {
    let len = libc::socklen_t::try_from(size_of::<T>()).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `buf` and `addr` are live for the call, with the lengths passed; the kernel only
    // reads them.
    cvt_size(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            0,
            std::ptr::from_ref(addr).cast(),
            len,
        )
    })
}

/// `recv(2)` into `buf`.
pub(super) fn recv(fd: &OwnedFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is a live, writable slice of `buf.len()` bytes for the whole call.
    cvt_size(unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) })
}

/// `read(2)` into `buf`.
pub(super) fn read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a live, writable slice of `buf.len()` bytes for the whole call.
    cvt_size(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// The index of a network interface in this namespace.
pub fn interface_index(name: &str) -> io::Result<u32> {
    let c_name = CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(index)
    }
}

/// Puts the calling thread under `SCHED_RR` at `priority` (1..=99): above every normal
/// process, so adverts and takeovers keep their timing when the CPUs are saturated. Children
/// do not inherit it (`SCHED_RESET_ON_FORK`). Needs CAP_SYS_NICE.
pub fn set_realtime(priority: u8) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: libc::c_int::from(priority),
    };
    // SAFETY: `param` is a valid sched_param for the call; pid 0 is the calling thread.
    cvt(unsafe {
        libc::sched_setscheduler(0, libc::SCHED_RR | libc::SCHED_RESET_ON_FORK, &param)
    })?;
    Ok(())
}

/// CLOCK_MONOTONIC now: the clock `Instant` reads, as a number, so event times taken by
/// different processes on one host (an agent and the one restarted after it) compare.
pub fn monotonic_now() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the whole call.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if ret != 0 {
        // Cannot fail for CLOCK_MONOTONIC with a valid pointer; zero marks "unknown".
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}
