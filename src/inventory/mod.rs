//! The inventory: one YAML document (`apiVersion: khactl.io/v1alpha1`, `kind: Inventory`)
//! that describes the cluster. `load` parses it into typed data ([`model`], with
//! newtypes from [`types`] that reject bad values while deserializing), then
//! [`validate`] applies the cross-field rules and returns every problem at once.
//! Nothing here touches the network: a bad inventory stops khactl before any connection.

pub mod model;
pub mod types;
pub mod validate;

pub use model::*;
pub use types::{DnsName, NodeName, Port, RouterId};
pub use validate::{InventoryError, Problem, Severity, Validated};

use std::path::Path;

/// Read, parse and validate an inventory file.
pub fn load(path: &Path) -> Result<Validated, InventoryError> {
    let text = std::fs::read_to_string(path).map_err(|e| InventoryError::Read {
        path: path.to_path_buf(),
        source: e,
    })?;
    parse(&text)
}

/// Parse and validate inventory text.
pub fn parse(text: &str) -> Result<Validated, InventoryError> {
    validate::parse_and_validate(text)
}
