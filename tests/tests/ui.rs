//! The web console without a browser, on a 3-node cluster: every node serves `/ui/` with
//! the right content types; a browser session is an HttpOnly, SameSite=Strict cookie;
//! cookie-authenticated writes need the CSRF token and a same Origin; logout revokes the
//! session everywhere. (scripts/browser-test.sh drives the same console in Chromium.)

use panal_tests::{Call, Cluster};
use reqwest::header::{HeaderMap, COOKIE, SET_COOKIE};
use serde_json::{json, Value};

/// Sends `method path` to node `i` with `headers` and an optional JSON body; returns the
/// status, the response headers and the body.
async fn send(
    c: &Cluster,
    i: usize,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, HeaderMap, Value) {
    let mut req = c.http.request(method, format!("{}{path}", c.nodes[i].api()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// The `Set-Cookie` value for cookie `name`.
fn set_cookie(headers: &HeaderMap, name: &str) -> String {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no Set-Cookie for {name} in {headers:?}"))
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_is_served_everywhere_and_browser_sessions_resist_csrf() {
    let c = Cluster::start(3, 0, &[]).await;

    for i in 0..3 {
        for (path, content_type) in [
            ("/ui/", "text/html; charset=utf-8"),
            ("/ui/app.js", "text/javascript; charset=utf-8"),
            ("/ui/lib.js", "text/javascript; charset=utf-8"),
            ("/ui/shop.js", "text/javascript; charset=utf-8"),
            ("/ui/cluster.js", "text/javascript; charset=utf-8"),
            ("/ui/energy.js", "text/javascript; charset=utf-8"),
            ("/ui/app.css", "text/css; charset=utf-8"),
            ("/ui/icon.svg", "image/svg+xml"),
        ] {
            let r = c.http.get(format!("{}{path}", c.nodes[i].api())).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path} on node {i}");
            assert_eq!(r.headers()["content-type"], content_type, "{path} on node {i}");
            assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'self'"));
        }
        let missing = c.http.get(format!("{}/ui/nope.js", c.nodes[i].api())).send().await.unwrap();
        assert_eq!(missing.status(), 404);
    }

    let (_, _, registered) = c.user(0, "webby").await;
    // Requests to other nodes wait for the registration.
    let after = registered.to_string();
    let host = c.nodes[1].api().trim_start_matches("http://").to_string();
    let origin = format!("http://{host}");
    let credentials = json!({"username": "webby", "password": "webby-password"});

    // A foreign page cannot sign the browser in; a bad password is the auth service's 401.
    let (status, _, body) = send(
        &c,
        1,
        reqwest::Method::POST,
        "/ui/session",
        &[("origin", "https://evil.example"), ("x-panal-index", after.as_str())],
        Some(credentials.clone()),
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    let wrong = json!({"username": "webby", "password": "not-it"});
    let (status, _, body) =
        send(&c, 1, reqwest::Method::POST, "/ui/session", &[("x-panal-index", after.as_str())], Some(wrong)).await;
    assert_eq!(status, 401, "{body}");

    let same_origin: &[(&str, &str)] = &[("origin", origin.as_str()), ("x-panal-index", after.as_str())];
    let (status, headers, body) =
        send(&c, 1, reqwest::Method::POST, "/ui/session", same_origin, Some(credentials)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("access_token").is_none(), "the token stays in the HttpOnly cookie: {body}");
    let session = set_cookie(&headers, "panal_session");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(attr), "{session} lacks {attr}");
    }
    assert!(!session.contains("Secure"), "plain HTTP: no Secure flag: {session}");
    let csrf_cookie = set_cookie(&headers, "panal_csrf");
    assert!(!csrf_cookie.contains("HttpOnly") && csrf_cookie.contains("SameSite=Strict"), "{csrf_cookie}");
    let (jwt, csrf) = (cookie_value(&session), cookie_value(&csrf_cookie));
    let cookies = format!("panal_session={jwt}; panal_csrf={csrf}");

    // Behind a TLS-terminating proxy the cookies are Secure.
    let credentials = json!({"username": "webby", "password": "webby-password"});
    let https: &[(&str, &str)] = &[("x-forwarded-proto", "https"), ("x-panal-index", after.as_str())];
    let (_, headers, _) = send(&c, 2, reqwest::Method::POST, "/ui/session", https, Some(credentials)).await;
    assert!(set_cookie(&headers, "panal_session").contains("; Secure"));

    // Reads with the cookie alone, on any node.
    let (status, _, me) =
        send(&c, 2, reqwest::Method::GET, "/api/v1/auth/me", &[("cookie", cookies.as_str())], None).await;
    assert_eq!((status, me["username"].as_str()), (200, Some("webby")), "{me}");

    // Writes (sent to the node the page came from): no token, a wrong token, or a foreign
    // Origin are refused and change nothing.
    let book = json!({"title": "Cookies", "author": "A. Baker", "description": "", "price_cents": 500, "currency": "EUR", "stock": 1});
    let attempts: [&[(&str, &str)]; 3] = [
        &[("cookie", cookies.as_str()), ("origin", origin.as_str())],
        &[
            ("cookie", cookies.as_str()),
            ("origin", origin.as_str()),
            ("x-csrf-token", "00112233445566778899aabbccddeeff"),
        ],
        &[("cookie", cookies.as_str()), ("origin", "https://evil.example"), ("x-csrf-token", csrf.as_str())],
    ];
    for headers in attempts {
        let (status, _, body) = send(&c, 1, reqwest::Method::POST, "/api/v1/books", headers, Some(book.clone())).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{headers:?}: {body}");
    }
    let listed =
        c.send(1, Call::new("GET", "/api/v1/books?q=Cookies").header("x-panal-consistency", "linearizable")).await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(0), "{}", listed.text);

    let ok: &[(&str, &str)] =
        &[("cookie", cookies.as_str()), ("origin", origin.as_str()), ("x-csrf-token", csrf.as_str())];
    let (status, _, created) = send(&c, 1, reqwest::Method::POST, "/api/v1/books", ok, Some(book)).await;
    assert_eq!((status, created["seller"].as_str()), (201, Some("webby")), "{created}");

    // Logout needs the token too, then revokes the session cluster-wide and clears the cookies.
    let (status, _, _) =
        send(&c, 1, reqwest::Method::DELETE, "/ui/session", &[("cookie", cookies.as_str())], None).await;
    assert_eq!(status, 403);
    let (status, headers, body) = send(&c, 1, reqwest::Method::DELETE, "/ui/session", ok, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(set_cookie(&headers, "panal_session").contains("Max-Age=0"));
    let index = headers.get("x-panal-index").and_then(|v| v.to_str().ok()).unwrap_or("0").to_string();
    for i in 0..3 {
        let (status, _, body) = send(
            &c,
            i,
            reqwest::Method::GET,
            "/api/v1/auth/me",
            &[(COOKIE.as_str(), cookies.as_str()), ("x-panal-index", index.as_str())],
            None,
        )
        .await;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_token")), "node {i}: {body}");
    }
}
