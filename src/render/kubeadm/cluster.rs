//! Every node's configuration at once, for `khactl render -i inventory [--out DIR]
//! [--show-secrets]`: what a review needs, without connecting anywhere.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{BootstrapToken, KubeadmDocuments, KubeadmError, Purpose, render_node};
use crate::inventory::Inventory;

/// Each node's configuration, in inventory order.
#[derive(Debug, Clone)]
pub struct ClusterDocuments {
    pub nodes: Vec<KubeadmDocuments>,
}

/// Whether files show the bootstrap token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// `<redacted>` in its place (the default of `khactl render`).
    Redacted,
    /// The token in clear (`--show-secrets`); such files are 0600.
    Shown,
}

/// One file of `khactl render --out DIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// `<node>-kubeadm-<purpose>.yaml`, e.g. `cp1-kubeadm-init.yaml`.
    pub name: String,
    pub contents: String,
    /// 0600 when the file holds the token, else 0644.
    pub mode: u32,
}

/// Renders every node of `inventory` as a fresh install would: the first control plane
/// inits, the others join as control planes, the workers as workers. etcd nodes run no
/// kubeadm and have no file.
pub fn render_cluster(
    inventory: &Inventory,
    token: &BootstrapToken,
    ca_hash: &str,
) -> Result<ClusterDocuments, KubeadmError> {
    let nodes = inventory
        .nodes
        .iter()
        .filter_map(|node| {
            let purpose = Purpose::for_node(inventory, node)?;
            Some(render_node(inventory, node, purpose, token, ca_hash))
        })
        .collect::<Result<_, _>>()?;
    Ok(ClusterDocuments { nodes })
}

impl ClusterDocuments {
    /// One file per node.
    pub fn files(&self, secrets: Secrets) -> Vec<RenderedFile> {
        self.nodes
            .iter()
            .map(|d| {
                let (contents, mode) = match secrets {
                    Secrets::Redacted => (d.redacted(), 0o644),
                    Secrets::Shown => (d.text().to_owned(), super::FILE_MODE),
                };
                RenderedFile {
                    name: format!("{}-kubeadm-{}.yaml", d.node(), d.purpose()),
                    contents,
                    mode,
                }
            })
            .collect()
    }
}

/// Writes `files` into `dir` (created 0700 if missing), each with its mode set before
/// any byte is written, so a token is never readable by others even for a moment.
/// Returns the paths written.
pub fn write_files(dir: &Path, files: &[RenderedFile]) -> std::io::Result<Vec<PathBuf>> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    files
        .iter()
        .map(|f| {
            let path = dir.join(&f.name);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(f.mode)
                .open(&path)?;
            // An existing file keeps its old mode through open(); narrow it first.
            file.set_permissions(std::fs::Permissions::from_mode(f.mode))?;
            file.set_len(0)?;
            file.write_all(f.contents.as_bytes())?;
            Ok(path)
        })
        .collect()
}
