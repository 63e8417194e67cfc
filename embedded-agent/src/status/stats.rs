//! The `stats:` listener: haproxy's `listen stats` page. One route, the HTML page at
//! `stats.uri`; every request, whatever its path, must carry the user and password first, so
//! the listener tells someone without them nothing, not even which path the page is at.
//! `/healthz` is not served here: probes use `status.listen`.

use std::sync::Arc;

use super::{Auth, Context, Request, Response, render};
use crate::config::StatsConfig;

/// What a reload may change without re-binding: the path, the realm, the credentials.
pub struct Access {
    pub uri: String,
    pub realm: String,
    pub auth: Auth,
}

impl Access {
    /// From a validated config and the password read from its `password_file`.
    pub fn new(config: &StatsConfig, password: Vec<u8>) -> Arc<Access> {
        Arc::new(Access {
            uri: config.uri.clone(),
            realm: config.realm.clone(),
            auth: Auth {
                user: config.user.clone(),
                password,
            },
        })
    }
}

pub(super) fn route(req: &Request, ctx: &Context, access: &Access) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        return Response::text(405, "only GET\n");
    }
    if !access.auth.allows(req.authorization.as_deref()) {
        return Response::unauthorized(&access.realm);
    }
    if req.path != access.uri {
        return Response::text(404, "not found\n");
    }
    let page = render::Snapshot::take(ctx).html();
    Response::new(200, "text/html; charset=utf-8", page)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::atomic::AtomicU64;
    use std::time::Instant;

    use tokio::sync::watch;

    use super::super::parse_head;
    use super::*;
    use crate::config::Config;
    use crate::events::EventLog;
    use crate::lb::Lb;
    use crate::vrrp::TrackState;

    fn context() -> Context {
        let config = Config::parse(
            "listen: 127.0.0.1:7443\nbackends:\n  - {name: cp-1, address: 127.0.0.1:6443}\n",
        )
        .unwrap();
        Context {
            lb: Lb::new(&config),
            listen: config.listen,
            vrrp: None,
            track: watch::channel(TrackState::default()).1,
            auth: None,
            started: Instant::now(),
            reloads: Arc::new(AtomicU64::new(0)),
            events: Arc::new(EventLog::default()),
        }
    }

    fn access() -> Access {
        Access {
            uri: "/stats".into(),
            realm: "HAProxy Statistics".into(),
            auth: Auth {
                user: "admin".into(),
                password: b"s3cret".to_vec(),
            },
        }
    }

    fn get(path: &str, authorization: Option<&str>) -> Response {
        let auth = authorization
            .map(|a| format!("\r\nAuthorization: {a}"))
            .unwrap_or_default();
        let req = parse_head(&format!("GET {path} HTTP/1.1\r\nHost: x{auth}")).unwrap();
        route(&req, &context(), &access())
    }

    // base64("admin:s3cret"), base64("admin:wrong")
    const GOOD: &str = "Basic YWRtaW46czNjcmV0";
    const WRONG: &str = "Basic YWRtaW46d3Jvbmc=";

    #[test]
    fn without_credentials_every_path_is_401_with_the_configured_realm() {
        for path in ["/stats", "/", "/status", "/healthz", "/nothing"] {
            let r = get(path, None);
            assert_eq!(r.code, 401, "{path}");
            assert_eq!(
                r.extra,
                "WWW-Authenticate: Basic realm=\"HAProxy Statistics\", charset=\"UTF-8\"\r\n"
            );
            assert!(!r.body.contains("cp-1"), "{path} leaks the page");
        }
        assert_eq!(get("/stats", Some(WRONG)).code, 401);
    }

    #[test]
    fn with_credentials_the_page_is_at_its_uri_only() {
        let r = get("/stats", Some(GOOD));
        assert_eq!(r.code, 200);
        assert_eq!(r.content_type, "text/html; charset=utf-8");
        assert!(r.body.contains("<td class=l>cp-1</td>"), "{}", r.body);
        for other in ["/", "/status", "/metrics", "/stats/", "/healthz"] {
            assert_eq!(get(other, Some(GOOD)).code, 404, "{other}");
        }
    }
}
