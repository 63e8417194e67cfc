//! Runs one VRRP instance on its own thread (in progress).
use super::{TrackState, VrrpError, VrrpSettings, VrrpStatus};
use std::net::Ipv4Addr;
use tokio::sync::watch;

type Started = (
    watch::Receiver<VrrpStatus>,
    std::thread::JoinHandle<Result<(), VrrpError>>,
);

pub(super) fn start(
    _settings: VrrpSettings,
    _track: watch::Receiver<TrackState>,
    _shutdown: watch::Receiver<bool>,
    _peers: watch::Receiver<Vec<Ipv4Addr>>,
) -> Result<Started, VrrpError> {
    Err(VrrpError::Thread("the VRRP runner is not built yet".into()))
}
