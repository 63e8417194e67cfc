//! Errors that say what to do. A hint is data on the error ([`Hinted`], or an error type's
//! own `hint()`), never text pasted into a message; `main` prints the chain, then every hint
//! found along it (uv's `diagnostics.rs` pattern).

use std::fmt;

/// An error with the hints that help the user out of it.
#[derive(Debug)]
pub struct Hinted {
    message: String,
    hints: Vec<String>,
}

impl Hinted {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hints: Vec::new(),
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    pub fn hints(&self) -> &[String] {
        &self.hints
    }
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

/// Every hint along an error's chain, first seen first, without repeats. `extra` turns a
/// chain element into hints for error types this module cannot name (it is given each
/// element; `main` passes the crate's error types).
pub fn hints_of(
    err: &anyhow::Error,
    extra: impl Fn(&(dyn std::error::Error + 'static)) -> Vec<String>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for cause in err.chain() {
        let mut found = extra(cause);
        if let Some(h) = cause.downcast_ref::<Hinted>() {
            found.extend(h.hints().iter().cloned());
        }
        for h in found {
            if !out.contains(&h) {
                out.push(h);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_are_collected_along_the_chain_once_each() {
        let inner = anyhow::Error::new(Hinted::new("no VIP").hint("look at the agent"));
        let outer = inner.context("up stopped");
        let hints = hints_of(&outer, |_| vec!["look at the agent".to_owned()]);
        assert_eq!(hints, ["look at the agent"]);
        assert_eq!(outer.to_string(), "up stopped");
    }
}
