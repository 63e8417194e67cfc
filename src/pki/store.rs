//! The PKI on local disk: reads that tell "absent" from "broken", and writes that are
//! atomic and private from the first byte (a key is never readable by others, not
//! even between create and chmod, and a crash never leaves half a certificate).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::PkiError;

/// Mode of private keys, locally and on the nodes.
pub const KEY_MODE: u32 = 0o600;
/// Mode of certificates and public keys.
pub const CERT_MODE: u32 = 0o644;

/// The file's bytes, or `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, PkiError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Replace `path` with `bytes`, mode `mode`, creating 0700 parents as needed: written
/// to a temporary file created with the final mode, synced, then renamed over.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let write_err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let parent = path.parent().unwrap_or(Path::new("."));
    crate::state::private_dir(parent)?;
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode at create; certs must stay readable.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable: a CA that vanishes after a power cut would be
        // regenerated next run and strand every node.
        fs::File::open(parent)?.sync_all()
    })();
    if result.is_err() {
        // Best effort: the temp file is ours and useless; the write error is what matters.
        drop(fs::remove_file(&tmp));
    }
    result.map_err(write_err)
}

/// Tighten (or fix) the mode of an existing file we are about to reuse.
pub fn ensure_mode(path: &Path, mode: u32) -> Result<(), PkiError> {
    let meta = fs::metadata(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.permissions().mode() & 0o777 != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| {
            PkiError::Write {
                path: path.to_path_buf(),
                source,
            }
        })?;
    }
    Ok(())
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn writes_with_the_requested_mode_and_private_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("a/b/k.key");
        write_atomic(&key, b"secret", KEY_MODE).unwrap();
        assert_eq!(fs::read(&key).unwrap(), b"secret");
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        for dir in [tmp.path().join("a"), tmp.path().join("a/b")] {
            assert_eq!(
                fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
                0o700
            );
        }
        let cert = tmp.path().join("a/c.crt");
        write_atomic(&cert, b"cert", CERT_MODE).unwrap();
        assert_eq!(
            fs::metadata(&cert).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let leftovers: Vec<_> = fs::read_dir(tmp.path().join("a/b")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn absent_files_read_as_none() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(read_optional(&tmp.path().join("nope")).unwrap(), None);
        assert!(
            read_optional(tmp.path()).is_err(),
            "a directory is an error, not absent"
        );
    }

    #[test]
    fn loose_key_modes_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("k.key");
        fs::write(&key, b"k").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        ensure_mode(&key, KEY_MODE).unwrap();
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
