//! Sign-in, sessions, API tokens and CSRF protection, as one axum middleware in front of every route.
//!
//! * A browser signs in with a form post to `/auth/login` and gets a session cookie (`HttpOnly`,
//!   `SameSite=Strict`). The REST API also accepts `Authorization: Bearer hwt_…` personal API tokens.
//! * Who is signed in goes into the request's extensions as [`orchestrator::accounts::User`]; the REST handlers and
//!   the server functions ask its role (`Role::may`) before they act.
//! * A state-changing request that carries the session cookie must come from this site (`Sec-Fetch-Site`, else
//!   `Origin`), so another site cannot make a signed-in browser fail a VM over.

use axum::extract::{Form, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use orchestrator::access::safe_next;
use orchestrator::accounts::{AccountError, Accounts, AuditEntry, SessionToken, User, SESSION_MS};
use orchestrator::service::system_clock;
use serde::Deserialize;
use serde_json::json;

pub const SESSION_COOKIE: &str = "homeward_session";

/// Paths anyone may open: the sign-in page and its form, health, the vault's name for the sign-in page's header,
/// and the site's static files.
fn is_public(path: &str) -> bool {
    matches!(path, "/login" | "/auth/login" | "/healthz" | "/favicon.ico" | "/api/vault/summary")
        || path.starts_with("/pkg/")
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a cookie-carrying, state-changing request comes from a page of this site. Browsers send
/// `Sec-Fetch-Site`; older ones at least `Origin`, which must name the host the request went to.
pub fn same_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site == "same-origin" || site == "none";
    }
    match (headers.get(ORIGIN).and_then(|v| v.to_str().ok()), headers.get(HOST).and_then(|v| v.to_str().ok())) {
        (Some(origin), Some(host)) => origin.split_once("://").is_some_and(|(_, h)| h == host),
        _ => false,
    }
}

fn deny(status: StatusCode, code: &str, message: &str, action: &str) -> Response {
    (status, Json(json!({"code": code, "message": message, "recommended_action": action}))).into_response()
}

/// Resolves who is calling, enforces CSRF, and sends the signed-out to the sign-in page (pages) or a 401 (API).
pub async fn authenticate(State(accounts): State<Accounts>, mut req: Request, next: Next) -> Response {
    let now = system_clock();
    let headers = req.headers();
    // The scheme is case-insensitive (RFC 9110): "bearer" works as well as "Bearer".
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token);
    let session = cookie(headers, SESSION_COOKIE);
    let user = match (bearer, session) {
        (Some(t), _) => accounts.token_user(t.trim(), now).await,
        (None, Some(s)) => accounts.session_user(s, now).await,
        (None, None) => Ok(None),
    };
    let user = match user {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "reading sessions failed");
            return deny(StatusCode::SERVICE_UNAVAILABLE, "unavailable", UNAVAILABLE, RETRY);
        }
    };
    let state_changing = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    // A token is never sent by a browser on its own, so only cookie (and sign-in form) requests can be forged; a
    // request with neither is simply signed out (401 below), not a forgery.
    let forgeable = session.is_some() || req.uri().path().starts_with("/auth/");
    if state_changing && bearer.is_none() && forgeable && !same_site(req.headers()) {
        return deny(
            StatusCode::FORBIDDEN,
            "cross-site-request",
            "This request did not come from a page of this portal, so it was refused.",
            "Use the portal's own pages, or call the API with an API token.",
        );
    }
    let path = req.uri().path().to_owned();
    match user {
        Some(u) => {
            if let (None, Some(s)) = (bearer, session) {
                let s = SessionToken(s.to_owned());
                req.extensions_mut().insert(s);
            }
            req.extensions_mut().insert(u);
            next.run(req).await
        }
        None if is_public(&path) => next.run(req).await,
        None if path.starts_with("/api/") || path.starts_with("/events/") => deny(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Sign in first: this needs a session or an API token.",
            "Send 'Authorization: Bearer <token>' (create one with `homeward users token <name>`), or sign in at /login.",
        ),
        None => {
            let target = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let to = format!("/login?next={}", urlencode(target));
            (StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response()
        }
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
    next: Option<String>,
}

/// `Secure` whenever the browser came over HTTPS (see [`crate::https::over_https`]); the embedded default serves
/// plain HTTP on localhost, where a `Secure` cookie would never come back.
fn session_cookie(value: &str, max_age_s: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .expect("cookie is ASCII")
}

/// The sign-in form's handler state: the accounts, and this node's count of failed attempts.
#[derive(Clone)]
pub struct SignIn {
    pub accounts: Accounts,
    pub throttle: std::sync::Arc<crate::throttle::SignInThrottle>,
}

pub async fn login(
    State(SignIn { accounts, throttle }): State<SignIn>,
    client: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    https: Option<axum::Extension<crate::https::Https>>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let secure = crate::https::over_https(https.map(|h| h.0), &headers);
    let now = system_clock();
    let next = safe_next(f.next.as_deref());
    let addr = client.map(|c| c.0 .0.ip());
    // Refused before any password hashing: a flood costs the node nothing.
    if let Err(b) = throttle.check(&f.name, addr, now) {
        return throttled(b.retry_after_s);
    }
    let audit = |user: &str, role: &str, outcome: &str| AuditEntry {
        at: now,
        user_name: user.to_owned(),
        role: role.to_owned(),
        action: "sign-in".into(),
        target: "portal".into(),
        outcome: outcome.into(),
        ..AuditEntry::default()
    };
    match accounts.verify_password(&f.name, &f.password).await {
        Ok(user) => match accounts.create_session(&user, now).await {
            Ok(token) => {
                throttle.succeeded(&f.name);
                let _ = accounts.audit(&audit(&user.name, user.role.as_str(), "succeeded")).await;
                let mut r = (StatusCode::SEE_OTHER, [(LOCATION, next)]).into_response();
                r.headers_mut().insert(SET_COOKIE, session_cookie(&token, SESSION_MS / 1000, secure));
                r
            }
            Err(e) => {
                tracing::error!(error = %e, "starting a session failed");
                deny(StatusCode::SERVICE_UNAVAILABLE, "unavailable", UNAVAILABLE, RETRY)
            }
        },
        Err(AccountError::BadCredentials) => {
            // What was typed as a name is stored only when it is an account's (it is sometimes a password).
            let known = accounts.is_account(&f.name).await.unwrap_or(false);
            let who = if known { f.name.trim() } else { "(unknown account)" };
            let blocked = throttle.failed(&f.name, addr, now);
            let _ = accounts.audit(&audit(who, "", "denied")).await;
            if let Some(b) = blocked {
                let mut entry = audit(who, "", "throttled");
                entry.reason = Some(format!("too many failed sign-ins: refused for {} s", b.retry_after_s));
                let _ = accounts.audit(&entry).await;
            }
            let to = format!("/login?error=credentials&next={}", urlencode(&next));
            (StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "checking a password failed");
            deny(StatusCode::SERVICE_UNAVAILABLE, "unavailable", UNAVAILABLE, RETRY)
        }
    }
}

/// What a client is told when the accounts cannot be read: the cause is in the log, under the request's id.
const UNAVAILABLE: &str = "The vault's database is busy or unreachable.";
const RETRY: &str = "Retry in a few seconds; the server log has the cause under this response's X-Request-Id.";

/// 429 with `Retry-After`, as a page a browser's form post can show.
fn throttled(retry_after_s: u64) -> Response {
    let body = format!(
        "<!doctype html><title>Too many sign-in attempts · Homeward</title><main><h1>Too many failed sign-ins</h1>\
         <p>Too many failed sign-ins for this account or from this address. Try again in {retry_after_s} s.</p>\
         <p><a href=\"/login\">Back to sign-in</a></p></main>"
    );
    let mut r = (StatusCode::TOO_MANY_REQUESTS, axum::response::Html(body)).into_response();
    r.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    r
}

pub async fn logout(
    State(accounts): State<Accounts>,
    headers: HeaderMap,
    user: Option<axum::Extension<User>>,
    https: Option<axum::Extension<crate::https::Https>>,
) -> Response {
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        let _ = accounts.end_session(token).await;
    }
    if let Some(axum::Extension(u)) = user {
        let entry = AuditEntry {
            at: system_clock(),
            user_name: u.name,
            role: u.role.as_str().into(),
            action: "sign-out".into(),
            target: "portal".into(),
            outcome: "succeeded".into(),
            ..AuditEntry::default()
        };
        let _ = accounts.audit(&entry).await;
    }
    let mut r = (StatusCode::SEE_OTHER, [(LOCATION, "/login")]).into_response();
    r.headers_mut().insert(SET_COOKIE, session_cookie("", 0, crate::https::over_https(https.map(|h| h.0), &headers)));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn same_site_trusts_fetch_metadata_then_origin() {
        assert!(same_site(&h(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_site(&h(&[("sec-fetch-site", "cross-site"), ("origin", "http://a:1"), ("host", "a:1")])));
        assert!(same_site(&h(&[("origin", "http://127.0.0.1:8080"), ("host", "127.0.0.1:8080")])));
        assert!(!same_site(&h(&[("origin", "http://evil.example"), ("host", "127.0.0.1:8080")])));
        assert!(!same_site(&h(&[("host", "127.0.0.1:8080")])), "no evidence is no trust");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let m = h(&[("cookie", "a=1; homeward_session=abc; b=2")]);
        assert_eq!(cookie(&m, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h(&[]), SESSION_COOKIE), None);
    }

    #[test]
    fn redirect_targets_are_encoded() {
        assert_eq!(urlencode("/jobs?state=failed&x=a b"), "/jobs%3Fstate%3Dfailed%26x%3Da%20b");
    }
}
