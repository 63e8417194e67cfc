//! The inventory: one YAML document (`apiVersion: khactl.io/v1alpha1`, `kind: Inventory`)
//! that describes the cluster. Nothing here touches the network: a bad inventory stops
//! khactl before any connection.
//!
//! Text flows through [`validate`]: the YAML is parsed to a tree, held against the
//! document's shape (`schema`, with field-local rules in `checks`), compared across
//! fields (`rules`), and only then deserialized into the typed [`model`], whose
//! newtypes ([`types`]) make bad values unrepresentable. Every problem carries its
//! field path and the line `locate` finds for it (`problems`).

mod checks;
mod locate;
pub mod model;
mod problems;
mod rules;
mod schema;
pub mod types;
mod validate;
// Optional sections, one file each (type, fields, checks, rules).
mod etcd;
mod host_preparation;
mod stats_page;

#[cfg(test)]
mod tests;

pub use etcd::EtcdSettings;
pub use host_preparation::{FirewalldAction, HostPreparation, SelinuxAction};
pub use model::*;
pub use problems::{InventoryError, Problem, Severity, Validated};
pub use stats_page::{StatsBind, StatsPage};
pub use types::{
    CriSocket, DnsName, KubernetesVersion, Limit, NodeName, Port, RouterId, SysctlKey,
};

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest inventory read. A real one is a few kilobytes; this is room for thousands of
/// nodes, and keeps `-i /dev/zero` or a runaway generator from costing gigabytes.
pub const MAX_INVENTORY_BYTES: u64 = 4 * 1024 * 1024;

/// Read, parse and validate an inventory file.
pub fn load(path: &Path) -> Result<Validated, InventoryError> {
    let bytes = read_limited(path)?;
    match String::from_utf8(bytes) {
        Ok(text) => validate::parse_and_validate(&text, Some(path)),
        Err(e) => Err(validate::not_utf8(
            path,
            e.as_bytes(),
            e.utf8_error().valid_up_to(),
        )),
    }
}

/// A regular file of at most [`MAX_INVENTORY_BYTES`]. Opened without blocking, so a FIFO
/// with no writer is refused instead of hanging, and read through a limit, so a file that
/// grows while it is read cannot slip past the size check.
fn read_limited(path: &Path) -> Result<Vec<u8>, InventoryError> {
    let read_err = |source| InventoryError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a named pipe (FIFO)"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(InventoryError::NotAFile {
            path: path.to_path_buf(),
            what,
        });
    }
    let too_large = |size| InventoryError::TooLarge {
        path: path.to_path_buf(),
        size,
    };
    if meta.len() > MAX_INVENTORY_BYTES {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_INVENTORY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_INVENTORY_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Parse and validate inventory text.
pub fn parse(text: &str) -> Result<Validated, InventoryError> {
    validate::parse_and_validate(text, None)
}
