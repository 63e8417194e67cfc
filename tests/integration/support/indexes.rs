//! The one place lab indexes are handed out. A lab's index picks its subnet
//! (`10.200.<index>.0/24`) and its interface names (`khl<index>br`, `khl<index>n<i>`), so two labs
//! alive at once must never share one. Each test that builds its own lab takes a constant from
//! here (append a line; never reuse a number) and a lab name of its own. [`super::Lab::up`] waits
//! while another lab of this process holds the index, so a clash serialises tests, never breaks
//! them; `tests/lab/lab.sh` refuses an index whose bridge exists.
//!
//! Index 1 is the default lab of `tests/lab/lab.sh up lab` and `inventories/lab.yaml`; tests
//! start at 10 so a hand-made lab never collides with them. Valid range: 1..=200.

/// `lab_smoke`: the lab itself (systemd, isolation, sshd, teardown).
pub const LAB_SMOKE: u8 = 10;
/// `lab_smoke`: the teardown test's own short-lived lab.
pub const LAB_SMOKE_TEARDOWN: u8 = 11;
/// `lab_smoke`: stops sshd and changes host keys, so it has a lab of its own.
pub const LAB_SMOKE_SSHD: u8 = 12;
/// `lab_smoke`: a deliberately half-built lab, for `down` and `status`.
pub const LAB_SMOKE_HALF: u8 = 13;
/// `lab_smoke`: a node powered off, booted again and frozen; the host's sysctls around it.
pub const LAB_SMOKE_POWER: u8 = 14;
/// `up`: the main 3+2 install, idempotency and isolation.
pub const UP_MAIN: u8 = 20;
/// `up`: dry run on a fresh lab.
pub const UP_DRY_RUN: u8 = 21;
/// `up`: a node whose sshd is down.
pub const UP_FAULT: u8 = 22;
/// `up`: a changed host key.
pub const UP_HOSTKEY: u8 = 23;
/// `pki_consumers`: a real three-member etcd with our certificates.
pub const ETCD: u8 = 24;
/// `pki_consumers`: openssl verification of the distributed chains.
pub const PKI_OPENSSL: u8 = 25;
/// `up`: a worker reached through a bastion.
pub const UP_BASTION: u8 = 26;
/// `up`: a non-root ssh user with sudo.
pub const UP_SUDO: u8 = 27;
/// `up`: Ctrl-C in the middle of a run, then a run that finishes the job.
pub const UP_INTERRUPT: u8 = 28;
/// `agent_install`: khagent on 3 control planes + 1 worker, VIP election and failover.
pub const AGENT_INSTALL: u8 = 40;
/// `agent_install`: a restart that fails stops the rolling restart; the next run finishes it.
pub const AGENT_RESTART_FAIL: u8 = 41;
/// `agent_install`: a control plane added to the inventory reaches the running agents by reload.
pub const AGENT_RELOAD: u8 = 42;
/// `hardening`: a control plane removed from a running 3-master inventory.
pub const HARDENING_FORMER_CP: u8 = 60;
/// `hardening`: a node holding another cluster's CA, then adopt-pki.
pub const HARDENING_FOREIGN_PKI: u8 = 61;
/// `hardening`: a second `up` while one runs.
pub const HARDENING_LOCK: u8 = 62;
/// `hardening`: a rotated host key with a state directory holding spaces and quotes.
pub const HARDENING_HOSTKEY: u8 = 63;
/// `kubeadm`: a 3+2 cluster from fresh nodes, through the VIP, a second run changes nothing.
pub const KUBEADM_CLUSTER: u8 = 70;
/// `kubeadm`: khactl SIGKILLed right after the first control-plane join.
pub const KUBEADM_KILLED: u8 = 71;
/// `kubeadm`: a control plane wiped out of band rejoins.
pub const KUBEADM_WIPED: u8 = 72;
/// `kubeadm`: a failure injected into the second join.
pub const KUBEADM_FAILED_JOIN: u8 = 73;
/// `failover`: a 3-master cluster (`khactl up`) the drill breaks and restores (both tests,
/// one drill at a time). 81..=86 are reserved for failover work.
pub const FAILOVER: u8 = 80;
/// `grow`: a 2-master cluster grown to 3 and then 4 by `add-master` under a `/readyz` prober.
pub const GROW: u8 = 74;
/// `grow`: `add-master` refused on an unhealthy cluster, a failed join, a stale member.
pub const GROW_GUARDS: u8 = 75;
/// `grow`: `add-master` of a node already in the cluster.
pub const GROW_AGAIN: u8 = 76;
/// `status`: a healthy 3+1 cluster, then a VIP added by hand on a backup.
pub const STATUS_HEALTHY: u8 = 90;
/// `status`: one agent and one etcd member stopped.
pub const STATUS_DEGRADED: u8 = 91;
/// `reset`: a 3+1 cluster from `up`, reset twice.
pub const RESET: u8 = 93;
/// `cluster_lock`: two state directories, one cluster; a holder stopped, then killed.
pub const CLUSTER_LOCK: u8 = 77;
/// `node_local`: a 3+2 cluster with khagent on every node on 127.0.0.1, no VIP; one API
/// server stopped. 101..=104 are reserved for node-local work.
pub const NODE_LOCAL: u8 = 100;
/// `node_local`: add-master and remove-node reach every node-local agent, workers' too.
pub const NODE_LOCAL_GROW: u8 = 101;
/// `external_lb`: a 3+1 cluster behind a real haproxy playing a cloud balancer that cannot
/// hairpin (on a fifth namespace, not in the inventory). 106..=109 are reserved for it.
pub const EXTERNAL_LB: u8 = 105;
/// `stats_page`: khagent's stats page behind basic auth on 3 control planes, a new password
/// by reload. (130 is kept for the hand-run lab of the docs' screenshot.)
pub const STATS_PAGE: u8 = 131;
/// `external_etcd`: 2 control planes on a 3-node external etcd (lab workers as `role: etcd`),
/// then add-master. 141..=149 are reserved for external-etcd work.
pub const EXTERNAL_ETCD: u8 = 140;
/// `external_etcd`: add-etcd and remove-node of etcd nodes (2 control planes, 4 etcd nodes).
pub const EXTERNAL_ETCD_MEMBERSHIP: u8 = 141;
/// `lb_nodes`: dedicated load-balancer nodes booting OpenRC in front of 3 control planes.
pub const LB_NODES: u8 = 150;
/// `lab_smoke`: an OpenRC node (`lab.sh up --openrc`) beside a systemd node: boot, sshd,
/// supervise-daemon respawns, a clean poweroff and a boot again.
pub const LAB_SMOKE_OPENRC: u8 = 15;
