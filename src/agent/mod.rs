//! What khactl knows about its agent, khagent: where its files live on a node, its binary
//! (`binary`), and the one contract between the two programs about configuration, taken from
//! the agent's own config module (`khagent::config`) so it is decided in one place.

mod binary;

pub use binary::{AgentBinary, AgentBinaryError, check_arch, elf_arch};

pub const SERVICE: &str = "khagent";
pub const AGENT_BINARY: &str = "/usr/local/bin/khagent";
pub const AGENT_CONFIG: &str = "/etc/khagent/khagent.yaml";
pub const SYSTEMD_UNIT: &str = "/etc/systemd/system/khagent.service";
pub const OPENRC_SCRIPT: &str = "/etc/init.d/khagent";
/// Written before new files replace a running agent's, removed once the agent restarted on
/// them: a run cut short in between (a node lost, a restart that failed and stopped the
/// rolling restart) leaves it behind, and the next `up` restarts that agent even though its
/// files already match.
pub const RESTART_PENDING: &str = "/var/lib/khagent/restart-pending";
/// The stats page's password (`statsPage`), one line, 0600: never in the config, argv or logs.
pub const STATS_PASSWORD: &str = "/etc/khagent/stats.password";

/// Whether a running agent on config `old` takes config `new` by reload (SIGHUP), as the
/// agent itself decides it ([`khagent::config::Config::restart_needed`]). Anything either
/// side cannot parse counts as needing a restart.
pub fn reload_is_enough(old: &[u8], new: &[u8]) -> bool {
    let parse = |bytes: &[u8]| {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|t| khagent::config::Config::parse(t).ok())
    };
    match (parse(old), parse(new)) {
        (Some(old), Some(new)) => old.restart_needed(&new).is_empty(),
        _ => false,
    }
}
