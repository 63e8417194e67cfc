//! khactl: turn a few Linux machines into a highly available Kubernetes control plane.
//!
//! Data flows one way, and so do the dependencies:
//!
//! ```text
//! main → commands → phases → { remote, render, pki, inventory, report, state }
//! ```
//!
//! - [`inventory`] parses and validates the user's YAML inventory (no I/O beyond reading it).
//! - [`remote`] is the one way to reach a node: parallel, multiplexed SSH through the
//!   system `ssh` client, commands as argument lists, uploads with mode and owner.
//! - [`render`] turns typed contexts into the files khactl writes on nodes (tera templates
//!   from `templates/`, every value escaped for the file's syntax).
//! - [`pki`] generates and reloads the cluster's certificates locally (rcgen).
//! - [`phases`] are the steps of an install, one file each, in runbook order. Every
//!   remote change passes one gate ([`phases::changes`]) so `--dry-run` is the same code.
//! - [`report`] owns the terminal: phases emit events, a reporter draws them.
//! - [`state`] is the local state directory per cluster (PKI, known_hosts, run logs).
//! - [`commands`] are the CLI's verbs; thin, they resolve settings and run phases.

pub mod cli;
pub mod commands;
pub mod facts;
pub mod inventory;
pub mod phases;
pub mod pki;
pub mod remote;
pub mod render;
pub mod report;
pub mod state;
