//! Command-line arguments (clap derive). Resolved once into each command's options.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::commands::up::UpOptions;
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
    /// Show the cluster's health in one view: nodes, VIP holder, agents, load-balancer
    /// backends, API servers, etcd, leaders, certificate expiry. Changes nothing.
    #[command(after_long_help = STATUS_HELP)]
    Status(StatusArgs),
    /// Tear every node down to what it was before khactl: kubeadm reset, khagent, and
    /// every file and setting khactl wrote (from each node's manifest).
    #[command(after_long_help = RESET_HELP)]
    Reset(ResetArgs),
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
