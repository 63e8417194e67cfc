//! The khagent executable khactl ships to nodes: found next to khactl (or given with
//! `--agent-binary`), read once before any node is contacted, and checked against each
//! node's architecture by its ELF header.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::bail;

use super::SERVICE;
use crate::facts::{HostFacts, sha256_hex};

/// The khagent executable khactl installs, read once before any node is contacted.
pub struct AgentBinary {
    pub path: PathBuf,
    pub contents: Vec<u8>,
    pub sha256: String,
    /// `uname -m` spelling of the ELF header's machine (`x86_64`, `aarch64`).
    pub arch: String,
}

impl fmt::Debug for AgentBinary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentBinary")
            .field("path", &self.path)
            .field("size", &self.contents.len())
            .field("sha256", &self.sha256)
            .field("arch", &self.arch)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentBinaryError {
    #[error("the agent binary {path} cannot be read ({source})")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a Linux executable (no ELF header)")]
    NotElf { path: PathBuf },
}

impl AgentBinaryError {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            AgentBinaryError::Read { .. } => "build it with `cargo build --release` (one build \
                 makes khactl and khagent side by side), or pass --agent-binary PATH"
                .to_owned(),
            AgentBinaryError::NotElf { .. } => {
                "pass the khagent binary with --agent-binary".to_owned()
            }
        })
    }
}

impl AgentBinary {
    /// The binary at `path`, or `khagent` next to the running khactl (cargo builds every
    /// workspace binary into the same directory).
    pub fn locate(path: Option<&Path>) -> Result<PathBuf, std::io::Error> {
        match path {
            Some(p) => Ok(p.to_path_buf()),
            None => {
                let exe = std::env::current_exe()?;
                Ok(exe.with_file_name(SERVICE))
            }
        }
    }

    pub fn load(path: &Path) -> Result<Self, AgentBinaryError> {
        let contents = std::fs::read(path).map_err(|source| AgentBinaryError::Read {
            path: path.to_owned(),
            source,
        })?;
        let arch = elf_arch(&contents).ok_or_else(|| AgentBinaryError::NotElf {
            path: path.to_owned(),
        })?;
        Ok(Self {
            path: path.to_owned(),
            sha256: sha256_hex(&contents),
            contents,
            arch,
        })
    }
}

/// The architecture an ELF file is built for, named as `uname -m` names it. Reads `e_machine`
/// (offset 18, in the byte order EI_DATA states); unknown machines are named by number.
pub fn elf_arch(bytes: &[u8]) -> Option<String> {
    if bytes.get(..4)? != b"\x7fELF" {
        return None;
    }
    let raw = [*bytes.get(18)?, *bytes.get(19)?];
    let machine = match bytes.get(5)? {
        1 => u16::from_le_bytes(raw),
        2 => u16::from_be_bytes(raw),
        _ => return None,
    };
    Some(match machine {
        62 => "x86_64".to_owned(),
        183 => "aarch64".to_owned(),
        40 => "arm".to_owned(),
        243 => "riscv64".to_owned(),
        n => format!("ELF machine {n}"),
    })
}

/// Refuses a node the binary cannot run on.
pub fn check_arch(binary: &AgentBinary, facts: &HostFacts) -> anyhow::Result<()> {
    if binary.arch != facts.arch {
        bail!(
            "the agent binary {} is built for {}, but this node is {}: build khagent for {} \
             (cargo build --release --target …) and pass it with --agent-binary",
            binary.path.display(),
            binary.arch,
            facts.arch,
            facts.arch
        );
    }
    Ok(())
}
