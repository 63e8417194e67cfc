//! The per-node manifest of what khactl wrote: `/var/lib/khactl/manifest`, kept on each node
//! by the gate itself (the scripts in [`super::changes`] note each file, directory, sysctl,
//! swap-off and service right before they change it), so `khactl reset` can undo exactly that
//! and nothing else.
//!
//! One record per line, fields separated by a tab; the first record of a kind and key wins,
//! because it says what was there before khactl:
//!
//! ```text
//! file    PATH    new                   khactl created PATH: reset removes it
//! file    PATH    existed BACKUP        it existed; the original is at BACKUP ("" if none kept)
//! dir     PATH                          khactl's write created the directory: removed if empty
//! sysctl  KEY     VALUE                 the runtime value before khactl changed it (no VALUE:
//!                                       the key did not exist)
//! swap    off                           khactl turned swap off
//! service NAME                          khactl enabled and started NAME
//! ```
//!
//! Paths and keys are khactl's constants or validated sysctl keys, never holding a tab or a
//! newline; values with tabs are noted with spaces (as sysctls read back).

use std::collections::BTreeMap;

/// Where the manifest lives on a node.
pub const PATH: &str = "/var/lib/khactl/manifest";
/// khactl's own directory on a node (the manifest, backups of replaced PKI files).
pub const DIR: &str = "/var/lib/khactl";

/// Shell functions the gate's scripts start with: `note KIND KEY [VALUE…]` appends a record
/// unless one of that kind and key exists; `note_dirs PATH` notes every missing parent
/// directory of PATH, outermost first, before `mkdir -p` makes them.
macro_rules! manifest_functions {
    () => {
        r#"khactl_manifest=/var/lib/khactl/manifest
tab=$(printf '\t')
note() {
  if [ -e "$khactl_manifest" ] && K="$1" P="$2" awk -F "$tab" \
      '$1 == ENVIRON["K"] && $2 == ENVIRON["P"] { found = 1 } END { exit !found }' \
      "$khactl_manifest"; then
    return 0
  fi
  (umask 077; mkdir -p /var/lib/khactl)
  if [ ! -e "$khactl_manifest" ]; then
    printf '# khactl manifest v1: what khactl wrote on this node; `khactl reset` undoes it\n' \
      > "$khactl_manifest"
  fi
  line=$1; shift
  for field in "$@"; do line="$line$tab$field"; done
  printf '%s\n' "$line" >> "$khactl_manifest"
}
note_dirs() {
  d=$(dirname "$1"); missing=
  while [ ! -e "$d" ]; do missing="$d
$missing"; d=$(dirname "$d"); done
  printf '%s' "$missing" | while IFS= read -r x; do
    if [ -n "$x" ]; then note dir "$x"; fi
  done
}
"#
    };
}
pub(crate) use manifest_functions;

/// A file khactl wrote, and what was there before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Before {
    /// Nothing: khactl created it.
    Absent,
    /// A file, kept at this backup (`None` when no copy was kept).
    Existed(Option<String>),
}

/// What the manifest says khactl did on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// In the order first written.
    pub files: Vec<(String, Before)>,
    /// Outermost first.
    pub dirs: Vec<String>,
    /// Key (path under /proc/sys) → the value before (`None`: the key did not exist).
    pub sysctls: BTreeMap<String, Option<String>>,
    pub swap_off: bool,
    pub services: Vec<String>,
}

impl Manifest {
    /// Reads the manifest's text; lines it does not know are skipped (a newer khactl's).
    pub fn parse(text: &str) -> Self {
        let mut m = Manifest::default();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            match f.as_slice() {
                ["file", path, "new", ..] => m.add_file(path, Before::Absent),
                ["file", path, "existed", backup] if !backup.is_empty() => {
                    m.add_file(path, Before::Existed(Some((*backup).to_owned())));
                }
                ["file", path, "existed", ..] => m.add_file(path, Before::Existed(None)),
                ["dir", path] if !m.dirs.iter().any(|d| d == path) => {
                    m.dirs.push((*path).to_owned());
                }
                ["sysctl", key, rest @ ..] => {
                    let value = rest.first().map(|v| (*v).to_owned());
                    m.sysctls.entry((*key).to_owned()).or_insert(value);
                }
                ["swap", "off", ..] => m.swap_off = true,
                ["service", name] if !m.services.iter().any(|s| s == name) => {
                    m.services.push((*name).to_owned());
                }
                _ => {}
            }
        }
        m
    }

    fn add_file(&mut self, path: &str, before: Before) {
        if !self.files.iter().any(|(p, _)| p == path) {
            self.files.push((path.to_owned(), before));
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Manifest::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_record_of_each_key_wins_and_unknown_lines_are_skipped() {
        let text = "# khactl manifest v1\n\
            dir\t/etc/khagent\n\
            file\t/etc/khagent/khagent.yaml\tnew\n\
            file\t/etc/hosts\texisted\t/etc/hosts.khactl.bak\n\
            file\t/etc/khagent/khagent.yaml\texisted\t\n\
            file\t/etc/kubernetes/pki/ca.crt\texisted\t\n\
            sysctl\tnet/ipv4/ip_forward\t0\n\
            sysctl\tnet/ipv4/ip_forward\t1\n\
            sysctl\tnet/ipv4/ip_local_port_range\t32768 60999\n\
            sysctl\tnet/bridge/bridge-nf-call-iptables\n\
            service\tkhagent\n\
            something-new\tx\n";
        let m = Manifest::parse(text);
        assert_eq!(
            m.files,
            [
                ("/etc/khagent/khagent.yaml".to_owned(), Before::Absent),
                (
                    "/etc/hosts".to_owned(),
                    Before::Existed(Some("/etc/hosts.khactl.bak".to_owned()))
                ),
                (
                    "/etc/kubernetes/pki/ca.crt".to_owned(),
                    Before::Existed(None)
                ),
            ]
        );
        assert_eq!(m.dirs, ["/etc/khagent"]);
        assert_eq!(m.sysctls["net/ipv4/ip_forward"].as_deref(), Some("0"));
        assert_eq!(
            m.sysctls["net/ipv4/ip_local_port_range"].as_deref(),
            Some("32768 60999")
        );
        assert_eq!(m.sysctls["net/bridge/bridge-nf-call-iptables"], None);
        assert_eq!(m.services, ["khagent"]);
        assert!(!m.swap_off);
        assert!(Manifest::parse("# only a header\n").is_empty());
    }

    /// The snippet, run by a real `sh`: records once per key, dirs outermost first.
    #[test]
    fn the_node_side_functions_note_each_key_once_and_missing_dirs_outermost_first() {
        let root = tempfile::tempdir().unwrap();
        let script = manifest_functions!().replace(
            "/var/lib/khactl",
            &root.path().join("var/lib/khactl").display().to_string(),
        ) + "note file /a new\nnote file /a existed /a.bak\nnote sysctl net/ipv4/ip_forward 0\n\
             note sysctl net/ipv4/ip_forward 1\nnote_dirs \"$1/x/y/z/file\"\n";
        let out = std::process::Command::new("sh")
            .args(["-c", &script, "test"])
            .arg(root.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(root.path().join("var/lib/khactl/manifest")).unwrap();
        let m = Manifest::parse(&text);
        assert_eq!(m.files, [("/a".to_owned(), Before::Absent)]);
        assert_eq!(m.sysctls["net/ipv4/ip_forward"].as_deref(), Some("0"));
        let base = root.path().display().to_string();
        assert_eq!(
            m.dirs,
            [
                format!("{base}/x"),
                format!("{base}/x/y"),
                format!("{base}/x/y/z")
            ]
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(root.path().join("var/lib/khactl"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o700, "khactl's directory is private");
    }
}
