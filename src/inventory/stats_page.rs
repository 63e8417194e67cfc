//! `statsPage:`: publish khagent's HTML stats page on its own listener, behind basic auth,
//! as the guides' haproxy `listen stats` block does (`bind *:9000`, `stats uri /stats`,
//! `stats realm`, `stats auth admin:…`). The password never appears here: it comes from
//! `passwordFile` on the machine running khactl, or khactl generates one into the state
//! directory. The type, its table of fields, its field checks and its cross-field rule live
//! together so the section is one file.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use super::checks::{self, typed};
use super::model::LbMode;
use super::problems::{FieldPath, Findings};
use super::rules::Draft;
use super::schema::{Field, Kind, Presence, Shape};
use super::types::Port;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatsPage {
    /// Which address of each node the page listens on.
    #[serde(default)]
    pub bind: StatsBind,
    #[serde(default = "default_port")]
    pub port: Port,
    /// The page's path (haproxy's `stats uri`).
    #[serde(default = "default_path")]
    pub path: String,
    /// The name browsers show in the password prompt (haproxy's `stats realm`).
    #[serde(default = "default_realm")]
    pub realm: String,
    #[serde(default = "default_user")]
    pub user: String,
    /// A file on the machine running khactl holding the password (one line). Left out: khactl
    /// generates one into the state directory (`stats-password`) and keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

impl StatsPage {
    /// `passwordFile` with a leading `~/` expanded to `$HOME` (it is opened locally).
    pub fn password_file(&self) -> Option<PathBuf> {
        self.password_file
            .as_ref()
            .map(|p| super::model::expand_home(p, std::env::var_os("HOME").map(PathBuf::from)))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatsBind {
    /// The node's own inventory address: reachable on the nodes' network, one page per node.
    #[default]
    Node,
    /// Every address (`0.0.0.0`), like the guides' `bind *:9000`.
    All,
    /// `127.0.0.1`: through an SSH tunnel only.
    Loopback,
}

const DEFAULT_PORT: u16 = Port::STATS_PAGE_DEFAULT.get();

fn default_port() -> Port {
    Port::STATS_PAGE_DEFAULT
}
fn default_path() -> String {
    "/stats".to_owned()
}
fn default_realm() -> String {
    "Kubernetes API load balancer".to_owned()
}
fn default_user() -> String {
    "admin".to_owned()
}

pub(super) static STATS_PAGE: Shape = Shape {
    fields: &[
        field("bind", Kind::Leaf(typed::<StatsBind>)),
        field("port", Kind::Leaf(typed::<Port>)),
        field("path", Kind::Leaf(path)),
        field("realm", Kind::Leaf(realm)),
        field("user", Kind::Leaf(user)),
        Field {
            name: "passwordFile",
            presence: Presence::Optional,
            kind: Kind::Leaf(password_file),
        },
    ],
};

const fn field(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        presence: Presence::Defaulted,
        kind,
    }
}

fn text(v: &Value, example: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!(
            "expected a string such as {example}, found {}",
            checks::show(other)
        )),
    }
}

// The agent's own rules, so khactl never renders a config `khagent check` would refuse.
fn path(v: &Value) -> Result<(), String> {
    khagent::config::stats::uri_problem(&text(v, "/stats")?)
}
fn realm(v: &Value) -> Result<(), String> {
    khagent::config::stats::realm_problem(&text(v, "\"HAProxy Statistics\"")?)
}
fn user(v: &Value) -> Result<(), String> {
    khagent::config::stats::user_problem(&text(v, "admin")?)
}

/// Path syntax only; khactl reads the file when a command starts, before any node is
/// contacted.
fn password_file(v: &Value) -> Result<(), String> {
    let s = text(v, "~/.config/khactl/stats.password")?;
    if s.trim().is_empty() || s != s.trim() || s.chars().any(char::is_control) {
        return Err(format!(
            "{s:?} is not a usable path: write the bare path of a file holding the password, \
             or leave the field out to have khactl generate one"
        ));
    }
    if s.ends_with('/') {
        return Err(format!("{s:?} is a directory; point at the password file"));
    }
    Ok(())
}

/// Ports the stats page may not take: the load balancer's own, and what kubeadm's control
/// plane binds on every node (or every control plane).
const TAKEN: &[(u16, &str)] = &[
    (6443, "the API server's port"),
    (2379, "etcd's client port"),
    (2380, "etcd's peer port"),
    (10250, "the kubelet's port"),
    (10257, "kube-controller-manager's port"),
    (10259, "kube-scheduler's port"),
    (
        9901,
        "khagent's own status port (127.0.0.1:9901, which khactl reads)",
    ),
];

pub(super) fn port_is_free(d: &Draft, out: &mut Findings) {
    let Some(stats) = &d.stats_page else { return };
    let port = stats.port.get();
    let at = FieldPath::root().key("statsPage").key("port");
    if let Some((_, what)) = TAKEN.iter().find(|(p, _)| *p == port) {
        out.error(
            &at,
            format!("port {port} is {what}; use another, such as the guides' {DEFAULT_PORT}"),
        );
    }
    let lb_port = match d.load_balancer.as_ref().map(|lb| lb.mode) {
        Some(LbMode::NodeLocal) => d
            .load_balancer
            .as_ref()
            .map(|lb| lb.port.unwrap_or(Port::NODE_LOCAL_DEFAULT)),
        _ => d.vip.as_ref().map(|v| v.port),
    };
    if lb_port.is_some_and(|p| p.get() == port) {
        out.error(
            &at,
            format!(
                "port {port} is the API load balancer's; give the stats page its own port, \
                 such as {DEFAULT_PORT}"
            ),
        );
    }
}
