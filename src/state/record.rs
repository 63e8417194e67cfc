//! Where khactl has placed things that outlive a node's role: its agent (which can take the
//! VIP) and the cluster's CA keys. `up` manages the nodes the inventory lists; a node removed
//! from it, or turned into a worker, kept a running agent that, hearing no peer, took the VIP
//! as a second holder. This record (`<state>/placements.json`, 0600, written atomically) is
//! how a later run finds such nodes: with how to reach them, since the inventory may no longer
//! say.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StateError;
use crate::inventory::{Bastion, NodeName, Port, SshTarget};

const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Placements {
    pub version: u32,
    pub nodes: BTreeMap<String, Placed>,
}

/// What khactl placed on one node, and how it reached it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Placed {
    pub address: IpAddr,
    pub ssh: RecordedSsh,
    /// khagent's files and service.
    pub agent: bool,
    /// The CA keys and the service-account key under /etc/kubernetes/pki.
    pub ca_keys: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordedSsh {
    pub user: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<PathBuf>,
    pub sudo: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bastion: Option<Bastion>,
}

impl Placed {
    /// Control-plane contents: the agent and the CA keys, reached as `target` says.
    pub fn control_plane(target: &SshTarget) -> Self {
        Self::new(target, true, true)
    }

    /// What khactl places on a node (khagent, the CA keys), reached as `target` says.
    pub fn new(target: &SshTarget, agent: bool, ca_keys: bool) -> Self {
        Self {
            address: target.address,
            ssh: RecordedSsh {
                user: target.user.clone(),
                port: target.port.get(),
                identity_file: target.identity_file.clone(),
                sudo: target.sudo,
                bastion: target.bastion.clone(),
            },
            agent,
            ca_keys,
        }
    }

    /// How to reach the node, from the record alone.
    pub fn target(&self, name: &str) -> Result<SshTarget, String> {
        Ok(SshTarget {
            node: NodeName::new(name)?,
            address: self.address,
            user: self.ssh.user.clone(),
            port: Port::new(u64::from(self.ssh.port))?,
            identity_file: self.ssh.identity_file.clone(),
            sudo: self.ssh.sudo,
            bastion: self.ssh.bastion.clone(),
        })
    }
}

impl Placements {
    /// The record at `path`; empty when there is none yet.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        let io_err = |source| StateError::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Self {
                    version: VERSION,
                    nodes: BTreeMap::new(),
                });
            }
            Err(e) => return Err(io_err(e)),
        };
        let record: Self = serde_json::from_str(&text)
            .map_err(|e| io_err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        if record.version != VERSION {
            return Err(io_err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "version {} of this record is not one khactl knows",
                    record.version
                ),
            )));
        }
        Ok(record)
    }

    /// Replaces the record at `path` atomically: a new 0600 file, synced, renamed over.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io_err = |source| StateError::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| io_err(io::Error::other(e)))?;
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            fs::rename(&tmp, path)?;
            fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
        })();
        if written.is_err() {
            // The temporary file is ours and useless; the write error is what matters.
            let _unneeded = fs::remove_file(&tmp);
        }
        written.map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_record_round_trips_privately_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("placements.json");
        let mut record = Placements::load(&path).unwrap();
        assert!(record.nodes.is_empty());
        let target = SshTarget {
            node: NodeName::new("cp3").unwrap(),
            address: "10.0.0.13".parse().unwrap(),
            user: "root".into(),
            port: Port::new(2222).unwrap(),
            identity_file: Some("/keys/id".into()),
            sudo: false,
            bastion: None,
        };
        record
            .nodes
            .insert("cp3".into(), Placed::control_plane(&target));
        record.save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = Placements::load(&path).unwrap();
        assert_eq!(back, record);
        assert_eq!(back.nodes["cp3"].target("cp3").unwrap(), target);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }
}
