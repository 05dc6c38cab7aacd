//! The one error contract, tried as a new user would with curl: a bad path parameter, an
//! unknown route, a wrong method, an oversized body, a wrong content type, a missing field
//! and a bad query all answer the one JSON error shape with the status the OpenAPI
//! document gives them, and change nothing.

use panal_tests::{Call, Cluster, Reply};
use serde_json::json;

/// The one error shape: `{"error": {"code", "message", "request_id", "fields"?}}`.
fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert!(r.content_type.starts_with("application/json"), "{} answered {}: {}", status, r.content_type, r.text);
    assert_eq!(r.body["error"]["code"], code, "{}", r.text);
    assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", r.text);
    assert!(r.body["error"]["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{}", r.text);
}

/// Sends only the head of a request announcing a `len`-byte body with `Expect:
/// 100-continue`, as curl does for large uploads; returns the status and body answered.
async fn announce_body(api: &str, path: &str, media: &str, token: &str, len: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = api.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: {media}\r\n\
         Content-Length: {len}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "{path}: no answer within 30 s");
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn field_names(r: &Reply) -> Vec<String> {
    r.body["error"]["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("no fields[]: {}", r.text))
        .iter()
        .map(|f| f["field"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_error_is_the_one_json_shape_with_its_documented_status() {
    let c = Cluster::start(1, 0, &[]).await;
    let (_, alice, _) = c.user(0, "alice").await;
    let spec = c.send(0, Call::new("GET", "/openapi.json")).await.body;
    let documents = |path: &str, method: &str, status: u16| {
        spec["paths"][path][method]["responses"][status.to_string()].is_object()
    };

    // A path parameter that does not parse names the parameter.
    let r = c.send(0, Call::new("GET", "/api/v1/books/abc")).await;
    assert_error(&r, 400, "validation_failed");
    assert_eq!(field_names(&r), ["id"]);
    assert!(documents("/api/v1/books/{id}", "get", 400));

    // Unknown route, wrong method (with Allow).
    assert_error(&c.send(0, Call::new("GET", "/api/v1/nope")).await, 404, "not_found");
    let r = c.http.put(format!("{}/api/v1/books", c.nodes[0].api())).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let allow = r.headers().get("allow").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    assert!(allow.contains("GET") && allow.contains("POST"), "Allow: {allow:?}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");

    // A 50 MB body, JSON or CSV, as curl sends it (announced, `Expect: 100-continue`):
    // 413 in JSON on either kind of route, without the body having to be sent.
    let device = c
        .send(0, Call::new("POST", "/api/v1/devices").token(&alice).json(json!({"name": "b", "kind": "battery"})))
        .await;
    assert_eq!(device.status, 201, "{}", device.text);
    let csv_route = format!("/api/v1/devices/{}/battery.csv", device.body["id"]);
    for (path, media) in [("/api/v1/books", "application/json"), (csv_route.as_str(), "text/csv")] {
        let (status, body) = announce_body(&c.nodes[0].api(), path, media, &alice, 50 * 1024 * 1024).await;
        assert_eq!(status, 413, "{path}: {body}");
        let body: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: not JSON: {body}"));
        assert_eq!(body["error"]["code"], "payload_too_large");
    }
    // Sent in full (a client that does not wait): still a 413 in JSON.
    let big = "x".repeat(3 * 1024 * 1024);
    let r = c.send(0, Call::new("POST", "/api/v1/books").token(&alice).text("application/json", &big)).await;
    assert_error(&r, 413, "payload_too_large");
    assert!(documents("/api/v1/books", "post", 413));

    // The wrong content type: the same code and status on a JSON route and on the CSV route.
    let r = c.send(0, Call::new("POST", "/api/v1/books").token(&alice).text("text/csv", "a,b\n1,2\n")).await;
    assert_error(&r, 415, "unsupported_media_type");
    let r = c.send(0, Call::new("POST", &csv_route).token(&alice).json(json!({"soc": 1}))).await;
    assert_error(&r, 415, "unsupported_media_type");
    assert!(documents("/api/v1/books", "post", 415));

    // Missing fields are all named at once, not in serde's words; a wrong type names its field.
    let r = c.send(0, Call::new("POST", "/api/v1/books").token(&alice).json(json!({"title": "T"}))).await;
    assert_error(&r, 400, "validation_failed");
    let mut missing = field_names(&r);
    missing.sort();
    assert_eq!(missing, ["author", "currency", "price_cents", "stock"], "{}", r.text);
    let r = c
        .send(0, Call::new("POST", "/api/v1/orders").token(&alice).json(json!({"book_id": "x", "quantity": "y"})))
        .await;
    assert_error(&r, 400, "validation_failed");
    assert_eq!(field_names(&r), ["book_id", "quantity"], "{}", r.text);
    let r = c.send(0, Call::new("POST", "/api/v1/books").token(&alice).text("application/json", "{not json")).await;
    assert_error(&r, 400, "malformed_json");

    // Bad query parameters: every one named.
    let r = c.send(0, Call::new("GET", "/api/v1/books?limit=abc&cursor=x")).await;
    assert_error(&r, 400, "validation_failed");
    assert!(field_names(&r).contains(&"limit".to_string()), "{}", r.text);

    // Oversized headers: 431 in JSON.
    let r = c.send(0, Call::new("GET", "/api/v1/books").header("x-padding", "p".repeat(20 * 1024))).await;
    assert_error(&r, 431, "headers_too_large");

    // An index the cluster never reached is refused at once, not waited for.
    let started = std::time::Instant::now();
    let r = c.send(0, Call::new("GET", "/api/v1/books").header("x-panal-index", u64::MAX / 2)).await;
    assert_error(&r, 422, "index_ahead");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "took {:?}", started.elapsed());

    // None of it changed anything: alice still has no books.
    let mine = c.send(0, Call::new("GET", "/api/v1/books?author=T")).await;
    assert_eq!(mine.body["items"].as_array().map(Vec::len), Some(0), "{}", mine.text);
}
