//! `khactl adopt-pki -i INVENTORY --from NODE`: import a running cluster's CAs and
//! service-account keys from one of its control planes into the state directory, so that
//! `up` manages the cluster with its own roots of trust instead of refusing it (see
//! [`crate::phases::AdoptPki`]). Connects to that one node only; changes no node.

use std::cell::RefCell;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::rc::Rc;

use serde::Serialize;

use super::UsageError;
use crate::inventory::Role;
use crate::phases::{AdoptPki, Connect, GatherFacts, Mode, Phase, Preflight};
use crate::report::Reporter;
use crate::session::{self, NodeOptions};

#[derive(Debug, Clone)]
pub struct AdoptPkiOptions {
    pub nodes: NodeOptions,
    /// The control plane to read the PKI from.
    pub from: String,
    /// Import without asking (scripts).
    pub yes: bool,
}

pub async fn run(
    opts: &AdoptPkiOptions,
    reporter: Box<dyn Reporter>,
) -> anyhow::Result<AdoptPkiResult> {
    let mut loaded = session::load(&opts.nodes)?;
    let inventory = loaded.inventory.clone();
    let names = || {
        inventory
            .control_plane()
            .map(|n| n.name.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match inventory.node(&opts.from) {
        None => {
            return Err(UsageError::new(format!(
                "--from {}: no such node in the inventory",
                opts.from
            ))
            .hint(format!("its control planes are {}", names()))
            .into());
        }
        Some(n) if n.role != Role::ControlPlane => {
            return Err(UsageError::new(format!(
                "--from {}: a worker holds no CA keys",
                opts.from
            ))
            .hint(format!("name a control plane: {}", names()))
            .into());
        }
        Some(_) => {}
    }
    if !opts.yes && !std::io::stdin().is_terminal() {
        return Err(UsageError::new(
            "adopt-pki replaces the state directory's PKI and asks first, but there is no \
             terminal to ask on",
        )
        .hint("pass --yes to import without asking")
        .into());
    }
    // Only the node the PKI comes from is contacted.
    loaded
        .inventory
        .nodes
        .retain(|n| n.name.as_str() == opts.from);
    let outcome = Rc::new(RefCell::new(None));
    let phases: Vec<Box<dyn Phase>> = vec![
        Box::new(Connect),
        Box::new(GatherFacts),
        Box::new(Preflight),
        Box::new(AdoptPki {
            from: opts.from.clone(),
            inventory: inventory.clone(),
            yes: opts.yes,
            outcome: Rc::clone(&outcome),
        }),
    ];
    let mut ctx = loaded.start("adopt-pki", Mode::Apply, reporter)?;
    let state_dir = ctx.state.root().to_path_buf();
    let result = session::run(&mut ctx, phases).await;
    let finished = session::finish(ctx, result).await?;
    let adopted = outcome
        .borrow_mut()
        .take()
        .ok_or_else(|| anyhow::anyhow!("internal: adopt-pki finished without an outcome"))?;
    Ok(AdoptPkiResult {
        cluster: inventory.cluster.name.to_string(),
        node: adopted.node,
        state_dir,
        ca_subject: adopted.ca_subject,
        ca_fingerprint: adopted.ca_fingerprint,
        already_held: adopted.already_held,
        previous_pki: adopted.previous,
        log: finished.log,
    })
}

/// What `adopt-pki` did. Field names are stable: see `docs/output.md`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdoptPkiResult {
    pub cluster: String,
    /// The control plane the PKI was read from.
    pub node: String,
    pub state_dir: PathBuf,
    pub ca_subject: String,
    /// SHA-256 of the cluster CA's DER certificate, `AB:CD:…`.
    pub ca_fingerprint: String,
    /// The state directory already held these CAs: nothing was changed.
    pub already_held: bool,
    /// Where the state's previous PKI was moved, if there was one.
    pub previous_pki: Option<PathBuf>,
    pub log: Option<PathBuf>,
}

impl AdoptPkiResult {
    pub fn text(&self) -> Vec<String> {
        let mut lines = vec![if self.already_held {
            format!(
                "adopt-pki: {} already holds the CAs of {} ({}); nothing to import",
                self.state_dir.display(),
                self.node,
                self.ca_fingerprint
            )
        } else {
            format!(
                "adopt-pki: imported the CAs and service-account keys of {} (CA {}, SHA-256 {}) \
                 into {}",
                self.node,
                self.ca_subject,
                self.ca_fingerprint,
                self.state_dir.display()
            )
        }];
        if let Some(p) = &self.previous_pki {
            lines.push(format!("the previous PKI is kept in {}", p.display()));
        }
        lines.push(
            "next: `khactl up -i …` distributes it (files it replaces are backed up on each \
             node under /var/lib/khactl/backup/)"
                .to_owned(),
        );
        lines.push(super::log_line(self.log.as_deref()));
        lines
    }
}
