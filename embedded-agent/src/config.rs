//! The agent's one configuration file (YAML): what it listens on, where it forwards, how it checks
//! backends, which checks move the VRRP priority, and the `vrrp:` section.
//!
//! Parsing is strict (`deny_unknown_fields`, typed addresses and durations) and [`Config::load`]
//! then runs every cross-field rule and reads every file the agent will need (CA, client key,
//! status password), so `khagent check` catches everything a start would trip on, and the daemon
//! exits before it binds anything. Each problem names its field (`backends[1].address: …`).

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub mod stats;
pub use stats::StatsConfig;

/// Everything that can be wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// YAML syntax or type errors; serde_yaml_ng's message starts with the field path.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// Every rule the file broke, one per line, each starting with the field path.
    #[error("{path} is invalid:\n{}", list(.problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
    lines.join("\n")
}

/// One broken rule: which field, what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A duration written with a unit: `250ms`, `2s`, `5m`, `24h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    /// Longest duration accepted anywhere: far beyond any sane timeout, and far enough below
    /// the clock's range that deadline arithmetic can never overflow.
    pub const MAX: Duration = Duration::from_secs(30 * 24 * 3600);

    pub fn parse(text: &str) -> Option<Dur> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit())?;
        let (digits, unit) = text.split_at(split);
        let n: u64 = digits.parse().ok()?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            _ => return None,
        };
        (d <= Self::MAX).then_some(Dur(d))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        Dur::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration up to 30 days; write a number with a unit: 500ms, 2s, 5m or 24h"
            ))
        })
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where clients connect: the VIP and port on control-plane nodes (bound with IP_FREEBIND, so
    /// the VIP need not be on this node yet), or 127.0.0.1:port for the node-local worker layout.
    pub listen: SocketAddr,
    pub backends: Vec<BackendConfig>,
    #[serde(default)]
    pub balance: Balance,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long a stop waits for established connections to finish before closing them.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: Dur,
    pub status: Option<StatusConfig>,
    /// The HTML page on a listener of its own, behind basic auth (haproxy's `listen stats`).
    pub stats: Option<StatsConfig>,
    #[serde(default)]
    pub track: Vec<TrackConfig>,
    /// Absent on workers, where the agent is only a node-local load balancer.
    pub vrrp: Option<crate::vrrp::VrrpSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub name: String,
    pub address: SocketAddr,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastConnections,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round-robin",
            Balance::LeastConnections => "least-connections",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    #[default]
    Tcp,
    Https,
}

/// Active health checks, one loop per backend. The defaults (1 s, rise 2, fall 2) notice a dead
/// apiserver within about 2 s where the haproxy guides' `inter 10s downinter 5s` take 10-20 s,
/// and two consecutive results are still needed, so one lost probe does not flap a backend.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(default)]
    pub kind: CheckKind,
    #[serde(default = "default_interval")]
    pub interval: Dur,
    #[serde(default = "default_check_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_threshold")]
    pub rise: u32,
    #[serde(default = "default_threshold")]
    pub fall: u32,
    #[serde(default = "default_path")]
    pub path: String,
    /// The cluster CA the apiservers' serving certificates must chain to (https only).
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Name to send as SNI and to verify; default: the backend's IP address (kubeadm puts each
    /// node's address in its apiserver certificate).
    pub server_name: Option<String>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            kind: CheckKind::Tcp,
            interval: default_interval(),
            timeout: default_check_timeout(),
            rise: default_threshold(),
            fall: default_threshold(),
            path: default_path(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            server_name: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default = "default_connect")]
    pub connect: Dur,
    /// A connection with no bytes either way for this long is closed. Kubernetes watches stay
    /// silent for minutes, so the default is the guides' `timeout tunnel 86400s`.
    #[serde(default = "default_idle")]
    pub idle: Dur,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: default_connect(),
            idle: default_idle(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    pub listen: SocketAddr,
    pub basic_auth: Option<BasicAuthConfig>,
    /// Serve the pages without a password on an address other hosts can reach. Without it, a
    /// non-loopback `listen` needs `basic_auth`: the pages tell anyone who reaches them the
    /// backends, their health and the VRRP state, what an attacker needs to time an attack.
    #[serde(default)]
    pub public: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    pub user: String,
    /// File holding the password (one line); kept out of the config so the config can be 0644.
    pub password_file: PathBuf,
}

/// A check whose result moves this node's VRRP priority (keepalived's `track_script`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackConfig {
    pub name: String,
    /// Follow the health of this backend (normally the local apiserver, checked with /readyz).
    pub backend: Option<String>,
    /// Follow the agent's own listener: bound, accepting, and at least one backend up.
    #[serde(default)]
    pub listener: bool,
    /// keepalived semantics: a negative weight is added while the check fails, a positive one
    /// while it succeeds.
    pub weight: Option<i32>,
    /// While the check fails, the node goes to fault and releases the VIP.
    #[serde(default)]
    pub fault: bool,
}

fn default_max_connections() -> usize {
    // Each proxied connection holds two descriptors; this fits the usual 20k-64k limits.
    8_000
}
fn default_drain_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_interval() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_check_timeout() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_threshold() -> u32 {
    2
}
fn default_path() -> String {
    "/readyz".to_owned()
}
/// A backend on the control planes' network answers a SYN in well under a millisecond; one
/// that has not answered in a second has vanished (or dropped the SYN, whose first retransmit
/// is due only now), and every client behind it waits as long: better to try the next one.
/// The same bound as a health check's.
fn default_connect() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_idle() -> Dur {
    Dur(Duration::from_secs(86_400))
}

/// Files the config points at, read once during validation and kept for the daemon.
#[derive(Clone, Default)]
pub struct Material {
    /// PEM of the CA bundle for https checks.
    pub ca_pem: Option<Vec<u8>>,
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
    /// Basic-auth password, trailing newline removed.
    pub status_password: Option<Vec<u8>>,
    /// The stats page's password (`stats.password_file`), trailing newline removed.
    pub stats_password: Option<Vec<u8>>,
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key or password bytes.
        f.debug_struct("Material")
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field(
                "client_cert_pem",
                &self.client_cert_pem.as_ref().map(Vec::len),
            )
            .field("client_key_pem", &self.client_key_pem.is_some())
            .field("status_password", &self.status_password.is_some())
            .field("stats_password", &self.stats_password.is_some())
            .finish()
    }
}

/// A config that passed every rule, with the files it names already read.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub material: Material,
    pub tls: Option<crate::health::tls::TlsSettings>,
}

impl Config {
    /// Reads, parses and validates `path`; reads every file the config names.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, path)
    }

    /// Parses and validates config text; `path` is used in messages and to resolve nothing else.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
        let config: Config = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut problems = config.problems();
        let material = config.read_material(&mut problems);
        let tls = if problems.is_empty() && config.health.kind == CheckKind::Https {
            match crate::health::tls::TlsSettings::new(&config.health, &material) {
                Ok(tls) => Some(tls),
                Err(p) => {
                    problems.push(p);
                    None
                }
            }
        } else {
            None
        };
        if problems.is_empty() {
            Ok(Loaded {
                config,
                material,
                tls,
            })
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// Parses config text into the typed config, unknown fields refused, without reading
    /// the files it names or applying the cross-field rules ([`Config::problems`]). khactl
    /// uses it to read the config it rendered and the one a node has.
    pub fn parse(text: &str) -> Result<Config, String> {
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
    }

    /// The settings that differ between the running config and `next` and that a reload
    /// (SIGHUP) cannot apply, because they re-bind sockets or restart VRRP: empty when a
    /// reload is enough. Everything else (backends, balance, health and tracked checks,
    /// timeouts, drain timeout, VRRP peers) takes effect on reload. The one place this is
    /// decided: the agent warns from it, and khactl picks reload or restart from it.
    pub fn restart_needed(&self, next: &Config) -> Vec<&'static str> {
        let vrrp_differs = match (&self.vrrp, &next.vrrp) {
            // Peers (an empty list included) are applied live; unicast ↔ multicast changes
            // the sockets. The mode compared is the effective one: `unicast` may be left out
            // when peers are listed.
            (Some(a), Some(b)) => {
                let mode_differs = a.unicast() != b.unicast();
                let mut b = b.clone();
                b.peers.clone_from(&a.peers);
                b.unicast = a.unicast;
                mode_differs || *a != b
            }
            (a, b) => a.is_some() != b.is_some(),
        };
        [
            ("listen", self.listen != next.listen),
            ("status", self.status != next.status),
            (
                "stats.listen",
                self.stats.as_ref().map(|s| s.listen) != next.stats.as_ref().map(|s| s.listen),
            ),
            (
                "max_connections",
                self.max_connections != next.max_connections,
            ),
            ("vrrp (other than peers)", vrrp_differs),
        ]
        .into_iter()
        .filter_map(|(field, differs)| differs.then_some(field))
        .collect()
    }

    /// Every cross-field rule; empty when the config is usable.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |field: String, message: String| out.push(Problem { field, message });

        if self.listen.port() == 0 {
            bad(
                "listen".into(),
                "port 0 is not allowed; name the port clients use".into(),
            );
        }
        if self.backends.is_empty() {
            bad(
                "backends".into(),
                "list at least one backend (name + address:port)".into(),
            );
        }
        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        for (i, b) in self.backends.iter().enumerate() {
            if b.name.trim().is_empty() {
                bad(format!("backends[{i}].name"), "must not be empty".into());
            } else if !names.insert(b.name.as_str()) {
                bad(
                    format!("backends[{i}].name"),
                    format!("`{}` is used twice", b.name),
                );
            }
            if b.address.port() == 0 || b.address.ip().is_unspecified() {
                bad(
                    format!("backends[{i}].address"),
                    format!("`{}` is not a connectable address:port", b.address),
                );
            } else if !addrs.insert(b.address) {
                bad(
                    format!("backends[{i}].address"),
                    format!("`{}` is listed twice", b.address),
                );
            } else if b.address == self.listen {
                bad(
                    format!("backends[{i}].address"),
                    "is the agent's own listen address; that would loop".into(),
                );
            }
        }

        let h = &self.health;
        if h.interval.0 < Duration::from_millis(10) {
            bad("health.interval".into(), "must be at least 10ms".into());
        }
        if h.timeout.0.is_zero() || h.timeout > h.interval {
            bad(
                "health.timeout".into(),
                format!(
                    "must be above 0 and at most health.interval ({:?})",
                    h.interval.0
                ),
            );
        }
        for (field, v) in [("health.rise", h.rise), ("health.fall", h.fall)] {
            if !(1..=100).contains(&v) {
                bad(field.into(), format!("{v} is out of range 1..=100"));
            }
        }
        if !h.path.starts_with('/') || h.path.bytes().any(|c| c.is_ascii_whitespace()) {
            bad(
                "health.path".into(),
                "must start with `/` and contain no spaces".into(),
            );
        }
        match h.kind {
            CheckKind::Https => {
                if h.ca_file.is_none() {
                    bad(
                        "health.ca_file".into(),
                        "https checks need the cluster CA to verify the apiserver against".into(),
                    );
                }
                if h.client_cert_file.is_some() != h.client_key_file.is_some() {
                    bad(
                        "health.client_key_file".into(),
                        "client_cert_file and client_key_file go together; set both or neither"
                            .into(),
                    );
                }
            }
            CheckKind::Tcp => {
                for (field, set) in [
                    ("health.ca_file", h.ca_file.is_some()),
                    ("health.client_cert_file", h.client_cert_file.is_some()),
                    ("health.client_key_file", h.client_key_file.is_some()),
                    ("health.server_name", h.server_name.is_some()),
                ] {
                    if set {
                        bad(field.into(), "only used by `kind: https` checks".into());
                    }
                }
            }
        }

        if self.timeouts.connect.0.is_zero() {
            bad("timeouts.connect".into(), "must be above 0".into());
        }
        if self.timeouts.idle.0.is_zero() {
            bad("timeouts.idle".into(), "must be above 0".into());
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            bad(
                "max_connections".into(),
                "must be between 1 and 1000000".into(),
            );
        }

        if let Some(s) = &self.status {
            if s.listen.port() == 0 {
                bad("status.listen".into(), "port 0 is not allowed".into());
            }
            if s.listen == self.listen {
                bad(
                    "status.listen".into(),
                    "is the same address as `listen`".into(),
                );
            }
            if !s.listen.ip().to_canonical().is_loopback() && s.basic_auth.is_none() && !s.public {
                bad(
                    "status.listen".into(),
                    format!(
                        "{} can be reached from other hosts and the status pages have no \
                         password: listen on 127.0.0.1, add `basic_auth`, or set \
                         `status.public: true` to serve them to anyone who reaches it",
                        s.listen
                    ),
                );
            }
            if let Some(a) = &s.basic_auth
                && (a.user.is_empty() || a.user.contains(':'))
            {
                bad(
                    "status.basic_auth.user".into(),
                    "must be non-empty and contain no `:`".into(),
                );
            }
        }

        let mut track_names = HashSet::new();
        for (i, t) in self.track.iter().enumerate() {
            let at = |f: &str| format!("track[{i}].{f}");
            if t.name.is_empty() {
                bad(at("name"), "must not be empty".into());
            } else if !track_names.insert(t.name.as_str()) {
                bad(at("name"), format!("`{}` is used twice", t.name));
            }
            match (&t.backend, t.listener) {
                (Some(_), true) | (None, false) => bad(
                    at("backend"),
                    "set exactly one of `backend: NAME` or `listener: true`".into(),
                ),
                (Some(name), false) if !self.backends.iter().any(|b| &b.name == name) => bad(
                    at("backend"),
                    format!("`{name}` is not a name under `backends`"),
                ),
                _ => {}
            }
            match (t.weight, t.fault) {
                (Some(_), true) | (None, false) => bad(
                    at("weight"),
                    "set exactly one of `weight: N` or `fault: true`".into(),
                ),
                (Some(w), false) if w == 0 || !(-254..=254).contains(&w) => bad(
                    at("weight"),
                    format!("{w} is out of range -254..=254 (and not 0)"),
                ),
                _ => {}
            }
        }
        if !self.track.is_empty() && self.vrrp.is_none() {
            bad(
                "track".into(),
                "tracked checks only move the VRRP priority; add a `vrrp` section or remove `track`"
                    .into(),
            );
        }
        if let Some(Err(vrrp_problems)) = self.vrrp.as_ref().map(|v| v.validate()) {
            for p in vrrp_problems {
                out.push(Problem {
                    field: p.field.to_owned(),
                    message: p.problem,
                });
            }
        }
        if let Some(s) = &self.stats {
            s.problems(
                self.listen,
                self.status.as_ref().map(|s| s.listen),
                &mut out,
            );
        }
        out
    }

    /// Reads the files named by the config; unreadable ones become problems.
    fn read_material(&self, problems: &mut Vec<Problem>) -> Material {
        let mut read = |field: &str, path: &Option<PathBuf>| -> Option<Vec<u8>> {
            let path = path.as_ref()?;
            match std::fs::read(path) {
                Ok(bytes) if !bytes.is_empty() => Some(bytes),
                Ok(_) => {
                    problems.push(Problem {
                        field: field.into(),
                        message: format!("{} is empty", path.display()),
                    });
                    None
                }
                Err(e) => {
                    problems.push(Problem {
                        field: field.into(),
                        message: format!("cannot read {}: {e}", path.display()),
                    });
                    None
                }
            }
        };
        let h = &self.health;
        let ca_pem = read("health.ca_file", &h.ca_file);
        let client_cert_pem = read("health.client_cert_file", &h.client_cert_file);
        let client_key_pem = read("health.client_key_file", &h.client_key_file);
        let auth_path = self.status.as_ref().and_then(|s| s.basic_auth.as_ref());
        let status_password = read(
            "status.basic_auth.password_file",
            &auth_path.map(|a| a.password_file.clone()),
        )
        .map(|mut pw| {
            while pw.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                pw.pop();
            }
            pw
        });
        let stats_raw = read(
            "stats.password_file",
            &self.stats.as_ref().map(|s| s.password_file.clone()),
        );
        if status_password.as_ref().is_some_and(Vec::is_empty) {
            problems.push(Problem {
                field: "status.basic_auth.password_file".into(),
                message: "holds an empty password".into(),
            });
        }
        let stats_password = stats_raw.and_then(|bytes| match stats::password_from_file(bytes) {
            Ok(pw) => Some(pw),
            Err(message) => {
                problems.push(Problem {
                    field: "stats.password_file".into(),
                    message,
                });
                None
            }
        });
        Material {
            ca_pem,
            client_cert_pem,
            client_key_pem,
            status_password,
            stats_password,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(yaml: &str) -> Vec<String> {
        match Config::from_yaml(yaml, Path::new("agent.yaml")) {
            Ok(_) => vec![],
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            Err(e) => vec![e.to_string()],
        }
    }

    const MINIMAL: &str =
        "listen: 127.0.0.1:7443\nbackends:\n  - {name: a, address: 127.0.0.1:6443}\n";

    #[test]
    fn minimal_config_gets_safe_defaults() {
        let loaded = Config::from_yaml(MINIMAL, Path::new("agent.yaml")).unwrap();
        let c = loaded.config;
        assert_eq!(c.balance, Balance::RoundRobin);
        assert_eq!(c.health.interval.0, Duration::from_secs(1));
        assert_eq!((c.health.rise, c.health.fall), (2, 2));
        assert_eq!(c.timeouts.idle.0, Duration::from_secs(86_400));
        assert!(c.vrrp.is_none() && c.status.is_none());
    }

    #[test]
    fn a_reload_applies_backends_checks_and_timeouts_but_not_listen_or_vrrp_identity() {
        let base = Config::parse(MINIMAL).unwrap();
        let more = Config::parse(&format!(
            "{MINIMAL}  - {{name: b, address: 127.0.0.1:6444}}\nbalance: least-connections\n\
             timeouts: {{connect: 5s}}\ndrain_timeout: 3s\n"
        ))
        .unwrap();
        assert!(base.restart_needed(&more).is_empty());
        let moved = Config::parse(&MINIMAL.replace("7443", "7444")).unwrap();
        assert_eq!(base.restart_needed(&moved), ["listen"]);
        let capped = Config::parse(&format!("{MINIMAL}max_connections: 10\n")).unwrap();
        assert_eq!(base.restart_needed(&capped), ["max_connections"]);
    }

    /// Issue #12, item 1: going from two control planes to one empties a unicast peer list;
    /// that is a reload (the agent applies the empty list), while a change between unicast
    /// and multicast is a restart.
    #[test]
    fn an_emptied_unicast_peer_list_is_a_reload_and_a_change_of_mode_a_restart() {
        let vrrp = |tail: &str| {
            Config::parse(&format!(
                "{MINIMAL}vrrp: {{interface: eth0, router_id: 51, priority: 100, vip: 10.0.0.100{tail}}}\n"
            ))
            .unwrap()
        };
        let pair = vrrp(", peers: [10.0.0.2]");
        let alone = vrrp(", unicast: true, peers: []");
        assert!(pair.restart_needed(&alone).is_empty());
        assert!(alone.restart_needed(&pair).is_empty());
        assert!(
            pair.restart_needed(&vrrp(", unicast: true, peers: [10.0.0.2]"))
                .is_empty()
        );
        let multicast = vrrp("");
        assert_eq!(pair.restart_needed(&multicast), ["vrrp (other than peers)"]);
        assert_eq!(
            multicast.restart_needed(&alone),
            ["vrrp (other than peers)"]
        );
    }

    #[test]
    fn parses_durations_with_units() {
        assert_eq!(Dur::parse("250ms"), Some(Dur(Duration::from_millis(250))));
        assert_eq!(Dur::parse("24h"), Some(Dur(Duration::from_secs(86_400))));
        assert_eq!(Dur::parse("5"), None);
        assert_eq!(Dur::parse("5 days"), None);
        assert_eq!(Dur::parse("s"), None);
        assert_eq!(Dur::parse("720h"), Some(Dur(Dur::MAX)));
        assert_eq!(Dur::parse("721h"), None, "too long for deadline arithmetic");
        assert_eq!(Dur::parse("99999999999999999999h"), None);
    }

    #[test]
    fn bad_backend_address_names_the_field() {
        let yaml = "listen: 127.0.0.1:7443\nbackends:\n  - {name: a, address: 127.0.0.1:6443}\n  - {name: b, address: nowhere}\n";
        let p = problems_of(yaml);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("backends[1].address"), "{p:?}");
    }

    #[test]
    fn rejects_unknown_fields() {
        let p = problems_of(&format!("{MINIMAL}colour: blue\n"));
        assert!(p[0].contains("unknown field `colour`"), "{p:?}");
    }

    #[test]
    fn rejects_duplicate_backends_and_empty_list() {
        let yaml = "listen: 127.0.0.1:7443\nbackends:\n  - {name: a, address: 127.0.0.1:1}\n  - {name: a, address: 127.0.0.1:1}\n";
        let p = problems_of(yaml);
        assert!(p.iter().any(|m| m.starts_with("backends[1].name")), "{p:?}");
        assert!(
            p.iter().any(|m| m.starts_with("backends[1].address")),
            "{p:?}"
        );
        let p = problems_of("listen: 127.0.0.1:7443\nbackends: []\n");
        assert!(p[0].starts_with("backends:"), "{p:?}");
    }

    #[test]
    fn https_checks_need_a_ca() {
        let p = problems_of(&format!("{MINIMAL}health: {{kind: https}}\n"));
        assert!(p.iter().any(|m| m.starts_with("health.ca_file")), "{p:?}");
    }

    #[test]
    fn stats_password_user_realm_and_uri_reload_but_its_listen_needs_a_restart() {
        let stats = |listen: &str, rest: &str| {
            Config::parse(&format!(
                "{MINIMAL}stats: {{listen: \"{listen}\", password_file: /p{rest}}}\n"
            ))
            .unwrap()
        };
        let base = stats("0.0.0.0:9000", ", user: admin");
        let changed = stats("0.0.0.0:9000", ", user: ops, uri: /s, realm: R");
        assert!(base.restart_needed(&changed).is_empty());
        assert_eq!(
            base.restart_needed(&stats("0.0.0.0:9001", ", user: admin")),
            ["stats.listen"]
        );
        let none = Config::parse(MINIMAL).unwrap();
        assert_eq!(none.restart_needed(&base), ["stats.listen"]);
    }

    #[test]
    fn stats_problems_name_their_fields() {
        let p = problems_of(&format!(
            "{MINIMAL}status: {{listen: \"127.0.0.1:9000\"}}\nstats: {{listen: \"127.0.0.1:9000\", \
             user: \"a:b\", realm: \"x\\\"y\", uri: stats, password_file: /nonexistent/pw}}\n"
        ));
        let fields: Vec<&str> = p.iter().filter_map(|l| l.split(':').next()).collect();
        assert_eq!(
            fields,
            [
                "stats.listen",
                "stats.uri",
                "stats.realm",
                "stats.user",
                "stats.password_file"
            ],
            "{p:?}"
        );
    }

    #[test]
    fn unreadable_password_file_names_the_field() {
        let yaml = format!(
            "{MINIMAL}status:\n  listen: 127.0.0.1:9000\n  basic_auth: {{user: u, password_file: /nonexistent/pw}}\n"
        );
        let p = problems_of(&yaml);
        assert!(
            p[0].starts_with("status.basic_auth.password_file: cannot read"),
            "{p:?}"
        );
    }

    /// Issue #12, item 14: `khagent check` accepted `status.listen: 0.0.0.0` without a
    /// password.
    #[test]
    fn a_status_listener_other_hosts_reach_needs_basic_auth_or_public() {
        let status = |listen: &str, extra: &str| {
            problems_of(&format!(
                "{MINIMAL}status:\n  listen: \"{listen}\"\n{extra}"
            ))
        };
        for listen in [
            "0.0.0.0:9901",
            "10.0.0.11:9901",
            "[::]:9901",
            "[::ffff:10.0.0.1]:9901",
        ] {
            let p = status(listen, "");
            assert_eq!(p.len(), 1, "{listen}: {p:?}");
            assert!(p[0].starts_with("status.listen:"), "{p:?}");
            assert!(p[0].contains("status.public: true"), "{p:?}");
            assert_eq!(status(listen, "  public: true\n"), Vec::<String>::new());
        }
        for listen in [
            "127.0.0.1:9901",
            "127.0.0.2:9901",
            "[::1]:9901",
            "[::ffff:127.0.0.1]:9901",
        ] {
            assert_eq!(status(listen, ""), Vec::<String>::new(), "{listen}");
        }
        let dir = std::env::temp_dir().join(format!("khagent-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let auth = format!(
            "  basic_auth: {{user: admin, password_file: {}}}\n",
            pw.display()
        );
        assert_eq!(status("0.0.0.0:9901", &auth), Vec::<String>::new());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn health_timeout_may_not_exceed_interval() {
        let p = problems_of(&format!("{MINIMAL}health: {{interval: 1s, timeout: 2s}}\n"));
        assert!(p[0].starts_with("health.timeout"), "{p:?}");
    }

    #[test]
    fn track_entries_need_one_target_and_one_effect() {
        let yaml = format!(
            "{MINIMAL}track:\n  - {{name: x, backend: nope, weight: -10}}\n  - {{name: y, listener: true}}\n"
        );
        let p = problems_of(&yaml);
        assert!(
            p.iter().any(|m| m.starts_with("track[0].backend: `nope`")),
            "{p:?}"
        );
        assert!(p.iter().any(|m| m.starts_with("track[1].weight")), "{p:?}");
        assert!(p.iter().any(|m| m.starts_with("track:")), "{p:?}");
    }
}
