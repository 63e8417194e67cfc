//! The RHEL family's two gatekeepers, as the probe reports them: SELinux's mode and
//! firewalld. The probe passes on what the tools print (`getenforce`, `firewall-cmd --state`,
//! `firewall-cmd --permanent --list-ports`), and the parsing of those outputs lives here so
//! unit tests can feed it what a RHEL 9 host prints (there is no RHEL node in the lab).
//!
//! Probe lines: `selinux getenforce TEXT` or `selinux enforce 0|1` (no `getenforce`, the
//! kernel's file) or `selinux absent`; `firewalld state TEXT`, `firewalld active TEXT`
//! (`systemctl is-active`, when `firewall-cmd` is missing), `firewalld enabled TEXT`,
//! `firewalld ports LIST`, `firewalld protocols LIST`.

/// SELinux as the node runs it now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SelinuxMode {
    /// No SELinux on this kernel (Debian, Ubuntu): nothing to do.
    #[default]
    Absent,
    Disabled,
    Permissive,
    Enforcing,
}

/// firewalld on a node where it is installed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Firewalld {
    /// `firewall-cmd --state` said `running` (or systemd says the unit is active).
    pub running: bool,
    /// `systemctl is-enabled firewalld` said `enabled`: it starts at boot.
    pub enabled: bool,
    /// `firewall-cmd` is there to change it.
    pub cmd: bool,
    /// The default zone's permanent ports (`6443/tcp`, `2379-2380/tcp`), when running.
    pub ports: Vec<String>,
    /// The default zone's permanent protocols (`vrrp`), when running.
    pub protocols: Vec<String>,
}

/// What one `selinux …` or `firewalld …` probe line adds; `Err` for a line it cannot read.
pub(super) fn parse_line(
    kind: &str,
    rest: &str,
    selinux: &mut SelinuxMode,
    firewalld: &mut Option<Firewalld>,
) -> Result<(), ()> {
    let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
    match (kind, key) {
        ("selinux", "absent") => *selinux = SelinuxMode::Absent,
        ("selinux", "getenforce") => *selinux = getenforce(value).ok_or(())?,
        ("selinux", "enforce") => {
            *selinux = match value.trim() {
                "1" => SelinuxMode::Enforcing,
                "0" => SelinuxMode::Permissive,
                _ => return Err(()),
            }
        }
        ("firewalld", _) => {
            let f = firewalld.get_or_insert_with(Firewalld::default);
            match key {
                // `firewall-cmd --state`: "running", or "not running" on stderr (exit 252).
                "state" => {
                    f.cmd = true;
                    f.running = value.trim() == "running";
                }
                // `systemctl is-active firewalld`, when there is no firewall-cmd.
                "active" => f.running = value.trim() == "active",
                "enabled" => f.enabled = value.trim() == "enabled",
                "ports" => f.ports = words(value),
                "protocols" => f.protocols = words(value),
                _ => return Err(()),
            }
        }
        _ => return Err(()),
    }
    Ok(())
}

/// `getenforce` prints `Enforcing`, `Permissive` or `Disabled`.
fn getenforce(text: &str) -> Option<SelinuxMode> {
    match text.trim() {
        "Enforcing" => Some(SelinuxMode::Enforcing),
        "Permissive" => Some(SelinuxMode::Permissive),
        "Disabled" => Some(SelinuxMode::Disabled),
        _ => None,
    }
}

/// `firewall-cmd --list-ports` and `--list-protocols` print one line, items between spaces.
fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(lines: &str) -> (SelinuxMode, Option<Firewalld>) {
        let (mut s, mut f) = (SelinuxMode::default(), None);
        for line in lines.lines() {
            let (kind, rest) = line.split_once(' ').unwrap();
            parse_line(kind, rest, &mut s, &mut f).unwrap();
        }
        (s, f)
    }

    #[test]
    fn reads_getenforce_and_the_kernels_enforce_file() {
        assert_eq!(
            read("selinux getenforce Enforcing").0,
            SelinuxMode::Enforcing
        );
        assert_eq!(
            read("selinux getenforce Permissive").0,
            SelinuxMode::Permissive
        );
        assert_eq!(read("selinux getenforce Disabled").0, SelinuxMode::Disabled);
        assert_eq!(read("selinux enforce 1").0, SelinuxMode::Enforcing);
        assert_eq!(read("selinux enforce 0").0, SelinuxMode::Permissive);
        assert_eq!(read("selinux absent").0, SelinuxMode::Absent);
        let (mut s, mut f) = (SelinuxMode::default(), None);
        assert!(parse_line("selinux", "getenforce maybe", &mut s, &mut f).is_err());
    }

    #[test]
    fn reads_firewalld_running_with_its_permanent_ports_and_protocols() {
        let (_, f) = read(
            "firewalld state running\nfirewalld enabled enabled\n\
             firewalld ports 6443/tcp 2379-2380/tcp\nfirewalld protocols vrrp",
        );
        let f = f.unwrap();
        assert!(f.running && f.enabled && f.cmd);
        assert_eq!(f.ports, ["6443/tcp", "2379-2380/tcp"]);
        assert_eq!(f.protocols, ["vrrp"]);
        // Nothing opened yet: firewall-cmd prints an empty line.
        let (_, f) = read("firewalld state running\nfirewalld ports \nfirewalld protocols ");
        assert!(f.unwrap().ports.is_empty());
    }

    /// The real probe script, run here with `getenforce`, `firewall-cmd` and `systemctl` that
    /// print what RHEL 9's print (`not running` on stderr with exit 252, as firewall-cmd does).
    fn probe_with_rhel9_tools(firewalld_running: bool) -> super::super::HostFacts {
        use std::os::unix::fs::PermissionsExt;
        let bin = tempfile::tempdir().unwrap();
        let state = if firewalld_running {
            "echo running"
        } else {
            "echo 'not running' >&2; exit 252"
        };
        let tools = [
            ("getenforce", "echo Enforcing".to_owned()),
            (
                "firewall-cmd",
                format!(
                    "case \"$*\" in\n  --state) {state} ;;\n  \
                     '--permanent --list-ports') echo '6443/tcp 2379-2380/tcp' ;;\n  \
                     '--permanent --list-protocols') echo ;;\n  *) exit 2 ;;\nesac"
                ),
            ),
            (
                "systemctl",
                "if [ \"$*\" = 'is-enabled firewalld' ]; then echo enabled; fi".to_owned(),
            ),
        ];
        for (name, body) in tools {
            let path = bin.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let text = super::super::tests::probe_with_tools(&[], Some(bin.path()));
        super::super::parse("rhel9", &text, &super::super::ProbeRequest::default()).unwrap()
    }

    #[test]
    fn the_probe_passes_on_what_rhel9_tools_print() {
        let f = probe_with_rhel9_tools(true);
        assert_eq!(f.selinux, SelinuxMode::Enforcing);
        let fw = f.firewalld.unwrap();
        assert!(fw.running && fw.enabled && fw.cmd);
        assert_eq!(fw.ports, ["6443/tcp", "2379-2380/tcp"]);
        assert!(fw.protocols.is_empty());
        let fw = probe_with_rhel9_tools(false).firewalld.unwrap();
        assert!(!fw.running && fw.enabled, "{fw:?}");
        assert!(
            fw.ports.is_empty(),
            "rules are not read from a stopped firewalld"
        );
    }

    #[test]
    fn reads_firewalld_stopped_or_without_its_command() {
        let (_, f) = read("firewalld state not running\nfirewalld enabled disabled");
        let f = f.unwrap();
        assert!(!f.running && !f.enabled && f.cmd);
        let (_, f) = read("firewalld active active\nfirewalld enabled enabled");
        let f = f.unwrap();
        assert!(f.running && !f.cmd);
        assert_eq!(read("selinux absent").1, None, "not installed");
    }
}
