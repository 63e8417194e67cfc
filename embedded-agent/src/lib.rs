//! khagent: the agent khactl installs on control-plane nodes.
pub mod config;
pub mod events;
pub mod health;
pub mod lb;
pub mod status;
pub mod vrrp;
