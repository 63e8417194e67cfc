//! What validation returns: [`Problem`]s (each with a field path, a line and a message
//! that says what to do), the [`InventoryError`] the CLI prints as is, and the
//! [`FieldPath`] and [`Findings`] collector the rules use to build them.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One thing wrong (or doubtful) in an inventory, located by its field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    /// Field path such as `nodes[2].address`; empty for the document as a whole.
    pub path: String,
    /// 1-based line in the file where the field (or its closest enclosing field) is.
    pub line: Option<usize>,
    pub message: String,
}

/// `nodes[2].address (line 14): message`, without the severity (callers prefix it).
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.line) {
            (false, Some(line)) => write!(f, "{} (line {line}): ", self.path)?,
            (false, None) => write!(f, "{}: ", self.path)?,
            (true, Some(line)) => write!(f, "line {line}: ")?,
            (true, None) => {}
        }
        f.write_str(&self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(
        "cannot read the inventory file {path}: {source}\n  hint: check the path given with \
         --inventory (-i); khactl reads exactly that file"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the inventory {path} is {what}, not a regular file\n  hint: give --inventory (-i) the \
         YAML file itself; khactl does not read inventories from pipes or devices"
    )]
    NotAFile { path: PathBuf, what: &'static str },
    #[error(
        "the inventory {path} is {size} bytes, over the limit of {} MiB\n  hint: an inventory \
         is a few kilobytes; check that --inventory (-i) names the right file",
        super::MAX_INVENTORY_BYTES / (1024 * 1024)
    )]
    TooLarge { path: PathBuf, size: u64 },
    /// The document has at least one error; `problems` holds every error and warning,
    /// in file order.
    #[error("{}", render_invalid(file.as_deref(), problems))]
    Invalid {
        file: Option<PathBuf>,
        problems: Vec<Problem>,
    },
}

impl InventoryError {
    /// The problems found, empty when the file could not be read at all.
    pub fn problems(&self) -> &[Problem] {
        match self {
            InventoryError::Read { .. }
            | InventoryError::NotAFile { .. }
            | InventoryError::TooLarge { .. } => &[],
            InventoryError::Invalid { problems, .. } => problems,
        }
    }

    /// The full text the CLI prints: a header, then one line per problem.
    pub fn render(&self) -> String {
        self.to_string()
    }
}

fn render_invalid(file: Option<&std::path::Path>, problems: &[Problem]) -> String {
    let errors = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    let warnings = problems.len() - errors;
    let what = file.map_or_else(|| "the inventory".to_owned(), |f| f.display().to_string());
    let mut out = format!(
        "{what} is not a valid inventory: {}",
        count(errors, "error")
    );
    if warnings > 0 {
        out.push_str(&format!(", {}", count(warnings, "warning")));
    }
    for p in problems {
        out.push_str(&format!("\n  {}: {p}", p.severity));
    }
    out
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// An inventory that passed every rule, with the warnings it raised.
#[derive(Debug, Clone)]
pub struct Validated {
    pub inventory: super::model::Inventory,
    pub warnings: Vec<Problem>,
}

/// One step of a field path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// A field path inside the document, shown as `nodes[2].labels["app.kubernetes.io/name"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct FieldPath(Vec<Seg>);

impl FieldPath {
    pub(super) fn root() -> Self {
        Self::default()
    }

    pub(super) fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Self(segs)
    }

    pub(super) fn index(&self, i: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(i));
        Self(segs)
    }

    pub(super) fn segs(&self) -> &[Seg] {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                // Keys that are not plain field names (sysctls, label keys) are quoted so
                // the dots inside them do not read as nesting.
                Seg::Key(k)
                    if k.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
                {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Key(k) => write!(f, "[{k:?}]")?,
            }
        }
        Ok(())
    }
}

/// A problem before its line is known.
#[derive(Debug, Clone)]
pub(super) struct Finding {
    pub severity: Severity,
    pub path: FieldPath,
    pub message: String,
    /// Set when the parser itself reported the position.
    pub line: Option<usize>,
}

/// The one list every check adds to.
#[derive(Debug, Default)]
pub(super) struct Findings {
    found: Vec<Finding>,
    /// Every path an error was reported at, and each of its ancestors: "is there an error
    /// under this path" is then one lookup, asked once per node and section (a scan of every
    /// finding each time made 10,000 bad nodes quadratic).
    under_error: HashSet<Vec<Seg>>,
}

impl Findings {
    pub(super) fn error(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.push(Severity::Error, path, message.into());
    }

    pub(super) fn warning(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.push(Severity::Warning, path, message.into());
    }

    pub(super) fn error_at_line(&mut self, line: Option<usize>, message: impl Into<String>) {
        self.under_error.insert(Vec::new());
        self.found.push(Finding {
            severity: Severity::Error,
            path: FieldPath::root(),
            message: message.into(),
            line,
        });
    }

    fn push(&mut self, severity: Severity, path: &FieldPath, message: String) {
        if severity == Severity::Error {
            let segs = path.segs();
            for end in 0..=segs.len() {
                if !self.under_error.contains(&segs[..end]) {
                    self.under_error.insert(segs[..end].to_vec());
                }
            }
        }
        self.found.push(Finding {
            severity,
            path: path.clone(),
            message,
            line: None,
        });
    }

    /// Whether an error was reported at `path` or anywhere below it.
    pub(super) fn has_error_under(&self, path: &FieldPath) -> bool {
        self.under_error.contains(path.segs())
    }

    pub(super) fn has_errors(&self) -> bool {
        !self.under_error.is_empty()
    }

    pub(super) fn into_vec(self) -> Vec<Finding> {
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_like_the_document() {
        let p = FieldPath::root().key("nodes").index(2).key("address");
        assert_eq!(p.to_string(), "nodes[2].address");
        let p = FieldPath::root().key("sysctls").key("vm.swappiness");
        assert_eq!(p.to_string(), "sysctls[\"vm.swappiness\"]");
        assert_eq!(FieldPath::root().to_string(), "");
    }

    #[test]
    fn renders_a_header_then_one_line_per_problem() {
        let err = InventoryError::Invalid {
            file: Some(PathBuf::from("inv.yaml")),
            problems: vec![
                Problem {
                    severity: Severity::Error,
                    path: "nodes[2].address".into(),
                    line: Some(14),
                    message: "10.0.0.11 is also the address of nodes[0] (cp1)".into(),
                },
                Problem {
                    severity: Severity::Warning,
                    path: "nodes".into(),
                    line: None,
                    message: "even".into(),
                },
            ],
        };
        assert_eq!(
            err.render(),
            "inv.yaml is not a valid inventory: 1 error, 1 warning\n  \
             error: nodes[2].address (line 14): 10.0.0.11 is also the address of nodes[0] (cp1)\n  \
             warning: nodes: even"
        );
    }
}
