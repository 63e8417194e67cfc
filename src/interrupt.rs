//! Ctrl-C as data. The session listens for SIGINT and raises an [`Interrupt`]; the gate, the
//! phase runner and long waits check it between steps, so the step in flight on every node
//! finishes, nothing is left half-written, cleanups run, and khactl exits 130 saying what
//! each node has done. A second Ctrl-C exits at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Raised once Ctrl-C was pressed; cheap to clone and to check.
#[derive(Debug, Clone, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(Interrupted)` once raised: call it before starting a step.
    pub fn check(&self) -> Result<(), Interrupted> {
        if self.is_raised() {
            Err(Interrupted)
        } else {
            Ok(())
        }
    }
}

/// The run stopped because the user pressed Ctrl-C (exit 130).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("interrupted (Ctrl-C)")]
pub struct Interrupted;
