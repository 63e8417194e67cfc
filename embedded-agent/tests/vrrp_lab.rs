//! VRRP for real: the khagent binary (and Debian's keepalived) in network namespaces on a
//! private bridge, exchanging real adverts. Needs root. Each test builds its own lab on
//! 10.98.K.0/24 with a distinct K, so they run in parallel, and tears it down even on failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "vrrp_lab/failover.rs"]
mod failover;
#[path = "vrrp_lab/interop.rs"]
mod interop;
#[path = "vrrp_lab/packets.rs"]
mod packets;
#[path = "vrrp_lab/support.rs"]
mod support;
#[path = "vrrp_lab/tracking.rs"]
mod tracking;
