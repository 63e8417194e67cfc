//! Cross-field rules over a parsed inventory. Every rule adds to one list of problems,
//! each with the path of the field it is about, so the user sees everything at once.

use std::path::PathBuf;

use super::model::Inventory;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One thing wrong (or doubtful) in an inventory, located by its field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    /// Field path such as `nodes[2].address`; empty for the document as a whole.
    pub path: String,
    /// 1-based line in the file, where the parser gave one.
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read inventory {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the inventory has {} problem(s)", .0.iter().filter(|p| p.severity == Severity::Error).count())]
    Invalid(Vec<Problem>),
}

/// An inventory that passed every rule, with the warnings it raised.
#[derive(Debug, Clone)]
pub struct Validated {
    pub inventory: Inventory,
    pub warnings: Vec<Problem>,
}

pub(super) fn parse_and_validate(text: &str) -> Result<Validated, InventoryError> {
    let inventory: Inventory = serde_yaml_ng::from_str(text).map_err(|e| {
        InventoryError::Invalid(vec![Problem {
            severity: Severity::Error,
            path: String::new(),
            line: e.location().map(|l| l.line()),
            message: e.to_string(),
        }])
    })?;
    Ok(Validated { inventory, warnings: Vec::new() })
}
