//! VRRP for real: the khagent binary (and Debian's keepalived) in network namespaces on a
//! private bridge, exchanging real adverts. Needs root. Each test builds its own lab on
//! 10.98.K.0/24 with a distinct K, so they run in parallel, holds the lab's host-wide claim for
//! its life, and tears it down even on failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The integration tests' claim on a lab, host-wide: a second run of these tests (another
// terminal, another agent) waits for the first instead of tearing its namespaces down.
#[path = "../../tests/integration/support/claim.rs"]
#[expect(
    dead_code,
    reason = "the lab.sh-specific half serves the integration tests"
)]
mod claim;
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
