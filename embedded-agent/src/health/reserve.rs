//! A reserve of file descriptors kept for health checks, so that a process that has run out
//! of them (a flood of clients up to `max_connections` on a low `LimitNOFILE`, a leak) still
//! checks its backends instead of reporting nothing.
//!
//! The reserve holds a few descriptors of `/dev/null`. A check creates its socket through
//! [`Reserve::open`]: if that fails with EMFILE or ENFILE, one reserved descriptor goes back to
//! the kernel and the socket is created again, which takes the number just freed (the kernel
//! hands out the lowest free one). Nothing else can take it in between: the checks run on the
//! agent's one current-thread runtime, the call is synchronous, and the VRRP threads open all
//! their descriptors at start. After each check [`Reserve::refill`] takes the number back the
//! same way, before another task runs.
//!
//! VRRP needs no reserve: its sockets, rtnetlink socket and timer are all opened at start.

use std::fs::File;
use std::io;
use std::sync::Mutex;

/// Most descriptors held back for checks; each covers one check in flight at a moment when
/// the process has none left. More backends than this still get checked whenever descriptors
/// are free; a check that finds none is "unknown" (see `health::CheckError::Local`).
pub const RESERVED: usize = 16;

/// At most this share of the descriptors free at start goes to the reserve, so that under a
/// very low `LimitNOFILE` the reserve does not starve the listeners it is there to outlast.
const SHARE_OF_FREE: usize = 8;

#[derive(Debug)]
pub struct Reserve {
    held: Mutex<Vec<File>>,
    /// What the reserve got at start, and refills back to: never more, so it takes from the
    /// rest of the process only what checks gave back.
    target: usize,
}

impl Reserve {
    /// Opens up to `most` descriptors now, and no more than an eighth of those free.
    pub fn new(most: usize) -> Reserve {
        let most = free_descriptors().map_or(most, |free| most.min(free / SHARE_OF_FREE));
        let reserve = Reserve {
            held: Mutex::new(Vec::with_capacity(most)),
            target: most,
        };
        reserve.refill();
        Reserve {
            target: reserve.held(),
            ..reserve
        }
    }

    /// How many descriptors are held right now.
    pub fn held(&self) -> usize {
        self.held.lock().map_or(0, |h| h.len())
    }

    /// Tops the reserve up to its target; stops at the first failure (none free: the next
    /// refill tries again).
    pub fn refill(&self) {
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        while held.len() < self.target {
            match File::open("/dev/null") {
                Ok(f) => held.push(f),
                Err(_) => break,
            }
        }
    }

    /// Runs `create` (a call that makes one descriptor, like `socket(2)`); when it fails for
    /// lack of descriptors, gives one reserved descriptor back and runs it once more.
    pub fn open<T>(&self, create: impl Fn() -> io::Result<T>) -> io::Result<T> {
        match create() {
            Err(e) if crate::lb::is_exhaustion(&e) && self.release_one() => create(),
            result => result,
        }
    }

    fn release_one(&self) -> bool {
        self.held
            .lock()
            .ok()
            .and_then(|mut held| held.pop())
            .is_some()
    }
}

/// The soft RLIMIT_NOFILE minus the descriptors open now, from `/proc/self`; `None` when
/// unknown or unlimited.
fn free_descriptors() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let soft: usize = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count();
    Some(soft.saturating_sub(open))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_creation_that_runs_out_of_descriptors_is_retried_on_a_released_one() {
        let reserve = Reserve::new(2);
        assert_eq!(reserve.held(), 2);
        let attempts = std::cell::Cell::new(0);
        let created = reserve.open(|| {
            attempts.set(attempts.get() + 1);
            if attempts.get() == 1 {
                Err(io::Error::from_raw_os_error(libc::EMFILE))
            } else {
                Ok("socket")
            }
        });
        assert_eq!((created.unwrap(), attempts.get()), ("socket", 2));
        assert_eq!(reserve.held(), 1);
        reserve.refill();
        assert_eq!(reserve.held(), 2);
    }

    #[test]
    fn takes_an_eighth_of_the_free_descriptors_at_most_and_never_grows_past_its_start() {
        let free = free_descriptors().unwrap();
        let reserve = Reserve::new(RESERVED);
        assert_eq!(reserve.held(), RESERVED.min(free / SHARE_OF_FREE));
        reserve.refill();
        assert_eq!(reserve.held(), reserve.target);
    }

    #[test]
    fn other_failures_and_an_empty_reserve_are_not_retried() {
        let reserve = Reserve::new(1);
        let refused = reserve
            .open(|| -> io::Result<()> { Err(io::Error::from_raw_os_error(libc::ECONNREFUSED)) });
        assert_eq!(
            refused.unwrap_err().raw_os_error(),
            Some(libc::ECONNREFUSED)
        );
        assert_eq!(reserve.held(), 1);
        let empty = Reserve {
            held: Mutex::new(Vec::new()),
            target: 0,
        };
        let exhausted =
            empty.open(|| -> io::Result<()> { Err(io::Error::from_raw_os_error(libc::ENFILE)) });
        assert_eq!(exhausted.unwrap_err().raw_os_error(), Some(libc::ENFILE));
    }
}
