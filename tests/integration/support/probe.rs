//! A client that calls `/readyz` through the lab's VIP every 20 ms from this machine, with
//! TLS verified against khactl's CA, and records every failure; and who holds the VIP.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Lab;
use super::run::cluster_state;

pub struct Prober {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Probed>>,
}

/// How many requests one client made, and when and how each failure failed.
pub type Probed = (usize, Vec<(Duration, String)>);

impl Prober {
    /// One client, 2 s a request, on the lab's usual VIP port (8443).
    pub fn start(lab: &Lab, state: &Path) -> Prober {
        Prober::start_with(lab, state, 1, 2)
    }

    /// `clients` of them side by side, each giving a request `max_time` seconds: with four,
    /// a request is in flight almost always, so one cut by a moving VIP shows.
    pub fn start_with(lab: &Lab, state: &Path, clients: usize, max_time: u32) -> Prober {
        Prober::start_on(lab, state, 8443, clients, max_time)
    }

    /// [`Prober::start_with`] on the VIP's `port`.
    pub fn start_on(lab: &Lab, state: &Path, port: u16, clients: usize, max_time: u32) -> Prober {
        lab.assert_up();
        let ca = cluster_state(state).unwrap().join("pki/ca.crt");
        let url = format!("https://{}:{port}/readyz", lab.vip());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let (flag, ca, url) = (Arc::clone(&stop), ca.clone(), url.clone());
                std::thread::spawn(move || probe(&flag, &ca, &url, max_time))
            })
            .collect();
        Prober { stop, threads }
    }

    /// Stops the clients: how many requests they made, and every failure.
    pub fn finish(self) -> Probed {
        self.stop.store(true, Ordering::Relaxed);
        let mut calls = 0;
        let mut failures = Vec::new();
        for t in self.threads {
            let (c, f) = t.join().unwrap();
            calls += c;
            failures.extend(f);
        }
        (calls, failures)
    }
}

/// One client's loop: `(calls, failures with when and what)`.
fn probe(stop: &AtomicBool, ca: &Path, url: &str, max_time: u32) -> Probed {
    let started = std::time::Instant::now();
    let mut calls = 0;
    let mut failures = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", &max_time.to_string(), "--cacert"])
            .arg(ca)
            .arg(url)
            .output()
            .unwrap();
        calls += 1;
        let body = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() || body != "ok" {
            failures.push((
                started.elapsed(),
                format!("{body} {}", String::from_utf8_lossy(&out.stderr).trim()),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (calls, failures)
}

/// Which of `nodes` carry the lab's VIP on an interface.
pub fn vip_holders(lab: &Lab, nodes: &[&str]) -> Vec<String> {
    let vip = lab.vip().to_string();
    nodes
        .iter()
        .filter(|n| {
            lab.exec_ok(n, &["ip", "-o", "-4", "addr", "show"])
                .split_whitespace()
                .any(|w| w.split('/').next() == Some(vip.as_str()))
        })
        .map(|n| (*n).to_owned())
        .collect()
}
