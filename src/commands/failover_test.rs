//! `khactl failover-test`: a measured drill against a running cluster (see
//! [`crate::phases::failover`] and docs/failover.md). Its result holds every figure; the
//! text is a table; `--report FILE.html` writes a self-contained page with a timeline per
//! scenario ([`super::failover_html`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use serde::Serialize;

use super::UsageError;
use crate::inventory::{FailoverTestSettings, Limit, TargetSettings};
use crate::phases::failover::measure::Targets;
use crate::phases::failover::scenario::{ALL, Scenario};
use crate::phases::failover::{DrillOutcome, DrillPlan, FailoverDrill, Hooks, ScenarioReport};
use crate::phases::{Connect, GatherFacts, LockCluster, Mode, Phase, Preflight};
use crate::report::Reporter;
use crate::session::{self, NodeOptions};

/// `t` with every target `s` sets replaced (the inventory's, then the flags').
fn apply(s: &TargetSettings, mut t: Targets) -> Targets {
    let ms = |l: Limit| l.get().as_secs_f64() * 1000.0;
    let set = |target: &mut Option<f64>, limit: Option<Limit>| {
        if let Some(l) = limit {
            *target = Some(ms(l));
        }
    };
    set(&mut t.max_takeover_ms, s.max_takeover);
    set(&mut t.max_api_unavailable_ms, s.max_api_unavailable);
    set(&mut t.max_long_lived_recovery_ms, s.max_long_lived_recovery);
    set(&mut t.max_split_brain_ms, s.max_split_brain);
    set(&mut t.max_healthy_after_ms, s.max_healthy_after);
    t
}

#[derive(Debug, Clone)]
pub struct FailoverOptions {
    pub nodes: NodeOptions,
    pub yes: bool,
    /// `None`: every scenario.
    pub scenario: Option<Scenario>,
    /// Targets set on the command line: they win over the inventory's in every scenario run.
    pub targets: TargetSettings,
    pub node_down_cmd: Option<String>,
    pub node_up_cmd: Option<String>,
    pub report: Option<PathBuf>,
    pub probe_interval: Duration,
}

/// One scenario's targets: its defaults, then the inventory's targets for every scenario,
/// then the inventory's for this one, then the flags.
fn targets_for(
    s: Scenario,
    dedicated_lb: bool,
    inventory: &FailoverTestSettings,
    flags: &TargetSettings,
) -> Targets {
    let own = match s {
        Scenario::AgentCrash => &inventory.scenarios.agent_crash,
        Scenario::AgentStop => &inventory.scenarios.agent_stop,
        Scenario::ApiserverDown => &inventory.scenarios.apiserver_down,
        Scenario::EtcdMemberDown => &inventory.scenarios.etcd_member_down,
        Scenario::NetworkCut => &inventory.scenarios.network_cut,
        Scenario::NodeDown => &inventory.scenarios.node_down,
    };
    apply(
        flags,
        apply(
            own,
            apply(&inventory.targets, s.default_targets(dedicated_lb)),
        ),
    )
}

/// The node-down hooks: the flags if given (both), else the inventory's (both).
fn hooks(
    opts: &FailoverOptions,
    inventory: &FailoverTestSettings,
) -> Result<Option<Hooks>, UsageError> {
    let pair = |down: &Option<String>, up: &Option<String>, names: &str| match (down, up) {
        (Some(down), Some(up)) => Ok(Some(Hooks {
            down: down.clone(),
            up: up.clone(),
        })),
        (None, None) => Ok(None),
        _ => Err(UsageError::new(format!(
            "{names} go together: one breaks, the other restores"
        ))),
    };
    match pair(
        &opts.node_down_cmd,
        &opts.node_up_cmd,
        "--node-down-cmd and --node-up-cmd",
    )? {
        Some(h) => Ok(Some(h)),
        None => pair(
            &inventory.node_down_cmd,
            &inventory.node_up_cmd,
            "failoverTest.nodeDownCmd and failoverTest.nodeUpCmd in the inventory",
        ),
    }
}

pub async fn run(
    opts: &FailoverOptions,
    reporter: Box<dyn Reporter>,
) -> anyhow::Result<FailoverResult> {
    let loaded = session::load(&opts.nodes)?;
    let settings = loaded.inventory.failover_test.clone();
    let hooks = hooks(opts, &settings)?;
    if loaded.inventory.vip.is_none() {
        let (layout, instead) = if loaded.inventory.external_lb().is_some() {
            (
                "an external load balancer (loadBalancer.mode: external) fronts the API",
                "drill that balancer's own failover; `khactl status` shows whether it reaches \
                 the API servers",
            )
        } else {
            (
                "every node balances on its own 127.0.0.1 (loadBalancer.mode: node-local)",
                "stop an API server and watch `khactl status`: every node's balancer moves to \
                 the others",
            )
        };
        return Err(UsageError::new(format!(
            "failover-test breaks the holder of khagent's VIP, and this inventory has none: \
             {layout}"
        ))
        .hint(instead)
        .into());
    }
    if opts.scenario == Some(Scenario::NodeDown) && hooks.is_none() {
        return Err(UsageError::new(
            "--scenario node-down needs --node-down-cmd and --node-up-cmd",
        )
        .hint(
            "e.g. --node-down-cmd 'virsh destroy {node}' --node-up-cmd 'virsh start {node}', \
             or failoverTest.nodeDownCmd and nodeUpCmd in the inventory",
        )
        .into());
    }
    if !opts.yes && !std::io::stdin().is_terminal() {
        return Err(UsageError::new(
            "failover-test breaks the cluster on purpose and asks first, but there is no \
             terminal to ask on",
        )
        .hint("pass --yes to run without asking")
        .into());
    }
    if let Some(path) = &opts.report {
        crate::phases::failover::check_report_path(path)
            .map_err(|e| UsageError::new(e.to_string()))?;
    }
    // The etcd-member-down scenario parks a control plane's etcd static pod; an external
    // etcd runs as a service on its own nodes, which the drill does not stop yet.
    let external = loaded.inventory.external_etcd();
    let dedicated_lb = loaded.inventory.dedicated_lb();
    if external && opts.scenario == Some(Scenario::EtcdMemberDown) {
        return Err(UsageError::new(
            "--scenario etcd-member-down stops a control plane's stacked etcd member, and this \
             cluster's etcd is external (role: etcd nodes)",
        )
        .hint("run the other scenarios; stop etcd on one etcd node by hand to drill a member loss")
        .into());
    }
    let scenarios: Vec<Scenario> = match opts.scenario {
        Some(s) => vec![s],
        None => ALL
            .iter()
            .copied()
            .filter(|s| !external || *s != Scenario::EtcdMemberDown)
            .collect(),
    };
    let targets: BTreeMap<&'static str, Targets> = ALL
        .iter()
        .map(|s| {
            (
                s.name(),
                targets_for(*s, dedicated_lb, &settings, &opts.targets),
            )
        })
        .collect();
    let cluster = loaded.inventory.cluster.name.to_string();
    let outcome = Rc::new(RefCell::new(None));
    let phases: Vec<Box<dyn Phase>> = vec![
        Box::new(Connect),
        Box::new(GatherFacts),
        Box::new(Preflight),
        Box::new(LockCluster),
        Box::new(FailoverDrill::new(
            DrillPlan {
                scenarios,
                targets,
                hooks,
                probe_interval: opts.probe_interval,
                confirm: !opts.yes,
            },
            Rc::clone(&outcome),
        )),
    ];
    let mut ctx = loaded.start("failover-test", Mode::Apply, reporter)?;
    let result = session::run(&mut ctx, phases).await;
    let finished = session::finish(ctx, result).await?;
    let drill = outcome
        .borrow_mut()
        .take()
        .ok_or_else(|| anyhow::anyhow!("internal: the drill finished without an outcome"))?;
    let mut result = FailoverResult::new(cluster, drill, finished.log);
    if let Some(path) = &opts.report {
        let html = super::failover_html::render(&result);
        std::fs::write(path, html)
            .map_err(|e| anyhow::anyhow!("writing the report {}: {e}", path.display()))?;
        result.report = Some(path.clone());
    }
    Ok(result)
}

/// The drill's result. Field names are stable: see `docs/output.md`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailoverResult {
    pub cluster: String,
    /// Every scenario that ran met every target.
    pub passed: bool,
    pub holder_before: String,
    pub holder_after: Option<String>,
    pub scenarios: Vec<ScenarioReport>,
    pub report: Option<PathBuf>,
    pub log: Option<PathBuf>,
}

/// Targets were missed: exit 1, naming each scenario and target.
#[derive(Debug, thiserror::Error)]
#[error("failover-test: {}", .missed.join("; "))]
pub struct TargetsMissed {
    pub missed: Vec<String>,
}

impl FailoverResult {
    fn new(cluster: String, d: DrillOutcome, log: Option<PathBuf>) -> Self {
        FailoverResult {
            cluster,
            passed: d.scenarios.iter().all(|s| s.passed),
            holder_before: d.holder_before,
            holder_after: d.holder_after,
            scenarios: d.scenarios,
            report: None,
            log,
        }
    }

    /// One line per missed target: `agent-crash missed max-api-unavailable: 2500 ms > 2000 ms`.
    pub fn missed(&self) -> Vec<String> {
        self.scenarios
            .iter()
            .flat_map(|s| {
                s.missed.iter().map(move |m| {
                    format!(
                        "{} missed {}: {} > {}",
                        s.scenario, m.target, m.measured, m.limit
                    )
                })
            })
            .collect()
    }

    /// The table people read.
    pub fn text(&self) -> Vec<String> {
        let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
        let mut lines = vec![format!(
            "{:<17} {:>9} {:>10} {:>9} {:>8} {:>6} {:>8} {:>9}  {}",
            "scenario",
            "takeover",
            "API down",
            "outages",
            "watch",
            "moves",
            "holders",
            "healthy",
            "result"
        )];
        lines.push(format!(
            "{:<17} {:>9} {:>10} {:>9} {:>8} {:>6} {:>8} {:>9}",
            "", "ms", "ms", "failed", "ms", "", "max", "s"
        ));
        for s in &self.scenarios {
            let Some(f) = &s.figures else {
                lines.push(format!(
                    "{:<17} skipped: {}",
                    s.scenario,
                    s.skipped.as_deref().unwrap_or("")
                ));
                continue;
            };
            let watch = if f.long_lived_broken {
                opt(f.long_lived_recovery_ms)
            } else {
                "kept".to_owned()
            };
            lines.push(format!(
                "{:<17} {:>9} {:>10.0} {:>9} {:>8} {:>6} {:>8} {:>9}  {}",
                s.scenario,
                opt(f.vip_takeover_ms),
                f.api_unavailable_ms,
                format!("{}/{}", f.failed_probes, f.probes),
                watch,
                f.vip_moves,
                f.max_holders,
                f.healthy_after_ms
                    .map_or("-".to_owned(), |v| format!("{:.1}", v / 1000.0)),
                if s.passed { "ok" } else { "MISSED" }
            ));
        }
        lines.extend(self.missed().into_iter().map(|m| format!("  {m}")));
        lines.push(format!(
            "VIP holder before: {}, after: {}",
            self.holder_before,
            self.holder_after.as_deref().unwrap_or("none")
        ));
        if let Some(r) = &self.report {
            lines.push(format!("report: {}", r.display()));
        }
        if let Some(l) = &self.log {
            lines.push(format!("log: {}", l.display()));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::NodeOptions;

    fn parse_duration(text: &str) -> Result<Duration, String> {
        Limit::parse(text).map(Limit::get)
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("ms").is_err());
    }

    #[test]
    fn an_override_replaces_the_default_in_every_scenario() {
        let o = TargetSettings {
            max_api_unavailable: limit("1ms"),
            ..TargetSettings::default()
        };
        for s in ALL {
            let t = apply(&o, s.default_targets(false));
            assert_eq!(t.max_api_unavailable_ms, Some(1.0));
            assert_eq!(t.max_takeover_ms, s.default_targets(false).max_takeover_ms);
        }
    }

    fn limit(text: &str) -> Option<Limit> {
        Some(Limit::parse(text).unwrap())
    }

    /// Defaults, then the inventory for every scenario, then for one, then the flags.
    #[test]
    fn targets_stack_defaults_inventory_scenario_and_flags() {
        let mut inv = FailoverTestSettings::default();
        inv.targets.max_api_unavailable = limit("1500ms");
        inv.targets.max_split_brain = limit("200ms");
        inv.scenarios.agent_crash.max_api_unavailable = limit("500ms");
        let flags = TargetSettings {
            max_split_brain: limit("50ms"),
            ..TargetSettings::default()
        };
        let crash = targets_for(Scenario::AgentCrash, false, &inv, &flags);
        assert_eq!(crash.max_api_unavailable_ms, Some(500.0));
        assert_eq!(crash.max_split_brain_ms, Some(50.0));
        assert_eq!(
            crash.max_takeover_ms,
            Scenario::AgentCrash.default_targets(false).max_takeover_ms
        );
        let cut = targets_for(
            Scenario::NetworkCut,
            false,
            &inv,
            &TargetSettings::default(),
        );
        assert_eq!(cut.max_api_unavailable_ms, Some(1500.0));
        assert_eq!(cut.max_split_brain_ms, Some(200.0));
        // etcd-member-down keeps its "the VIP must not move".
        let etcd = targets_for(Scenario::EtcdMemberDown, false, &inv, &flags);
        assert_eq!(etcd.max_vip_moves, Some(0));
    }

    fn options(down: Option<&str>, up: Option<&str>) -> FailoverOptions {
        FailoverOptions {
            nodes: NodeOptions {
                inventory: PathBuf::from("inventory.yaml"),
                parallelism: 1,
                connect_timeout: Duration::from_secs(1),
                state_dir: None,
            },
            yes: true,
            scenario: None,
            targets: TargetSettings::default(),
            node_down_cmd: down.map(str::to_owned),
            node_up_cmd: up.map(str::to_owned),
            report: None,
            probe_interval: Duration::from_millis(20),
        }
    }

    #[test]
    fn hooks_come_from_the_flags_or_else_the_inventory_and_always_in_pairs() {
        let inv = FailoverTestSettings {
            node_down_cmd: Some("virsh destroy {node}".into()),
            node_up_cmd: Some("virsh start {node}".into()),
            ..FailoverTestSettings::default()
        };
        let h = hooks(&options(None, None), &inv).unwrap().unwrap();
        assert_eq!(h.down, "virsh destroy {node}");
        let h = hooks(&options(Some("freeze {node}"), Some("thaw {node}")), &inv)
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.down.as_str(), h.up.as_str()),
            ("freeze {node}", "thaw {node}")
        );
        assert!(hooks(&options(Some("freeze {node}"), None), &inv).is_err());
        let half = FailoverTestSettings {
            node_up_cmd: None,
            ..inv
        };
        let err = hooks(&options(None, None), &half).unwrap_err();
        assert!(
            err.to_string().contains("failoverTest.nodeDownCmd"),
            "{err}"
        );
        assert!(
            hooks(&options(None, None), &FailoverTestSettings::default())
                .unwrap()
                .is_none()
        );
    }
}
