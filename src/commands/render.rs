//! `khactl render`: every node's kubeadm configuration, for review, without connecting
//! anywhere. The documents are those `up` would use (rendered, read back through kubeadm's
//! types with unknown fields refused, held to khactl's layout); the token is `<redacted>`
//! unless `--show-secrets`, and the discovery hash is the stored cluster CA's (or a throwaway
//! CA's, said so, before `up` made one).

use std::path::PathBuf;

use serde::Serialize;

use super::UsageError;
use crate::inventory;
use crate::pki;
use crate::render::kubeadm::{self, BootstrapToken, Secrets};
use crate::state::StateDir;

#[derive(Debug, Clone)]
pub struct RenderOptions {
    pub inventory: PathBuf,
    pub state_dir: Option<PathBuf>,
    /// Write one file per node here instead of printing.
    pub out: Option<PathBuf>,
    pub show_secrets: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RenderResult {
    pub cluster: String,
    /// `kubeadm.k8s.io/v1beta4` or `v1beta3`.
    pub api_version: String,
    /// The CA pin in the documents, and whether it is the cluster's own CA.
    pub discovery_hash: String,
    pub from_cluster_ca: bool,
    pub secrets_shown: bool,
    pub files: Vec<RenderedNode>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RenderedNode {
    pub node: String,
    /// `init`, `join-control-plane` or `join-worker`.
    pub purpose: String,
    pub name: String,
    /// Where it was written (`--out`), else `null`.
    pub path: Option<PathBuf>,
    pub contents: String,
}

/// Everything here is local: any failure exits 2, like an invalid inventory.
pub fn run(opts: &RenderOptions) -> Result<RenderResult, UsageError> {
    render(opts).map_err(|e| match e.downcast::<UsageError>() {
        Ok(u) => u,
        Err(e) => UsageError::new(format!("{e:#}")),
    })
}

fn render(opts: &RenderOptions) -> anyhow::Result<RenderResult> {
    let inv = inventory::load(&opts.inventory)
        .map_err(|e| UsageError::new(e.to_string()))?
        .inventory;
    let state = StateDir::locate(opts.state_dir.as_deref(), inv.cluster.name.as_str())
        .map_err(|e| UsageError::new(e.to_string()))?;
    let (hash, from_cluster_ca) = match pki::stored_discovery_hash(&state.pki_dir())? {
        Some(h) => (h, true),
        None => (pki::throwaway_discovery_hash()?, false),
    };
    let token = BootstrapToken::generate()?;
    let docs = kubeadm::render_cluster(&inv, &token, &hash)?;
    let secrets = if opts.show_secrets {
        Secrets::Shown
    } else {
        Secrets::Redacted
    };
    let files = docs.files(secrets);
    let written = match &opts.out {
        Some(dir) => kubeadm::write_files(dir, &files)
            .map_err(|e| UsageError::new(format!("cannot write into {}: {e}", dir.display())))?
            .into_iter()
            .map(Some)
            .collect(),
        None => vec![None; files.len()],
    };
    let api_version = docs
        .nodes
        .first()
        .map(|d| format!("kubeadm.k8s.io/{}", d.api().as_str()))
        .unwrap_or_default();
    Ok(RenderResult {
        cluster: inv.cluster.name.to_string(),
        api_version,
        discovery_hash: hash,
        from_cluster_ca,
        secrets_shown: opts.show_secrets,
        files: docs
            .nodes
            .iter()
            .zip(files)
            .zip(written)
            .map(|((d, f), path)| RenderedNode {
                node: d.node().to_string(),
                purpose: d.purpose().as_str().to_owned(),
                name: f.name,
                path,
                contents: f.contents,
            })
            .collect(),
    })
}

impl RenderResult {
    /// For people: the documents themselves (or where they were written), then notes.
    pub fn text(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for f in &self.files {
            match &f.path {
                Some(p) => lines.push(format!("{}: {} ({})", f.node, p.display(), f.purpose)),
                None => {
                    lines.push(format!("# {} ({}): {}", f.node, f.purpose, f.name));
                    lines.extend(f.contents.lines().map(str::to_owned));
                }
            }
        }
        if !self.from_cluster_ca {
            lines.push(format!(
                "# note: no cluster CA in the state directory yet, so caCertHashes shows a \
                 throwaway CA's pin ({}); `khactl up` makes the cluster's own",
                self.discovery_hash
            ));
        }
        if self.secrets_shown {
            lines.push(
                "# note: the token shown was made for this preview; `khactl up` makes its own"
                    .to_owned(),
            );
        }
        lines
    }
}
