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

#[cfg(test)]
mod tests;

pub use model::*;
pub use problems::{InventoryError, Problem, Severity, Validated};
pub use types::{CriSocket, DnsName, KubernetesVersion, NodeName, Port, RouterId};

use std::path::Path;

/// Read, parse and validate an inventory file.
pub fn load(path: &Path) -> Result<Validated, InventoryError> {
    let bytes = std::fs::read(path).map_err(|e| InventoryError::Read {
        path: path.to_path_buf(),
        source: e,
    })?;
    match String::from_utf8(bytes) {
        Ok(text) => validate::parse_and_validate(&text, Some(path)),
        Err(e) => Err(validate::not_utf8(
            path,
            e.as_bytes(),
            e.utf8_error().valid_up_to(),
        )),
    }
}

/// Parse and validate inventory text.
pub fn parse(text: &str) -> Result<Validated, InventoryError> {
    validate::parse_and_validate(text, None)
}
