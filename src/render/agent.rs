//! The agent's files: its config (`khagent.yaml`), a systemd unit and an OpenRC script.
//! The phase that installs them (`phases::install_agent`) decides the values; this module
//! only turns them into text.

use std::net::{Ipv4Addr, SocketAddr};

use serde::Serialize;

use super::{RenderError, Template, render};

const CONFIG: Template = Template {
    name: "khagent.yaml.tera",
    text: include_str!("../../templates/khagent.yaml.tera"),
};
const SYSTEMD: Template = Template {
    name: "khagent.service.tera",
    text: include_str!("../../templates/khagent.service.tera"),
};
const OPENRC: Template = Template {
    name: "khagent.openrc.tera",
    text: include_str!("../../templates/khagent.openrc.tera"),
};

/// Context of `templates/khagent.yaml.tera`: one node's agent config. A control plane
/// behind the VIP has `track` and `vrrp`; a node-local balancer has neither.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentConfig {
    /// The node the file is for (a comment only).
    pub node: String,
    /// VIP:port clients use, or 127.0.0.1:port for a node-local balancer.
    pub listen: SocketAddr,
    pub backends: Vec<AgentBackend>,
    /// The cluster CA the apiservers' certificates are verified against.
    pub ca_file: String,
    pub status_listen: SocketAddr,
    /// The HTML page on its own listener behind basic auth (`statsPage`).
    pub stats: Option<AgentStats>,
    pub track: Option<AgentTrack>,
    pub vrrp: Option<AgentVrrp>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentBackend {
    pub name: String,
    pub address: SocketAddr,
}

/// The `stats:` section; the password is in `password_file`, never here.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentStats {
    pub listen: SocketAddr,
    pub uri: String,
    pub realm: String,
    pub user: String,
    pub password_file: String,
}

/// The tracked check, which moves the node's priority by `weight` while it fails: a control
/// plane's own apiserver (`backend`), or on a dedicated load-balancer node the agent's own
/// balancer (`backend: None`: khagent's `listener` check, failing while no backend is up).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentTrack {
    pub backend: Option<String>,
    pub weight: i32,
}

/// The `vrrp:` section; intervals and lifetimes are left to the agent's defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentVrrp {
    pub interface: String,
    pub router_id: u8,
    pub priority: u8,
    pub vip: Ipv4Addr,
    pub vip_prefix_len: u8,
    pub source_address: Ipv4Addr,
    /// How long a lower-priority master is tolerated before this node takes over.
    pub preempt_delay_ms: u32,
    pub peers: Vec<Ipv4Addr>,
}

/// Context of the service templates (systemd unit, OpenRC script).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentService {
    pub binary: String,
    pub config: String,
}

impl AgentConfig {
    pub fn render(&self) -> Result<String, RenderError> {
        render(&CONFIG, self)
    }
}

impl AgentService {
    pub fn render_systemd(&self) -> Result<String, RenderError> {
        render(&SYSTEMD, self)
    }

    pub fn render_openrc(&self) -> Result<String, RenderError> {
        render(&OPENRC, self)
    }
}

#[cfg(test)]
mod tests;
