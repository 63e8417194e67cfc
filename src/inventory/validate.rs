//! The validation pipeline: YAML syntax → the document's shape (`schema.rs`) → the
//! cross-field rules (`rules.rs`) → the typed [`Inventory`]. Every stage adds to one
//! list, so the user sees all problems of a file at once, each with its line.

use std::path::Path;

use serde_yaml_ng::Value;

use super::locate;
use super::model::Inventory;
use super::problems::{Findings, InventoryError, Problem, Severity, Validated};
use super::rules::{self, Draft};
use super::schema;

pub(super) fn parse_and_validate(
    text: &str,
    file: Option<&Path>,
) -> Result<Validated, InventoryError> {
    let mut found = Findings::default();
    if let Some(line) = flow_too_deep(text) {
        found.error_at_line(
            Some(line),
            format!(
                "brackets nest more than {MAX_FLOW_DEPTH} levels deep here; an inventory needs \
                 a handful (is a `]` or `}}` missing?)"
            ),
        );
        return Err(invalid(text, found, file));
    }
    let root: Value = match serde_yaml_ng::from_str(text) {
        Ok(root) => root,
        Err(e) => {
            found.error_at_line(e.location().map(|l| l.line()), yaml_message(&e, text));
            return Err(invalid(text, found, file));
        }
    };
    schema::check_document(&root, &mut found);
    let draft = Draft::from_document(&root, &found);
    rules::check(&draft, &mut found);
    if found.has_errors() {
        return Err(invalid(text, found, file));
    }
    // The shape check accepted the document, so the model should too; if the two ever
    // disagree the model's own error is reported rather than lost.
    match serde_yaml_ng::from_str::<Inventory>(text) {
        Ok(inventory) => Ok(Validated {
            inventory,
            warnings: located(text, found),
        }),
        Err(e) => {
            found.error_at_line(e.location().map(|l| l.line()), yaml_message(&e, text));
            Err(invalid(text, found, file))
        }
    }
}

/// A file that is not UTF-8 text, located at its first bad byte.
pub(super) fn not_utf8(file: &Path, bytes: &[u8], valid_up_to: usize) -> InventoryError {
    let line = bytes
        .iter()
        .take(valid_up_to)
        .filter(|b| **b == b'\n')
        .count()
        + 1;
    InventoryError::Invalid {
        file: Some(file.to_path_buf()),
        problems: vec![Problem {
            severity: Severity::Error,
            path: String::new(),
            line: Some(line),
            message: "the file is not UTF-8 text; save it as UTF-8".to_owned(),
        }],
    }
}

fn invalid(text: &str, found: Findings, file: Option<&Path>) -> InventoryError {
    InventoryError::Invalid {
        file: file.map(Path::to_path_buf),
        problems: located(text, found),
    }
}

/// Problems with their lines, in file order (document-wide ones first). Every line is found
/// in one pass over the text, however many problems there are.
fn located(text: &str, found: Findings) -> Vec<Problem> {
    let found = found.into_vec();
    let unplaced: Vec<_> = found
        .iter()
        .filter(|f| f.line.is_none())
        .map(|f| &f.path)
        .collect();
    let mut lines = locate::lines_of(text, &unplaced).into_iter();
    let mut problems: Vec<Problem> = found
        .into_iter()
        .map(|f| Problem {
            severity: f.severity,
            line: f.line.or_else(|| lines.next().flatten()),
            path: f.path.to_string(),
            message: f.message,
        })
        .collect();
    problems.sort_by_key(|p| p.line);
    problems
}

/// Deeper than serde_yaml_ng's own recursion limit, so nothing it would read is refused.
const MAX_FLOW_DEPTH: usize = 128;

/// The line where flow collections (`[…]`, `{…}`) nest deeper than [`MAX_FLOW_DEPTH`], found
/// in one pass before any parser sees the text: libyaml rescans every open level for each
/// token, so 200,000 unclosed `[` cost it minutes before it reported the depth. Brackets are
/// counted where they open a collection (a node's start in block context, anywhere in flow
/// context), not inside quotes, comments or plain text such as `a[b`; block scalars (`|`,
/// `>`) are rare in an inventory and their lines are read like any other, which can only
/// count too few levels, never too many for a document the parser would accept.
fn flow_too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut line = 1;
    // The last significant byte, to tell a node's start (after `: `, `- `, `? `, `,`, `[`,
    // `{` or at a line's start) from the middle of a plain scalar.
    let mut node_start = true;
    let mut quote: Option<u8> = None;
    let mut prev = b'\n';
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\n' {
            line += 1;
        }
        match quote {
            Some(q) => {
                if b == b'\\' && q == b'"' {
                    i += 1; // the escaped byte
                } else if b == q {
                    if q == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                        i += 1; // '' inside single quotes
                    } else {
                        quote = None;
                        node_start = false;
                    }
                }
            }
            None => match b {
                b'#' if prev.is_ascii_whitespace() => {
                    while i + 1 < bytes.len() && bytes[i + 1] != b'\n' {
                        i += 1;
                    }
                }
                b'\n' => node_start = true,
                b' ' | b'\t' | b'\r' => {}
                b'"' | b'\'' if node_start => quote = Some(b),
                b'[' | b'{' if node_start || depth > 0 => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Some(line);
                    }
                    node_start = true;
                }
                b']' | b'}' if depth > 0 => {
                    depth -= 1;
                    node_start = false;
                }
                b',' if depth > 0 => node_start = true,
                b':' | b'-' | b'?' => {
                    // An indicator only when followed by a space (or, in flow context, `:`
                    // right before a bracket); otherwise part of a plain scalar.
                    let next = bytes.get(i + 1).copied().unwrap_or(b'\n');
                    node_start = next.is_ascii_whitespace()
                        || (depth > 0 && b == b':' && matches!(next, b'[' | b'{'))
                        || (node_start && b == b'-' && next == b'-');
                }
                _ => node_start = false,
            },
        }
        prev = bytes[i];
        i += 1;
    }
    None
}

/// The parser's message, without the position (the problem carries the line) and with
/// a hint for the usual causes.
fn yaml_message(e: &serde_yaml_ng::Error, text: &str) -> String {
    let message = e.to_string();
    if message.contains("more than one document") {
        return "the file holds more than one YAML document (a `---` line between two); an \
                inventory is a single document"
            .to_owned();
    }
    if message.contains("as u128") || message.contains("as i128") {
        return "a number in the file is too large for any field".to_owned();
    }
    if let Some(key) = message.strip_prefix("duplicate entry with key ") {
        return format!(
            "the key {} appears twice in one mapping; keep one",
            strip_position(key)
        );
    }
    let line_has_tab = e
        .location()
        .and_then(|l| text.lines().nth(l.line().saturating_sub(1)))
        .is_some_and(|line| line.contains('\t'));
    if line_has_tab && message.contains("cannot start any token") {
        return "a tab character: YAML indents with spaces only".to_owned();
    }
    strip_position(&message).to_owned()
}

/// Drops a trailing " at line N column M".
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(at)
            if message[at + 9..]
                .split(" column ")
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            &message[..at]
        }
        _ => message,
    }
}
