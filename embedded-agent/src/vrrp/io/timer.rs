//! A timerfd (CLOCK_MONOTONIC, nanosecond resolution) for the VRRP timers.
//!
//! tokio's timers round every deadline up to the next millisecond of a per-process tick, and
//! the reactor's wait is in milliseconds too: up to 2 ms of jitter per node. At a 10 ms advert
//! interval that eats the 1.95 ms by which Skew_Time separates priorities 100 and 50, and the
//! lower-priority backup sometimes took over first (the VIP then moves twice). A timerfd fires
//! within microseconds of the deadline.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use super::sys;

/// One re-armable deadline.
#[derive(Debug)]
pub struct DeadlineTimer {
    fd: AsyncFd<OwnedFd>,
}

impl DeadlineTimer {
    /// Must run inside a tokio runtime (registers with its reactor).
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain system call with integer arguments.
        let raw = sys::cvt(unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        })?;
        // SAFETY: `raw` was just returned by timerfd_create and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an OwnedFd is open until dropped and always returns the same descriptor,
        // and the AsyncFd owns it from here on.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(Self { fd })
    }

    /// Arms the timer for `deadline` (a deadline already past fires at once); `None` disarms.
    /// Re-arming discards an expiry not yet consumed.
    pub fn arm(&self, deadline: Option<Instant>) -> io::Result<()> {
        let value = match deadline {
            None => libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                libc::timespec {
                    tv_sec: libc::time_t::try_from(left.as_secs()).unwrap_or(libc::time_t::MAX),
                    // An all-zero value would disarm; 1 ns means "now".
                    tv_nsec: libc::c_long::from(left.subsec_nanos()).max(i64::from(left.is_zero())),
                }
            }
        };
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: value,
        };
        // SAFETY: `spec` is a valid itimerspec for the call; a null old-value pointer is allowed.
        sys::cvt(unsafe {
            libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut())
        })?;
        Ok(())
    }

    /// Waits for the armed deadline.
    pub async fn expired(&self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            match guard.try_io(|fd| sys::read(fd.get_ref(), &mut expirations)) {
                Ok(result) => return result.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }
}
