//! [`LabClaim`]: the right to build a lab, held for the lab's whole life, within this test
//! process and across the machine. Shared by every test binary that builds labs of network
//! namespaces: the integration tests' `lab.sh` labs and khagent's VRRP labs (which include this
//! file by path), so that a second run of a test waits for the first instead of tearing its
//! lab down.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Condvar, Mutex};

/// Where lab.sh keeps every lab's state (`/var/lib/khalab/<name>/`), and where the host-wide
/// hold locks live (`.hold-<key>`, `.hold-<name>`).
pub const KHALAB_ROOT: &str = "/var/lib/khalab";

/// Labs alive at once in this test process unless `KHALAB_MAX_LABS` says otherwise: each lab
/// costs a burst of CPU to build and its nodes run real daemons, on a 2-core machine.
const DEFAULT_MAX_LABS: usize = 3;

/// Lab tests need root (namespaces, bridges, mounts). Without it they must fail loudly: a lab
/// test that passes without running would hide every regression. CI runs as root.
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .map(str::to_owned);
    assert_eq!(
        euid.as_deref(),
        Some("0"),
        "this test builds a lab of network namespaces and must run as root \
         (CI does: .ci/run); run the tests with sudo or as root"
    );
}

/// A slot among this process's live labs, the lab's key (what two live labs must not share:
/// its subnet and interface names) within this process, and host-wide locks on the key and
/// the name (`/var/lib/khalab/.hold-<key>`, `.hold-<name>`) against other test processes —
/// several agents or terminals may run the same tests at once. `lab.sh down-all` leaves held
/// labs alone. `Lab::up` takes one; a test that drives `lab.sh` directly takes its own.
#[derive(Debug)]
pub struct LabClaim {
    key: String,
    // Closing these releases the host-wide locks (the kernel also does when we die).
    _host_locks: [std::fs::File; 2],
}

struct Slots {
    keys: BTreeSet<String>,
    live: usize,
}

static SLOTS: Mutex<Slots> = Mutex::new(Slots {
    keys: BTreeSet::new(),
    live: 0,
});
static SLOT_FREED: Condvar = Condvar::new();

impl LabClaim {
    /// The claim on `lab.sh` lab `name` at `index` (subnet `10.200.<index>.0/24`).
    pub fn acquire(name: &str, index: u8) -> LabClaim {
        assert!(
            (1..=200).contains(&index),
            "lab index {index} out of range 1..=200"
        );
        LabClaim::acquire_key(name, &format!("index-{index}"))
    }

    /// Waits until the claim can be had: fewer than `KHALAB_MAX_LABS` labs alive here, `key`
    /// free here, then the host-wide key and name locks free.
    pub fn acquire_key(name: &str, key: &str) -> LabClaim {
        require_root();
        let max = std::env::var("KHALAB_MAX_LABS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(DEFAULT_MAX_LABS);
        {
            let mut slots = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
            // Waiting (not failing) on a busy key serialises a shared lab that is being
            // torn down and rebuilt; distinct tests still take distinct keys.
            while slots.live >= max || slots.keys.contains(key) {
                slots = SLOT_FREED.wait(slots).unwrap_or_else(|p| p.into_inner());
            }
            slots.keys.insert(key.to_owned());
            slots.live += 1;
        }
        let slot = SlotGuard {
            key: key.to_owned(),
        };
        let locks = [format!(".hold-{key}"), format!(".hold-{name}")].map(|file| {
            std::fs::create_dir_all(KHALAB_ROOT)
                .unwrap_or_else(|e| panic!("creating {KHALAB_ROOT}: {e}"));
            let path = Path::new(KHALAB_ROOT).join(file);
            let lock = std::fs::File::create(&path)
                .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
            lock.lock()
                .unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
            lock
        });
        // From here the LabClaim releases the slot.
        std::mem::forget(slot);
        LabClaim {
            key: key.to_owned(),
            _host_locks: locks,
        }
    }
}

/// Releases the slot if `LabClaim::acquire_key` panics between taking it and returning.
struct SlotGuard {
    key: String,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        release_slot(&self.key);
    }
}

impl Drop for LabClaim {
    fn drop(&mut self) {
        release_slot(&self.key);
    }
}

fn release_slot(key: &str) {
    let mut slots = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
    slots.keys.remove(key);
    slots.live -= 1;
    SLOT_FREED.notify_all();
}
