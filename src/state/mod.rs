//! The local state directory of one cluster: PKI, known_hosts, run logs, the lock that keeps
//! one khactl at a time on it ([`lock`]), the dry run's scratch copy of the PKI ([`Scratch`]),
//! and where a run's SSH control sockets live ([`control`]).
//!
//! Default: `$XDG_STATE_HOME/khactl/<cluster>` (else `~/.local/state/khactl/<cluster>`),
//! outside any working tree so CA keys are never committed by accident;
//! `--state-dir` / `KHACTL_STATE_DIR` override it. Directories are 0700, secrets 0600.
//! See `docs/adr/0001-state-directory.md`.

pub mod control;
pub mod lock;
pub mod record;
pub mod secret;

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use control::ControlDir;
pub use lock::StateLock;

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
    /// Where the state of `cluster` lives, given an optional override of the base dir. Always
    /// an absolute path: it is handed to ssh, which would resolve a relative one elsewhere.
    pub fn locate(base: Option<&Path>, cluster: &str) -> Result<Self, StateError> {
        let base = match base {
            Some(b) => b.to_path_buf(),
            None => default_base()?,
        };
        let root = std::path::absolute(base.join(cluster)).map_err(|source| StateError::Io {
            path: base.clone(),
            source,
        })?;
        Ok(Self { root })
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

    /// Where khactl placed its agent and the CA keys ([`record::Placements`]).
    pub fn placements_path(&self) -> PathBuf {
        self.root.join("placements.json")
    }

    /// The stats page's password when the inventory names no `passwordFile` ([`secret`]).
    pub fn stats_password_path(&self) -> PathBuf {
        self.root.join("stats-password")
    }

    /// The file every command that writes state or changes nodes locks ([`StateLock`]).
    pub fn lock_path(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// Where this process's dry run keeps its scratch PKI.
    pub fn scratch_path(&self) -> PathBuf {
        self.root
            .join(format!("{SCRATCH_PREFIX}{}", std::process::id()))
    }

    /// A fresh, private scratch directory for this process's dry run.
    pub fn create_scratch(&self) -> Result<Scratch, StateError> {
        let path = self.scratch_path();
        let io_err = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        // A directory of this name is a leftover of a killed run whose PID was ours.
        match fs::remove_dir_all(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(e)),
            _ => {}
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(io_err)?;
        Ok(Scratch {
            path,
            removed: false,
        })
    }

    /// Removes scratch directories left by runs that were killed (SIGKILL, a power cut), which
    /// could remove nothing themselves. Only under the lock: no other run is using one then.
    pub fn sweep_scratch(&self, _held: &StateLock) -> Result<Vec<PathBuf>, StateError> {
        let io_err = |source| StateError::Io {
            path: self.root.clone(),
            source,
        };
        let mut removed = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let stale = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(SCRATCH_PREFIX));
            if stale && entry.file_type().map_err(io_err)?.is_dir() {
                fs::remove_dir_all(entry.path()).map_err(io_err)?;
                removed.push(entry.path());
            }
        }
        Ok(removed)
    }
}

const SCRATCH_PREFIX: &str = "plan-";

/// A dry run's scratch copy of the PKI, CA keys included: inside the 0700 state directory,
/// never in a shared temporary directory, and removed when the run ends: by
/// [`Scratch::remove`] at the end of the session (which reports a failure), by `Drop` on any
/// other way out, by the signal handler before a forced exit, and by the next run's sweep
/// after a SIGKILL.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    removed: bool,
}

impl Scratch {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn remove(mut self) -> io::Result<()> {
        self.removed = true;
        remove_if_present(&self.path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.removed {
            // The way out that reports is `remove`; this one runs while unwinding, where
            // there is no one left to tell.
            let _unreported = remove_if_present(&self.path);
        }
    }
}

/// `remove_dir_all`, where a directory already gone is success.
pub fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// This process's effective uid: the owner of `/proc/self` (no libc call, so no `unsafe`).
pub fn euid() -> io::Result<u32> {
    fs::metadata("/proc/self").map(|m| m.uid())
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
    fn the_scratch_pki_lives_in_the_state_dir_and_is_removed_on_every_way_out() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::locate(Some(tmp.path()), "c").unwrap();
        s.create().unwrap();
        // Reported removal.
        let scratch = s.create_scratch().unwrap();
        assert!(scratch.path().starts_with(s.root()));
        let mode = fs::metadata(scratch.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        fs::write(scratch.path().join("ca.key"), "k").unwrap();
        let path = scratch.path().to_path_buf();
        scratch.remove().unwrap();
        assert!(!path.exists());
        // Dropped while unwinding.
        let scratch = s.create_scratch().unwrap();
        drop(scratch);
        assert!(!path.exists());
        // Left by a killed run: swept by the next one, under the lock.
        fs::create_dir_all(s.root().join("plan-4194304/pki")).unwrap();
        let lock = StateLock::acquire(&s.lock_path(), "up").unwrap();
        let swept = s.sweep_scratch(&lock).unwrap();
        assert_eq!(swept, [s.root().join("plan-4194304")]);
        assert!(s.pki_dir().exists(), "only scratch directories go");
    }

    #[test]
    fn a_relative_state_dir_is_made_absolute() {
        let s = StateDir::locate(Some(Path::new("rel dir")), "c").unwrap();
        assert!(s.root().is_absolute());
        assert!(s.root().ends_with("rel dir/c"));
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
