//! Finds the line of a field path (`nodes[2].address`) in the inventory text.
//!
//! Instead of a second, hand-written YAML scanner, the text is read again by the same
//! parser with a probe that walks down the path and fails on purpose when it reaches
//! the target: serde_yaml_ng stamps every error with the position of the event being
//! read, so the error's location is the target's position. Block and flow style,
//! quoting, anchors and comments are therefore handled exactly as the parser does.
//! Problems are few and inventories small, so one re-read per problem costs nothing.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::problems::{FieldPath, Seg};

/// Message of the deliberate error; anything else means "not found".
const FOUND: &str = "khactl-locate: target reached";

/// 1-based line of `path`, or of its closest enclosing field that exists in the text
/// (a missing field is reported where its parent is). `None` for the document itself.
pub(super) fn line_of(text: &str, path: &FieldPath) -> Option<usize> {
    let mut segs = path.segs();
    while !segs.is_empty() {
        if let Some(line) = probe(text, segs) {
            return Some(line);
        }
        segs = &segs[..segs.len() - 1];
    }
    None
}

fn probe(text: &str, segs: &[Seg]) -> Option<usize> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    match (Probe { segs }).deserialize(de) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| l.line()),
        _ => None,
    }
}

/// Walks to `segs`; reaching the end of the path is the deliberate error.
struct Probe<'a> {
    segs: &'a [Seg],
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// Every kind of value ends the walk the same way: found if the path is used up,
/// otherwise not found (a scalar has no children).
macro_rules! leaf_visits {
    ($($method:ident($ty:ty)),*) => {$(
        fn $method<E: de::Error>(self, _: $ty) -> Result<(), E> {
            self.end()
        }
    )*};
}

impl Probe<'_> {
    fn end<E: de::Error>(&self) -> Result<(), E> {
        if self.segs.is_empty() {
            Err(E::custom(FOUND))
        } else {
            Err(E::custom("not found"))
        }
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    leaf_visits!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_i128(i128),
        visit_u128(u128),
        visit_f64(f64),
        visit_str(&str)
    );

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.end()
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.end()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.end()
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (Some(Seg::Key(wanted)), rest) = split(self.segs) else {
            return self.end();
        };
        while let Some(hit) = map.next_key_seed(KeyProbe {
            wanted,
            last: rest.is_empty(),
        })? {
            if hit {
                return map.next_value_seed(Probe { segs: rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(de::Error::custom("not found"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (Some(Seg::Index(wanted)), rest) = split(self.segs) else {
            return self.end();
        };
        for _ in 0..*wanted {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(de::Error::custom("not found"));
            }
        }
        seq.next_element_seed(Probe { segs: rest })?;
        Err(de::Error::custom("not found"))
    }
}

fn split(segs: &[Seg]) -> (Option<&Seg>, &[Seg]) {
    match segs.split_first() {
        Some((first, rest)) => (Some(first), rest),
        None => (None, segs),
    }
}

/// Reads one mapping key: `Ok(true)` when it is the wanted one and the walk goes on
/// into its value; the deliberate error when it is the wanted one and the last step,
/// so the position is the key's own (the line a user looks for).
struct KeyProbe<'a> {
    wanted: &'a str,
    last: bool,
}

impl KeyProbe<'_> {
    fn check<E: de::Error>(&self, key: &str) -> Result<bool, E> {
        match (key == self.wanted, self.last) {
            (true, true) => Err(E::custom(FOUND)),
            (hit, _) => Ok(hit),
        }
    }
}

impl<'de> DeserializeSeed<'de> for KeyProbe<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

/// Keys compare as the text the user wrote: `123:` is the key "123".
macro_rules! key_visits {
    ($($method:ident($ty:ty)),*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<bool, E> {
            self.check(&v.to_string())
        }
    )*};
}

impl<'de> Visitor<'de> for KeyProbe<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    key_visits!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64)
    );

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.check(v)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
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
