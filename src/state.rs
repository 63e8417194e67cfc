//! The local state directory of one cluster: PKI, known_hosts, run logs.
//!
//! Default: `$XDG_STATE_HOME/khactl/<cluster>` (else `~/.local/state/khactl/<cluster>`),
//! outside any working tree so CA keys are never committed by accident;
//! `--state-dir` / `KHACTL_STATE_DIR` override it. Directories are 0700, secrets 0600.
//! See `docs/adr/0001-state-directory.md`.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot find a home for the state directory: set KHACTL_STATE_DIR or --state-dir")]
    NoHome,
    #[error("cannot prepare the state directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Where the state of `cluster` lives, given an optional override of the base dir.
    pub fn locate(base: Option<&Path>, cluster: &str) -> Result<Self, StateError> {
        let base = match base {
            Some(b) => b.to_path_buf(),
            None => default_base()?,
        };
        Ok(Self {
            root: base.join(cluster),
        })
    }

    /// Creates the directory tree with private permissions (and tightens them if loose).
    pub fn create(&self) -> Result<(), StateError> {
        for dir in [self.root.clone(), self.pki_dir(), self.logs_dir()] {
            private_dir(&dir)?;
        }
        // ssh appends to known_hosts and keeps the mode it finds: create it private.
        let known = self.known_hosts();
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&known)
            .map_err(|source| StateError::Io {
                path: known,
                source,
            })?;
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.root.join("pki")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.root.join("known_hosts")
    }
}

fn default_base() -> Result<PathBuf, StateError> {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("khactl"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .ok_or(StateError::NoHome)?;
    Ok(PathBuf::from(home).join(".local/state/khactl"))
}

/// A 0700 directory, created with that mode (no window where it is world-readable).
pub fn private_dir(dir: &Path) -> Result<(), StateError> {
    let io_err = |source| StateError::Io {
        path: dir.to_path_buf(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err)
}

/// A directory for ssh ControlMaster sockets. Unix socket paths are limited to 108
/// bytes and the state directory may be deep, so these live under /tmp, per user.
pub fn control_dir() -> Result<PathBuf, StateError> {
    // The owner of /proc/self is our effective uid; no libc needed for it.
    let uid = fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("khactl-{uid}"));
    private_dir(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dirs_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::locate(Some(tmp.path()), "prod").unwrap();
        s.create().unwrap();
        for d in [s.root().to_path_buf(), s.pki_dir(), s.logs_dir()] {
            let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        assert_eq!(s.root(), tmp.path().join("prod"));
    }

    #[test]
    fn loose_permissions_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::locate(Some(tmp.path()), "c").unwrap();
        fs::create_dir_all(s.root()).unwrap();
        fs::set_permissions(s.root(), fs::Permissions::from_mode(0o755)).unwrap();
        s.create().unwrap();
        assert_eq!(
            fs::metadata(s.root()).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
