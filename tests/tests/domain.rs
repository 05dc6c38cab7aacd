//! What a new user tripped over (issue 19), end to end: CORS for browser clients on another
//! origin (`--cors-origin`), readings from the future, rounded energy figures, one tax rule,
//! 404 for orders the caller may not see, no-op PATCHes, an empty author filter, and the
//! per-service series present from start-up.

use panal_tests::{poll_some, Call, Cluster};
use serde_json::{json, Value};

const CONSOLE: &str = "https://console.example.com";

/// A CORS preflight for `POST /api/v1/books` from `origin`: (status, allowed origin, allowed methods).
async fn preflight(c: &Cluster, origin: &str) -> (u16, Option<String>, Option<String>) {
    let resp = c
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/api/v1/books", c.nodes[0].api()))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type, idempotency-key")
        .send()
        .await
        .expect("preflight");
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(String::from);
    (resp.status().as_u16(), header("access-control-allow-origin"), header("access-control-allow-methods"))
}

/// `GET /api/v1/books` from `origin`: (status, allowed origin, exposed headers).
async fn get_from(c: &Cluster, origin: &str) -> (u16, Option<String>, Option<String>) {
    let resp = c.http.get(format!("{}/api/v1/books", c.nodes[0].api())).header("origin", origin).send().await.unwrap();
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(String::from);
    (resp.status().as_u16(), header("access-control-allow-origin"), header("access-control-expose-headers"))
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_origin_answers_preflights_for_the_allowed_origin() {
    let c = Cluster::start(1, 0, &["--cors-origin", CONSOLE]).await;
    let (status, origin, methods) = preflight(&c, CONSOLE).await;
    assert!((200..300).contains(&status), "preflight answered {status}");
    assert_eq!(origin.as_deref(), Some(CONSOLE));
    assert!(methods.is_some_and(|m| m.contains("POST") && m.contains("PATCH")));
    let (status, origin, exposed) = get_from(&c, CONSOLE).await;
    assert_eq!((status, origin.as_deref()), (200, Some(CONSOLE)));
    assert!(exposed.is_some_and(|e| e.contains("x-panal-index")), "the session index is readable");
    let (_, other, _) = preflight(&c, "https://elsewhere.example.com").await;
    assert_eq!(other, None, "another origin is not allowed");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_cors_no_cors_headers_and_the_domain_rules_hold_end_to_end() {
    let c = Cluster::start(1, 0, &[]).await;
    c.wait_mesh(0).await;

    // CORS is off by default: a preflight is an unknown method, nothing allows an origin.
    assert_eq!(preflight(&c, CONSOLE).await, (405, None, None));
    assert_eq!(get_from(&c, CONSOLE).await.1, None);

    // Every per-service series is on /metrics from start-up, at 0.
    let metrics = c.metrics(0).await;
    for service in ["auth", "catalog", "energy", "prediction", "metrics"] {
        for name in ["panal_actor_restarts_total", "panal_service_failures_total", "panal_gateway_retries_total"] {
            let line = format!("{name}{{service=\"{service}\"}} 0");
            assert!(metrics.lines().any(|l| l == line), "{line} missing from /metrics");
        }
        assert!(metrics.contains(&format!("panal_gateway_in_flight{{service=\"{service}\"}}")), "in flight: {service}");
    }
    poll_some("panal_process_cpu_seconds_total as a counter", || async {
        c.metrics(0).await.contains("# TYPE panal_process_cpu_seconds_total counter").then_some(())
    })
    .await;

    // A reading from the future is refused and names the reading; the past is fine.
    let (_, user, _) = c.user(0, "ada").await;
    let d =
        c.send(0, Call::new("POST", "/api/v1/devices").token(&user).json(json!({"name": "m", "kind": "meter"}))).await;
    let device = d.body["id"].as_i64().unwrap();
    let readings = format!("/api/v1/devices/{device}/readings");
    let future = c
        .send(
            0,
            Call::new("POST", &readings).token(&user).json(json!({"ts": "2099-12-02T02:00:00Z", "consumption_kwh": 1})),
        )
        .await;
    assert_eq!((future.status, future.body["error"]["code"].as_str()), (422, Some("rule_violated")), "{}", future.text);
    assert_eq!(future.body["error"]["fields"][0]["field"], "readings[0].ts", "{}", future.text);
    let past: Vec<Value> = [0.1, 0.2, 0.3]
        .iter()
        .enumerate()
        .map(|(i, kwh)| json!({"ts": format!("2026-10-01T00:0{i}:00Z"), "consumption_kwh": kwh}))
        .collect();
    let w = c.send(0, Call::new("POST", &readings).token(&user).json(json!(past))).await;
    assert_eq!(w.status, 201, "{}", w.text);
    // Energy figures to the watt-hour: 0.6, not 0.6000000000000001.
    let summary = c.send(0, Call::new("GET", "/api/v1/energy/summary").token(&user).after(w.index)).await;
    assert!(summary.text.contains("\"consumption_kwh\":0.6,"), "{}", summary.text);
    // The owner deletes a range of readings ([from, to)); a stranger cannot see the device.
    let range = format!("{readings}?from=2026-10-01T00:01:00Z&to=2026-10-01T00:02:00Z");
    let (_, other, _) = c.user(0, "olga").await;
    assert_eq!(c.send(0, Call::new("DELETE", &range).token(&other)).await.status, 404);
    let deleted = c.send(0, Call::new("DELETE", &range).token(&user)).await;
    assert_eq!((deleted.status, deleted.body["deleted"].as_u64()), (200, Some(1)), "{}", deleted.text);
    let left = c.send(0, Call::new("GET", &readings).token(&user).after(deleted.index)).await;
    let left: Vec<f64> =
        left.body["items"].as_array().unwrap().iter().map(|a| a["consumption_kwh"]["sum"].as_f64().unwrap()).collect();
    assert_eq!(left, [0.1, 0.3]);

    // Daily forecasts fit whole days only: three weeks of a clean 33.6 kWh/day read up to
    // this hour (today is partial, and so is the first day) predict 33.6 for every day.
    let now_hour = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 3600;
    let hourly: Vec<Value> =
        (1..=21 * 24).map(|k| json!({"ts": rfc3339_hour(now_hour - k), "consumption_kwh": 1.4})).collect();
    let d = c
        .send(0, Call::new("POST", "/api/v1/devices").token(&user).json(json!({"name": "flat", "kind": "meter"})))
        .await;
    let flat = d.body["id"].as_i64().unwrap();
    let w =
        c.send(0, Call::new("POST", format!("/api/v1/devices/{flat}/readings")).token(&user).json(json!(hourly))).await;
    assert_eq!(w.status, 201, "{}", w.text);
    let f = c
        .send(
            0,
            Call::new("GET", format!("/api/v1/devices/{flat}/forecast?horizon=7d&interval=day"))
                .token(&user)
                .after(w.index),
        )
        .await;
    assert_eq!(f.status, 200, "{}", f.text);
    let values: Vec<f64> = f.body["points"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap()).collect();
    assert_eq!(values, [33.6; 7], "{}", f.text);

    // The bookstore: one tax rule, 404 for orders the caller may not see, no-op PATCHes.
    let (_, seller, _) = c.user(0, "sam").await;
    let (_, buyer, _) = c.user(0, "bea").await;
    let (_, stranger, _) = c.user(0, "eve").await;
    let book = json!({"title": "Dune", "author": "Frank Herbert", "price_cents": 2500, "currency": "EUR", "stock": 5});
    let b = c.send(0, Call::new("POST", "/api/v1/books").token(&seller).json(book)).await;
    assert_eq!(b.status, 201, "{}", b.text);
    let book_id = b.body["id"].as_i64().unwrap();
    let patched =
        c.send(0, Call::new("PATCH", format!("/api/v1/books/{book_id}")).token(&seller).json(json!({}))).await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.body["updated_at"], b.body["updated_at"], "an empty PATCH changes nothing");
    let any_author = c.send(0, Call::new("GET", "/api/v1/books?author=").after(patched.index)).await;
    assert_eq!(any_author.body["items"].as_array().map(Vec::len), Some(1), "{}", any_author.text);

    let o = c
        .send(0, Call::new("POST", "/api/v1/orders").token(&buyer).json(json!({"book_id": book_id, "quantity": 2})))
        .await;
    assert_eq!(o.status, 201, "{}", o.text);
    let order_id = o.body["id"].as_i64().unwrap();
    let card = json!({"card_number": "4242 4242 4242 4242", "expiry": "12/39", "cvc": "123"});
    let pay = |token: &str| Call::new("POST", format!("/api/v1/orders/{order_id}/pay")).token(token).json(card.clone());
    let by_stranger = c.send(0, pay(&stranger)).await;
    assert_eq!(by_stranger.status, 404, "as reading it is: {}", by_stranger.text);
    assert_eq!(c.send(0, pay(&seller)).await.status, 403, "the seller sees the order");
    let paid = c.send(0, pay(&buyer)).await;
    assert_eq!(paid.status, 200, "{}", paid.text);
    let ship =
        Call::new("POST", format!("/api/v1/orders/{order_id}/ship")).token(&stranger).json(json!({"address": "x"}));
    assert_eq!(c.send(0, ship).await.status, 404);
    let invoice = c.send(0, Call::new("GET", format!("/api/v1/orders/{order_id}/invoice")).token(&buyer)).await;
    assert_eq!(invoice.status, 200, "{}", invoice.text);
    assert_eq!(invoice.body["total_cents"], paid.body["total_cents"], "the invoice totals what was charged");
    assert_eq!(
        (
            invoice.body["subtotal_cents"].as_i64(),
            invoice.body["tax_cents"].as_i64(),
            invoice.body["total_cents"].as_i64()
        ),
        (Some(4132), Some(868), Some(5000))
    );
}

/// RFC 3339 of the start of an hour counted from the epoch.
fn rfc3339_hour(hour: u64) -> String {
    let at = chrono::DateTime::from_timestamp(hour as i64 * 3600, 0).expect("a time in range");
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
