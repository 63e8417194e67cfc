//! Command-line arguments (clap derive). Resolved once into each command's options.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::commands::up::UpOptions;
use crate::inventory::Limit;
use crate::session::NodeOptions;

const EXIT_CODES: &str = "\
Exit status:
  0    success
  1    the operation failed on one or more nodes (the log in the state directory has details)
  2    bad usage, an invalid inventory or a local problem; no node was contacted
  130  interrupted (Ctrl-C): every node finished the step it was on; run the command again

With --output json, the result (or the error) is one JSON document on stdout
(docs/output.md); progress still goes to stderr.";

#[derive(Debug, Parser)]
#[command(
    name = "khactl",
    version,
    about = "Turn a few Linux machines into a highly available Kubernetes control plane",
    long_about = "khactl builds a highly available Kubernetes control plane from one inventory \
        file: it prepares the hosts, generates the cluster PKI, installs its own agent for the \
        virtual IP and load balancer, and drives kubeadm. No cloud load balancer, no \
        hand-written keepalived or haproxy configuration.",
    after_long_help = EXIT_CODES
)]
pub struct Cli {
    /// Show every remote command and per-node step as plain lines.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// How to print the result: text for people (stderr), or one JSON document (stdout).
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring the cluster to the state the inventory describes.
    #[command(after_long_help = UP_HELP)]
    Up(UpArgs),
    /// Check an inventory file and report every problem in it, without contacting any node.
    #[command(after_long_help = VALIDATE_HELP)]
    Validate(ValidateArgs),
    /// Print (or write) every node's kubeadm configuration for review, contacting no node.
    #[command(after_long_help = RENDER_HELP)]
    Render(RenderArgs),
    /// Import a running cluster's CAs and service-account keys from one of its control
    /// planes into the state directory, so `up` keeps them instead of refusing the cluster.
    #[command(after_long_help = ADOPT_PKI_HELP)]
    AdoptPki(AdoptPkiArgs),
    /// Add a control plane the inventory names to the running cluster, without an outage.
    #[command(after_long_help = ADD_MASTER_HELP)]
    AddMaster(GrowArgs),
    /// Add a worker the inventory names to the running cluster.
    #[command(after_long_help = ADD_WORKER_HELP)]
    AddWorker(GrowArgs),
    /// Add an etcd node the inventory names to the running external etcd (as a learner,
    /// then promoted).
    #[command(after_long_help = ADD_ETCD_HELP)]
    AddEtcd(GrowArgs),
    /// Take a node out of the running cluster (drain, etcd member, agents, kubeadm reset).
    #[command(after_long_help = REMOVE_NODE_HELP)]
    RemoveNode(RemoveNodeArgs),
    /// Break the control plane on purpose, one scenario at a time, and measure what users of
    /// the API through the VIP feel; restore each. Exit 1 names a target that was missed.
    #[command(after_long_help = FAILOVER_HELP)]
    FailoverTest(FailoverTestArgs),
    /// Show the cluster's health in one view: nodes, VIP holder, agents, load-balancer
    /// backends, API servers, etcd, leaders, certificate expiry. Changes nothing.
    #[command(after_long_help = STATUS_HELP)]
    Status(StatusArgs),
    /// Tear every node down to what it was before khactl: kubeadm reset, khagent, and
    /// every file and setting khactl wrote (from each node's manifest).
    #[command(after_long_help = RESET_HELP)]
    Reset(ResetArgs),
}

const ADD_MASTER_HELP: &str = "\
What it does, in order (nothing changes until step 2 passes):
  1. connects to the control planes (and only them) and reads the cluster
  2. refuses unless the cluster is healthy: every etcd member answers, every API server
     is ready on its own address, exactly one node holds the VIP; refuses a new size that
     is even unless --yes (an even etcd survives no more failures than one member fewer)
  3. prepares NODE and gives it its certificates (no other node's are re-issued)
  4. removes a stale etcd member with NODE's name or peer URL, then `kubeadm join`s it
     and waits until it is an etcd voter with a ready API server; a failed join is reset
     and its member removed, leaving the cluster as it was
  5. only then reloads every running agent with the new backend and VRRP peer (a reload:
     no restart, no VIP move, no dropped connection) and installs NODE's agent as a backup

Examples:
  khactl add-master cp4 -i inventory.yaml --dry-run
  khactl add-master cp4 -i inventory.yaml --yes     # 3 -> 4 members: even, accepted";

const REMOVE_NODE_HELP: &str = "\
What it does, in order (nothing changes if the gate refuses):
  1. refuses a control plane whose removal would lose etcd's quorum or leave no ready
     API server
  2. stops and disables NODE's agent; if it held the VIP (a graceful priority-0 handover)
     waits until another control plane holds it
  3. drains NODE
  4. reloads every other agent without it
  5. removes its etcd member (handing the leadership over first if it leads), before its
     etcd stops; `kubeadm reset -f` on NODE; removes khagent there; deletes its Node object
With --unreachable (dead hardware) NODE is not contacted: only steps 1, 4, the member and
the Node object. Keep NODE in the inventory for the run; delete it afterwards.

Examples:
  khactl remove-node cp2 -i inventory.yaml --dry-run
  khactl remove-node w3 -i inventory.yaml --yes
  khactl remove-node cp3 -i inventory.yaml --unreachable --yes";

#[derive(Debug, Args)]
pub struct RemoveNodeArgs {
    /// The node to remove, as the inventory names it.
    #[arg(value_name = "NODE")]
    pub node: String,

    #[command(flatten)]
    pub nodes: NodeArgs,

    /// The machine is gone: clean up the cluster's side only, never contact it.
    #[arg(long)]
    pub unreachable: bool,

    /// Show what would change, per node; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,

    /// The khagent binary the other control planes run [default: next to khactl].
    #[arg(long, value_name = "PATH")]
    pub agent_binary: Option<PathBuf>,
}

impl RemoveNodeArgs {
    pub fn options(&self) -> crate::commands::remove_node::RemoveOptions {
        crate::commands::remove_node::RemoveOptions {
            nodes: self.nodes.options(),
            node: self.node.clone(),
            unreachable: self.unreachable,
            dry_run: self.dry_run,
            yes: self.yes,
            agent_binary: self.agent_binary.clone(),
        }
    }
}

const ADD_ETCD_HELP: &str = "\
External etcd only (nodes with `role: etcd`). Refuses unless every etcd member is healthy
and no learner is pending; then prepares NODE, gives it its etcd certificates, adds it as a
learner (it votes only once promoted), writes its member config with the running members as
its initial cluster, starts etcd there and promotes it once it has caught up. An even size
afterwards needs --yes. Control planes and other nodes are not changed.

Examples:
  khactl add-etcd etcd4 -i inventory.yaml --yes";

const ADD_WORKER_HELP: &str = "\
Prepares NODE, joins it as a worker and checks it registered; other workers are neither
contacted nor changed. The cluster must exist and be healthy.

Examples:
  khactl add-worker w3 -i inventory.yaml";

#[derive(Debug, Args)]
pub struct GrowArgs {
    /// The node to add, as the inventory names it.
    #[arg(value_name = "NODE")]
    pub node: String,

    #[command(flatten)]
    pub nodes: NodeArgs,

    /// Show what would change, per node; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Accept an even number of etcd members (add-master, add-etcd).
    #[arg(long)]
    pub yes: bool,

    /// The khagent binary to install [default: `khagent` next to the khactl executable].
    #[arg(long, value_name = "PATH")]
    pub agent_binary: Option<PathBuf>,
}

impl GrowArgs {
    pub fn options(&self, role: crate::inventory::Role) -> crate::commands::grow::GrowOptions {
        crate::commands::grow::GrowOptions {
            nodes: self.nodes.options(),
            node: self.node.clone(),
            role,
            dry_run: self.dry_run,
            yes: self.yes,
            agent_binary: self.agent_binary.clone(),
        }
    }
}

const RENDER_HELP: &str = "\
The documents are exactly those `up` uses: checked against kubeadm's types (unknown
fields refused) before they are shown. The bootstrap token is <redacted> unless
--show-secrets (files then 0600).

Examples:
  khactl render -i inventory.yaml
  khactl render -i inventory.yaml --out rendered/";

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub inventory: InventoryArg,

    /// Write one file per node into DIR (created 0700) instead of printing them.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Show the bootstrap token instead of <redacted>.
    #[arg(long)]
    pub show_secrets: bool,

    /// Where the cluster's state lives (its CA gives the discovery hash).
    #[arg(long, value_name = "DIR", env = "KHACTL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

impl RenderArgs {
    pub fn options(&self) -> crate::commands::render::RenderOptions {
        crate::commands::render::RenderOptions {
            inventory: self.inventory.inventory.clone(),
            state_dir: self.state_dir.clone(),
            out: self.out.clone(),
            show_secrets: self.show_secrets,
        }
    }
}

const ADOPT_PKI_HELP: &str = "\
`up` refuses a node whose /etc/kubernetes/pki holds a CA that is not in the state
directory (a new workstation, a lost state directory). This reads ca, front-proxy-ca and
etcd/ca (certificates and keys) and sa.key/sa.pub from NODE over SSH (never logged),
checks every key against its certificate, asks you to type NODE's name (--yes: no
question), moves the state's current PKI aside (pki.before-adopt-<time>) and puts the
imported one in its place. No node is changed; run `khactl up` next.

Examples:
  khactl adopt-pki -i inventory.yaml --from cp1
  khactl adopt-pki -i inventory.yaml --from cp1 --yes   # scripts";

/// `adopt-pki`'s options.
#[derive(Debug, Args)]
pub struct AdoptPkiArgs {
    #[command(flatten)]
    pub nodes: NodeArgs,

    /// The control-plane node to read the cluster's PKI from.
    #[arg(long, value_name = "NODE")]
    pub from: String,

    /// Import without asking for confirmation.
    #[arg(long)]
    pub yes: bool,
}

impl AdoptPkiArgs {
    pub fn options(&self) -> crate::commands::adopt_pki::AdoptPkiOptions {
        crate::commands::adopt_pki::AdoptPkiOptions {
            nodes: self.nodes.options(),
            from: self.from.clone(),
            yes: self.yes,
        }
    }
}

const UP_HELP: &str = "\
What it does, in order:
  1. validates the inventory (nothing is contacted if it is invalid)
  2. generates or loads the cluster PKI in the state directory
  3. connects to every node over SSH, in parallel (host keys are trusted on first use
     into the cluster's own known_hosts; a changed key stops the run)
  4. gathers facts and runs preflight checks
  5. prepares hosts: sysctls (drop-in + applied + read back), kernel modules, swap off,
     /etc/hosts entry for the API DNS name
  6. copies each node the certificates it needs, at kubeadm's paths
  7. installs khagent (load balancer + VRRP virtual IP) on the control-plane nodes,
     restarting them one at a time, the VIP holder last, when something changed
  8. waits until exactly one node holds the VIP and VIP:port accepts connections
  9. kubeadm init on the first control plane (unless the cluster exists), then the other
     control planes join one at a time (stale etcd members removed first), then the
     workers; every node's kubeadm configuration is checked by `kubeadm config validate`
     on the node before anything changes
 10. verifies every node is registered and Ready, and etcd has one voter per control plane
Every step compares with what is already there: a second run changes nothing, and a run
that was interrupted or failed is finished by the next.

Examples:
  khactl up -i inventory.yaml
  khactl up -i inventory.yaml --dry-run        # show what would change, change nothing
  khactl up -i inventory.yaml -v --parallel 20 # plain output with every remote command
  khactl up -i inventory.yaml --dry-run --output json  # the plan as JSON on stdout";

const VALIDATE_HELP: &str = "\
Examples:
  khactl validate -i inventory.yaml";

#[derive(Debug, Args)]
pub struct InventoryArg {
    /// The inventory file (YAML, apiVersion khactl.io/v1alpha1).
    #[arg(short, long, value_name = "FILE")]
    pub inventory: PathBuf,
}

/// The options of every command that reaches nodes.
#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(flatten)]
    pub inventory: InventoryArg,

    /// How many nodes to work on at once.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: u16,

    /// Seconds to wait for an SSH connection to a node.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub connect_timeout: u64,

    /// Where the cluster's state (PKI, known_hosts, logs) lives
    /// [default: $XDG_STATE_HOME/khactl or ~/.local/state/khactl].
    #[arg(long, value_name = "DIR", env = "KHACTL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

impl NodeArgs {
    pub fn options(&self) -> NodeOptions {
        NodeOptions {
            inventory: self.inventory.inventory.clone(),
            parallelism: usize::from(self.parallel),
            connect_timeout: Duration::from_secs(self.connect_timeout),
            state_dir: self.state_dir.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub nodes: NodeArgs,

    /// Connect read-only and print, per node, what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// The khagent binary to install on control-plane nodes
    /// [default: `khagent` next to the khactl executable].
    #[arg(long, value_name = "PATH")]
    pub agent_binary: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub inventory: InventoryArg,
}

impl UpArgs {
    pub fn options(&self) -> UpOptions {
        UpOptions {
            nodes: self.nodes.options(),
            dry_run: self.dry_run,
            agent_binary: self.agent_binary.clone(),
        }
    }
}

const FAILOVER_HELP: &str = "\
Scenarios, in this order: agent-crash (SIGKILL the VIP holder's khagent), agent-stop
(stop it cleanly), apiserver-down (the holder's kube-apiserver manifest moved out of
/etc/kubernetes/manifests), etcd-member-down (another control plane's etcd manifest
moved), network-cut (the holder's interface down; a timer armed on the node first brings
it back after 5 s), node-down (your --node-down-cmd/--node-up-cmd, {node} = the name).
The cluster must be whole first (every agent up, one VIP holder, every API server ready,
every etcd member healthy) and is waited for between scenarios. A prober calls /readyz
through the VIP every --probe-interval (TLS verified against the state directory's CA)
and keeps one long-lived connection; the agents' event logs say when the VIP moved.
Default targets per scenario: docs/failover.md; the inventory's failoverTest section
sets targets (for every scenario and per scenario) and the node-down hooks, and the
flags override it. Ctrl-C or an error restores what was broken.

Examples:
  khactl failover-test -i inventory.yaml
  khactl failover-test -i inventory.yaml --yes --output json --report drill.html
  khactl failover-test -i inventory.yaml --scenario agent-crash --max-api-unavailable 500ms
  khactl failover-test -i inventory.yaml --scenario node-down \\
      --node-down-cmd 'virsh destroy {node}' --node-up-cmd 'virsh start {node}'";

/// `failover-test`'s options.
#[derive(Debug, Args)]
pub struct FailoverTestArgs {
    #[command(flatten)]
    pub nodes: NodeArgs,

    /// Break things without asking first.
    #[arg(long)]
    pub yes: bool,

    /// Run only this scenario.
    #[arg(long, value_enum, value_name = "NAME")]
    pub scenario: Option<crate::phases::failover::scenario::Scenario>,

    /// Write a self-contained HTML report with a timeline per scenario.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,

    /// Command that takes a node down for node-down ({node} = its inventory name).
    #[arg(long, value_name = "CMD")]
    pub node_down_cmd: Option<String>,

    /// Command that brings it back.
    #[arg(long, value_name = "CMD")]
    pub node_up_cmd: Option<String>,

    /// Target: break → another node holds the VIP (e.g. 500ms), for every scenario run.
    #[arg(long, value_name = "DURATION", value_parser = Limit::parse)]
    pub max_takeover: Option<Limit>,

    /// Target: time the API through the VIP failed.
    #[arg(long, value_name = "DURATION", value_parser = Limit::parse)]
    pub max_api_unavailable: Option<Limit>,

    /// Target: break → a new long-lived connection works (when the old one broke).
    #[arg(long, value_name = "DURATION", value_parser = Limit::parse)]
    pub max_long_lived_recovery: Option<Limit>,

    /// Target: time with two VIP holders at once.
    #[arg(long, value_name = "DURATION", value_parser = Limit::parse)]
    pub max_split_brain: Option<Limit>,

    /// Target: restore → the control plane whole again.
    #[arg(long, value_name = "DURATION", value_parser = Limit::parse)]
    pub max_healthy_after: Option<Limit>,

    /// How often the prober starts a fresh /readyz call through the VIP (10ms..=100ms).
    #[arg(long, value_name = "DURATION", default_value = "20ms", value_parser = probe_interval)]
    pub probe_interval: Duration,
}

fn probe_interval(text: &str) -> Result<Duration, String> {
    let d = Limit::parse(text)?.get();
    if d < Duration::from_millis(10) || d > Duration::from_millis(100) {
        return Err(format!("{text}: between 10ms and 100ms"));
    }
    Ok(d)
}

impl FailoverTestArgs {
    pub fn options(&self) -> crate::commands::failover_test::FailoverOptions {
        crate::commands::failover_test::FailoverOptions {
            nodes: self.nodes.options(),
            yes: self.yes,
            scenario: self.scenario,
            targets: crate::inventory::TargetSettings {
                max_takeover: self.max_takeover,
                max_api_unavailable: self.max_api_unavailable,
                max_long_lived_recovery: self.max_long_lived_recovery,
                max_split_brain: self.max_split_brain,
                max_healthy_after: self.max_healthy_after,
            },
            node_down_cmd: self.node_down_cmd.clone(),
            node_up_cmd: self.node_up_cmd.clone(),
            report: self.report.clone(),
            probe_interval: self.probe_interval,
        }
    }
}

const STATUS_HELP: &str = "\
Read-only: every command status runs on a node only reads (the same gate as --dry-run
refuses anything else). A node that cannot be reached is shown as such; the rest of the
view still stands.

Per node: reachable or not, whether it holds the VIP; on control planes khagent's VRRP
state, priority and what lowered it, its load balancer's backends (healthy, connections)
and the API server's /readyz; every node's certificates, the soonest to expire first
(a warning under 30 days). For the cluster: /readyz through the VIP, the etcd members
(voter or learner, healthy, leader, database size) and the controller-manager and
scheduler leaders (their Leases). Every problem comes with a hint.

Exit status: 0 healthy (warnings allowed), 1 degraded (the problems are listed), 2 bad
usage or inventory.

Examples:
  khactl status -i inventory.yaml
  khactl status -i inventory.yaml --output json   # one JSON document, also when degraded
  khactl status -i inventory.yaml --watch          # redraw every 2 s until Ctrl-C";

/// `status`'s options.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub nodes: NodeArgs,

    /// Read again and redraw every --interval seconds until Ctrl-C (with --output json:
    /// one JSON line per look).
    #[arg(long)]
    pub watch: bool,

    /// Seconds between two looks with --watch.
    #[arg(long, value_name = "SECS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval: u64,
}

impl StatusArgs {
    pub fn options(&self) -> crate::commands::status::StatusOptions {
        crate::commands::status::StatusOptions {
            nodes: self.nodes.options(),
            watch: self.watch.then(|| Duration::from_secs(self.interval)),
        }
    }
}

const RESET_HELP: &str = "\
On every node of the inventory: `kubeadm reset -f` where kubeadm left anything (workers
first, then the control planes one at a time), then exactly what the node's manifest
(/var/lib/khactl/manifest, kept by `up`) says khactl wrote: khagent stopped and disabled,
files khactl created removed and files it replaced put back, its /etc/hosts line removed,
swap lines it commented out in /etc/fstab active again, sysctls set back to their values
before `up`, then the manifest itself. Nothing else is touched. A second reset changes
nothing.

It asks you to type the cluster's name first (--yes: no question; without a terminal
--yes is required). The local state directory is kept unless --purge-state.

Examples:
  khactl reset -i inventory.yaml --dry-run     # what it would undo, per node
  khactl reset -i inventory.yaml
  khactl reset -i inventory.yaml --yes --purge-state";

/// `reset`'s options.
#[derive(Debug, Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub nodes: NodeArgs,

    /// Reset without asking for the cluster's name (scripts).
    #[arg(long)]
    pub yes: bool,

    /// Also remove the local state directory (the cluster's CAs, known_hosts, logs).
    #[arg(long)]
    pub purge_state: bool,

    /// Show, per node, what would be undone; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl ResetArgs {
    pub fn options(&self) -> crate::commands::reset::ResetOptions {
        crate::commands::reset::ResetOptions {
            nodes: self.nodes.options(),
            yes: self.yes,
            purge_state: self.purge_state,
            dry_run: self.dry_run,
        }
    }
}
