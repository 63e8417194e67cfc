//! Secrets khactl makes up itself and keeps in the state directory: today the stats page's
//! password (`statsPage` without `passwordFile`). Created once, 0600, `O_EXCL | O_NOFOLLOW`
//! (a planted file or symlink is refused, never followed), and read back on every later run
//! so every node and every run agree on it.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use base64::Engine as _;

use super::StateError;

/// 24 random bytes: 32 characters of URL-safe base64, about 192 bits.
const RANDOM_BYTES: usize = 24;

/// The secret kept at `path`, or a new one. `keep`: write a new one there (a real run); a
/// dry run gets one that is shown by size only and forgotten, so it writes nothing.
pub fn read_or_generate(path: &Path, keep: bool) -> Result<Vec<u8>, StateError> {
    let io_err = |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    };
    match read_private(path) {
        Ok(secret) => return Ok(secret),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let secret = generate().map_err(io_err)?;
    if keep {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io_err)?;
        file.write_all(&secret)
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .map_err(io_err)?;
    }
    Ok(secret)
}

/// A password kept in a file: a regular file no one else can read (no group or other bits),
/// its one line without the newline. Also the rule for a `passwordFile` the inventory names.
pub fn read_private(path: &Path) -> io::Result<Vec<u8>> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.mode() & 0o077 != 0 {
        return Err(io::Error::other(format!(
            "not a private regular file (mode {:o}); make it 0600 (`chmod 600`)",
            meta.mode() & 0o7777
        )));
    }
    let mut bytes = Vec::new();
    (&file).take(4096).read_to_end(&mut bytes)?;
    khagent::config::stats::password_from_file(bytes).map_err(io::Error::other)
}

fn generate() -> io::Result<Vec<u8>> {
    let mut raw = [0u8; RANDOM_BYTES];
    getrandom::fill(&mut raw).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(raw)
        .into_bytes())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_generated_secret_is_kept_0600_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats-password");
        let first = read_or_generate(&path, true).unwrap();
        assert_eq!(first.len(), 32);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_or_generate(&path, true).unwrap(), first);
        assert_eq!(fs::read(&path).unwrap(), [first.as_slice(), b"\n"].concat());
    }

    #[test]
    fn a_dry_run_generates_but_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats-password");
        let a = read_or_generate(&path, false).unwrap();
        assert!(!path.exists());
        assert_ne!(
            read_or_generate(&path, false).unwrap(),
            a,
            "random each time"
        );
    }

    #[test]
    fn a_secret_others_can_read_or_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats-password");
        fs::write(&path, "x\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_or_generate(&path, true).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(read_or_generate(&link, true).is_err());
    }
}
