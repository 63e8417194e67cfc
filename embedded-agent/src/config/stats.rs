//! The `stats:` section: the guides' haproxy `listen stats` block (`bind *:9000`,
//! `stats uri /stats`, `stats realm`, `stats auth user:password`) as a listener of its own
//! that serves the HTML status page, always behind basic auth. It is separate from `status:`
//! (127.0.0.1, the JSON pages khactl reads) so it can face a management network without
//! exposing anything else, and so its password can change without touching khactl's view.
//!
//! `user`, `realm`, `uri` and the password are applied by a reload (SIGHUP); `listen` needs a
//! restart.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::Problem;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsConfig {
    /// Address and port of the page's own listener (haproxy's `bind *:9000`).
    pub listen: SocketAddr,
    /// The page's path (haproxy's `stats uri`); every other path answers 404.
    #[serde(default = "default_uri")]
    pub uri: String,
    /// Shown by browsers in the password prompt (haproxy's `stats realm`).
    #[serde(default = "default_realm")]
    pub realm: String,
    pub user: String,
    /// One line holding the password; mode 0600, never the config itself.
    pub password_file: PathBuf,
}

fn default_uri() -> String {
    "/stats".to_owned()
}

fn default_realm() -> String {
    "khagent statistics".to_owned()
}

/// The longest `uri` and `realm`: room for any sensible value, short enough for a header.
const MAX_TEXT: usize = 128;

impl StatsConfig {
    /// Field rules; `lb_listen` and `status_listen` are the agent's other listeners.
    pub(super) fn problems(
        &self,
        lb_listen: SocketAddr,
        status_listen: Option<SocketAddr>,
        out: &mut Vec<Problem>,
    ) {
        let mut bad = |field: &str, message: String| {
            out.push(Problem {
                field: format!("stats.{field}"),
                message,
            });
        };
        if self.listen.port() == 0 {
            bad("listen", "port 0 is not allowed".into());
        }
        if self.listen == lb_listen {
            bad("listen", "is the same address as `listen`".into());
        }
        if Some(self.listen) == status_listen {
            bad("listen", "is the same address as `status.listen`".into());
        }
        if let Err(why) = uri_problem(&self.uri) {
            bad("uri", why);
        }
        if let Err(why) = realm_problem(&self.realm) {
            bad("realm", why);
        }
        if let Err(why) = user_problem(&self.user) {
            bad("user", why);
        }
    }
}

/// A path of printable ASCII starting with `/`, without a query or fragment.
pub fn uri_problem(uri: &str) -> Result<(), String> {
    if !uri.starts_with('/') {
        return Err(format!("`{uri}` must start with `/`, e.g. /stats"));
    }
    if uri.len() > MAX_TEXT {
        return Err(format!("is longer than {MAX_TEXT} characters"));
    }
    if let Some(c) = uri
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '?' | '#' | '%'))
    {
        return Err(format!(
            "`{c:?}` is not allowed: a plain path of printable ASCII, no spaces, `?`, `#` or `%`"
        ));
    }
    Ok(())
}

/// The realm is written into `WWW-Authenticate: Basic realm="…"` as a quoted string: no quote,
/// backslash or control character can be allowed to end it early or start a header.
pub fn realm_problem(realm: &str) -> Result<(), String> {
    if realm.is_empty() || realm.len() > MAX_TEXT {
        return Err(format!("must be 1 to {MAX_TEXT} characters"));
    }
    if let Some(c) = realm
        .chars()
        .find(|c| !(c.is_ascii_graphic() || *c == ' ') || matches!(c, '"' | '\\'))
    {
        return Err(format!(
            "`{c:?}` is not allowed: printable ASCII and spaces, no `\"` or `\\`"
        ));
    }
    Ok(())
}

/// RFC 7617 §2: the user-id cannot contain a colon (it ends the user in `user:password`).
pub fn user_problem(user: &str) -> Result<(), String> {
    if user.is_empty() || user.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if user.chars().any(|c| c == ':' || c.is_control()) {
        return Err("must contain no `:` and no control characters".into());
    }
    Ok(())
}

/// A password file's content as the password: the trailing newline(s) removed. Anything else
/// that would not survive a browser's prompt (more lines, control characters) is refused.
pub fn password_from_file(mut bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    while bytes.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err("holds an empty password".into());
    }
    if bytes.iter().any(|c| c.is_ascii_control()) {
        return Err(
            "holds more than one line or a control character; write the password on one line"
                .into(),
        );
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_is_a_plain_path() {
        assert_eq!(uri_problem("/stats"), Ok(()));
        assert_eq!(uri_problem("/haproxy/stats"), Ok(()));
        assert!(uri_problem("stats").is_err());
        assert!(uri_problem("/st ats").is_err());
        assert!(uri_problem("/stats?x").is_err());
        assert!(uri_problem("/stats%20").is_err());
        assert!(uri_problem(&format!("/{}", "a".repeat(200))).is_err());
    }

    #[test]
    fn realm_cannot_end_its_quoted_string_or_start_a_header() {
        assert_eq!(realm_problem("HAProxy Statistics"), Ok(()));
        assert!(realm_problem("").is_err());
        assert!(realm_problem("a\"b").is_err());
        assert!(realm_problem("a\\b").is_err());
        assert!(realm_problem("a\r\nSet-Cookie: x").is_err());
        assert!(realm_problem("é").is_err());
    }

    #[test]
    fn user_has_no_colon() {
        assert_eq!(user_problem("admin"), Ok(()));
        assert!(user_problem("ad:min").is_err());
        assert!(user_problem("").is_err());
    }

    #[test]
    fn password_file_is_one_line() {
        assert_eq!(
            password_from_file(b"s3cret\n".to_vec()),
            Ok(b"s3cret".to_vec())
        );
        assert_eq!(
            password_from_file(b"s3cret".to_vec()),
            Ok(b"s3cret".to_vec())
        );
        assert!(password_from_file(b"\n".to_vec()).is_err());
        assert!(password_from_file(b"a\nb\n".to_vec()).is_err());
    }
}
