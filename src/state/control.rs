//! The directory a run's SSH ControlMaster sockets and jump-host configs live in.
//!
//! It used to be `/tmp/khactl-<uid>`, chmod-ed only if it existed: another local user could
//! create it first, or plant a symlink where a config was about to be written, and make a
//! root khactl overwrite any file or read an ssh config with their `ProxyCommand`. Now each run
//! makes a fresh directory with a random name (mkdtemp: created, never reused, 0700), checks it
//! is ours; `remote` creates every file in it with `O_EXCL | O_NOFOLLOW`. It is removed at the end
//! of the run.
//!
//! Where: under `$XDG_RUNTIME_DIR` (per user, 0700, tmpfs) when that is private to us, else in
//! the state directory. A Unix socket path holds at most 107 bytes, and ssh's socket sits
//! deeper than the directory (see [`SOCKET_TAIL`]); when neither place is short enough, the
//! system temporary directory, where mkdtemp still gives a directory no one else can enter.
//! The name carries the cluster's, so a glance at the directory says whose sockets they are.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::{StateDir, StateError, euid};

/// What the openssh crate and ssh add below the directory: `/.ssh-connectionXXXXXX/master`,
/// and the `.` plus 16 random characters of the name ssh binds before renaming it.
pub const SOCKET_TAIL: usize = "/.ssh-connectionXXXXXX/master".len() + ".XXXXXXXXXXXXXXXX".len();
/// sun_path is 108 bytes, NUL included.
const SUN_PATH_MAX: usize = 107;
/// At most this much of the cluster's name goes into the directory's.
const NAME_PART: usize = 16;

/// A run's private control directory; removed when dropped.
#[derive(Debug)]
pub struct ControlDir {
    dir: tempfile::TempDir,
}

impl ControlDir {
    /// Makes the directory under the first place that is private and short enough:
    /// `runtime_dir` (`$XDG_RUNTIME_DIR`), the state directory, the system temporary one.
    pub fn create(
        runtime_dir: Option<&Path>,
        state: &StateDir,
        cluster: &str,
    ) -> Result<ControlDir, StateError> {
        let uid = euid().map_err(|source| StateError::Io {
            path: "/proc/self".into(),
            source,
        })?;
        let prefix = format!(
            "khactl-{}-",
            cluster.get(..NAME_PART.min(cluster.len())).unwrap_or("c")
        );
        let private = |p: &Path| is_private_to(p, uid);
        let candidates = [
            runtime_dir.filter(|p| p.is_absolute() && private(p)),
            Some(state.root()).filter(|p| private(p)),
        ];
        let temp = std::env::temp_dir();
        let parent = candidates
            .into_iter()
            .flatten()
            .find(|p| fits(p, &prefix))
            .unwrap_or(&temp);
        let io_err = |source| StateError::Io {
            path: parent.to_path_buf(),
            source,
        };
        if !fits(parent, &prefix) {
            return Err(io_err(io::Error::other(format!(
                "no place for ssh's control sockets: $XDG_RUNTIME_DIR, the state directory and \
                 {} are all too long for a {SUN_PATH_MAX}-byte socket path, or hold '%', '$' \
                 or whitespace, which ssh would expand; set XDG_RUNTIME_DIR or TMPDIR to a \
                 short path",
                temp.display()
            ))));
        }
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .rand_bytes(6)
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(parent)
            .map_err(io_err)?;
        // Made new (so no one else's) with 0700; check it, before anything goes in.
        let meta = fs::symlink_metadata(dir.path()).map_err(io_err)?;
        if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
            return Err(io_err(io::Error::other(format!(
                "{} is not a private directory of this user after creating it",
                dir.path().display()
            ))));
        }
        Ok(ControlDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A real directory (not a symlink), owned by `uid`, that no one else may write to.
fn is_private_to(path: &Path, uid: u32) -> bool {
    fs::symlink_metadata(path)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o022 == 0)
}

/// Whether ssh can use a socket below `parent`: short enough, and nothing ssh would expand
/// (`%` tokens, `${VAR}`, a leading `~`) or a space a config line would split at.
fn fits(parent: &Path, prefix: &str) -> bool {
    let Some(text) = parent.to_str() else {
        return false;
    };
    let dir_len = text.len() + 1 + prefix.len() + 6;
    dir_len + SOCKET_TAIL <= SUN_PATH_MAX
        && !text.contains(['%', '$'])
        && !text.starts_with('~')
        && !text.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(base: &Path) -> StateDir {
        let s = StateDir::locate(Some(base), "prod").unwrap();
        s.create().unwrap();
        s
    }

    fn socket_len(dir: &ControlDir) -> usize {
        dir.path().to_str().unwrap().len() + SOCKET_TAIL
    }

    #[test]
    fn a_private_runtime_dir_gets_a_fresh_0700_directory_named_after_the_cluster() {
        let runtime = tempfile::tempdir().unwrap();
        let base = tempfile::tempdir().unwrap();
        let dir = ControlDir::create(Some(runtime.path()), &state(base.path()), "prod").unwrap();
        assert_eq!(dir.path().parent(), Some(runtime.path()));
        let name = dir.path().file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("khactl-prod-"), "{name}");
        let meta = fs::symlink_metadata(dir.path()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        assert_eq!(meta.uid(), euid().unwrap());
        // Fresh each run: a second one is another directory.
        let other = ControlDir::create(Some(runtime.path()), &state(base.path()), "prod").unwrap();
        assert_ne!(dir.path(), other.path());
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists(), "removed at the end of the run");
    }

    #[test]
    fn a_runtime_dir_others_may_write_to_is_not_used() {
        let runtime = tempfile::tempdir().unwrap();
        fs::set_permissions(runtime.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let base = tempfile::tempdir().unwrap();
        let s = state(base.path());
        let dir = ControlDir::create(Some(runtime.path()), &s, "prod").unwrap();
        assert_eq!(dir.path().parent(), Some(s.root()));
    }

    #[test]
    fn a_runtime_dir_that_is_a_symlink_is_not_used() {
        let real = tempfile::tempdir().unwrap();
        let holder = tempfile::tempdir().unwrap();
        let link = holder.path().join("run");
        std::os::unix::fs::symlink(real.path(), &link).unwrap();
        let base = tempfile::tempdir().unwrap();
        let s = state(base.path());
        let dir = ControlDir::create(Some(&link), &s, "prod").unwrap();
        assert_eq!(dir.path().parent(), Some(s.root()));
    }

    #[test]
    fn long_paths_fall_back_to_one_a_socket_fits_in() {
        let base = tempfile::tempdir().unwrap();
        let deep = base.path().join("a".repeat(80));
        let s = state(&deep);
        let runtime = tempfile::tempdir().unwrap();
        let long_runtime = runtime.path().join("b".repeat(70));
        fs::create_dir(&long_runtime).unwrap();
        fs::set_permissions(&long_runtime, fs::Permissions::from_mode(0o700)).unwrap();
        let dir = ControlDir::create(Some(&long_runtime), &s, "a-very-long-cluster-name").unwrap();
        assert!(socket_len(&dir) <= SUN_PATH_MAX, "{}", dir.path().display());
        assert!(!dir.path().starts_with(&deep));
        let name = dir.path().file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("khactl-a-very-long-clus"), "{name}");
    }

    #[test]
    fn a_state_dir_ssh_would_expand_is_not_used() {
        let base = tempfile::tempdir().unwrap();
        let s = state(&base.path().join("50%"));
        let dir = ControlDir::create(None, &s, "prod").unwrap();
        assert!(
            !dir.path().starts_with(s.root()),
            "{}",
            dir.path().display()
        );
    }
}
