//! The OpenAPI contract matches the server: every documented operation is called with a
//! valid request and must answer one of its documented statuses with a documented content
//! type; every operation has a sample here, so a new route cannot go unchecked.

use std::collections::BTreeMap;

use panal_tests::{Call, Cluster};
use serde_json::{json, Value};

/// A valid body for each operation that takes one, keyed by "METHOD template".
fn sample_body(op: &str) -> Option<Value> {
    Some(match op {
        "POST /api/v1/auth/register" => json!({"username": "newcomer", "password": "long enough password"}),
        "POST /api/v1/auth/login" => json!({"username": "owner", "password": "owner-password"}),
        "POST /api/v1/books" => json!({"title": "T", "author": "A", "price_cents": 100, "currency": "USD", "stock": 1}),
        "PATCH /api/v1/books/{id}" => json!({"stock": 9}),
        "POST /api/v1/orders" => return None, // needs the other user's listing: built in the test
        "POST /api/v1/orders/{id}/pay" => json!({"card_number": "4242424242424242", "expiry": "01/40", "cvc": "999"}),
        "POST /api/v1/orders/{id}/ship" => json!({"address": "1 Spec Street"}),
        "POST /api/v1/devices" => json!({"name": "d", "kind": "battery"}),
        "PATCH /api/v1/devices/{id}" => json!({"name": "renamed"}),
        "POST /api/v1/devices/{id}/readings" => json!({"ts": "2026-10-01T00:00:00Z", "consumption_kwh": 1.5}),
        "POST /api/v1/admin/clock/advance" => json!({"seconds": 1}),
        "POST /api/v1/admin/chaos/panic" => json!({"service": "auth"}),
        "POST /api/v1/admin/chaos/delay" => json!({"service": "auth", "ms": 1}),
        "POST /api/v1/admin/chaos/isolate" => json!({"seconds": 1}),
        _ => return None,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_route_answers_as_documented() {
    let c = Cluster::start(1, 0, &[]).await;
    let spec = c.send(0, Call::new("GET", "/openapi.json")).await;
    assert_eq!(spec.status, 200);
    assert_eq!(spec.body["openapi"].as_str().map(|v| &v[..2]), Some("3."), "OpenAPI 3");

    let (_, owner, _) = c.user(0, "owner").await;
    let (_, seller, _) = c.user(0, "seller").await;
    let (_, leaving, _) = c.user(0, "leaving").await;
    let admin = c.token().await;
    let book = c
        .send(
            0,
            Call::new("POST", "/api/v1/books")
                .token(&seller)
                .json(json!({"title": "S", "author": "A", "price_cents": 100, "currency": "EUR", "stock": 5})),
        )
        .await;
    let book_id = book.body["id"].as_i64().unwrap();
    let device = c
        .send(0, Call::new("POST", "/api/v1/devices").token(&owner).json(json!({"name": "bat", "kind": "battery"})))
        .await;
    let device_id = device.body["id"].as_i64().unwrap();
    let readings: Vec<Value> =
        (0..72).map(|h| json!({"ts": format!("2026-10-{:02}T{:02}:00:00Z", 1 + h / 24, h % 24), "consumption_kwh": 1.0 + (h % 24) as f64 / 10.0})).collect();
    let r = c
        .send(0, Call::new("POST", format!("/api/v1/devices/{device_id}/readings")).token(&owner).json(json!(readings)))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let order = c
        .send(0, Call::new("POST", "/api/v1/orders").token(&owner).json(json!({"book_id": book_id, "quantity": 1})))
        .await;
    let order_id = order.body["id"].as_i64().unwrap();

    // Every (rank, method, template) with its documented statuses and content types.
    type Documented = (Vec<u16>, Vec<String>);
    let mut ops: BTreeMap<(u8, String, String), Documented> = BTreeMap::new();
    for (template, item) in spec.body["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method = method.to_uppercase();
            let mut statuses = Vec::new();
            let mut types = Vec::new();
            for (status, resp) in op["responses"].as_object().unwrap() {
                statuses.push(status.parse::<u16>().unwrap());
                if let Some(content) = resp["content"].as_object() {
                    types.extend(content.keys().cloned());
                }
            }
            // Creations and changes first (pay before ship before the invoice), reads next,
            // then what ends things: deletes, then logout.
            let order = match (method.as_str(), template.as_str()) {
                (_, "/api/v1/auth/logout") => 5,
                // Before the device itself goes.
                ("DELETE", "/api/v1/devices/{id}/readings") => 3,
                ("DELETE", _) => 4,
                ("GET", _) => 2,
                ("PATCH", _) => 1,
                _ => 0,
            };
            ops.insert((order, method, template.clone()), (statuses, types));
        }
    }
    assert!(ops.len() >= 30, "only {} operations documented", ops.len());
    let mut called = 0;
    for ((_, method, template), (statuses, types)) in &ops {
        let key = format!("{method} {template}");
        let path = template
            .replace("/books/{id}", &format!("/books/{book_id}"))
            .replace("/orders/{id}", &format!("/orders/{order_id}"))
            .replace("/devices/{id}", &format!("/devices/{device_id}"))
            .replace("/nodes/{name}", &format!("/nodes/{}", c.nodes[0].name))
            // No such member: a membership change would end this test's own cluster.
            .replace("/cluster/nodes/{id}", "/cluster/nodes/999")
            .replace("/kv/{key}", "/kv/spec")
            .replace("/tokens/{role}", "/tokens/worker")
            .replace("/{service}/", "/auth/")
            .replace("/services/{name}", "/services/catalog");
        // Answered with their documented 404 here: the chaos hooks and the clock need a node
        // started with --chaos, and node 999 is no member.
        let expect_404 = template.starts_with("/api/v1/admin/chaos/")
            || template == "/api/v1/admin/clock/advance"
            || template.starts_with("/api/v1/cluster/nodes/{id}");
        assert!(!path.contains('{'), "no value for a parameter of {key}");
        let token = match template.as_str() {
            "/api/v1/auth/logout" => &leaving,
            "/api/v1/auth/keys/rotate" => &admin,
            t if t.starts_with("/api/v1/metrics/")
                || t.starts_with("/api/v1/cluster/")
                || t.starts_with("/api/v1/admin/")
                || t.starts_with("/api/v1/services") =>
            {
                &admin
            }
            t if t.starts_with("/api/v1/books/") || t.ends_with("/ship") => &seller,
            _ => &owner,
        };
        let mut call = Call::new(method, path).token(token);
        if let Some(body) = sample_body(&key) {
            call = call.json(body);
        } else if key == "POST /api/v1/orders" {
            call = call.json(json!({"book_id": book_id, "quantity": 1}));
        } else if key == "PUT /api/v1/cluster/kv/{key}" {
            call = call.text("text/plain", "value");
        } else if key.ends_with("battery.csv") {
            call = call.text(
                "text/csv",
                "timestamp,soc,voltage,current\n2026-10-01T00:00:00Z,50,48,1\n2026-10-01T01:00:00Z,55,48,1\n",
            );
        } else if method != "GET" && method != "DELETE" {
            call = call.json(json!({}));
        }
        if key == "GET /api/v1/metrics/stream" {
            // An endless stream: check the status and type without reading to the end.
            let r = c.http.get(format!("{}{}", c.nodes[0].api(), call.path)).bearer_auth(&admin).send().await.unwrap();
            assert!(statuses.contains(&r.status().as_u16()), "{key} answered {}", r.status());
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            assert!(types.iter().any(|t| ct.starts_with(t.as_str())), "{key} answered {ct}, documented {types:?}");
            called += 1;
            continue;
        }
        let r = c.send(0, call).await;
        assert!(statuses.contains(&r.status), "{key} answered {} (documented: {statuses:?}): {}", r.status, r.text);
        if expect_404 {
            assert_eq!(r.status, 404, "{key}: {}", r.text);
            called += 1;
            continue;
        }
        assert!((200..300).contains(&r.status), "{key} failed with valid input: {} {}", r.status, r.text);
        let mime = r.content_type.split(';').next().unwrap_or("").trim().to_string();
        assert!(types.is_empty() || types.contains(&mime), "{key} answered {mime}, documented {types:?}");
        called += 1;
    }
    assert_eq!(called, ops.len());
    // And an undocumented error status never appears for bad input either.
    let r = c.send(0, Call::new("POST", "/api/v1/orders").token(&owner).json(json!({"book_id": "x"}))).await;
    assert_eq!(r.status, 400, "{}", r.text);
}
