//! The node-local variant of `WaitForVip`: there is no VIP to elect. Instead every node that
//! runs khagent must accept a connection on its own `127.0.0.1:port`, where its kubelet and
//! kube-proxy will reach the API (through `/etc/hosts`). Before `kubeadm init` no API server
//! answers yet, so this waits for the listener, not for a healthy backend.

use std::net::Ipv4Addr;
use std::time::Instant;

use super::{DEADLINE, POLL};
use crate::cluster::vip;
use crate::diagnostics::Hinted;
use crate::phases::Context;

pub(super) async fn wait(ctx: &mut Context, port: u16) -> anyhow::Result<()> {
    let c = &*ctx;
    let results = c
        .fleet()?
        .each(
            |h| c.node(h.node()).is_ok_and(|n| c.inventory.runs_agent(n)),
            async |host| {
                let started = Instant::now();
                loop {
                    c.settings.interrupt.check()?;
                    if vip::answers(host, Ipv4Addr::LOCALHOST, port).await? {
                        return Ok(format!("127.0.0.1:{port} answers"));
                    }
                    if started.elapsed() > DEADLINE {
                        return Err(Hinted::new(format!(
                            "127.0.0.1:{port} does not accept connections after {}s",
                            DEADLINE.as_secs()
                        ))
                        .hint(
                            "look at the agent there: `systemctl status khagent` or \
                             `journalctl -u khagent` (OpenRC: `rc-service khagent status`, \
                             /var/log/khagent.log), and `curl -s 127.0.0.1:9901/status`",
                        )
                        .into());
                    }
                    tokio::time::sleep(POLL).await;
                }
            },
        )
        .await;
    ctx.settle(results)
}
