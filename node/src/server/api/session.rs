//! Browser sessions: the JWT in an HttpOnly, SameSite=Strict cookie, and the checks a
//! cookie-authenticated request must pass (CSRF token derived from the JWT, no foreign
//! `Origin`). The `Caller` extractor reads sessions through here; the web console opens
//! and closes them.

use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// HttpOnly cookie holding the session's JWT.
pub const SESSION_COOKIE: &str = "panal_session";
/// Script-readable cookie holding the session's CSRF token.
pub const CSRF_COOKIE: &str = "panal_csrf";
/// Header a cookie-authenticated write must echo the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The CSRF token of a session: bound to its JWT, so a token planted by another site or a
/// sibling domain never matches.
pub fn csrf_token(jwt: &str) -> String {
    hex::encode(&Sha256::digest(format!("panal-csrf\0{jwt}").as_bytes())[..16])
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Whether the browser reached us over HTTPS: this node's own TLS (`served_over_tls`, the
/// [`ServedOverTls`](crate::server::api_tls::ServedOverTls) mark), or a TLS-terminating proxy.
pub fn over_https(headers: &HeaderMap, served_over_tls: bool) -> bool {
    served_over_tls
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// A browser names the page that sent a request in `Origin`: it must be this server
/// (same host and port). Requests without `Origin` are not from a cross-site page: browsers
/// send it on every cross-origin request and on every same-origin `POST`/`PUT`/`DELETE`.
pub fn check_origin(headers: &HeaderMap) -> Result<()> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.strip_prefix("http://").or_else(|| o.strip_prefix("https://")))
        .unwrap_or_default();
    if host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
        return Err(Error::Forbidden("cross-origin request refused: the Origin is not this server".into()));
    }
    Ok(())
}

/// The session JWT of a cookie-authenticated request, once it passed the CSRF checks that
/// a state-changing method needs. `None`: no session cookie. Called by the `Caller`
/// extractor when there is no `Authorization` header.
pub fn session_token(parts: &Parts) -> Result<Option<String>> {
    let Some(jwt) = cookie(&parts.headers, SESSION_COOKIE) else { return Ok(None) };
    if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        check_origin(&parts.headers)?;
        let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let expected = csrf_token(jwt);
        // Constant time: the comparison must not reveal how much of a guess was right.
        let same = sent.len() == expected.len()
            && sent.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if !same {
            return Err(Error::Forbidden(format!(
                "missing or wrong CSRF token: send the {CSRF_COOKIE} cookie's value in {CSRF_HEADER}"
            )));
        }
    }
    Ok(Some(jwt.to_string()))
}

/// Whether the request carries a session cookie.
pub fn has_session(parts: &Parts) -> bool {
    cookie(&parts.headers, SESSION_COOKIE).is_some()
}
