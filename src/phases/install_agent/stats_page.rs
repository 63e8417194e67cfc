//! The agent's `stats:` section and its password file, from the inventory's `statsPage`.
//! The password comes from `statsPage.passwordFile` on this machine or from the state
//! directory (generated once, 0600); it reaches the node as a 0600 file written through the
//! gate as a secret (the plan and the log show its size only), never in the config, argv or
//! the inventory.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::Context as _;

use super::{STATS_PASSWORD, write_secret_if_changed};
use crate::facts::HostFacts;
use crate::inventory::{Inventory, Node, StatsBind};
use crate::phases::changes::Change;
use crate::phases::{Context, Mode};
use crate::render::AgentStats;
use crate::state::secret;

/// The `stats:` section of `node`'s agent config, when the inventory publishes the page.
pub fn section(inv: &Inventory, node: &Node) -> Option<AgentStats> {
    let page = inv.stats_page.as_ref()?;
    let ip = match page.bind {
        StatsBind::Node => node.address,
        StatsBind::All => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        StatsBind::Loopback => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    Some(AgentStats {
        listen: SocketAddr::new(ip, page.port.get()),
        uri: page.path.clone(),
        realm: page.realm.clone(),
        user: page.user.clone(),
        password_file: STATS_PASSWORD.to_owned(),
    })
}

/// The password every node gets: `passwordFile`'s, or the state directory's (made on the first
/// real run; a dry run makes up one it does not keep). `None` without `statsPage`.
pub fn password(ctx: &Context) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(page) = &ctx.inventory.stats_page else {
        return Ok(None);
    };
    match page.password_file() {
        Some(path) => read_password_file(&path).map(Some),
        None => {
            let keep = ctx.settings.mode != Mode::Plan;
            let path = ctx.state.stats_password_path();
            secret::read_or_generate(&path, keep)
                .map(Some)
                .with_context(|| format!("the stats page's password ({})", path.display()))
        }
    }
}

/// `statsPage.passwordFile`, read and checked (private, one line); the error names the field.
pub fn read_password_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    secret::read_private(path).map_err(|e| {
        anyhow::anyhow!(
            "statsPage.passwordFile: cannot use {}: {e}; write the password on one line in a \
             file only you can read, or leave the field out to have khactl generate one",
            path.display()
        )
    })
}

/// The password file's write (with a newline, 0600, secret) when it differs from the node's,
/// or its removal when the inventory no longer publishes the page.
pub fn password_change(
    inv: &Inventory,
    facts: &HostFacts,
    password: Option<&[u8]>,
) -> anyhow::Result<Option<Change>> {
    match (&inv.stats_page, password) {
        (None, _) => Ok(facts
            .digest(Path::new(STATS_PASSWORD))
            .map(|_| Change::RemoveFile {
                path: STATS_PASSWORD.into(),
            })),
        (Some(_), None) => anyhow::bail!("internal: statsPage without its password"),
        (Some(_), Some(pw)) => {
            let contents = [pw, b"\n"].concat();
            Ok(write_secret_if_changed(facts, STATS_PASSWORD, contents))
        }
    }
}
