//! Files khactl writes on nodes, rendered from the templates in `templates/` (embedded at
//! build time with `include_str!`). Each template has one typed context struct here; nothing
//! else reaches a template.
//!
//! Escaping is the template's contract, not the caller's: every value a template prints goes
//! through a filter that makes it inert in that file's syntax.
//! - `json`: a JSON literal. JSON strings are YAML double-quoted scalars, so an inventory
//!   value with a newline, `:` or `#` stays one scalar and cannot add keys to the agent config.
//! - `systemd`: one word of a unit's command line: bare when it is plainly a path, else
//!   double-quoted with backslash, quote and newline escaped and `%` / `$` doubled (systemd
//!   expands specifiers and variables even inside quotes).
//! - `shell`: a single-quoted POSIX shell word (OpenRC scripts are shell).
//!
//! Rendering is pure (no I/O, except `kubeadm::write_files` for `khactl render --out`);
//! the unit tests compare whole files with expected text.
//!
//! - `agent`: khagent's config, systemd unit and OpenRC script.
//! - [`etcd`]: an external etcd member's config file and systemd unit.
//! - [`kubeadm`]: each node's kubeadm configuration, read back through kubeadm's own types
//!   before it is used.

mod agent;
pub mod etcd;
pub mod kubeadm;

use std::collections::HashMap;

use serde::Serialize;
use tera::{Tera, Value};

pub use agent::{AgentBackend, AgentConfig, AgentService, AgentStats, AgentTrack, AgentVrrp};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template that does not parse or uses a missing field is a bug in khactl, caught by
    /// the unit tests; the message keeps tera's whole chain so it can be found.
    #[error("internal: cannot render template {template}: {detail}")]
    Template {
        template: &'static str,
        detail: String,
    },
}

/// One template: its name (for messages and `{% include %}`) and its text.
#[derive(Clone, Copy)]
pub(crate) struct Template {
    pub name: &'static str,
    pub text: &'static str,
}

/// Renders `template` with `context`, with khactl's escaping filters registered.
pub(crate) fn render<C: Serialize>(
    template: &Template,
    context: &C,
) -> Result<String, RenderError> {
    render_with(template, &[], context)
}

/// [`render`] for a template that `{% include %}`s `partials`, each by its name.
pub(crate) fn render_with<C: Serialize>(
    template: &Template,
    partials: &[&Template],
    context: &C,
) -> Result<String, RenderError> {
    let fail = |e: tera::Error| RenderError::Template {
        template: template.name,
        // `{:#}` shows tera's whole source chain (the line and the missing field).
        detail: format!("{:#}", anyhow::Error::new(e)),
    };
    let mut tera = Tera::default();
    // Tera escapes HTML by default for .html names only; say it: these are not HTML.
    tera.autoescape_on(vec![]);
    tera.register_filter("json", json_filter);
    tera.register_filter("shell", shell_filter);
    tera.register_filter("systemd", systemd_filter);
    let all = partials.iter().copied().chain(std::iter::once(template));
    tera.add_raw_templates(all.map(|t| (t.name, t.text)))
        .map_err(fail)?;
    let ctx = tera::Context::from_serialize(context).map_err(fail)?;
    tera.render(template.name, &ctx).map_err(fail)
}

fn json_filter(value: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    Ok(Value::String(yaml_safe_json(value)))
}

/// `value` as compact JSON that a YAML parser reads back unchanged. serde_json writes
/// non-ASCII characters raw, but YAML forbids some of them unescaped (DEL, the C1
/// controls, U+FEFF, U+FFFE, U+FFFF) and YAML 1.1 parsers (libyaml, go-yaml) take NEL,
/// LS and PS (U+0085, U+2028, U+2029) for line breaks and fold them. JSON's own syntax
/// is ASCII, so these can only stand inside strings, where `\uXXXX` means the same in
/// both languages.
fn yaml_safe_json(value: &Value) -> String {
    let raw = value.to_string();
    let unsafe_in_yaml = |c: char| {
        matches!(
            c,
            '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        )
    };
    if !raw.contains(unsafe_in_yaml) {
        return raw;
    }
    let mut out = String::with_capacity(raw.len() + 16);
    for c in raw.chars() {
        if unsafe_in_yaml(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

fn shell_filter(value: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => {
            return Err(tera::Error::msg(format!(
                "shell filter takes a string or number, got {other}"
            )));
        }
    };
    Ok(Value::String(shell_quote(&text)))
}

fn systemd_filter(value: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    match value {
        Value::String(s) => Ok(Value::String(systemd_word(s))),
        other => Err(tera::Error::msg(format!(
            "systemd filter takes a string, got {other}"
        ))),
    }
}

/// A word of a systemd `Exec*=` line that systemd reads back as exactly `s`.
pub(crate) fn systemd_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | ':'));
    if plain {
        return s.to_owned();
    }
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str(r#"\""#),
            '\n' => out.push_str(r"\n"),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A POSIX shell word that expands to exactly `s`: single quotes, with each `'` written as
/// `'\''` (nothing is special inside single quotes except the quote itself).
pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_keeps_quotes_and_dollars_inert() {
        assert_eq!(
            shell_quote("/usr/local/bin/khagent"),
            "'/usr/local/bin/khagent'"
        );
        assert_eq!(shell_quote("a'b $(x)"), r"'a'\''b $(x)'");
    }

    #[test]
    fn systemd_words_are_bare_paths_or_quoted_with_specifiers_doubled() {
        assert_eq!(
            systemd_word("/usr/local/bin/khagent"),
            "/usr/local/bin/khagent"
        );
        assert_eq!(
            systemd_word(r#"/etc/k h/%n "$X""#),
            r#""/etc/k h/%%n \"$$X\"""#
        );
        assert_eq!(systemd_word("a\nb"), r#""a\nb""#);
        assert_eq!(systemd_word(""), r#""""#);
    }

    #[test]
    fn json_filter_quotes_strings_and_leaves_numbers() {
        let none = HashMap::new();
        assert_eq!(
            json_filter(&Value::String("a\n b: c".into()), &none).unwrap(),
            Value::String(r#""a\n b: c""#.into())
        );
        assert_eq!(
            json_filter(&Value::from(150), &none).unwrap(),
            Value::String("150".into())
        );
    }

    /// A YAML 1.1 parser folds NEL, LS and PS as line breaks and refuses DEL and C1
    /// controls raw; escaped, every one of them reads back as written.
    #[test]
    fn json_filter_output_reads_back_unchanged_as_yaml() {
        let none = HashMap::new();
        let nasty = "a\u{85}b\u{2028}c\u{2029}d\u{7f}e\u{9b}f\u{feff}g\u{fffe}h\té\"\\\n: #";
        let rendered = json_filter(&Value::String(nasty.into()), &none).unwrap();
        let Value::String(text) = rendered else {
            panic!("{rendered:?}")
        };
        assert!(
            !text.contains(['\u{85}', '\u{2028}', '\u{2029}', '\u{7f}', '\u{feff}']),
            "{text}"
        );
        let back: String = serde_yaml_ng::from_str(&format!("k: {text}"))
            .map(|m: std::collections::BTreeMap<String, String>| m["k"].clone())
            .unwrap();
        assert_eq!(back, nasty);
        let list = Value::Array(vec![Value::String("x\u{2028}".into()), Value::from(1)]);
        let list = json_filter(&list, &none).unwrap();
        assert_eq!(list, Value::String(r#"["x\u2028",1]"#.into()));
    }

    #[test]
    fn a_broken_template_is_an_error_naming_it() {
        let t = Template {
            name: "broken.tera",
            text: "{{ missing | json }}",
        };
        let err = render(&t, &Empty {}).unwrap_err();
        assert!(err.to_string().contains("broken.tera"), "{err}");
    }

    #[derive(Serialize)]
    struct Empty {}
}
