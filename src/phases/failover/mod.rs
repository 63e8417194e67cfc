//! The failover drill (`khactl failover-test`): for each scenario, break one thing, measure
//! what users of the API through the VIP feel (a prober run by khactl) and what each agent
//! saw (its event log), restore, and wait until the control plane is whole again.
//!
//! ```text
//! health (refuse unless whole, ≥ 2 control planes) → confirm → prober starts
//!   per scenario: baseline → break → observe (new holder, then a while) → restore →
//!                 healthy again → figures (measure) ← prober's recording + agents' /events
//! ```
//!
//! What is broken is remembered until it is restored: a failed step or Ctrl-C runs
//! [`Phase::cleanup`], which restores it.

pub mod health;
pub mod measure;
pub mod scenario;
pub mod timeline;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::{Context, Phase, PhaseFuture};
use crate::cluster::prober::{Clock, Prober, ProberSettings};
use crate::cluster::vip;
use crate::diagnostics::Hinted;
use crate::os::InitSystem;
use crate::remote::RemoteCommand;
use crate::report::Event;
use measure::{AgentEvent, Broken, Figures, Marks, Miss, NodeEvents, Targets};
use scenario::Scenario;
use timeline::Timeline;

/// The user's commands for node-down, with `{node}` for the node's name.
#[derive(Debug, Clone)]
pub struct Hooks {
    pub down: String,
    pub up: String,
}

/// What to run, decided by the command.
#[derive(Debug, Clone)]
pub struct DrillPlan {
    pub scenarios: Vec<Scenario>,
    pub targets: BTreeMap<&'static str, Targets>,
    pub hooks: Option<Hooks>,
    pub probe_interval: Duration,
    /// Ask before breaking anything (false: `--yes`).
    pub confirm: bool,
}

/// What one scenario showed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioReport {
    pub scenario: &'static str,
    /// Why it did not run (`node-down` without hooks), if it did not.
    pub skipped: Option<String>,
    /// The node broken.
    pub node: Option<String>,
    pub holder_before: Option<String>,
    pub holder_after: Option<String>,
    pub passed: bool,
    pub figures: Option<Figures>,
    pub targets: Targets,
    pub missed: Vec<Miss>,
    pub marks: Option<Marks>,
    pub timeline: Option<Timeline>,
}

/// What the drill found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillOutcome {
    pub holder_before: String,
    pub holder_after: Option<String>,
    pub scenarios: Vec<ScenarioReport>,
}

/// Something broken and not yet restored: what the cleanup puts back.
#[derive(Debug, Clone)]
struct Breakage {
    scenario: Scenario,
    node: String,
    init: InitSystem,
    interface: String,
}

pub struct FailoverDrill {
    pub plan: DrillPlan,
    pub outcome: Rc<RefCell<Option<DrillOutcome>>>,
    broken: RefCell<Option<Breakage>>,
}

impl FailoverDrill {
    pub fn new(plan: DrillPlan, outcome: Rc<RefCell<Option<DrillOutcome>>>) -> Self {
        Self {
            plan,
            outcome,
            broken: RefCell::new(None),
        }
    }
}

/// How long a scenario waits for another node to take the VIP before restoring anyway.
const TAKEOVER_WAIT: Duration = Duration::from_secs(10);
/// Kept watching after the takeover (or the whole time, when nothing should move), so the
/// outage and the agents' reactions are complete before the restore.
const OBSERVE: Duration = Duration::from_secs(4);
/// How long the cluster may take to be whole again.
const HEALTHY_WAIT: Duration = Duration::from_secs(120);
/// The prober's view of the calm before each break.
const BASELINE: Duration = Duration::from_secs(1);

impl Phase for FailoverDrill {
    fn title(&self) -> &'static str {
        "Failover drill"
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let before = health::settled(ctx).await?;
            let routers = ctx.inventory.vrrp_nodes().count();
            if ctx.inventory.dedicated_lb() && routers < 2 {
                return Err(Hinted::new(format!(
                    "a failover drill needs at least two load-balancer nodes to move the VIP \
                     between; the inventory has {routers}"
                ))
                .hint("add a `role: loadbalancer` node and run `khactl up` first")
                .into());
            }
            if before.control_planes < 2 || before.apiservers_ready.len() < 2 {
                return Err(Hinted::new(format!(
                    "a failover drill needs at least two ready control planes; {} of {} are ready",
                    before.apiservers_ready.len(),
                    before.control_planes
                ))
                .hint("add control planes to the inventory and run `khactl up` first")
                .into());
            }
            if !before.healthy() {
                return Err(Hinted::new(format!(
                    "the control plane is not whole, so a drill would measure an outage that is \
                     already there: {}",
                    before.problems().join("; ")
                ))
                .hint("fix it (`khactl up` finishes most jobs), then run the drill again")
                .into());
            }
            let holder = before.holders[0].clone();
            if self.plan.confirm {
                let cluster = ctx.inventory.cluster.name.to_string();
                let names: Vec<&str> = self.plan.scenarios.iter().map(|s| s.name()).collect();
                let hooks = match (
                    &self.plan.hooks,
                    self.plan.scenarios.contains(&Scenario::NodeDown),
                ) {
                    (Some(h), true) => format!(
                        "; node-down runs `{}` and `{}` on this machine",
                        h.down, h.up
                    ),
                    _ => String::new(),
                };
                let prompt = format!(
                    "This breaks cluster {cluster} on purpose ({}), one scenario at a time, and \
                     restores each{hooks}. Type the cluster's name to go on",
                    names.join(", ")
                );
                if !ctx.report.confirm(&prompt, &cluster)? {
                    bail!("not confirmed; nothing was broken");
                }
            }
            let prober = start_prober(ctx, self.plan.probe_interval)?;
            let mut reports = Vec::new();
            let mut result = Ok(());
            for &s in &self.plan.scenarios {
                match self.scenario(ctx, &prober, s).await {
                    Ok(r) => reports.push(r),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            prober.stop().await;
            let holder_after = reports.iter().rev().find_map(|r| r.holder_after.clone());
            *self.outcome.borrow_mut() = Some(DrillOutcome {
                holder_before: holder,
                holder_after,
                scenarios: reports,
            });
            result
        })
    }

    fn cleanup<'a>(&'a self, ctx: &'a mut Context) -> Option<PhaseFuture<'a>> {
        let broken = self.broken.borrow().clone()?;
        Some(Box::pin(async move {
            restore(ctx, &broken, self.plan.hooks.as_ref()).await?;
            *self.broken.borrow_mut() = None;
            Ok(())
        }))
    }
}

fn start_prober(ctx: &Context, interval: Duration) -> anyhow::Result<Prober> {
    let ca_path = ctx.state.pki_dir().join("ca.crt");
    let ca = std::fs::read(&ca_path)
        .with_context(|| format!("reading the cluster CA {}", ca_path.display()))?;
    let v = the_vip(ctx)?;
    let vip = v.address;
    let settings = ProberSettings {
        address: (vip, v.port.get()).into(),
        server_name: vip.to_string(),
        interval,
        timeout: Duration::from_secs(2),
        long_lived_every: Duration::from_millis(100),
    };
    Prober::start(settings, &ca, Clock::new())
}

/// The VIP the drill moves; node-local balancers have none.
fn the_vip(ctx: &Context) -> anyhow::Result<&crate::inventory::Vip> {
    ctx.inventory.vip.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "failover-test moves the VIP, and this inventory has none \
             (loadBalancer.mode: node-local: every node balances on its own 127.0.0.1)"
        )
    })
}

/// The interface holding the node's own address (where the VIP lives too).
fn interface_of(ctx: &Context, node: &str) -> anyhow::Result<String> {
    if let Some(i) = &the_vip(ctx)?.interface {
        return Ok(i.clone());
    }
    let address = ctx.node(node)?.address;
    ctx.facts_of(node)?
        .addresses
        .iter()
        .find(|(_, net)| std::net::IpAddr::V4(net.addr()) == address)
        .map(|(i, _)| i.clone())
        .with_context(|| format!("{node}: no interface holds its address {address}"))
}

/// Runs a hook with `{node}` replaced by the node's name (inventory names are DNS labels, so
/// they need no quoting), locally, through `sh -c`.
async fn run_hook(template: &str, node: &str) -> anyhow::Result<()> {
    if !node
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    {
        bail!("node name {node:?} cannot be put in a hook command");
    }
    let cmd = template.replace("{node}", node);
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("running `{cmd}`"))?;
    if !out.status.success() {
        bail!(
            "`{cmd}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

async fn restore(ctx: &Context, b: &Breakage, hooks: Option<&Hooks>) -> anyhow::Result<()> {
    if b.scenario == Scenario::NodeDown {
        let hooks = hooks.context("node-down ran without hooks")?;
        return run_hook(&hooks.up, &b.node).await;
    }
    let Some(cmd) = b.scenario.restore_command(b.init, &b.interface) else {
        return Ok(());
    };
    let host = ctx
        .fleet()?
        .host(&b.node)
        .with_context(|| format!("no connection to {}", b.node))?;
    if b.scenario == Scenario::NetworkCut {
        // The SSH connection comes back with the link (the timer's doing); until then the
        // command waits or fails.
        let deadline = Instant::now() + scenario::CUT_FOR + Duration::from_secs(30);
        loop {
            match host.run(&cmd.clone().timeout(Duration::from_secs(3))).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
    ctx.step(
        host,
        &format!("restore after {}", b.scenario.name()),
        async |h| {
            h.run(&cmd).await?;
            Ok(())
        },
    )
    .await?;
    Ok(())
}

/// `/events` of every VRRP node's agent (a node that does not answer has none).
async fn agent_events(ctx: &Context) -> anyhow::Result<Vec<NodeEvents>> {
    let url = format!(
        "http://{}/events",
        crate::phases::install_agent::STATUS_LISTEN
    );
    let cmd = RemoteCommand::new(["curl", "-sS", "--max-time", "3", &url])
        .read_only()
        .timeout(Duration::from_secs(5));
    let planes: Vec<&str> = ctx
        .inventory
        .vrrp_nodes()
        .map(|n| n.name.as_str())
        .collect();
    let answers = ctx
        .fleet()?
        .each(|h| planes.contains(&h.node()), async |h| h.run(&cmd).await)
        .await;
    let mut out = Vec::new();
    for (node, answer) in answers {
        let events = match answer {
            Ok(o) => parse_events(&o.stdout_str()).unwrap_or_else(|e| {
                ctx.report.log_only(&format!("{node}: agent events: {e}"));
                Vec::new()
            }),
            Err(e) => {
                ctx.report.log_only(&format!("{node}: agent events: {e}"));
                Vec::new()
            }
        };
        out.push(NodeEvents { node, events });
    }
    Ok(out)
}

/// The events of an `/events` answer.
pub fn parse_events(json: &str) -> anyhow::Result<Vec<AgentEvent>> {
    #[derive(serde::Deserialize)]
    struct Page {
        events: Vec<AgentEvent>,
    }
    let page: Page = serde_json::from_str(json).context("the agent's /events is not JSON")?;
    Ok(page.events)
}

impl FailoverDrill {
    async fn scenario(
        &self,
        ctx: &Context,
        prober: &Prober,
        s: Scenario,
    ) -> anyhow::Result<ScenarioReport> {
        let targets = self.plan.targets[s.name()];
        let mut report = ScenarioReport {
            scenario: s.name(),
            skipped: None,
            node: None,
            holder_before: None,
            holder_after: None,
            passed: true,
            figures: None,
            targets,
            missed: Vec::new(),
            marks: None,
            timeline: None,
        };
        if s == Scenario::NodeDown && self.plan.hooks.is_none() {
            report.skipped = Some(
                "needs --node-down-cmd and --node-up-cmd, or failoverTest.nodeDownCmd and \
                 nodeUpCmd in the inventory (see docs/failover.md)"
                    .into(),
            );
            return Ok(report);
        }
        ctx.settings.interrupt.check()?;
        let before = health::settled(ctx).await?;
        if !before.healthy() {
            bail!(
                "before {}: the control plane is not whole: {}",
                s.name(),
                before.problems().join("; ")
            );
        }
        let holder = before.holders[0].clone();
        let planes: Vec<String> = ctx
            .inventory
            .control_plane()
            .map(|n| n.name.to_string())
            .collect();
        let dedicated_lb = ctx.inventory.dedicated_lb();
        let victim = if s.breaks_holder(dedicated_lb) {
            holder.clone()
        } else {
            planes
                .iter()
                .find(|n| **n != holder)
                .cloned()
                .context("no control plane besides the VIP holder")?
        };
        report.holder_before = Some(holder.clone());
        report.node = Some(victim.clone());
        let breakage = Breakage {
            scenario: s,
            node: victim.clone(),
            init: ctx.facts_of(&victim)?.init,
            interface: interface_of(ctx, &victim)?,
        };
        let clock = prober.clock();
        ctx.report.event(Event::NodeStep {
            node: &victim,
            message: &format!("{}: measuring the calm before", s.name()),
        });
        prober.take();
        let start_us = clock.now_us();
        tokio::time::sleep(BASELINE).await;

        // Break. From here on, the cleanup restores.
        *self.broken.borrow_mut() = Some(breakage.clone());
        let break_us = clock.now_us();
        self.break_it(ctx, &breakage).await?;

        // Observe: until another node holds the VIP (or a while, when none should), then on.
        let others: Vec<&str> = ctx
            .inventory
            .vrrp_nodes()
            .map(|n| n.name.as_str())
            .filter(|n| *n != victim)
            .collect();
        if s.breaks_holder(dedicated_lb) {
            let deadline = Instant::now() + TAKEOVER_WAIT;
            let fleet = ctx.fleet()?;
            while Instant::now() < deadline {
                ctx.settings.interrupt.check()?;
                if let Ok(v) = the_vip(ctx)
                    && let Ok(h) = vip::holders(fleet, &others, v.address).await
                    && !h.is_empty()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // A scenario that heals itself is watched for health from here on; the others
        // only after their restore.
        let observe_until = Instant::now() + OBSERVE;
        let mut healthy_us = None;
        while s == Scenario::AgentCrash && healthy_us.is_none() && Instant::now() < observe_until {
            ctx.settings.interrupt.check()?;
            if health::check(ctx).await?.healthy() {
                healthy_us = Some(clock.now_us());
            } else {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        tokio::time::sleep(observe_until.saturating_duration_since(Instant::now())).await;

        // Restore (a killed agent is restarted by its init system).
        let restore_us = if s == Scenario::AgentCrash {
            None
        } else {
            let at = clock.now_us();
            ctx.report.event(Event::NodeStep {
                node: &victim,
                message: &format!("{}: restoring", s.name()),
            });
            restore(ctx, &breakage, self.plan.hooks.as_ref()).await?;
            Some(at)
        };
        *self.broken.borrow_mut() = None;

        // Healthy again?
        let deadline = Instant::now() + HEALTHY_WAIT;
        let mut after = health::check(ctx).await?;
        loop {
            if after.healthy() {
                healthy_us.get_or_insert_with(|| clock.now_us());
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            ctx.settings.interrupt.check()?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            after = health::check(ctx).await?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let end_us = clock.now_us();
        let recording = prober.take();
        let events = agent_events(ctx).await?;
        let marks = Marks {
            start_us,
            break_us,
            restore_us,
            healthy_us,
            end_us,
        };
        let dark_until_us = s.darkens().then(|| {
            restore_us
                .filter(|_| matches!(s, Scenario::NetworkCut | Scenario::NodeDown))
                .or_else(|| {
                    events
                        .iter()
                        .find(|n| n.node == victim)
                        .and_then(|n| n.events.iter().find(|e| e.unix_us > break_us))
                        .map(|e| e.unix_us)
                })
                .unwrap_or(end_us)
        });
        let broken = Broken {
            node: victim.clone(),
            dark_until_us,
        };
        let figures = measure::figures(
            &marks,
            &holder,
            &broken,
            &recording.probes,
            &recording.long_lived,
            &events,
        );
        let mut missed = measure::misses(&figures, &targets);
        if after.holders.len() != 1 {
            missed.push(Miss {
                target: "one-holder-after",
                limit: "1".into(),
                measured: format!("{} ({})", after.holders.len(), after.holders.join(", ")),
            });
        }
        report.holder_after = after.holders.first().cloned();
        report.timeline = Some(timeline::build(
            &marks,
            &holder,
            &broken,
            &recording.probes,
            &events,
        ));
        report.passed = missed.is_empty();
        report.missed = missed;
        report.figures = Some(figures);
        report.marks = Some(marks);
        let summary = match &report.figures {
            Some(f) => format!(
                "{}: API unavailable {:.0} ms, takeover {}, {}",
                s.name(),
                f.api_unavailable_ms,
                f.vip_takeover_ms
                    .map_or("none".to_owned(), |t| format!("{t:.0} ms")),
                if report.passed { "passed" } else { "MISSED" }
            ),
            None => s.name().to_owned(),
        };
        ctx.report.event(Event::NodeStep {
            node: &victim,
            message: &summary,
        });
        Ok(report)
    }

    async fn break_it(&self, ctx: &Context, b: &Breakage) -> anyhow::Result<()> {
        let headline = format!("break: {}", b.scenario.name());
        if b.scenario == Scenario::NodeDown {
            let hooks = self
                .plan
                .hooks
                .as_ref()
                .context("node-down without hooks")?;
            ctx.report.event(Event::NodeStep {
                node: &b.node,
                message: &format!("{headline}: running `{}` here", hooks.down),
            });
            return run_hook(&hooks.down, &b.node).await;
        }
        let cmd = b
            .scenario
            .break_command(b.init, &b.interface)
            .context("no break command")?;
        let host = ctx
            .fleet()?
            .host(&b.node)
            .with_context(|| format!("no connection to {}", b.node))?;
        ctx.step(host, &headline, async |h| {
            let out = h.run_unchecked(&cmd).await;
            match (b.scenario, out) {
                // The link goes down under this very SSH session: no answer is the answer.
                (Scenario::NetworkCut, _) => Ok(()),
                (_, Ok(o)) if o.success() => Ok(()),
                (_, Ok(o)) => bail!("{}: {}", cmd.label(), o.tail(5)),
                (_, Err(e)) => Err(e.into()),
            }
        })
        .await?;
        Ok(())
    }
}

/// Where a report's HTML goes, checked before anything is broken.
pub fn check_report_path(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    anyhow::ensure!(
        dir.is_dir(),
        "--report {}: {} is not a directory",
        path.display(),
        dir.display()
    );
    Ok(path.to_path_buf())
}
