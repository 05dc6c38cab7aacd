//! CORS for browser clients served from another origin (`--cors-origin`, env
//! `PANAL_CORS_ORIGIN`). Off by default: without the flag no response carries CORS headers
//! and a preflight `OPTIONS` is answered like any unknown method (405).
//!
//! The API authenticates with bearer tokens, never cookies, so credentials are not allowed:
//! `*` (any origin) is then safe to offer for public deployments.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Request headers a browser client may send besides the CORS-safelisted ones.
const ALLOWED_HEADERS: [&str; 6] =
    ["authorization", "content-type", "idempotency-key", "x-panal-consistency", "x-panal-index", "x-request-id"];

/// Response headers a browser client may read besides the CORS-safelisted ones.
const EXPOSED_HEADERS: [&str; 5] = ["x-panal-index", "x-panal-node", "x-request-id", "retry-after", "location"];

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Checks one `--cors-origin` value: `*`, or a scheme, host and optional port
/// (`https://console.example.com`, `http://localhost:5173`) exactly as browsers send it in
/// `Origin`: no path, no trailing slash. Returned in lower case, as browsers send it.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let origin = text.trim().to_ascii_lowercase();
    if origin == "*" {
        return Ok(origin);
    }
    let bad =
        || format!("{text:?} is not an origin: use `*` or scheme://host[:port] such as https://console.example.com");
    let host = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")).ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        && !host.starts_with(':');
    if !host_ok {
        return Err(bad());
    }
    Ok(origin)
}

/// The CORS layer for `origins` (each checked by [`parse_origin`]; `*` allows any), or
/// `None` when the list is empty: CORS is off.
pub fn layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
            .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
            .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

/// The API router, wrapped in the CORS layer when `origins` is not empty. Outermost, so
/// that preflights are answered before routing and every answer (errors included) carries
/// the headers a browser needs to read it.
pub fn wrap(router: Router, origins: &[String]) -> Router {
    match layer(origins) {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn origins_are_checked_and_lower_cased() {
        assert_eq!(parse_origin("*"), Ok("*".into()));
        assert_eq!(parse_origin("https://Console.Example.com"), Ok("https://console.example.com".into()));
        assert_eq!(parse_origin(" http://localhost:5173 "), Ok("http://localhost:5173".into()));
        assert_eq!(parse_origin("http://[::1]:8080"), Ok("http://[::1]:8080".into()));
        for bad in
            ["", "console.example.com", "https://", "https://x.com/", "https://x.com/app", "ftp://x.com", "https://a b"]
        {
            assert!(parse_origin(bad).is_err(), "{bad:?} must be refused");
        }
    }

    async fn preflight(router: Router, origin: &str) -> axum::http::Response<Body> {
        let req = Request::builder()
            .method(Method::OPTIONS)
            .uri("/api/v1/books")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization, content-type")
            .body(Body::empty())
            .unwrap();
        router.oneshot(req).await.unwrap()
    }

    fn app() -> Router {
        Router::new().route("/api/v1/books", get(|| async { "[]" }))
    }

    #[tokio::test]
    async fn preflights_name_the_allowed_origin_only() {
        let origins = vec!["https://console.example.com".to_string()];
        let ok = preflight(wrap(app(), &origins), "https://console.example.com").await;
        assert!(ok.status().is_success(), "{}", ok.status());
        let h = ok.headers();
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://console.example.com");
        assert!(h[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap().contains("POST"));
        assert!(h[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap().contains("authorization"));
        let other = preflight(wrap(app(), &origins), "https://evil.example.com").await;
        assert!(other.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        let any = preflight(wrap(app(), &["*".to_string()]), "https://anyone.example.com").await;
        assert_eq!(any.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let off = preflight(wrap(app(), &[]), "https://console.example.com").await;
        assert_eq!(off.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(off.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    }
}
