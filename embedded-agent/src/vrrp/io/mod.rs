//! The kernel edge of VRRP: the only code here that makes system calls, and the only module of
//! the agent allowed `unsafe` (every block carries a `// SAFETY:` note).
//!
//! - [`socket`]: raw IPv4 sockets for protocol 112 (send with TTL 255, receive with the IP
//!   header so the TTL can be checked, RFC 5798 §7.1).
//! - [`netlink`]: hand-rolled rtnetlink to add, refresh and delete the VIP with a kernel
//!   lifetime, and to find the interface's own address.
//! - [`arp`]: gratuitous ARP over `AF_PACKET`.
//! - [`timer`]: a timerfd, for deadlines exact to the microsecond.
#![expect(
    unsafe_code,
    reason = "raw, packet and netlink sockets need libc calls"
)]

pub mod arp;
pub mod netlink;
pub mod socket;
mod sys;
pub mod timer;

pub use sys::{interface_index, monotonic_now, set_realtime};
