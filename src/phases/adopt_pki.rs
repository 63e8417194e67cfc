//! Import a running cluster's roots of trust from one of its control planes into the state
//! directory, so `up` manages that cluster instead of refusing it (`khactl adopt-pki`).
//!
//! Read: the three CAs with their keys and the service-account pair, in one read-only command
//! whose stdout is marked secret (never logged, never shown). Checked: written to a private
//! staging directory next to the state's PKI and loaded by `pki::ensure`, which refuses a key
//! that does not match its certificate, a certificate that is not a CA, an expired one, and
//! issues the leaves the inventory needs under the adopted CAs. Confirmed: the user types the
//! node's name (or passed `--yes`). Swapped: the state's current PKI, if any, is renamed
//! aside (`pki.before-adopt-<time>`, never deleted), and the staging directory takes its
//! place. The nodes are not touched; the next `up` distributes the adopted PKI.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use x509_parser::pem::parse_x509_pem;

use super::{Context, Phase, PhaseFuture, existing_pki};
use crate::diagnostics::Hinted;
use crate::facts::sha256_hex;
use crate::inventory::Inventory;
use crate::remote::RemoteCommand;
use crate::state::{private_dir, remove_if_present};

/// What is imported, under /etc/kubernetes/pki, and whether a cluster can lack it.
const FILES: [(&str, Need); 8] = [
    ("ca.crt", Need::Required),
    ("ca.key", Need::Required),
    ("front-proxy-ca.crt", Need::Required),
    ("front-proxy-ca.key", Need::Required),
    ("etcd/ca.crt", Need::Required),
    ("etcd/ca.key", Need::Required),
    ("sa.key", Need::Required),
    // Derived from sa.key: rebuilt when missing.
    ("sa.pub", Need::Optional),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    Optional,
}

/// One line per file: `NAME =BASE64` or `NAME -`. Names are positional parameters.
const READ_PKI: &str = r#"for f in "$@"; do
  p=/etc/kubernetes/pki/$f
  if [ -f "$p" ]; then printf '%s =%s\n' "$f" "$(base64 -w0 < "$p")"; else printf '%s -\n' "$f"; fi
done
"#;

/// What an import did, for the command's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    pub node: String,
    /// The cluster CA's subject and the SHA-256 of its DER certificate.
    pub ca_subject: String,
    pub ca_fingerprint: String,
    /// Where the state's PKI from before went; `None` when there was none, or it already held
    /// these CAs (then nothing was changed).
    pub previous: Option<PathBuf>,
    pub already_held: bool,
}

pub struct AdoptPki {
    /// The control plane to read from.
    pub from: String,
    /// The whole inventory (the command connects only to `from`), so the leaves issued
    /// under the adopted CAs cover every node.
    pub inventory: Inventory,
    /// `--yes`: no question.
    pub yes: bool,
    pub outcome: Rc<RefCell<Option<Adopted>>>,
}

impl Phase for AdoptPki {
    fn title(&self) -> &'static str {
        "Adopt the cluster's PKI"
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let (result, outcome) = match self.adopt(ctx).await {
                Ok(a) => {
                    let summary = match &a.previous {
                        _ if a.already_held => {
                            "the state directory already holds these CAs".to_owned()
                        }
                        Some(p) => format!("imported; the previous PKI is in {}", p.display()),
                        None => "imported".to_owned(),
                    };
                    (Ok(summary), Some(a))
                }
                Err(e) => (Err(e), None),
            };
            *self.outcome.borrow_mut() = outcome;
            ctx.settle(vec![(self.from.clone(), result)])
        })
    }
}

impl AdoptPki {
    async fn adopt(&self, ctx: &Context) -> anyhow::Result<Adopted> {
        let host = ctx
            .fleet()?
            .host(&self.from)
            .ok_or_else(|| anyhow::anyhow!("internal: {} is not connected", self.from))?;
        let names = FILES.iter().map(|(n, _)| (*n).to_owned());
        // Keys on stdout: marked secret, so neither the log nor an error shows them.
        let cmd = RemoteCommand::script("read-pki", READ_PKI, names)
            .read_only()
            .secret_stdout();
        let out = host.run(&cmd).await?;
        let files = parse(&out.stdout)?;

        let ca = files
            .get("ca.crt")
            .ok_or_else(|| anyhow::anyhow!("internal: ca.crt was checked"))?;
        let (ca_subject, ca_fingerprint) = describe(ca)?;
        let state_pki = ctx.state.pki_dir();
        let current = fs::read(state_pki.join("ca.crt")).ok();
        let already_held = current
            .as_deref()
            .and_then(existing_pki::public_key)
            .is_some_and(|k| Some(k) == existing_pki::public_key(ca));
        let mut adopted = Adopted {
            node: self.from.clone(),
            ca_subject,
            ca_fingerprint,
            previous: None,
            already_held,
        };
        if already_held {
            return Ok(adopted);
        }

        let staging = ctx
            .state
            .root()
            .join(format!("pki.adopting-{}", std::process::id()));
        remove_if_present(&staging)?;
        let checked = stage(&staging, &files).and_then(|()| {
            crate::pki::ensure(&staging, &self.inventory)
                .map(drop)
                .with_context(|| {
                    format!(
                        "the PKI on {} cannot be used as this cluster's; nothing was imported",
                        self.from
                    )
                })
        });
        if let Err(e) = checked {
            remove_if_present(&staging)?;
            return Err(e);
        }

        if !self.yes {
            let what = if current.is_some() {
                format!(
                    "the state's current PKI is kept aside as {}/pki.before-adopt-<time>",
                    ctx.state.root().display()
                )
            } else {
                "the state directory has no PKI yet".to_owned()
            };
            let question = format!(
                "Import the CAs and service-account keys of {} (CA {}, SHA-256 {}) into {}? \
                 {what}. Type the node's name, {}, to import",
                self.from,
                adopted.ca_subject,
                adopted.ca_fingerprint,
                state_pki.display(),
                self.from
            );
            if !ctx.report.confirm(&question, &self.from)? {
                remove_if_present(&staging)?;
                bail!(
                    Hinted::new("not confirmed: nothing was imported")
                        .hint("run it again and type the node's name, or pass --yes")
                );
            }
        }

        if current.is_some() || state_pki.exists() {
            let aside = ctx
                .state
                .root()
                .join(format!("pki.before-adopt-{}", existing_pki::stamp()));
            fs::rename(&state_pki, &aside)
                .with_context(|| format!("moving {} aside", state_pki.display()))?;
            adopted.previous = Some(aside);
        }
        fs::rename(&staging, &state_pki)
            .with_context(|| format!("moving the imported PKI to {}", state_pki.display()))?;
        Ok(adopted)
    }
}

/// The files the read printed, by name; every required one must be there. Never puts a
/// file's content in an error.
fn parse(stdout: &[u8]) -> anyhow::Result<BTreeMap<&'static str, Vec<u8>>> {
    let text = String::from_utf8_lossy(stdout);
    let mut found = BTreeMap::new();
    let mut missing = Vec::new();
    for (name, need) in FILES {
        let line = text
            .lines()
            .find(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(' ')));
        match line.and_then(|l| l[name.len() + 1..].strip_prefix('=')) {
            Some(b64) => {
                let bytes = STANDARD
                    .decode(b64)
                    .map_err(|_| anyhow::anyhow!("the node sent {name} garbled (not base64)"))?;
                found.insert(name, bytes);
            }
            None if need == Need::Optional => {}
            None => missing.push(format!("/etc/kubernetes/pki/{name}")),
        }
    }
    if !missing.is_empty() {
        bail!(
            Hinted::new(format!(
                "the node lacks {}: it is not a control plane with a full kubeadm PKI",
                missing.join(", ")
            ))
            .hint(
                "name a control-plane node of the cluster with --from (a cluster with an \
                 external etcd has no etcd/ca.key to adopt)"
            )
        );
    }
    Ok(found)
}

/// Writes the files into a fresh private directory: keys 0600, the rest 0644.
fn stage(dir: &Path, files: &BTreeMap<&'static str, Vec<u8>>) -> anyhow::Result<()> {
    private_dir(dir)?;
    for (name, bytes) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            private_dir(parent)?;
        }
        let mode = if name.ends_with(".key") { 0o600 } else { 0o644 };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    Ok(())
}

/// The CA's subject and SHA-256 fingerprint (of the DER certificate, `AB:CD:…`).
fn describe(cert_pem: &[u8]) -> anyhow::Result<(String, String)> {
    let (_, pem) = parse_x509_pem(cert_pem)
        .map_err(|_| anyhow::anyhow!("the node's ca.crt is not a PEM certificate"))?;
    let cert = pem
        .parse_x509()
        .map_err(|_| anyhow::anyhow!("the node's ca.crt is not a certificate"))?;
    let hex = sha256_hex(&pem.contents);
    let pairs: Vec<&str> = (0..hex.len())
        .step_by(2)
        .filter_map(|i| hex.get(i..i + 2))
        .collect();
    Ok((cert.subject().to_string(), pairs.join(":").to_uppercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_names_every_missing_file_and_never_a_keys_content() {
        let text = "ca.crt =Y2VydA==\nca.key =U0VDUkVUS0VZ\nfront-proxy-ca.crt -\n";
        let err = parse(text.as_bytes()).unwrap_err();
        let shown = format!("{err:#}");
        assert!(
            shown.contains("/etc/kubernetes/pki/front-proxy-ca.crt"),
            "{shown}"
        );
        assert!(shown.contains("/etc/kubernetes/pki/etcd/ca.key"), "{shown}");
        assert!(!shown.contains("sa.pub"), "optional: {shown}");
        assert!(
            !shown.contains("SECRETKEY") && !shown.contains("U0VDUkVU"),
            "{shown}"
        );
    }

    #[test]
    fn a_full_read_gives_each_file_its_bytes() {
        let text: String = FILES
            .iter()
            .map(|(n, _)| format!("{n} ={}\n", STANDARD.encode(n.as_bytes())))
            .collect();
        let files = parse(text.as_bytes()).unwrap();
        assert_eq!(files.len(), FILES.len());
        assert_eq!(files["etcd/ca.key"], b"etcd/ca.key");
    }

    #[test]
    fn the_read_is_read_only_and_its_output_secret() {
        let cmd = RemoteCommand::script("read-pki", READ_PKI, ["ca.key"])
            .read_only()
            .secret_stdout();
        let out = crate::remote::CommandOutput {
            status: Some(0),
            stdout: b"ca.key =U0VDUkVU\n".to_vec(),
            stderr: Vec::new(),
        };
        assert!(cmd.is_read_only());
        assert!(!cmd.visible_output(&out).stdout_str().contains("U0VDUkVU"));
    }
}
