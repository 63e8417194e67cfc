//! kubeadm's configuration files, one per node and purpose.
//!
//! - [`api`]: kubeadm's configuration types mirrored in Rust with unknown fields denied,
//!   and the strict parser every rendered file goes through (real kubeadm only warns).
//! - [`BootstrapToken`]: the token khactl makes for `kubeadm init` and every join.

pub mod api;
mod token;

pub use token::{BootstrapToken, TokenError};
