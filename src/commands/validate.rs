//! `khactl validate`: read the inventory and report every problem, contacting nothing.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::UsageError;
use crate::inventory;

/// What a valid inventory describes.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidateResult {
    pub path: PathBuf,
    pub cluster: String,
    pub kubernetes_version: String,
    pub control_planes: usize,
    pub workers: usize,
    /// Nodes with `role: etcd` (external etcd); 0 when etcd is stacked.
    pub etcd_nodes: usize,
    /// `host:port` the API is reached at (the DNS name or the VIP, and the LB port).
    pub endpoint: String,
    pub warnings: Vec<String>,
}

impl ValidateResult {
    /// The lines `main` prints for people.
    pub fn text(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .warnings
            .iter()
            .map(|w| format!("warning: {w}"))
            .collect();
        let etcd = match self.etcd_nodes {
            0 => String::new(),
            n => format!(", {n} external etcd node(s)"),
        };
        lines.push(format!(
            "{}: valid: cluster {}, {} control-plane and {} worker node(s){etcd}, API endpoint {}",
            self.path.display(),
            self.cluster,
            self.control_planes,
            self.workers,
            self.endpoint
        ));
        lines
    }
}

pub fn run(path: &Path) -> Result<ValidateResult, UsageError> {
    let v = inventory::load(path).map_err(|e| UsageError::new(e.to_string()))?;
    let inv = &v.inventory;
    Ok(ValidateResult {
        path: path.to_path_buf(),
        cluster: inv.cluster.name.to_string(),
        kubernetes_version: inv.cluster.kubernetes_version.to_string(),
        control_planes: inv.control_plane().count(),
        workers: inv.workers().count(),
        etcd_nodes: inv.etcd_nodes().count(),
        endpoint: inv.api_endpoint().to_string(),
        warnings: v.warnings.iter().map(ToString::to_string).collect(),
    })
}
