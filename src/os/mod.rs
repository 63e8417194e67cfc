//! What differs between the operating systems khactl drives, in one place (k0sctl's
//! `configurer/`): how a service is started, stopped and asked about under systemd or OpenRC,
//! and which tools a node has for a network check. Phases say what they want ("restart
//! khagent"); this module says how on this node. Package and kubelet steps belong here too.

pub mod net;
pub mod packages;
pub mod service;

pub use crate::facts::InitSystem;
