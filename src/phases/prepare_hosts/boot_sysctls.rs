//! What the sysctl files would set at boot, and where that is not khactl's value.
//!
//! The runtime value is not enough: the next boot applies the sysctl.d files again, and a
//! file applied after khactl's puts its own value back. This models `sysctl --system`
//! (procps), which is also what systemd-sysctl and OpenRC's sysctl service do up to one
//! detail: every `*.conf` of the directories below, a name found in several taken from the
//! first directory, applied in the order of the names; then `/etc/sysctl.conf`. (systemd does
//! not read `/etc/sysctl.conf` itself; Debian links it in as `99-sysctl.conf`, which khactl's
//! `99-zz-khactl.conf` sorts after.) Entries with globs (`net.ipv4.conf.*.rp_filter`) are not
//! matched.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use super::{OLD_SYSCTL_DROP_IN, SYSCTL_DROP_IN};
use crate::facts::HostFacts;
use crate::inventory::SysctlKey;
use crate::phases::changes::normalise;

/// The drop-in directories, earliest first: a file name in an earlier one hides the same name
/// in a later one.
pub const DIRS: [&str; 5] = [
    "/etc/sysctl.d",
    "/run/sysctl.d",
    "/usr/local/lib/sysctl.d",
    "/usr/lib/sysctl.d",
    "/lib/sysctl.d",
];
/// Applied after every drop-in by `sysctl --system`.
pub const SYSCTL_CONF: &str = "/etc/sysctl.conf";

/// One warning per wanted key that a file applied after khactl's drop-in (whose new content is
/// `ours`) sets to another value, naming that file.
pub fn overridden(
    facts: &HostFacts,
    wanted: &BTreeMap<SysctlKey, String>,
    ours: &[u8],
) -> Vec<String> {
    let mut by_name: BTreeMap<OsString, (&Path, &[u8])> = BTreeMap::new();
    for dir in DIRS {
        for (path, content) in facts.conf_files(Path::new(dir)) {
            let Some(name) = path.file_name() else {
                continue;
            };
            by_name.entry(name.to_owned()).or_insert((path, content));
        }
    }
    // The drop-in as it will be once this run has written it, the old one gone.
    let old = Path::new(OLD_SYSCTL_DROP_IN);
    by_name.retain(|_, (path, _)| *path != old);
    let drop_in = Path::new(SYSCTL_DROP_IN);
    if let Some(name) = drop_in.file_name() {
        by_name.insert(name.to_owned(), (drop_in, ours));
    }
    let mut order: Vec<(&Path, &[u8])> = by_name.into_values().collect();
    if let Some(conf) = facts.file(Path::new(SYSCTL_CONF)) {
        order.push((Path::new(SYSCTL_CONF), conf));
    }

    // The last file to set each key wins.
    let mut last: BTreeMap<SysctlKey, (&Path, String)> = BTreeMap::new();
    for (path, content) in order {
        for (key, value) in entries(content) {
            last.insert(key, (path, value));
        }
    }
    wanted
        .iter()
        .filter_map(|(key, want)| {
            let (path, value) = last.get(key)?;
            (*path != drop_in && normalise(value) != normalise(want)).then(|| {
                format!(
                    "sysctl {key}: {} sets {value:?}, and `sysctl --system` (and so the next \
                     boot) applies it after {SYSCTL_DROP_IN}, undoing khactl's {want:?}; remove \
                     it from {}",
                    path.display(),
                    path.display()
                )
            })
        })
        .collect()
}

/// The `key = value` lines of a sysctl.d file, as sysctl(8) reads them: `#` and `;` start
/// comments, a leading `-` only says to ignore a failure, a key is dotted or slashed.
fn entries(content: &[u8]) -> Vec<(SysctlKey, String)> {
    String::from_utf8_lossy(content)
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with(['#', ';']) {
                return None;
            }
            let (key, value) = line.split_once('=')?;
            let key = key.trim();
            let key = key.strip_prefix('-').unwrap_or(key).trim();
            if key.contains(['*', '?', '[']) {
                return None;
            }
            let key = SysctlKey::parse(key).ok()?;
            Some((key, value.trim().to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::phases::test_support::debian_host;

    fn key(k: &str) -> SysctlKey {
        SysctlKey::parse(k).unwrap()
    }

    fn wanted() -> BTreeMap<SysctlKey, String> {
        [
            (key("net.ipv4.ip_forward"), "1".to_owned()),
            (key("net/ipv4/conf/eth0.5/rp_filter"), "2".to_owned()),
        ]
        .into_iter()
        .collect()
    }

    fn host(files: &[(&str, &str)]) -> HostFacts {
        let mut facts = debian_host();
        for (path, text) in files {
            facts
                .files
                .insert(PathBuf::from(path), Some(text.as_bytes().to_vec()));
        }
        facts
    }

    const OURS: &str = "net.ipv4.ip_forward = 1\nnet/ipv4/conf/eth0.5/rp_filter = 2\n";

    #[test]
    fn debians_sysctl_conf_link_sorts_before_the_drop_in() {
        // Debian: /etc/sysctl.d/99-sysctl.conf -> ../sysctl.conf (read through the link).
        let facts = host(&[("/etc/sysctl.d/99-sysctl.conf", "net.ipv4.ip_forward=0\n")]);
        assert!(
            SYSCTL_DROP_IN > "/etc/sysctl.d/99-sysctl.conf",
            "the drop-in must sort last"
        );
        assert_eq!(overridden(&facts, &wanted(), OURS.as_bytes()), [""; 0]);
    }

    #[test]
    fn a_file_applied_after_the_drop_in_is_named() {
        let facts = host(&[
            (
                "/etc/sysctl.d/zz-local.conf",
                "# mine\n-net.ipv4.ip_forward = 0\n",
            ),
            (
                "/usr/lib/sysctl.d/50-default.conf",
                "net.ipv4.ip_forward = 0\n",
            ),
        ]);
        let warnings = overridden(&facts, &wanted(), OURS.as_bytes());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("/etc/sysctl.d/zz-local.conf sets \"0\""),
            "{warnings:?}"
        );
    }

    #[test]
    fn sysctl_conf_comes_last_and_keys_match_in_either_spelling() {
        let facts = host(&[(
            SYSCTL_CONF,
            "net.ipv4.conf.eth0/5.rp_filter = 0\nnet/ipv4/ip_forward = 1\n",
        )]);
        let warnings = overridden(&facts, &wanted(), OURS.as_bytes());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("sysctl net/ipv4/conf/eth0.5/rp_filter: /etc/sysctl.conf"),
            "{warnings:?}"
        );
    }

    #[test]
    fn an_earlier_directory_hides_the_same_name_and_the_old_drop_in_is_ignored() {
        let facts = host(&[
            ("/etc/sysctl.d/zz.conf", "net.ipv4.ip_forward = 1\n"),
            ("/usr/lib/sysctl.d/zz.conf", "net.ipv4.ip_forward = 0\n"),
            (OLD_SYSCTL_DROP_IN, "net.ipv4.ip_forward = 0\n"),
        ]);
        assert_eq!(overridden(&facts, &wanted(), OURS.as_bytes()), [""; 0]);
    }
}
