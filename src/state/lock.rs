//! One khactl at a time per state directory. Two concurrent `up` runs made two CAs and left
//! certificates that verify against neither, and wrote one log; so every command that writes
//! state or changes nodes holds an exclusive `flock` on `<state>/lock` for its whole run
//! (the session takes it in `Loaded::start`).
//!
//! The kernel drops the lock when the process exits, however it exits, so a lock is never
//! stale. The holder writes who it is (PID, command, start time) into the file, for the
//! message the next one gets; that text is only a description, never what decides.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::diagnostics::Hinted;

/// Who holds a state directory: written into the lock file by its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Holder {
    pub pid: u32,
    /// The command as the user gave it (`up --dry-run`).
    pub command: String,
    /// RFC 3339, UTC.
    pub started: String,
}

/// The held lock; dropping it (or exiting) releases it.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    path: PathBuf,
}

impl StateLock {
    /// Takes the lock at `path` for `command`, or fails at once naming the holder.
    pub fn acquire(path: &Path, command: &str) -> Result<StateLock, Hinted> {
        let cannot = |e: std::io::Error| {
            Hinted::new(format!("cannot open the lock file {}: {e}", path.display()))
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(cannot)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(held(path, &mut file)),
            Err(TryLockError::Error(e)) => return Err(cannot(e)),
        }
        let holder = Holder {
            pid: std::process::id(),
            command: command.to_owned(),
            started: now_rfc3339(),
        };
        let text = serde_json::to_string(&holder).unwrap_or_default();
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(text.as_bytes()))
            .and_then(|()| file.flush());
        written.map_err(cannot)?;
        Ok(StateLock {
            _file: file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The error for a lock someone else holds, naming them when the file says who.
fn held(path: &Path, file: &mut File) -> Hinted {
    let mut text = String::new();
    let holder = file
        .read_to_string(&mut text)
        .ok()
        .and_then(|_| serde_json::from_str::<Holder>(&text).ok());
    let dir = path.parent().unwrap_or(path).display();
    let who = match &holder {
        Some(h) => format!(
            "khactl {} (PID {}, started {})",
            h.command, h.pid, h.started
        ),
        None => "another khactl (it has not said who yet)".to_owned(),
    };
    Hinted::new(format!("the state directory {dir} is in use by {who}"))
        .hint(
            "two runs on one state directory would each change the PKI and the nodes: wait \
             for that one to finish, then run this again",
        )
        .hint(
            "the lock is the kernel's and goes with its process, so it is never stale: if \
             that PID is gone, so is the lock",
        )
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "an unknown time".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_command_and_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = StateLock::acquire(&path, "up --dry-run").unwrap();
        // flock locks belong to the open file: a second open in this process conflicts just
        // as one in another process does.
        let err = StateLock::acquire(&path, "up").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("PID {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("khactl up --dry-run"), "{text}");
        assert!(text.contains("started 20"), "{text}");
        assert!(!err.hints().is_empty());
        drop(first);
        let again = StateLock::acquire(&path, "up").unwrap();
        assert_eq!(again.path(), path);
    }

    #[test]
    fn the_lock_file_is_private_and_never_followed_through_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let _held = StateLock::acquire(&path, "up").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
        assert!(StateLock::acquire(&link, "up").is_err());
        assert!(!dir.path().join("elsewhere").exists());
    }
}
