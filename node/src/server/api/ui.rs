//! The web console: static assets under `/ui/` (compiled into the binary, so every node
//! serves the whole console offline) and browser sessions. A session is the JWT in an
//! HttpOnly, SameSite=Strict cookie; writes made with it must carry a CSRF token derived
//! from that JWT (double submit, readable cookie → `X-CSRF-Token` header) and must not come
//! from a foreign `Origin`. Bearer tokens keep working as before.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use panal_actors::auth::ops::{Login, LoginRequest, Logout, TokenResponse};

use super::extract::{CallMeta, Caller, JsonBody};
use super::services::call;
use super::session::{check_origin, csrf_token, over_https, CSRF_COOKIE, SESSION_COOKIE};
use super::AppState;
use crate::error::{Error, Result};
use crate::server::api_tls::ServedOverTls;

/// Largest login answer read back from the auth service.
const MAX_TOKEN_BODY: usize = 64 * 1024;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    Asset { name: "", content_type: "text/html; charset=utf-8", body: include_bytes!("../../../ui/index.html") },
    Asset { name: "app.js", content_type: JS, body: include_bytes!("../../../ui/app.js") },
    Asset { name: "lib.js", content_type: JS, body: include_bytes!("../../../ui/lib.js") },
    Asset { name: "shop.js", content_type: JS, body: include_bytes!("../../../ui/shop.js") },
    Asset { name: "cluster.js", content_type: JS, body: include_bytes!("../../../ui/cluster.js") },
    Asset { name: "energy.js", content_type: JS, body: include_bytes!("../../../ui/energy.js") },
    Asset { name: "app.css", content_type: "text/css; charset=utf-8", body: include_bytes!("../../../ui/app.css") },
    Asset { name: "icon.svg", content_type: "image/svg+xml", body: include_bytes!("../../../ui/icon.svg") },
];

/// Only our own scripts, styles and images; the API on the same origin.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// `/ui/…` (assets) and `/ui/session` (browser sign-in and sign-out).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/ui/") }))
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { asset("") }))
        .route("/ui/session", post(login).delete(logout))
        .route("/ui/{file}", get(|axum::extract::Path(file): axum::extract::Path<String>| async move { asset(&file) }))
}

fn asset(name: &str) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.name == name) else {
        return Error::NotFound(format!("no console file named {name:?}")).into_response();
    };
    let mut resp = (StatusCode::OK, [(header::CONTENT_TYPE, a.content_type)], a.body).into_response();
    let h = resp.headers_mut();
    // Revalidated on each load so that a new binary's console is picked up at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    resp
}

fn set_cookie(resp: &mut Response, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// `Set-Cookie` values opening a session (`max_age` seconds) or, with `None`, closing it.
pub fn session_cookies(jwt: Option<&str>, max_age: i64, secure: bool) -> [String; 2] {
    let secure = if secure { "; Secure" } else { "" };
    let (session, csrf, age) = match jwt {
        Some(jwt) => (jwt.to_string(), csrf_token(jwt), max_age.max(0)),
        None => (String::new(), String::new(), 0),
    };
    [
        format!("{SESSION_COOKIE}={session}; Path=/; Max-Age={age}; HttpOnly; SameSite=Strict{secure}"),
        format!("{CSRF_COOKIE}={csrf}; Path=/; Max-Age={age}; SameSite=Strict{secure}"),
    ]
}

/// `POST /ui/session`'s answer: the token itself stays in the HttpOnly cookie.
#[derive(serde::Serialize)]
struct SessionStarted {
    expires_in: i64,
}

/// `POST /ui/session`: signs a browser in. The token goes into the cookies only; the body
/// says when the session ends. A failed login answers the auth service's error as it is.
async fn login(
    State(s): State<AppState>,
    headers: HeaderMap,
    tls: Option<Extension<ServedOverTls>>,
    meta: CallMeta,
    JsonBody(credentials): JsonBody<LoginRequest>,
) -> Result<Response> {
    // A foreign page must not sign the browser into an account of its choosing either.
    check_origin(&headers)?;
    let answer = call(&s, None, meta, Login { credentials }).await?;
    if answer.status() != StatusCode::OK {
        return Ok(answer);
    }
    let bytes = axum::body::to_bytes(answer.into_body(), MAX_TOKEN_BODY)
        .await
        .map_err(|e| Error::Internal(format!("reading the login answer: {e}")))?;
    let token: TokenResponse =
        serde_json::from_slice(&bytes).map_err(|e| Error::Internal(format!("decoding the login answer: {e}")))?;
    let mut resp = Json(SessionStarted { expires_in: token.expires_in }).into_response();
    for c in session_cookies(Some(&token.access_token), token.expires_in, over_https(&headers, tls.is_some())) {
        set_cookie(&mut resp, c);
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `DELETE /ui/session`: revokes the session's token cluster-wide and clears the cookies.
/// A session that is already invalid (expired, revoked) is cleared too; a request failing
/// the CSRF checks changes nothing.
async fn logout(
    State(s): State<AppState>,
    headers: HeaderMap,
    tls: Option<Extension<ServedOverTls>>,
    caller: std::result::Result<Caller, Error>,
    meta: CallMeta,
) -> Result<Response> {
    let mut resp = match caller {
        Ok(caller) => call(&s, caller, meta, Logout).await?,
        Err(e @ Error::InvalidToken(_)) => e.into_response(),
        Err(e) => return Err(e),
    };
    for c in session_cookies(None, 0, over_https(&headers, tls.is_some())) {
        set_cookie(&mut resp, c);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::api::session::{session_token, CSRF_HEADER};
    use axum::http::request::Parts;
    use axum::http::Method;

    fn parts(method: Method, headers: &[(&str, &str)]) -> Parts {
        let mut req = axum::http::Request::builder().method(method).uri("/api/v1/orders");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_cookie_write_needs_the_session_csrf_token_and_a_same_origin() {
        let jwt = "a.b.c";
        let session = format!("{SESSION_COOKIE}={jwt}; other=1");
        let token = csrf_token(jwt);
        let ok = parts(
            Method::POST,
            &[
                ("cookie", session.as_str()),
                ("host", "127.0.0.1:7700"),
                ("origin", "http://127.0.0.1:7700"),
                (CSRF_HEADER, token.as_str()),
            ],
        );
        assert_eq!(session_token(&ok).unwrap().as_deref(), Some(jwt));
        let no_token = parts(Method::POST, &[("cookie", session.as_str()), ("host", "h:1")]);
        assert!(matches!(session_token(&no_token), Err(Error::Forbidden(_))));
        let other_session = csrf_token("x.y.z");
        let wrong = parts(
            Method::POST,
            &[("cookie", session.as_str()), ("host", "h:1"), (CSRF_HEADER, other_session.as_str())],
        );
        assert!(matches!(session_token(&wrong), Err(Error::Forbidden(_))));
        let foreign = parts(
            Method::DELETE,
            &[
                ("cookie", session.as_str()),
                ("host", "h:1"),
                ("origin", "https://evil.example"),
                (CSRF_HEADER, token.as_str()),
            ],
        );
        assert!(matches!(session_token(&foreign), Err(Error::Forbidden(_))));
        // Reads need no token; no cookie is no session.
        assert_eq!(session_token(&parts(Method::GET, &[("cookie", session.as_str())])).unwrap().as_deref(), Some(jwt));
        assert_eq!(session_token(&parts(Method::POST, &[("cookie", "x=1")])).unwrap(), None);
    }

    #[test]
    fn session_cookies_are_http_only_strict_and_secure_over_https() {
        let [session, csrf] = session_cookies(Some("a.b.c"), 3600, true);
        assert!(session.starts_with("panal_session=a.b.c;"), "{session}");
        for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Max-Age=3600", "Path=/"] {
            assert!(session.contains(attr), "{session} lacks {attr}");
        }
        assert!(!csrf.contains("HttpOnly"), "the script must read the CSRF token: {csrf}");
        assert!(csrf.contains(&csrf_token("a.b.c")));
        let [cleared, _] = session_cookies(None, 0, false);
        assert!(cleared.contains("Max-Age=0") && !cleared.contains("Secure"), "{cleared}");
    }

    #[test]
    fn every_asset_is_served_with_its_type_and_unknown_files_are_404() {
        for a in ASSETS {
            let r = asset(a.name);
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()[header::CONTENT_TYPE], a.content_type);
        }
        assert_eq!(asset("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        let total: usize = ASSETS.iter().map(|a| a.body.len()).sum();
        assert!(total < 200 * 1024, "the console must stay under 200 KB, it is {total} bytes");
    }

    #[test]
    fn every_module_a_script_imports_is_served() {
        for a in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = std::str::from_utf8(a.body).unwrap();
            // Static `from './x.js'` and dynamic `import('./x.js')` alike.
            for (i, _) in text.match_indices("'./") {
                let name = &text[i + 3..];
                let name = &name[..name.find('\'').unwrap()];
                assert!(ASSETS.iter().any(|b| b.name == name), "{} imports {name}, which is not served", a.name);
            }
        }
    }
}
