//! khagent: the agent khactl installs on control-plane nodes.
pub mod vrrp;
