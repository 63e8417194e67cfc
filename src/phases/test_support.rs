//! Host facts for planning tests: a fresh host, and the facts it reports once a plan's changes
//! were applied to it (what the next `up` would probe), so a test can plan twice and check that
//! the second plan is empty.

use super::Change;
use crate::facts::{FileDigest, HostFacts, InitSystem, sha256_hex};

/// A fresh Debian 12 host on x86_64 with systemd, logged in as root, without swap; no module,
/// address, sysctl or file known. Tests fill in what their phase reads.
pub fn debian_host() -> HostFacts {
    HostFacts {
        os_id: "debian".into(),
        os_version: "12".into(),
        arch: "x86_64".into(),
        init: InitSystem::Systemd,
        uid: Some(0),
        ..HostFacts::unprobed()
    }
}

/// The facts `host` reports after `changes` were applied to it.
pub fn applied(mut host: HostFacts, changes: &[Change]) -> HostFacts {
    for change in changes {
        match change {
            Change::WriteFile {
                path,
                contents,
                mode,
                ..
            } => {
                host.files.insert(path.clone(), Some(contents.clone()));
                let digest = FileDigest {
                    sha256: sha256_hex(contents),
                    mode: *mode,
                };
                host.digests.insert(path.clone(), Some(digest));
            }
            Change::SetSysctls { values } => {
                for v in values {
                    host.sysctls
                        .insert(v.key.path().to_owned(), Some(v.to.clone()));
                }
            }
            Change::RemoveFile { path } => {
                host.files.insert(path.clone(), None);
                host.digests.insert(path.clone(), None);
            }
            Change::RestoreFile { path, backup } => {
                let kept = host.files.remove(backup).flatten();
                host.files.insert(backup.clone(), None);
                host.files.insert(path.clone(), kept);
            }
            Change::SwapOff => host.swap_active = 0,
            Change::LoadModule { name } => {
                host.modules.insert(name.clone(), true);
            }
            Change::Service { .. } => {}
            Change::SelinuxPermissive => host.selinux = crate::facts::SelinuxMode::Permissive,
            Change::FirewalldOpen { ports, protocols } => {
                if let Some(f) = host.firewalld.as_mut() {
                    f.ports.extend(ports.iter().cloned());
                    f.protocols.extend(protocols.iter().cloned());
                }
            }
        }
    }
    host
}

/// What a fake host answers the facts probe (`cmd`): a fresh Debian 12 host with systemd at
/// 10.0.0.`octet`, and for each fact asked (`kind:value`) `answer(kind, value)`'s line, or
/// that of a host where nothing of Kubernetes or khactl is: no such file or digest, tools at
/// v1.31.2, ports free, directories absent, sockets there, no kubeconfig server.
pub fn fake_probe(
    octet: u64,
    cmd: &crate::remote::RemoteCommand,
    mut answer: impl FnMut(&str, &str) -> Option<String>,
) -> String {
    let mut out = format!(
        "os id debian\nos version 12\nos arch x86_64\nos init systemd\nos uid 0\n\
         swap active 0\nmodule overlay present\nmodule br_netfilter present\nos modprobe no\n\
         addr lo 127.0.0.1/8\naddr eth0 10.0.0.{octet}/24\n"
    );
    for arg in cmd.argv().iter().skip(4) {
        let Some((kind, value)) = arg.split_once(':') else {
            continue;
        };
        let line = answer(kind, value).or_else(|| {
            Some(match kind {
                "sysctl" => format!("sysctl {value} 0"),
                "file" | "hash" | "server" => format!("{kind} {value} -"),
                "version" => format!("version {value} v1.31.2"),
                "port" => format!("port {value} free"),
                "dir" => format!("dir {value} absent"),
                "socket" => format!("socket {value} yes"),
                _ => return None,
            })
        });
        if let Some(line) = line {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}
