//! The cluster's health in one view: what each node, each agent, etcd and the API servers
//! say ([`ClusterHealth`], filled by the `ReadStatus` phase from the read-only queries of this
//! module's siblings), and [`ClusterHealth::assess`], which turns what was seen into problems
//! (the cluster is degraded) and warnings (it is not, yet), each with one hint. Pure: tested
//! without nodes. `status` prints it; anything that must wait for a healthy cluster (a
//! failover drill, a join) can ask the same question.

use std::collections::BTreeMap;

use serde::Serialize;

use super::agent::AgentStatus;
use super::api::Leader;
use super::certs::{self, CertExpiry};
use super::etcd;
use crate::inventory::Inventory;

/// Everything one look at the cluster found, and what is wrong with it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterHealth {
    pub cluster: String,
    /// No problem found (warnings allowed).
    pub healthy: bool,
    /// When the look was taken (RFC 3339, this machine's clock).
    pub checked_at: String,
    pub vip: VipHealth,
    /// Every inventory node, in inventory order.
    pub nodes: Vec<NodeHealth>,
    pub etcd: EtcdHealth,
    pub leaders: LeadersHealth,
    /// What makes the cluster degraded, most fundamental first.
    pub problems: Vec<Finding>,
    /// What does not degrade it yet (a certificate that ends within 30 days).
    pub warnings: Vec<Finding>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VipHealth {
    pub address: String,
    pub port: u16,
    /// An external balancer (`loadBalancer.mode: external`) fronts the API, not a VIP of
    /// khagent's: no node is expected to hold it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    /// Nodes that have the VIP on an interface (`ip addr`), in inventory order.
    pub holders: Vec<String>,
    /// `/readyz` through the VIP and the agents, TLS verified against the cluster CA, asked
    /// from `askedFrom`; `None` when no node could ask.
    pub api_ready: Option<bool>,
    pub asked_from: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeHealth {
    pub name: String,
    pub role: &'static str,
    pub address: String,
    pub reachable: bool,
    /// Why it could not be reached.
    pub unreachable: Option<String>,
    /// The VIP is on one of its interfaces.
    pub holds_vip: bool,
    /// Control planes only.
    pub agent: Option<AgentHealth>,
    /// Its own API server's `/readyz` (at its address, port 6443, TLS verified); control
    /// planes only, `None` when not asked.
    pub api_ready: Option<bool>,
    /// Soonest expiry first.
    pub certificates: Vec<CertExpiry>,
    /// Queries that failed on this node (the rest of its view still stands).
    pub errors: Vec<String>,
    /// The etcd service of an external etcd node (`role: etcd`); `None` elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_service: Option<ServiceHealth>,
}

/// A service as the node's init system sees it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceHealth {
    pub active: bool,
    pub enabled: bool,
    /// Where to read its log on this node.
    pub logs: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentHealth {
    /// The init system runs it.
    pub active: bool,
    pub enabled: bool,
    /// Its `/status` page; `None` when it did not answer.
    pub status: Option<AgentStatus>,
    /// Where to read its log on this node.
    pub logs: String,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdHealth {
    /// The node whose etcd answered the member list (a control plane, or an etcd node with
    /// external etcd).
    pub asked_on: Option<String>,
    pub error: Option<String>,
    pub members: Vec<EtcdMemberHealth>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdMemberHealth {
    /// Hexadecimal, as `etcdctl` shows it.
    pub id: String,
    /// Empty for a learner that has not started.
    pub name: String,
    pub peer_url: String,
    pub learner: bool,
    /// `/health` answered true; `None` when it has no client URL yet.
    pub healthy: Option<bool>,
    /// The member every answering member follows.
    pub leader: bool,
    /// Bytes, from the member's own status; `None` when it did not answer.
    pub db_size: Option<u64>,
    pub version: Option<String>,
}

impl EtcdHealth {
    /// Merges the member list with what each member said of itself.
    pub fn from_members(
        asked_on: &str,
        members: &[etcd::Member],
        statuses: &BTreeMap<u64, etcd::MemberStatus>,
    ) -> Self {
        let leaders: Vec<u64> = statuses
            .values()
            .map(|s| s.leader)
            .filter(|l| *l != 0)
            .collect();
        Self {
            asked_on: Some(asked_on.to_owned()),
            error: None,
            members: members
                .iter()
                .map(|m| {
                    let own = statuses.get(&m.id);
                    EtcdMemberHealth {
                        id: format!("{:x}", m.id),
                        name: m.name.clone(),
                        peer_url: m.peer_urls.first().cloned().unwrap_or_default(),
                        learner: m.is_learner,
                        healthy: m.healthy,
                        leader: leaders.contains(&m.id),
                        db_size: own.map(|s| s.db_size),
                        version: own.map(|s| s.version.clone()),
                    }
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeadersHealth {
    /// The control plane whose API server answered.
    pub asked_on: Option<String>,
    pub error: Option<String>,
    pub controller_manager: Option<Leader>,
    pub scheduler: Option<Leader>,
}

/// One thing wrong (or about to be), and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The node it is about, if it is about one.
    pub node: Option<String>,
    pub message: String,
    pub hint: String,
}

fn finding(node: Option<&str>, message: String, hint: String) -> Finding {
    Finding {
        node: node.map(str::to_owned),
        message,
        hint,
    }
}

impl ClusterHealth {
    /// Fills `problems`, `warnings` and `healthy` from what was seen, for `inv`.
    pub fn assess(&mut self, inv: &Inventory) {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let vip = &self.vip;

        for n in &self.nodes {
            if let Some(why) = &n.unreachable {
                let target = inv
                    .node(&n.name)
                    .map(|node| inv.ssh_for(node))
                    .map(|t| format!("ssh -p {} {}@{}", t.port, t.user, t.address))
                    .unwrap_or_default();
                problems.push(finding(
                    Some(&n.name),
                    format!("{} is unreachable: {why}", n.name),
                    format!(
                        "check that the machine is up and its sshd answers (`{target}`); \
                         what it runs is unknown until then"
                    ),
                ));
            }
        }

        let del = |node: &str| {
            let v = inv.vip.as_ref();
            let dev = v.and_then(|v| v.interface.as_deref()).unwrap_or("IFACE");
            let prefix = v
                .and_then(|v| v.prefix_length)
                .map_or_else(|| "PREFIX".to_owned(), |p| p.to_string());
            format!("`ip addr del {}/{prefix} dev {dev}` on {node}", vip.address)
        };
        // Node-local balancers: no VIP, so no holder to count.
        let holders: &[String] = if inv.vip.is_some() { &vip.holders } else { &[] };
        match holders {
            [] if inv.vip.is_none() => {}
            [] => problems.push(finding(
                None,
                format!("no node holds the VIP {}", vip.address),
                "no agent is master: see each agent below (on the control planes, or the \
                 load-balancer nodes), and its log (`journalctl -u khagent`; OpenRC: \
                 /var/log/khagent.log)"
                    .to_owned(),
            )),
            [_] => {}
            many => {
                let agents: Vec<&str> = self
                    .nodes
                    .iter()
                    .filter(|n| many.contains(&n.name))
                    .filter(|n| {
                        n.agent
                            .as_ref()
                            .and_then(|a| a.status.as_ref())
                            .is_some_and(|s| s.holds_vip)
                    })
                    .map(|n| n.name.as_str())
                    .collect();
                let foreign: Vec<&str> = many
                    .iter()
                    .map(String::as_str)
                    .filter(|n| !agents.contains(n))
                    .collect();
                let hint = if foreign.is_empty() {
                    "two agents are master at once: they do not hear each other's adverts \
                     (IP protocol 112 filtered, or a link down); they converge within a \
                     second once they do"
                        .to_owned()
                } else {
                    let dels: Vec<String> = foreign.iter().map(|n| del(n)).collect();
                    format!(
                        "the VIP on {} was not added by its agent (added by hand or by \
                         another VRRP daemon); remove it: {}",
                        foreign.join(", "),
                        dels.join(", ")
                    )
                };
                problems.push(finding(
                    None,
                    format!(
                        "the VIP {} is held by {} nodes at once (double holder): {}",
                        vip.address,
                        many.len(),
                        many.join(", ")
                    ),
                    hint,
                ));
            }
        }
        if vip.api_ready == Some(false) {
            problems.push(finding(
                None,
                format!(
                    "the API does not answer ready through the {} ({}:{}, asked from {})",
                    if vip.external {
                        "external load balancer"
                    } else {
                        "VIP"
                    },
                    vip.address,
                    vip.port,
                    vip.asked_from.as_deref().unwrap_or("?")
                ),
                if vip.external {
                    "check the balancer forwards port 6443 to every control plane's 6443 and \
                     its health checks (the API servers are listed below)"
                } else {
                    "see the VIP holder's agent and its backends below"
                }
                .to_owned(),
            ));
        }

        for n in &self.nodes {
            let Some(agent) = &n.agent else { continue };
            let name = n.name.as_str();
            if !agent.active {
                problems.push(finding(
                    Some(name),
                    format!("{name}: khagent is not running"),
                    format!(
                        "start it on {name} (`systemctl start khagent`, OpenRC: `rc-service \
                         khagent start`; or `khactl up`), and read why it stopped (`{}`)",
                        agent.logs
                    ),
                ));
                continue;
            }
            let Some(status) = &agent.status else {
                problems.push(finding(
                    Some(name),
                    format!("{name}: khagent runs but its status page does not answer"),
                    format!("read its log on {name} (`{}`)", agent.logs),
                ));
                continue;
            };
            if status.vrrp_state.as_deref() == Some("fault") {
                problems.push(finding(
                    Some(name),
                    format!(
                        "{name}: khagent is in fault ({})",
                        status.lowered_by().join("; ")
                    ),
                    "its tracked checks failed: it holds no VIP and takes no part in elections \
                     until they pass"
                        .to_owned(),
                ));
            }
            if !status.listening {
                problems.push(finding(
                    Some(name),
                    format!("{name}: khagent's load balancer is not accepting connections"),
                    format!("read its log on {name} (`{}`)", agent.logs),
                ));
            }
        }

        // A backend down is seen by every agent: one line per backend, naming who saw it.
        let mut down: BTreeMap<String, (String, Vec<&str>, Option<&str>)> = BTreeMap::new();
        for n in &self.nodes {
            let Some(status) = n.agent.as_ref().and_then(|a| a.status.as_ref()) else {
                continue;
            };
            for b in status.backends.iter().filter(|b| !b.healthy) {
                let entry = down
                    .entry(b.name.clone())
                    .or_insert_with(|| (b.address.clone(), Vec::new(), None));
                entry.1.push(n.name.as_str());
                entry.2 = entry.2.or(b.last_error.as_deref());
            }
        }
        for (backend, (address, seen_by, error)) in &down {
            let why = error.map(|e| format!(": {e}")).unwrap_or_default();
            problems.push(finding(
                Some(backend),
                format!(
                    "backend {backend} ({address}) is down for the load balancer on {}{why}",
                    seen_by.join(", ")
                ),
                format!(
                    "the agents send no API traffic to {backend} until its API server answers \
                     ready again"
                ),
            ));
        }

        for n in &self.nodes {
            if n.api_ready == Some(false) {
                let name = n.name.as_str();
                problems.push(finding(
                    Some(name),
                    format!("{name}: the API server's /readyz is not ok"),
                    format!(
                        "look at the kube-apiserver static pod on {name} (`crictl ps -a`, \
                         `crictl logs`); an API server is not ready while its etcd is not (see \
                         etcd)"
                    ),
                ));
            }
        }

        for n in &self.nodes {
            let Some(service) = &n.etcd_service else {
                continue;
            };
            let name = n.name.as_str();
            if !service.active {
                problems.push(finding(
                    Some(name),
                    format!("{name}: the etcd service is not running"),
                    format!(
                        "`systemctl start etcd` on {name}; `{}` says why it stopped",
                        service.logs
                    ),
                ));
            } else if !service.enabled {
                warnings.push(finding(
                    Some(name),
                    format!("{name}: the etcd service is not enabled at boot"),
                    "`khactl up` enables it".to_owned(),
                ));
            }
        }
        self.assess_etcd(inv, &mut problems);
        self.assess_leaders(&mut problems);

        for n in &self.nodes {
            for c in &n.certificates {
                let name = n.name.as_str();
                if c.days_left < 0 {
                    problems.push(finding(
                        Some(name),
                        format!("{name}: {} expired on {}", c.path, c.not_after),
                        renew_hint(name),
                    ));
                } else if c.days_left < certs::WARN_DAYS {
                    warnings.push(finding(
                        Some(name),
                        format!(
                            "{name}: {} expires in {} day(s) ({})",
                            c.path, c.days_left, c.not_after
                        ),
                        renew_hint(name),
                    ));
                }
            }
            for e in &n.errors {
                warnings.push(finding(
                    Some(&n.name),
                    format!("{}: {e}", n.name),
                    "the run log has the command and its output".to_owned(),
                ));
            }
        }

        if self.vip.external && self.vip.api_ready.is_none() {
            warnings.push(finding(
                None,
                format!(
                    "the API through the external load balancer ({}:{}) was not checked",
                    self.vip.address, self.vip.port
                ),
                "it is asked from a worker, as workers use it (a control plane may be refused \
                 by its own balancer): give the inventory a worker and loadBalancer.address, \
                 or check it from a machine that is no control plane"
                    .to_owned(),
            ));
        }

        self.healthy = problems.is_empty();
        self.problems = problems;
        self.warnings = warnings;
    }

    fn assess_etcd(&self, inv: &Inventory, problems: &mut Vec<Finding>) {
        let e = &self.etcd;
        let external = inv.external_etcd();
        let (member_nodes, run_it) = if external {
            (
                "etcd node",
                "the etcd service (`systemctl status etcd`, `journalctl -u etcd`)",
            )
        } else {
            (
                "control plane",
                "its static pod, /etc/kubernetes/manifests/etcd.yaml (`crictl ps -a`)",
            )
        };
        if let Some(err) = &e.error {
            problems.push(finding(
                None,
                format!("etcd could not be read on any {member_nodes}: {err}"),
                format!("etcd may have lost quorum: see on each {member_nodes} {run_it}"),
            ));
            return;
        }
        if e.asked_on.is_none() {
            return;
        }
        let voters: Vec<&EtcdMemberHealth> = e.members.iter().filter(|m| !m.learner).collect();
        let healthy = voters.iter().filter(|m| m.healthy == Some(true)).count();
        let quorum = etcd::quorum(voters.len());
        for m in &e.members {
            let name = if m.name.is_empty() {
                "(unstarted)"
            } else {
                &m.name
            };
            if m.healthy != Some(true) && !m.learner {
                problems.push(finding(
                    Some(name),
                    format!(
                        "etcd member {name} ({}) is not healthy; {healthy} of {} voters are, \
                         quorum is {quorum}",
                        m.peer_url,
                        voters.len()
                    ),
                    if external {
                        format!(
                            "start etcd on {name} again ({run_it}); if the machine is gone \
                             for good, remove its member by hand (`etcdctl member remove`)"
                        )
                    } else {
                        format!(
                            "start etcd on {name} again ({run_it}); if the machine is gone \
                             for good, remove the member (`khactl remove-node {name} \
                             --unreachable`)"
                        )
                    },
                ));
            }
            if m.learner {
                problems.push(finding(
                    Some(name),
                    format!(
                        "etcd member {name} ({}) is a learner: a join that did not finish",
                        m.peer_url
                    ),
                    "run `khactl up` to finish the join (a learner left by a failed join is \
                     removed first)"
                        .to_owned(),
                ));
            }
        }
        if !e.members.is_empty() && !e.members.iter().any(|m| m.leader) {
            problems.push(finding(
                None,
                "etcd has no leader among the members that answered".to_owned(),
                format!("etcd needs {quorum} healthy voters to elect one"),
            ));
        }
        for cp in inv.etcd_members() {
            let address = cp.address.to_string();
            let listed = e
                .members
                .iter()
                .any(|m| m.name == cp.name.as_str() || m.peer_url == etcd::peer_url(&address));
            if !listed {
                problems.push(finding(
                    Some(cp.name.as_str()),
                    format!("{} is not an etcd member", cp.name),
                    "`khactl up` joins it".to_owned(),
                ));
            }
        }
        for m in &e.members {
            let known = inv.etcd_members().any(|cp| {
                m.name == cp.name.as_str() || m.peer_url == etcd::peer_url(&cp.address.to_string())
            });
            if !known {
                problems.push(finding(
                    None,
                    format!(
                        "etcd member {} ({}) is not {} of the inventory",
                        if m.name.is_empty() {
                            "(unstarted)"
                        } else {
                            &m.name
                        },
                        m.peer_url,
                        if external {
                            "an etcd node"
                        } else {
                            "a control plane"
                        }
                    ),
                    "a node removed by hand: remove its member (`khactl remove-node NAME \
                     --unreachable`)"
                        .to_owned(),
                ));
            }
        }
    }

    fn assess_leaders(&self, problems: &mut Vec<Finding>) {
        let l = &self.leaders;
        if let Some(err) = &l.error {
            problems.push(finding(
                None,
                format!("the leader Leases could not be read: {err}"),
                "no control plane's API server answered; see the API servers above".to_owned(),
            ));
            return;
        }
        if l.asked_on.is_none() {
            return;
        }
        for (component, leader) in [
            ("kube-controller-manager", &l.controller_manager),
            ("kube-scheduler", &l.scheduler),
        ] {
            match leader {
                Some(x) if x.fresh => {}
                Some(x) => problems.push(finding(
                    None,
                    format!("{component}'s Lease has lapsed (last held by {})", x.holder),
                    format!(
                        "no {component} is leading: look at its static pods on the control \
                         planes (`crictl ps -a`)"
                    ),
                )),
                None => problems.push(finding(
                    None,
                    format!("{component} has no leader (no Lease)"),
                    format!("look at the {component} static pods on the control planes"),
                )),
            }
        }
    }

    /// One line: the verdict.
    pub fn verdict(&self) -> String {
        if self.healthy {
            format!("cluster {}: healthy", self.cluster)
        } else {
            let first = self
                .problems
                .first()
                .map(|p| p.message.as_str())
                .unwrap_or_default();
            format!(
                "cluster {}: DEGRADED, {} problem(s): {first}",
                self.cluster,
                self.problems.len()
            )
        }
    }

    /// The view for people: a few lines per node, then etcd, the leaders, the findings.
    pub fn text(&self) -> Vec<String> {
        let mut out = vec![self.verdict()];
        let holders = if self.vip.holders.is_empty() {
            "held by no node".to_owned()
        } else {
            format!("held by {}", self.vip.holders.join(", "))
        };
        let through = match self.vip.api_ready {
            Some(true) => "API ready through it",
            Some(false) => "API NOT ready through it",
            None => "API through it not asked",
        };
        out.push(if self.vip.external {
            format!(
                "external load balancer {}:{}  {through}{}",
                self.vip.address,
                self.vip.port,
                self.vip
                    .asked_from
                    .as_ref()
                    .map_or_else(String::new, |w| format!(" (asked from {w})"))
            )
        } else {
            format!(
                "VIP {}:{}  {holders}; {through}",
                self.vip.address, self.vip.port
            )
        });
        for n in &self.nodes {
            out.extend(node_lines(n));
        }
        out.push(etcd_line(&self.etcd));
        out.push(leaders_line(&self.leaders));
        if !self.problems.is_empty() {
            out.push("problems:".to_owned());
            for p in &self.problems {
                out.push(format!("  - {}", p.message));
                out.push(format!("    hint: {}", p.hint));
            }
        }
        if !self.warnings.is_empty() {
            out.push("warnings:".to_owned());
            for w in &self.warnings {
                out.push(format!("  - {}", w.message));
                out.push(format!("    hint: {}", w.hint));
            }
        }
        out
    }
}

fn renew_hint(node: &str) -> String {
    format!(
        "`khactl up` re-issues the leaves it placed within 30 days of their end; kubeadm's own \
         (kubeconfigs) are renewed by `kubeadm certs renew all` on {node}"
    )
}

fn node_lines(n: &NodeHealth) -> Vec<String> {
    let mut out = Vec::new();
    let reach = match &n.unreachable {
        Some(why) => format!("UNREACHABLE ({why})"),
        None => "reachable".to_owned(),
    };
    let vip = if n.holds_vip { ", holds the VIP" } else { "" };
    out.push(format!(
        "{}  {} {}  {reach}{vip}",
        n.name, n.role, n.address
    ));
    if let Some(a) = &n.agent {
        out.push(format!("  agent     {}", agent_text(a)));
        if let Some(s) = &a.status
            && !s.backends.is_empty()
        {
            let list: Vec<String> = s
                .backends
                .iter()
                .map(|b| {
                    let state = if b.healthy { "up" } else { "DOWN" };
                    format!("{} {state} ({} conn)", b.name, b.active_connections)
                })
                .collect();
            out.push(format!("  backends  {}", list.join(", ")));
        }
    }
    if let Some(s) = &n.etcd_service {
        out.push(format!(
            "  etcd      service {}, {}",
            if s.active { "running" } else { "NOT running" },
            if s.enabled {
                "enabled"
            } else {
                "not enabled at boot"
            }
        ));
    }
    if let Some(ready) = n.api_ready {
        let text = if ready {
            "/readyz ok"
        } else {
            "/readyz NOT ok"
        };
        out.push(format!("  api       {text}"));
    }
    if let Some(c) = n.certificates.first() {
        let mark = if c.days_left < certs::WARN_DAYS {
            " (!)"
        } else {
            ""
        };
        out.push(format!(
            "  certs     {} certificate(s); soonest {} in {} day(s){mark}",
            n.certificates.len(),
            c.path,
            c.days_left
        ));
    }
    out
}

fn agent_text(a: &AgentHealth) -> String {
    if !a.active {
        return "NOT running".to_owned();
    }
    let Some(s) = &a.status else {
        return "running, status page not answering".to_owned();
    };
    let state = s.vrrp_state.as_deref().unwrap_or("no vrrp");
    let mut text = format!("running, {state}");
    if let (Some(eff), Some(base)) = (s.effective_priority, s.base_priority) {
        text.push_str(&format!(", priority {eff}"));
        if eff != base {
            text.push_str(&format!(" (base {base})"));
        }
    }
    let lowered = s.lowered_by();
    if !lowered.is_empty() {
        text.push_str(&format!(", lowered by: {}", lowered.join("; ")));
    }
    if s.holds_vip {
        text.push_str(", holds the VIP");
    }
    if s.track_pending {
        text.push_str(", tracked checks not all run yet (just started)");
    }
    if s.preempt_pending {
        text.push_str(", takes the VIP over once its preempt delay runs out");
    }
    text.push_str(&format!("; {} connection(s)", s.active_connections));
    text
}

fn etcd_line(e: &EtcdHealth) -> String {
    if let Some(err) = &e.error {
        return format!("etcd      could not be read: {err}");
    }
    if e.asked_on.is_none() {
        return "etcd      not asked (no node running a member is reachable)".to_owned();
    }
    let members: Vec<String> = e
        .members
        .iter()
        .map(|m| {
            let name = if m.name.is_empty() {
                "(unstarted)"
            } else {
                &m.name
            };
            let role = if m.learner { "learner" } else { "voter" };
            let health = match m.healthy {
                Some(true) => "healthy",
                Some(false) => "UNHEALTHY",
                None => "not started",
            };
            let leader = if m.leader { " leader" } else { "" };
            let size = m
                .db_size
                .map(|b| format!(" {} KiB", b / 1024))
                .unwrap_or_default();
            format!("{name} {role} {health}{leader}{size}")
        })
        .collect();
    format!(
        "etcd      {} member(s): {}",
        e.members.len(),
        members.join("; ")
    )
}

fn leaders_line(l: &LeadersHealth) -> String {
    if let Some(err) = &l.error {
        return format!("leaders   could not be read: {err}");
    }
    let one = |x: &Option<Leader>| match x {
        Some(x) if x.fresh => x.node.clone(),
        Some(x) => format!("lapsed ({})", x.node),
        None => "none".to_owned(),
    };
    format!(
        "leaders   controller-manager {}, scheduler {}",
        one(&l.controller_manager),
        one(&l.scheduler)
    )
}

#[cfg(test)]
mod tests;
