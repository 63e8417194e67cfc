//! khactl's one integration test binary. Modules are appended here, one per area; the shared
//! harness (the lab of real nodes, the khactl binary, polling helpers) lives in `support`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

mod support;

mod agent_install;
mod cli;
mod cluster_lock;
mod external_etcd;
mod external_lb;
mod failover;
mod grow;
mod hardening;
mod kubeadm;
mod lab_smoke;
mod lb_nodes;
mod node_local;
mod pki_consumers;
mod reset;
mod stats_page;
mod status;
mod up;
