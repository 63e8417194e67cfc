//! The `vrrp:` section of the agent config: parsed with serde (`deny_unknown_fields`), then
//! checked by [`VrrpSettings::validate`], which names every offending field and its allowed
//! values. Defaults are chosen for fast, single-move failover (see `docs/vrrp.md`).

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Settings section `vrrp:` of the agent config.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VrrpSettings {
    /// Interface the adverts go out on and the VIP is added to (`eth0`).
    pub interface: String,
    /// VRID, 1..=255; must be the same on every node of the group and unique on the segment.
    pub router_id: u8,
    /// This node's base priority, 1..=254 (255 is the address owner, which we never are).
    pub priority: u8,
    /// Advertisement interval in milliseconds. The wire carries centiseconds (RFC 5798 §5.2.7),
    /// so this must be a multiple of 10 in 10..=40950.
    #[serde(default = "default_advert_interval_ms")]
    pub advert_interval_ms: u32,
    /// Adverts whose Max Adver Int is more than this factor above or below our own interval
    /// are dropped (1..=100). RFC 5798 has a backup adopt the master's interval unchecked
    /// (§6.4.2), so one forged advert carrying 4095 cs would make every node wait two
    /// minutes before taking over; no node of our group advertises another interval than
    /// ours except during a rolling change of it.
    #[serde(default = "default_advert_interval_factor")]
    pub advert_interval_factor: u16,
    /// The virtual IPv4 address.
    pub vip: Ipv4Addr,
    /// Prefix length the VIP is installed with (default 32).
    #[serde(default = "default_vip_prefix_len")]
    pub vip_prefix_len: u8,
    /// Source address of our adverts and our "primary address" for priority ties (§6.4.3).
    /// Default: the first IPv4 address of `interface` that is not the VIP.
    #[serde(default)]
    pub source_address: Option<Ipv4Addr>,
    /// Unicast: adverts go to `peers` only and are accepted from them only; an empty list
    /// then means a group of one, which hears no one (a single control plane). Multicast:
    /// adverts go to 224.0.0.18 and anyone on the segment is heard. Default: unicast when
    /// `peers` is not empty, so older configs keep their meaning.
    #[serde(default)]
    pub unicast: Option<bool>,
    /// The other routers of the group, with `unicast`.
    #[serde(default)]
    pub peers: Vec<Ipv4Addr>,
    /// Whether a higher-priority backup takes over from a lower-priority master (§6.1).
    #[serde(default = "default_true")]
    pub preempt: bool,
    /// How long a higher-priority backup keeps accepting a lower-priority master before it
    /// preempts it (keepalived's `preempt_delay`), in milliseconds, 0..=1000000.
    #[serde(default)]
    pub preempt_delay_ms: u32,
    /// Kernel `valid_lft`/`preferred_lft` of the VIP in seconds (1..=3600). The master refreshes
    /// the address several times per lifetime, so a killed agent's VIP disappears by itself.
    #[serde(default = "default_vip_lifetime_s")]
    pub vip_lifetime_s: u32,
    /// `SCHED_RR` priority of the VRRP thread (1..=99), or 0 for a normal thread. Realtime
    /// keeps adverts on time when the CPUs are saturated; without CAP_SYS_NICE the agent runs
    /// on as a normal thread and says so in status.
    #[serde(default = "default_realtime_priority")]
    pub realtime_priority: u8,
    /// Where the agent records that it added the VIP (`vip-added`), so that a restarted agent
    /// removes a VIP its killed predecessor left, and never one someone else added.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Gratuitous ARPs sent at once when becoming master (0..=100).
    #[serde(default = "default_garp_count")]
    pub gratuitous_arp_count: u8,
    /// Delay before the same burst is repeated, in milliseconds; 0 disables the repeat.
    #[serde(default = "default_garp_repeat_ms")]
    pub gratuitous_arp_repeat_ms: u32,
}

fn default_advert_interval_ms() -> u32 {
    100
}
fn default_advert_interval_factor() -> u16 {
    2
}
fn default_vip_prefix_len() -> u8 {
    32
}
fn default_true() -> bool {
    true
}
fn default_vip_lifetime_s() -> u32 {
    1
}
/// Where the agent keeps its state unless `state_dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/khagent";

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}
fn default_realtime_priority() -> u8 {
    1
}
fn default_garp_count() -> u8 {
    5
}
fn default_garp_repeat_ms() -> u32 {
    5000
}

/// One problem in the `vrrp:` section, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SettingsProblem {
    /// Dotted path of the field, e.g. `vrrp.advert_interval_ms`.
    pub field: &'static str,
    /// What is wrong and what is allowed.
    pub problem: String,
}

impl SettingsProblem {
    fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }
}

impl VrrpSettings {
    /// Checks every cross-field and range rule; returns all problems at once.
    pub fn validate(&self) -> Result<(), Vec<SettingsProblem>> {
        let mut problems = Vec::new();
        let mut bad = |field, problem: String| problems.push(SettingsProblem::new(field, problem));
        if self.interface.is_empty() || self.interface.len() > 15 || self.interface.contains('/') {
            bad(
                "vrrp.interface",
                format!(
                    "{:?} is not an interface name (1-15 characters, no '/')",
                    self.interface
                ),
            );
        }
        if self.router_id == 0 {
            bad("vrrp.router_id", "0 is reserved; use 1..=255".into());
        }
        if self.priority == 0 || self.priority == 255 {
            bad(
                "vrrp.priority",
                format!(
                    "{} is reserved (0 = releasing, 255 = address owner); use 1..=254",
                    self.priority
                ),
            );
        }
        if !(10..=40950).contains(&self.advert_interval_ms)
            || !self.advert_interval_ms.is_multiple_of(10)
        {
            bad(
                "vrrp.advert_interval_ms",
                format!(
                    "{} is not allowed: adverts carry centiseconds, use a multiple of 10 in 10..=40950",
                    self.advert_interval_ms
                ),
            );
        }
        if !(1..=100).contains(&self.advert_interval_factor) {
            bad(
                "vrrp.advert_interval_factor",
                format!(
                    "{} is not allowed; use 1..=100 (1: only our own interval is accepted)",
                    self.advert_interval_factor
                ),
            );
        }
        if self.vip.is_unspecified() || self.vip.is_multicast() || self.vip.is_broadcast() {
            bad(
                "vrrp.vip",
                format!(
                    "{} cannot be a virtual address; use a unicast IPv4 address",
                    self.vip
                ),
            );
        }
        if !(1..=32).contains(&self.vip_prefix_len) {
            bad(
                "vrrp.vip_prefix_len",
                format!("{} is not a prefix length; use 1..=32", self.vip_prefix_len),
            );
        }
        if let Some(src) = self.source_address
            && (src == self.vip || src.is_unspecified() || src.is_multicast())
        {
            bad(
                "vrrp.source_address",
                format!(
                    "{src} cannot be the advert source; use this node's own address on the interface"
                ),
            );
        }
        if self.unicast == Some(false) && !self.peers.is_empty() {
            bad(
                "vrrp.peers",
                "peers are only used with unicast; remove them or set `unicast: true`".into(),
            );
        }
        for peer in &self.peers {
            if peer.is_multicast()
                || peer.is_unspecified()
                || peer.is_broadcast()
                || *peer == self.vip
            {
                bad(
                    "vrrp.peers",
                    format!("{peer} is not a peer's unicast address"),
                );
            }
            if Some(*peer) == self.source_address {
                bad(
                    "vrrp.peers",
                    format!("{peer} is this node's own source_address; list only the other nodes"),
                );
            }
        }
        if self.preempt_delay_ms > 1_000_000 {
            bad(
                "vrrp.preempt_delay_ms",
                format!("{} is too long; use 0..=1000000", self.preempt_delay_ms),
            );
        }
        if !(1..=3600).contains(&self.vip_lifetime_s) {
            bad(
                "vrrp.vip_lifetime_s",
                format!(
                    "{} is not allowed; use 1..=3600 seconds",
                    self.vip_lifetime_s
                ),
            );
        }
        if !self.state_dir.is_absolute() {
            bad(
                "vrrp.state_dir",
                format!("{} is not an absolute path", self.state_dir.display()),
            );
        }
        if self.realtime_priority > 99 {
            bad(
                "vrrp.realtime_priority",
                format!(
                    "{} is not a realtime priority; use 1..=99, or 0 for none",
                    self.realtime_priority
                ),
            );
        }
        if self.gratuitous_arp_count > 100 {
            bad(
                "vrrp.gratuitous_arp_count",
                format!("{} is too many; use 0..=100", self.gratuitous_arp_count),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Advertisement_Interval in centiseconds, as carried on the wire.
    pub fn advert_interval_cs(&self) -> u16 {
        u16::try_from(self.advert_interval_ms / 10)
            .unwrap_or(u16::MAX)
            .min(crate::vrrp::packet::MAX_ADVERT_INTERVAL_CS)
    }

    /// The Max Adver Int values (centiseconds) an advert may carry to be accepted: our own
    /// interval divided and multiplied by `advert_interval_factor`, within the 12-bit field.
    pub fn accepted_advert_intervals_cs(&self) -> RangeInclusive<u16> {
        let ours = self.advert_interval_cs();
        let factor = self.advert_interval_factor.max(1);
        let low = ours.div_ceil(factor).max(1);
        let high = ours
            .saturating_mul(factor)
            .min(crate::vrrp::packet::MAX_ADVERT_INTERVAL_CS);
        low..=high
    }

    /// Whether adverts are unicast to `peers` instead of multicast.
    pub fn unicast(&self) -> bool {
        self.unicast.unwrap_or(!self.peers.is_empty())
    }

    /// Kernel lifetime of the VIP.
    pub fn vip_lifetime(&self) -> Duration {
        Duration::from_secs(u64::from(self.vip_lifetime_s))
    }

    /// How often a master rewrites the VIP's lifetime: five times per lifetime, so two lost
    /// refreshes under load do not let the kernel expire it.
    pub fn vip_refresh_interval(&self) -> Duration {
        self.vip_lifetime() / 5
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn parse(yaml: &str) -> Result<VrrpSettings, serde_yaml_ng::Error> {
        serde_yaml_ng::from_str(yaml)
    }

    const MINIMAL: &str = "interface: eth0\nrouter_id: 51\npriority: 100\nvip: 10.0.0.100\n";

    #[test]
    fn minimal_section_gets_fast_failover_defaults() {
        let s = parse(MINIMAL).unwrap();
        s.validate().unwrap();
        assert_eq!(s.advert_interval_ms, 100);
        assert_eq!(s.advert_interval_cs(), 10);
        assert_eq!(s.vip_prefix_len, 32);
        assert!(s.preempt);
        assert!(!s.unicast());
        assert_eq!(s.vip_lifetime_s, 1);
        assert_eq!(s.vip_refresh_interval(), Duration::from_millis(200));
    }

    #[test]
    fn rejects_unknown_fields() {
        let err = parse(&format!("{MINIMAL}advert_int: 1\n")).unwrap_err();
        assert!(err.to_string().contains("advert_int"), "{err}");
    }

    #[test]
    fn rejects_router_id_zero() {
        let s = parse("interface: eth0\nrouter_id: 0\npriority: 100\nvip: 10.0.0.100\n").unwrap();
        let problems = s.validate().unwrap_err();
        assert_eq!(problems[0].field, "vrrp.router_id");
    }

    #[test]
    fn rejects_router_id_above_255_naming_the_field() {
        let err =
            parse("interface: eth0\nrouter_id: 256\npriority: 100\nvip: 10.0.0.100\n").unwrap_err();
        assert!(err.to_string().contains("router_id"), "{err}");
    }

    #[test]
    fn rejects_reserved_priorities() {
        for p in [0, 255] {
            let s = parse(&MINIMAL.replace("priority: 100", &format!("priority: {p}"))).unwrap();
            assert_eq!(s.validate().unwrap_err()[0].field, "vrrp.priority");
        }
    }

    #[test]
    fn rejects_advert_interval_not_in_centiseconds() {
        for ms in [0, 5, 15, 40960] {
            let s = parse(&format!("{MINIMAL}advert_interval_ms: {ms}\n")).unwrap();
            let problems = s.validate().unwrap_err();
            assert_eq!(problems[0].field, "vrrp.advert_interval_ms", "{ms}");
            assert!(problems[0].to_string().contains("multiple of 10"));
        }
        let s = parse(&format!("{MINIMAL}advert_interval_ms: 40950\n")).unwrap();
        s.validate().unwrap();
        assert_eq!(s.advert_interval_cs(), 4095);
    }

    /// The defence against one forged advert with Max Adver Int 4095 cs (issue #12): the
    /// accepted range is ours ÷ factor ..= ours × factor, within the 12-bit field.
    #[test]
    fn accepts_advertised_intervals_only_within_the_factor_of_our_own() {
        let s = parse(MINIMAL).unwrap();
        assert_eq!(s.advert_interval_factor, 2);
        assert_eq!(s.accepted_advert_intervals_cs(), 5..=20);
        assert!(!s.accepted_advert_intervals_cs().contains(&4095));
        let exact = parse(&format!(
            "{MINIMAL}advert_interval_factor: 1
"
        ))
        .unwrap();
        assert_eq!(exact.accepted_advert_intervals_cs(), 10..=10);
        let fast = parse(&format!(
            "{MINIMAL}advert_interval_ms: 10\nadvert_interval_factor: 3\n"
        ))
        .unwrap();
        assert_eq!(fast.accepted_advert_intervals_cs(), 1..=3);
        let slow = parse(&format!(
            "{MINIMAL}advert_interval_ms: 40950\nadvert_interval_factor: 100\n"
        ))
        .unwrap();
        assert_eq!(slow.accepted_advert_intervals_cs(), 41..=4095);
        for factor in [0, 101] {
            let s = parse(&format!("{MINIMAL}advert_interval_factor: {factor}\n")).unwrap();
            assert_eq!(
                s.validate().unwrap_err()[0].field,
                "vrrp.advert_interval_factor"
            );
        }
    }

    #[test]
    fn reports_every_problem_at_once() {
        let yaml = "interface: ''\nrouter_id: 0\npriority: 0\nvip: 224.0.0.18\nvip_lifetime_s: 0\npeers: [224.0.0.18]\n";
        let fields: Vec<_> = parse(yaml)
            .unwrap()
            .validate()
            .unwrap_err()
            .iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(
            fields,
            [
                "vrrp.interface",
                "vrrp.router_id",
                "vrrp.priority",
                "vrrp.vip",
                "vrrp.peers",
                "vrrp.vip_lifetime_s"
            ]
        );
    }

    #[test]
    fn realtime_priority_defaults_to_the_lowest_and_rejects_above_99() {
        assert_eq!(parse(MINIMAL).unwrap().realtime_priority, 1);
        let s = parse(&format!("{MINIMAL}realtime_priority: 100\n")).unwrap();
        assert_eq!(s.validate().unwrap_err()[0].field, "vrrp.realtime_priority");
        parse(&format!("{MINIMAL}realtime_priority: 0\n"))
            .unwrap()
            .validate()
            .unwrap();
    }

    #[test]
    fn peers_switch_to_unicast() {
        let s = parse(&format!("{MINIMAL}peers: [10.0.0.2, 10.0.0.3]\n")).unwrap();
        s.validate().unwrap();
        assert!(s.unicast());
    }

    /// A single control plane: unicast to no one, so no advert from anyone is obeyed.
    #[test]
    fn explicit_unicast_allows_an_empty_peer_list_and_multicast_refuses_peers() {
        let alone = parse(&format!("{MINIMAL}unicast: true\npeers: []\n")).unwrap();
        alone.validate().unwrap();
        assert!(alone.unicast());
        let s = parse(&format!("{MINIMAL}unicast: false\npeers: [10.0.0.2]\n")).unwrap();
        assert_eq!(s.validate().unwrap_err()[0].field, "vrrp.peers");
    }
}
