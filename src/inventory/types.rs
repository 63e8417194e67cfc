//! Newtypes that reject bad values while the inventory is deserialized, so every later
//! layer holds only valid names, ports and router ids.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A node or cluster name: an RFC 1123 DNS label (lowercase alphanumerics and `-`,
/// at most 63 characters), as Kubernetes requires for node names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

impl NodeName {
    pub fn new(s: &str) -> Result<Self, String> {
        if is_dns_label(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "invalid name {s:?}: use 1-63 lowercase letters, digits and '-', \
                 starting and ending with a letter or digit"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS name: dot-separated RFC 1123 labels, at most 253 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsName(String);

impl DnsName {
    /// Kubernetes' default cluster DNS domain.
    pub fn cluster_local() -> Self {
        Self("cluster.local".to_owned())
    }

    pub fn new(s: &str) -> Result<Self, String> {
        let valid = !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label);
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "invalid DNS name {s:?}: use dot-separated labels of lowercase letters, \
                 digits and '-'"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A TCP port, 1..=65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port(u16);

impl Port {
    pub const SSH_DEFAULT: Port = Port(22);
    /// The classic guides put the load balancer on 8443 (or 16443) so it does not clash
    /// with the apiserver's own 6443 on the same node.
    pub const API_ENDPOINT_DEFAULT: Port = Port(8443);
    /// The node-local balancer's default on `127.0.0.1`: next to the API server's 6443,
    /// which it cannot take on a control plane.
    pub const NODE_LOCAL_DEFAULT: Port = Port(6444);
    /// Where every kube-apiserver listens on its node: kubeadm's default
    /// `localAPIEndpoint.bindPort`, which khactl keeps.
    pub const API_SERVER: Port = Port(6443);
    /// The guides' haproxy `listen stats` port.
    pub const STATS_PAGE_DEFAULT: Port = Port(9000);

    pub fn new(n: u64) -> Result<Self, String> {
        match u16::try_from(n) {
            Ok(p) if p != 0 => Ok(Self(p)),
            _ => Err(format!("invalid port {n}: use 1-65535")),
        }
    }

    pub const fn get(self) -> u16 {
        self.0
    }
}

/// A VRRP virtual router id, 1..=255 (RFC 5798 §5.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouterId(u8);

impl RouterId {
    pub const DEFAULT: RouterId = RouterId(51);

    pub fn new(n: u64) -> Result<Self, String> {
        match u8::try_from(n) {
            Ok(id) if id != 0 => Ok(Self(id)),
            _ => Err(format!("invalid VRRP router id {n}: use 1-255")),
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

/// A Kubernetes release, `vMAJOR.MINOR.PATCH` with an optional pre-release suffix
/// (`v1.31.0-rc.1`): the form kubeadm's `kubernetesVersion` and the release paths use.
/// Parsing checks the form; whether khactl supports the release is [`Self::supported`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KubernetesVersion {
    text: String,
    major: u32,
    minor: u32,
    patch: u32,
}

impl KubernetesVersion {
    /// The oldest minor khactl drives: 1.29 made `kubeadm:cluster-admins` and
    /// `super-admin.conf`, which khactl's PKI follows.
    pub const OLDEST_MINOR: u32 = 29;
    /// The newest minor whose kubeadm behaviour khactl was checked against.
    pub const NEWEST_MINOR: u32 = 37;

    pub fn new(s: &str) -> Result<Self, String> {
        let bad =
            || format!("{s:?} is not a Kubernetes version: use vMAJOR.MINOR.PATCH, e.g. v1.31.2");
        let Some(rest) = s.strip_prefix('v') else {
            return Err(format!("{s:?} lacks the leading v: write it like v1.31.2"));
        };
        let (core, pre) = match rest.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (rest, None),
        };
        let number = |n: &str| -> Option<u32> {
            let canonical = !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && (n.len() == 1 || !n.starts_with('0'));
            if canonical { n.parse().ok() } else { None }
        };
        let pre_ok = pre.is_none_or(|p| {
            !p.is_empty()
                && p.split('.')
                    .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()))
        });
        let parts: Vec<&str> = core.split('.').collect();
        match (parts.as_slice(), pre_ok) {
            ([ma, mi, pa], true) => Ok(Self {
                text: s.to_owned(),
                major: number(ma).ok_or_else(bad)?,
                minor: number(mi).ok_or_else(bad)?,
                patch: number(pa).ok_or_else(bad)?,
            }),
            _ => Err(bad()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn major(&self) -> u32 {
        self.major
    }

    pub fn minor(&self) -> u32 {
        self.minor
    }

    pub fn patch(&self) -> u32 {
        self.patch
    }

    /// `(major, minor)`, for comparisons such as "1.31 or newer".
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    /// Whether khactl drives this release; the error names the supported range.
    pub fn supported(&self) -> Result<(), String> {
        if self.major == 1 && (Self::OLDEST_MINOR..=Self::NEWEST_MINOR).contains(&self.minor) {
            Ok(())
        } else {
            Err(format!(
                "Kubernetes {} is not supported: khactl drives v1.{}.x to v1.{}.x",
                self.text,
                Self::OLDEST_MINOR,
                Self::NEWEST_MINOR
            ))
        }
    }
}

impl fmt::Display for KubernetesVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.text.fmt(f)
    }
}

impl Serialize for KubernetesVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.text.serialize(s)
    }
}

impl<'de> Deserialize<'de> for KubernetesVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KubernetesVersion::new(&s).map_err(de::Error::custom)
    }
}

/// The container runtime's CRI endpoint: `unix://` and an absolute socket path, the only
/// form kubeadm accepts on Linux (`ValidateSocketPath`; a bare path is prefixed with a
/// deprecation warning, so khactl asks for the full form instead).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CriSocket(String);

impl CriSocket {
    /// containerd's socket, what kubeadm finds first when it detects a runtime.
    pub const CONTAINERD: &'static str = "unix:///var/run/containerd/containerd.sock";
    const SCHEME: &'static str = "unix://";

    pub fn new(s: &str) -> Result<Self, String> {
        let example = "e.g. unix:///var/run/containerd/containerd.sock \
                       (CRI-O: unix:///var/run/crio/crio.sock)";
        let Some(path) = s.strip_prefix(Self::SCHEME) else {
            return Err(if s.starts_with('/') {
                format!("write the CRI endpoint with its scheme: unix://{s}")
            } else {
                format!("{s:?} is not a CRI endpoint: use unix:// and the socket's path, {example}")
            });
        };
        // A URL: `?`, `#` or `%` would make kubeadm and the kubelet read another path.
        let plain = path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+@".contains(&b));
        if path.len() > 1 && path.starts_with('/') && !path.ends_with('/') && plain {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a CRI endpoint: after unix:// comes the socket's absolute path \
                 (letters, digits and / . _ - + @), {example}"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for CriSocket {
    fn default() -> Self {
        Self(Self::CONTAINERD.to_owned())
    }
}

/// A time limit written with its unit: `250ms`, `2s`, `1.5s`, `1m` (at most 24 h). The
/// failover drill's targets, in the inventory and on the command line alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Limit(std::time::Duration);

impl Limit {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let (number, unit) = t
            .find(|c: char| c.is_ascii_alphabetic())
            .map(|i| t.split_at(i))
            .ok_or_else(|| format!("{text:?}: give a unit (ms, s or m), e.g. 500ms"))?;
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{text:?}: not a number followed by ms, s or m"))?;
        let seconds = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            _ => return Err(format!("{text:?}: the unit must be ms, s or m")),
        };
        if !(0.0..=86_400.0).contains(&seconds) {
            return Err(format!("{text:?}: must be between 0 and 24 h"));
        }
        Ok(Self(std::time::Duration::from_secs_f64(seconds)))
    }

    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

impl Serialize for Limit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_string().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Number(f64),
        }
        let text = match Written::deserialize(d)? {
            Written::Text(s) => s,
            // `500` alone: say what is missing rather than "expected a string".
            Written::Number(n) => n.to_string(),
        };
        Limit::parse(&text).map_err(de::Error::custom)
    }
}

macro_rules! display_as_inner {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }
    )*};
}
display_as_inner!(NodeName, DnsName, Port, RouterId, CriSocket);

impl<'de> Deserialize<'de> for NodeName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NodeName::new(&s).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for CriSocket {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CriSocket::new(&s).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for DnsName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DnsName::new(&s).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        let n = u64::try_from(n)
            .map_err(|_| de::Error::custom(format!("invalid port {n}: use 1-65535")))?;
        Port::new(n).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for RouterId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        let n = u64::try_from(n)
            .map_err(|_| de::Error::custom(format!("invalid VRRP router id {n}: use 1-255")))?;
        RouterId::new(n).map_err(de::Error::custom)
    }
}

/// A sysctl, held as its path under `/proc/sys` (`net/ipv4/conf/eth0.5/rp_filter`), which is
/// what every consumer needs: the probe reads the file, the write goes to it, sysctl.d parsers
/// compare it. Written the two ways sysctl(8) takes: dotted (`net.ipv4.ip_forward`), where
/// dots separate and any slash stands for a dot inside a name, or slashed, when the first
/// separator is a slash and dots belong to names (`net/ipv4/conf/eth0.5/rp_filter`, the only
/// way to name an interface with a dot). Never empty components, `.` or `..` (a path could
/// otherwise climb out of /proc/sys), and never a leading `-`, which a tool could read as an
/// option and sysctl.d reads as "ignore failures".
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SysctlKey(String);

impl SysctlKey {
    pub fn parse(written: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            Err(format!(
                "{written:?} is not a sysctl name ({why}): write dotted (net.ipv4.ip_forward) or \
                 slashed (net/ipv4/conf/eth0.5/rp_filter) names without spaces or '='"
            ))
        };
        if written.is_empty() || !written.bytes().all(|b| b.is_ascii_graphic() && b != b'=') {
            return bad("empty, or a space, '=' or a non-ASCII character");
        }
        if written.starts_with(['-', '.', '/']) {
            return bad("it starts with '-', '.' or '/'");
        }
        let slashed = written.find(['.', '/']).map(|i| written.as_bytes()[i]) == Some(b'/');
        let path: String = if slashed {
            written.to_owned()
        } else {
            written
                .chars()
                .map(|c| match c {
                    '.' => '/',
                    '/' => '.',
                    c => c,
                })
                .collect()
        };
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() < 2 {
            return bad("a single name; sysctls have a group, e.g. vm.swappiness");
        }
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return bad("an empty, '.' or '..' part");
        }
        Ok(Self(path))
    }

    /// The path under `/proc/sys`, without a leading slash.
    pub fn path(&self) -> &str {
        &self.0
    }

    /// The file that holds it.
    pub fn proc_path(&self) -> String {
        format!("/proc/sys/{}", self.0)
    }
}

/// Dotted, as people write sysctls, when that is unambiguous (no part holds a dot); the
/// slashed path otherwise. Either reads back as the same key, in sysctl.d files as well.
impl fmt::Display for SysctlKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.contains('.') {
            f.write_str(&self.0)
        } else {
            f.write_str(&self.0.replace('/', "."))
        }
    }
}

#[cfg(test)]
mod sysctl_key_tests {
    use super::SysctlKey;

    #[test]
    fn dotted_and_slashed_names_are_paths_under_proc_sys() {
        for (written, path) in [
            ("net.ipv4.ip_forward", "net/ipv4/ip_forward"),
            ("net/ipv4/ip_forward", "net/ipv4/ip_forward"),
            (
                "net/ipv4/conf/eth0.5/rp_filter",
                "net/ipv4/conf/eth0.5/rp_filter",
            ),
            // sysctl(8)'s own dotted spelling of the same key.
            (
                "net.ipv4.conf.eth0/5.rp_filter",
                "net/ipv4/conf/eth0.5/rp_filter",
            ),
            (
                "net.bridge.bridge-nf-call-iptables",
                "net/bridge/bridge-nf-call-iptables",
            ),
        ] {
            let key = SysctlKey::parse(written).unwrap();
            assert_eq!(key.path(), path, "{written}");
        }
        let vlan = SysctlKey::parse("net/ipv4/conf/eth0.5/rp_filter").unwrap();
        assert_eq!(vlan.proc_path(), "/proc/sys/net/ipv4/conf/eth0.5/rp_filter");
        assert_eq!(vlan.to_string(), "net/ipv4/conf/eth0.5/rp_filter");
        let plain = SysctlKey::parse("net/ipv4/ip_forward").unwrap();
        assert_eq!(plain.to_string(), "net.ipv4.ip_forward");
    }

    #[test]
    fn names_that_read_as_options_or_leave_proc_sys_are_refused() {
        for bad in [
            "-p/x",
            "-net.ipv4.ip_forward",
            "net/../../etc/passwd",
            "net/./ipv4",
            "/net/ipv4",
            ".net.ipv4",
            "net..ipv4",
            "swappiness",
            "net.ipv4.ip_forward=1",
            "net.ipv4 x",
            "",
        ] {
            assert!(SysctlKey::parse(bad).is_err(), "{bad}");
        }
    }
}
