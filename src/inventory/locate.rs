//! Finds the lines of field paths (`nodes[2].address`) in the inventory text, all in one pass.
//!
//! The text is read once more by an event parser that reports each node's position
//! (yaml-rust2; serde_yaml_ng, which validates, has no spans), walking a stack of the current
//! path and keeping the line of every path a problem asked for, or leads to: a mapping key's
//! own line, a list item's first line. One pass for every problem: an earlier version re-read
//! the whole document once per problem, which made 4,000 bad keys cost seconds. The two
//! parsers agree on the structure of any document serde_yaml_ng accepted; where one ever
//! disagrees, a problem loses its line, never its message.

use std::collections::{HashMap, HashSet};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::problems::{FieldPath, Seg};

/// For each path, the 1-based line of the path, or of its closest enclosing field that exists
/// in the text (a missing field is reported where its parent is); `None` for the document
/// itself and when no part of the path is in the text.
pub(super) fn lines_of(text: &str, paths: &[&FieldPath]) -> Vec<Option<usize>> {
    if paths.is_empty() {
        return Vec::new();
    }
    let mut wanted: HashSet<Vec<Seg>> = HashSet::new();
    for path in paths {
        let segs = path.segs();
        for end in 1..=segs.len() {
            // Each prefix once: a set lookup, not a copy, when it is already there.
            if !wanted.contains(&segs[..end]) {
                wanted.insert(segs[..end].to_vec());
            }
        }
    }
    let mut walk = Walk {
        wanted: &wanted,
        found: HashMap::new(),
        path: Vec::new(),
        frames: Vec::new(),
        skip: 0,
    };
    // A parse error ends the walk: what was found before it still counts.
    let _partial = Parser::new_from_str(text).load(&mut walk, false);
    paths
        .iter()
        .map(|path| {
            let segs = path.segs();
            (1..=segs.len())
                .rev()
                .find_map(|end| walk.found.get(&segs[..end]).copied())
        })
        .collect()
}

/// 1-based line of one path; see [`lines_of`].
#[cfg(test)]
pub(super) fn line_of(text: &str, path: &FieldPath) -> Option<usize> {
    lines_of(text, &[path]).into_iter().next().flatten()
}

enum Frame {
    /// In a list: the index the next item gets.
    Seq(usize),
    /// In a mapping: what the next node is.
    Map(Next),
}

enum Next {
    Key,
    /// The value of this key; `None` for a key that is not plain text (`? [1, 2]`, an alias),
    /// whose value no path can name.
    Value(Option<String>),
}

/// A node as it begins.
enum Node {
    Scalar(String, TScalarStyle),
    Other,
    Open(Frame),
}

struct Walk<'a> {
    wanted: &'a HashSet<Vec<Seg>>,
    found: HashMap<Vec<Seg>, usize>,
    /// The path of the node being read: one segment per open collection below the document.
    path: Vec<Seg>,
    frames: Vec<Frame>,
    /// Depth inside a collection no path can name (a complex key, or its value).
    skip: usize,
}

impl Walk<'_> {
    fn record(&mut self, line: usize) {
        if self.wanted.contains(self.path.as_slice()) && !self.found.contains_key(&self.path) {
            self.found.insert(self.path.clone(), line);
        }
    }

    fn begin(&mut self, node: Node, line: usize) {
        if self.skip > 0 {
            if matches!(node, Node::Open(_)) {
                self.skip += 1;
            }
            return;
        }
        // Where the node sits: the segment that names it, or a key, or nothing nameable.
        let segment = match self.frames.last_mut() {
            None => None,
            Some(Frame::Seq(next)) => {
                *next += 1;
                Some(Seg::Index(*next - 1))
            }
            Some(Frame::Map(next)) => match std::mem::replace(next, Next::Key) {
                Next::Key => {
                    let key = match &node {
                        Node::Scalar(text, style) => Some(key_text(text, *style)),
                        Node::Other | Node::Open(_) => None,
                    };
                    *next = Next::Value(key.clone());
                    if let Some(key) = key {
                        self.path.push(Seg::Key(key));
                        self.record(line);
                        self.path.pop();
                    } else if matches!(node, Node::Open(_)) {
                        self.skip = 1;
                    }
                    return;
                }
                Next::Value(Some(key)) => Some(Seg::Key(key)),
                Next::Value(None) => {
                    if matches!(node, Node::Open(_)) {
                        self.skip = 1;
                    }
                    return;
                }
            },
        };
        let nested = segment.is_some();
        if let Some(segment) = segment {
            self.path.push(segment);
            self.record(line);
        }
        match node {
            Node::Open(frame) => self.frames.push(frame),
            Node::Scalar(..) | Node::Other if nested => {
                self.path.pop();
            }
            Node::Scalar(..) | Node::Other => {}
        }
    }

    fn close(&mut self) {
        if self.skip > 0 {
            self.skip -= 1;
            return;
        }
        self.frames.pop();
        // Every collection below the document pushed the segment that named it.
        if !self.frames.is_empty() {
            self.path.pop();
        }
    }
}

impl MarkedEventReceiver for Walk<'_> {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let node = match event {
            Event::Scalar(text, style, _, _) => Node::Scalar(text, style),
            Event::Alias(_) => Node::Other,
            Event::SequenceStart(..) => Node::Open(Frame::Seq(0)),
            Event::MappingStart(..) => Node::Open(Frame::Map(Next::Key)),
            Event::SequenceEnd | Event::MappingEnd => return self.close(),
            _ => return,
        };
        self.begin(node, mark.line());
    }
}

/// A key as the validator names it: the text the user wrote, except that a plain scalar
/// serde reads as a number or boolean is named by that value's text (`0x10:` is "16").
fn key_text(raw: &str, style: TScalarStyle) -> String {
    let maybe_typed = style == TScalarStyle::Plain
        && raw
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || b"+-.~tfnTFN".contains(&b));
    if maybe_typed
        && let Ok(value) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(raw)
        && let Some(text) = super::checks::scalar_text(&value)
    {
        return text;
    }
    raw.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &[&str]) -> FieldPath {
        s.iter()
            .fold(FieldPath::root(), |p, seg| match seg.parse::<usize>() {
                Ok(i) => p.index(i),
                Err(_) => p.key(seg),
            })
    }

    const BLOCK: &str = "\
apiVersion: khactl.io/v1alpha1   # line 1
vip:
  address: 10.0.0.100
  port: 8443
nodes:
  - name: cp1
    address: 10.0.0.11
  # a comment between items
  - name: cp2

    address: \"10.0.0.12\"
sysctls:
  vm.swappiness: 0
";

    #[test]
    fn finds_block_style_keys_and_items() {
        assert_eq!(line_of(BLOCK, &path(&["apiVersion"])), Some(1));
        assert_eq!(line_of(BLOCK, &path(&["vip"])), Some(2));
        assert_eq!(line_of(BLOCK, &path(&["vip", "port"])), Some(4));
        assert_eq!(line_of(BLOCK, &path(&["nodes", "0"])), Some(6));
        assert_eq!(line_of(BLOCK, &path(&["nodes", "1"])), Some(9));
        assert_eq!(line_of(BLOCK, &path(&["nodes", "1", "address"])), Some(11));
        assert_eq!(
            line_of(BLOCK, &path(&["sysctls", "vm.swappiness"])),
            Some(13)
        );
    }

    #[test]
    fn finds_flow_style_keys_and_items() {
        let text = "cluster: { name: t, kubernetesVersion: v1.31.2 }\nnodes:\n  - { name: a }\n  - {\n      name: b,\n      role: x }\n";
        assert_eq!(
            line_of(text, &path(&["cluster", "kubernetesVersion"])),
            Some(1)
        );
        assert_eq!(line_of(text, &path(&["nodes", "1"])), Some(4));
        assert_eq!(line_of(text, &path(&["nodes", "1", "role"])), Some(6));
    }

    #[test]
    fn a_missing_field_is_found_where_its_parent_is() {
        assert_eq!(line_of(BLOCK, &path(&["nodes", "1", "role"])), Some(9));
        assert_eq!(line_of(BLOCK, &path(&["nodes", "7", "role"])), Some(5));
        assert_eq!(line_of(BLOCK, &path(&["pki", "keyType"])), None);
        assert_eq!(line_of(BLOCK, &FieldPath::root()), None);
    }

    #[test]
    fn numeric_keys_match_their_text() {
        let text = "labels:\n  a: x\n  123: y\n";
        assert_eq!(line_of(text, &path(&["labels"]).key("123")), Some(3));
    }

    #[test]
    fn odd_text_gives_no_line_instead_of_panicking() {
        for text in [
            "",
            "[",
            "- a\n- b",
            "x: *nope",
            "\t",
            "x:\n\tb: 1",
            "? [1, 2]\n: x\n",
        ] {
            assert_eq!(line_of(text, &path(&["a", "b", "0"])), None, "{text:?}");
        }
    }
}
