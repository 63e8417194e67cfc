//! khactl: turn a few Linux machines into a highly available Kubernetes control plane.
//!
//! Data flows one way, and so do the dependencies:
//!
//! ```text
//! main → commands → session → phases → { cluster, os, agent } → { remote, facts, render,
//!                                                                 pki, inventory, report, state }
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
//! - [`cluster`] holds the read-only queries several commands share (who holds the VIP) and
//!   the cluster-wide state of a run; [`os`] what differs between init systems and
//!   distributions; [`agent`] what khactl knows of its agent (files, binary, config contract).
//! - [`session`] is a command's life around its phases: load and check locally, start (state
//!   dir, run log, Ctrl-C), run, finish.
//! - [`commands`] are the CLI's verbs: each is a list of phases plus a typed result, which
//!   `main` prints as text or JSON. [`diagnostics`] carries hints on errors as data.

pub mod agent;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod diagnostics;
pub mod facts;
pub mod interrupt;
pub mod inventory;
pub mod os;
pub mod phases;
pub mod pki;
pub mod remote;
pub mod render;
pub mod report;
pub mod session;
pub mod state;
