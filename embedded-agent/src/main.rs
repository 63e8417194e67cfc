//! khagent: the node agent khactl installs (L4 load balancer for the API servers, health
//! checks, VRRP virtual IP, status page).
//!
//! ```text
//! khagent --config PATH          run
//! khagent check --config PATH    validate the config and the files it names, then exit
//! khagent probe-vrid --interface IF --vrid N --for DURATION
//!                                listen for other VRRP routers with that VRID (khactl's check)
//! ```
//! Exit codes: 0 clean stop or valid config; 1 the agent could not start or failed while
//! running (port taken, no CAP_NET_RAW…); 2 usage or config error (nothing was bound).
//!
//! Lifecycle, following linkerd2-proxy: the config is loaded and validated completely before
//! anything binds; then the listeners bind, VRRP starts on its own thread, and the health,
//! track, status and accept tasks run on one current-thread runtime (on 2 cores a
//! work-stealing runtime only added cross-core wakeups). Signals feed one shutdown channel:
//! SIGTERM/SIGINT stop VRRP cleanly (priority-0 advert, VIP removed), then stop accepting and
//! drain connections for `drain_timeout`; SIGHUP reloads the config.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, watch};

use khagent::config::{Config, Loaded};
use khagent::events::EventLog;
use khagent::health::{self, Plan};
use khagent::lb::Lb;
use khagent::status::{self, log};
use khagent::vrrp::{self, TrackState};

const USAGE: &str = "usage: khagent --config PATH\n       khagent check --config PATH\n       \
                     khagent probe-vrid --interface IF --vrid N --for DURATION\n";

enum Command {
    Run(PathBuf),
    Check(PathBuf),
    ProbeVrid(vrrp::probe::Args),
    Help,
    Version,
}

fn parse_args(mut args: impl Iterator<Item = std::ffi::OsString>) -> Result<Command, String> {
    let mut check = false;
    let mut config = None;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("check") if !check && config.is_none() => check = true,
            Some("probe-vrid") if !check && config.is_none() => {
                return vrrp::probe::Args::parse(args).map(Command::ProbeVrid);
            }
            Some("--config" | "-c") => {
                let path = args.next().ok_or("--config needs a path")?;
                config = Some(PathBuf::from(path));
            }
            Some(s) if s.starts_with("--config=") => {
                config = Some(PathBuf::from(&s["--config=".len()..]));
            }
            Some("--help" | "-h") => return Ok(Command::Help),
            Some("--version" | "-V") => return Ok(Command::Version),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    let path = config.ok_or("--config PATH is required")?;
    Ok(if check {
        Command::Check(path)
    } else {
        Command::Run(path)
    })
}

fn main() -> ExitCode {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let command = match parse_args(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(msg) => {
            let _ = write!(err, "khagent: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let check_only = matches!(command, Command::Check(_));
    let path = match command {
        Command::Help => {
            let _ = out.write_all(USAGE.as_bytes());
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            let _ = writeln!(out, "khagent {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::ProbeVrid(args) => {
            return match vrrp::probe::listen(&args) {
                Ok(heard) => {
                    for h in heard {
                        let _ = writeln!(out, "{}", h.line());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    let _ = writeln!(err, "khagent: {e}");
                    ExitCode::from(1)
                }
            };
        }
        Command::Check(path) | Command::Run(path) => path,
    };
    let loaded = match Config::load(&path) {
        Ok(l) => l,
        Err(e) => {
            let _ = writeln!(err, "khagent: {e}");
            return ExitCode::from(2);
        }
    };
    if check_only {
        let _ = writeln!(out, "{}: ok", path.display());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error(format_args!("cannot start the runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(path, loaded)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error(format_args!("{e}"));
            ExitCode::from(1)
        }
    }
}

async fn run(path: PathBuf, loaded: Loaded) -> Result<(), String> {
    let Loaded {
        config,
        material,
        tls,
    } = loaded;
    let started = Instant::now();
    // Signal handlers first, so a SIGTERM during start-up is not lost.
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| io("SIGTERM handler", e))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| io("SIGINT handler", e))?;
    let mut sighup = signal(SignalKind::hangup()).map_err(|e| io("SIGHUP handler", e))?;

    let lb = Lb::new(&config);
    let listener = Lb::bind(config.listen)
        .map_err(|e| format!("cannot listen on {} (listen): {e}", config.listen))?;
    let status_listener =
        bind_pages(config.status.as_ref().map(|s| s.listen), "status.listen").await?;
    let stats_listener =
        bind_pages(config.stats.as_ref().map(|s| s.listen), "stats.listen").await?;

    let (shutdown_tx, shutdown) = watch::channel(false);
    // VRRP stops first, on its own signal: the VIP leaves this node while the listener still
    // accepts, so no client whose ARP cache still points here meets a closed port (a reset).
    let (vrrp_shutdown_tx, vrrp_shutdown) = watch::channel(false);
    let (track_tx, track_rx) = watch::channel(TrackState::default());
    let events = Arc::new(EventLog::default());
    let vrrp_handle = match config.vrrp.clone() {
        Some(settings) => Some(
            vrrp::spawn(
                settings,
                track_rx.clone(),
                vrrp_shutdown,
                Arc::clone(&events),
            )
            .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let listens_on_vip = vrrp_handle.is_some()
        && config
            .vrrp
            .as_ref()
            .is_some_and(|v| config.listen.ip() == std::net::IpAddr::V4(v.vip));

    let changed = Arc::new(Notify::new());
    let plan = |generation, config: &Config, tls| {
        Arc::new(Plan {
            generation,
            health: config.health.clone(),
            tls,
        })
    };
    let (plans_tx, plans_rx) = watch::channel(plan(lb.current(), &config, tls));
    let (tracks_tx, tracks_rx) = watch::channel(Arc::new(config.track.clone()));
    let health_task = health::spawn(
        plans_rx,
        Arc::clone(&changed),
        shutdown.clone(),
        Arc::clone(&events),
    );
    let track_task =
        health::track::spawn(lb.clone(), tracks_rx, track_tx, changed, shutdown.clone());
    let reloads = Arc::new(AtomicU64::new(0));
    let status_ctx = status::Context {
        lb: lb.clone(),
        listen: config.listen,
        vrrp: vrrp_handle.as_ref().map(vrrp::VrrpHandle::status),
        track: track_rx.clone(),
        auth: config
            .status
            .as_ref()
            .and_then(|s| s.basic_auth.as_ref())
            .and_then(|a| {
                let password = material.status_password.clone()?;
                Some(Arc::new(status::Auth {
                    user: a.user.clone(),
                    password,
                }))
            }),
        started,
        reloads: Arc::clone(&reloads),
        events: Arc::clone(&events),
    };
    let status_task = status_listener.map(|listener| {
        tokio::spawn(status::run(
            listener,
            status_ctx.clone(),
            status::Site::Status,
            shutdown.clone(),
        ))
    });
    // The stats page's path, realm and credentials reach its server through a watch channel,
    // so a reload swaps them; its listener stays (`stats.listen` needs a restart).
    let (stats_tx, stats_task) = match (stats_listener, stats_access(&config, &material)) {
        (Some(listener), Some(access)) => {
            let (tx, rx) = watch::channel(access);
            let task = tokio::spawn(status::run(
                listener,
                status_ctx.clone(),
                status::Site::Stats(rx),
                shutdown.clone(),
            ));
            (Some(tx), Some(task))
        }
        _ => (None, None),
    };
    let accept_task = {
        let lb = lb.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { lb.run(listener, shutdown).await })
    };
    log::info(format_args!(
        "listening on {} for {} backends ({}), vrrp {}",
        config.listen,
        config.backends.len(),
        config.balance.as_str(),
        if vrrp_handle.is_some() { "on" } else { "off" }
    ));

    let mut running = config;
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                match Config::load(&path) {
                    Ok(next) => {
                        warn_restart_only(&running, &next.config);
                        lb.swap(&next.config);
                        plans_tx.send_replace(plan(lb.current(), &next.config, next.tls));
                        tracks_tx.send_replace(Arc::new(next.config.track.clone()));
                        if let (Some(h), Some(v)) = (&vrrp_handle, &next.config.vrrp) {
                            h.update_peers(v);
                        }
                        if let (Some(tx), Some(access)) =
                            (&stats_tx, stats_access(&next.config, &next.material))
                        {
                            tx.send_replace(access);
                        }
                        reloads.fetch_add(1, Ordering::Relaxed);
                        log::info(format_args!(
                            "reloaded {}: {} backends",
                            path.display(),
                            next.config.backends.len()
                        ));
                        running = next.config;
                    }
                    Err(e) => log::error(format_args!("reload failed, still running the previous config: {e}")),
                }
            }
        }
    }

    // Connections accepted on the VIP get no more packets once it is handed over (they reach
    // the new holder, which resets them): draining them only delays the exit, and with it a
    // restart, by the whole drain_timeout. Decided by what was bound at start and whether
    // VRRP runs (`listen` and `vrrp` change only with a restart, not a reload).
    let drain_for = if listens_on_vip {
        Duration::ZERO
    } else {
        running.drain_timeout.0
    };
    if listens_on_vip {
        log::info(format_args!(
            "stopping: the VIP is handed over, so the {} connections accepted on it are closed",
            lb.active()
        ));
    } else {
        log::info(format_args!(
            "stopping: {} connections to drain (up to {drain_for:?})",
            lb.active()
        ));
    }
    // The handover first: a priority-0 advert and the VIP removed (a backup takes over
    // within its skew time); then stop accepting and drain.
    vrrp_shutdown_tx.send_replace(true);
    let vrrp_stopped = match vrrp_handle {
        Some(handle) => match tokio::task::spawn_blocking(move || handle.join()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("vrrp stopped with an error: {e}")),
            Err(e) => Err(format!("vrrp thread: {e}")),
        },
        None => Ok(()),
    };
    shutdown_tx.send_replace(true);
    let _accept_done = accept_task.await;
    let forced = lb.drain(drain_for).await;
    if forced > 0 && !listens_on_vip {
        log::warn(format_args!("drain timeout: closed {forced} connections"));
    }
    let _health_done = health_task.await;
    let _track_done = track_task.await;
    if let Some(task) = status_task {
        let _status_done = task.await;
    }
    if let Some(task) = stats_task {
        let _stats_done = task.await;
    }
    vrrp_stopped?;
    log::info(format_args!("stopped"));
    Ok(())
}

/// The listener of a page server the config asks for (`field` names it in the error).
async fn bind_pages(
    addr: Option<std::net::SocketAddr>,
    field: &str,
) -> Result<Option<tokio::net::TcpListener>, String> {
    let Some(addr) = addr else { return Ok(None) };
    status::bind(addr)
        .await
        .map(Some)
        .map_err(|e| format!("cannot listen on {addr} ({field}): {e}"))
}

/// The stats page's path, realm and credentials, when the config has a `stats` section (its
/// password was read with the config, so a loaded config always has it).
fn stats_access(
    config: &Config,
    material: &khagent::config::Material,
) -> Option<Arc<status::stats::Access>> {
    let stats = config.stats.as_ref()?;
    let password = material.stats_password.clone()?;
    Some(status::stats::Access::new(stats, password))
}

/// Settings a reload cannot apply without re-binding sockets or restarting VRRP.
fn warn_restart_only(old: &Config, new: &Config) {
    for field in old.restart_needed(new) {
        log::warn(format_args!(
            "reload: {field} changed; it takes effect after a restart"
        ));
    }
}
