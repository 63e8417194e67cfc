//! The run log: every event and every remote command's full output, one file per run
//! in the state directory (0600: it may hold command output a user would not share).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Event, plain};

pub struct RunLog {
    path: PathBuf,
    file: Mutex<File>,
    /// The first write that failed (disk full): told to the user at the end, not lost.
    failed: Mutex<Option<String>>,
}

impl RunLog {
    /// Creates `<dir>/<unix-seconds>-<pid>-<verb>.log`, a file of its own: created new, never
    /// appended to (two runs in one second once shared a log), never through a symlink.
    pub fn create(dir: &Path, verb: &str) -> std::io::Result<Self> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let pid = std::process::id();
        let mut attempt = 0u32;
        let (path, file) = loop {
            let suffix = if attempt == 0 {
                String::new()
            } else {
                format!("-{attempt}")
            };
            let path = dir.join(format!("{secs}-{pid}-{verb}{suffix}.log"));
            let opened = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path);
            match opened {
                Ok(file) => break (path, file),
                // The same second and a reused PID: take the next name.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Self {
            path,
            file: Mutex::new(file),
            failed: Mutex::new(None),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn event(&self, event: &Event<'_>) {
        if let Some(l) = plain::line(event, true) {
            self.write(&l);
        }
    }

    pub(super) fn line(&self, line: &str) {
        self.write(line);
    }

    pub(super) fn output(&self, node: &str, status: Option<i32>, stdout: &[u8], stderr: &[u8]) {
        let status = status.map_or_else(|| "killed by a signal".to_owned(), |s| s.to_string());
        self.write(&format!("    {node}: exit {status}"));
        for (name, bytes) in [("stdout", stdout), ("stderr", stderr)] {
            let text = String::from_utf8_lossy(bytes);
            for l in text.lines() {
                self.write(&format!("    {node}: {name}| {l}"));
            }
        }
    }

    fn write(&self, line: &str) {
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // A log write failing (disk full) must not fail the install itself; it is kept and
        // reported once the run ends.
        if let Err(e) = writeln!(f, "{line}") {
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            failed.get_or_insert_with(|| format!("writing {}: {e}", self.path.display()));
        }
    }

    /// Why the log is incomplete, if a write failed.
    pub fn write_error(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_run_gets_a_log_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLog::create(dir.path(), "up").unwrap();
        let second = RunLog::create(dir.path(), "up").unwrap();
        assert_ne!(first.path(), second.path());
        let name = first.path().file_name().unwrap().to_str().unwrap();
        assert!(
            name.contains(&format!("-{}-up", std::process::id())),
            "{name}"
        );
    }
}
