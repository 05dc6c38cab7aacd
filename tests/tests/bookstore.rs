//! The BookStore end to end on a 3-node cluster: the whole purchase journey across nodes,
//! concurrent purchases that must never oversell, tokens, and who may see what.

use futures::StreamExt;
use panal_actors::catalog::ops::{NewOrder, ShipRequest};
use panal_actors::catalog::payment::CardPayment;
use panal_actors::catalog::OrderStatus;
use panal_tests::{poll_some, Call, Cluster};
use serde_json::{json, Value};

const GOOD_CARD: &str = "4242 4242 4242 4242";

fn book(title: &str, stock: i64) -> Value {
    json!({"title": title, "author": "Ursula K. Le Guin", "description": "A classic", "price_cents": 1250, "currency": "EUR", "stock": stock})
}

fn card_json(number: &str) -> Value {
    json!({"card_number": number, "expiry": "12/39", "cvc": "123"})
}

#[tokio::test(flavor = "multi_thread")]
async fn the_full_purchase_journey_spans_nodes_and_logout_is_cluster_wide() {
    let c = Cluster::start(3, 0, &["--chaos"]).await;
    c.wait_mesh(0).await;
    let (seller_id, seller, _) = c.user(0, "sally").await;
    let (buyer_id, buyer, _) = c.user(1, "bob").await;

    let listing = c.send(0, Call::new("POST", "/api/v1/books").token(&seller).json(book("The Dispossessed", 3))).await;
    assert_eq!(listing.status, 201, "{}", listing.text);
    assert_eq!(listing.body["seller"], "sally");
    assert!(listing.body["created_at"].as_str().unwrap().ends_with('Z'), "RFC 3339 UTC: {}", listing.body);
    let book_id = listing.body["id"].as_i64().unwrap();

    // Bad input names every bad field and changes nothing.
    let bad = json!({"title": "", "author": "x", "price_cents": -5, "currency": "ABC", "stock": 1});
    let r = c.send(1, Call::new("POST", "/api/v1/books").token(&seller).json(bad)).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "validation_failed");
    let fields: Vec<&str> =
        r.body["error"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["title", "price_cents", "currency"]);
    assert!(r.body["error"]["request_id"].as_str().is_some_and(|id| !id.is_empty()));

    // Buy on node A, with an idempotency key: a retry returns the same order.
    let bob = c.client().with_nodes(&[c.nodes[0].api()]).unwrap();
    bob.set_token(Some(buyer.clone()));
    bob.observe_index(listing.index);
    let at = |client: &panal_tests::Client, i: usize| client.with_nodes(&[c.nodes[i].api()]).unwrap();
    let two = NewOrder { book_id, quantity: 2 };
    let placed = bob.place_order(&two, Some("bob-order-1")).await.unwrap();
    assert_eq!(placed.status, OrderStatus::PendingPayment);
    let again = at(&bob, 2).place_order(&two, Some("bob-order-1")).await.unwrap();
    assert_eq!(again.id, placed.id, "a retried purchase is the same purchase");
    let order_id = placed.id;
    let sally = at(&bob, 1).new_session();
    sally.set_token(Some(seller.clone()));
    let own = sally.place_order(&NewOrder { book_id, quantity: 1 }, None).await.unwrap_err();
    assert_eq!((own.status(), own.code()), (Some(422), Some("own_listing")), "{own}");

    // Pay on node B: the declining test cards decline deterministically, then a good card pays.
    let card = |number: &str| CardPayment { card_number: number.into(), expiry: "12/39".into(), cvc: "123".into() };
    let bob_b = at(&bob, 1);
    let declined = bob_b.pay_order(order_id, &card("4000 0000 0000 0002")).await.unwrap_err();
    assert_eq!((declined.status(), declined.code()), (Some(402), Some("card_declined")), "{declined}");
    let poor = bob_b.pay_order(order_id, &card("4000000000009995")).await.unwrap_err();
    assert_eq!((poor.status(), poor.code()), (Some(402), Some("insufficient_funds")));
    let typo = bob_b.pay_order(order_id, &card("4242 4242 4242 4241")).await.unwrap_err();
    // Well-formed digits, but the checksum (a rule the schema cannot express) says no.
    assert_eq!(
        (typo.status(), typo.code()),
        (Some(422), Some("rule_violated")),
        "a card failing the Luhn check: {typo}"
    );
    // The raw answer, to check that no card number comes back.
    let paid = c
        .send(
            1,
            Call::new("POST", format!("/api/v1/orders/{order_id}/pay"))
                .token(&buyer)
                .json(card_json(GOOD_CARD))
                .after(bob.last_index()),
        )
        .await;
    assert_eq!(paid.status, 200, "{}", paid.text);
    assert_eq!(paid.body["status"], "paid");
    assert_eq!(paid.body["card"]["last4"], "4242");
    assert!(!paid.text.contains("4242424242424242") && !paid.text.contains(GOOD_CARD));

    // Ship on node C (the seller), then the clock moves the parcel along.
    bob.observe_index(paid.index);
    sally.observe_index(paid.index);
    let address = |a: &str| ShipRequest { address: a.into() };
    let by_buyer = at(&bob, 2).ship_order(order_id, &address("x")).await.unwrap_err();
    assert_eq!(by_buyer.status(), Some(403), "{by_buyer}");
    let shipped = at(&sally, 2).ship_order(order_id, &address("1 Anarres Way, Abbenay")).await.unwrap();
    assert_eq!(shipped.shipment.unwrap().carrier, "Panal Post");
    let admin = c.token().await;
    let advance = c
        .send(0, Call::new("POST", "/api/v1/admin/clock/advance").token(&admin).json(json!({"seconds": 49 * 3600})))
        .await;
    assert_eq!(advance.status, 200, "{}", advance.text);
    let delivered = poll_some("the parcel to be delivered", || async {
        let r = c.send(0, Call::new("GET", format!("/api/v1/orders/{order_id}")).token(&buyer)).await;
        (r.body["status"] == "delivered").then_some(r.body)
    })
    .await;
    let events: Vec<&str> =
        delivered["history"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        ["pending_payment", "payment_declined", "payment_declined", "paid", "shipped", "in_transit", "delivered"]
    );

    // Invoice, JSON and HTML, numbered from 1.
    let inv = c.send(1, Call::new("GET", format!("/api/v1/orders/{order_id}/invoice")).token(&buyer)).await;
    assert_eq!(inv.status, 200, "{}", inv.text);
    assert_eq!(inv.body["number"], 1);
    assert_eq!(
        (inv.body["subtotal_cents"].as_i64(), inv.body["tax_cents"].as_i64(), inv.body["total_cents"].as_i64()),
        // Prices include tax: the invoice's total is the order's, 21 % of it is tax.
        (Some(2066), Some(434), Some(2500))
    );
    assert_eq!(
        (inv.body["seller"]["user_id"].as_i64(), inv.body["buyer"]["user_id"].as_i64()),
        (Some(seller_id), Some(buyer_id))
    );
    let html = c
        .send(
            2,
            Call::new("GET", format!("/api/v1/orders/{order_id}/invoice")).token(&seller).header("accept", "text/html"),
        )
        .await;
    assert_eq!(html.status, 200);
    assert!(html.content_type.starts_with("text/html"), "{}", html.content_type);
    assert!(html.text.contains("INV-000001") && html.text.contains("25.00 EUR"), "{}", html.text);

    // Lists: the buyer's orders, the seller's sales.
    let mine = c.send(0, Call::new("GET", "/api/v1/orders").token(&buyer)).await;
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 1, "{}", mine.text);
    let sales = c.send(0, Call::new("GET", "/api/v1/sales").token(&seller)).await;
    assert_eq!(sales.body["items"][0]["id"].as_i64(), Some(order_id));
    let stock = c.send(2, Call::new("GET", format!("/api/v1/books/{book_id}"))).await;
    assert_eq!(stock.body["stock"], 1);

    // Logout on node A: the token is refused everywhere.
    let out = c.send(0, Call::new("POST", "/api/v1/auth/logout").token(&buyer)).await;
    assert_eq!(out.status, 200, "{}", out.text);
    for i in 0..3 {
        let r = c.send(i, Call::new("GET", "/api/v1/auth/me").token(&buyer).after(out.index)).await;
        assert_eq!(r.status, 401, "node {i}: {}", r.text);
        assert_eq!(r.body["error"]["code"], "invalid_token");
        assert!(r.body["error"]["message"].as_str().unwrap().contains("revoked"), "{}", r.text);
    }
    let me = c.send(2, Call::new("GET", "/api/v1/auth/me").token(&seller)).await;
    assert_eq!((me.status, me.body["username"].as_str()), (200, Some("sally")));
    c.converged_checksum().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_are_401_with_the_reason_and_key_rotation_keeps_old_tokens() {
    let c = Cluster::start(1, 0, &[]).await;
    let me = |token: &str| Call::new("GET", "/api/v1/auth/me").token(token);
    let cases = [
        ("abc", "not enough segments"),
        ("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhZG1pbiJ9.", "algorithm"),
        ("e30.e30.c2ln", ""),
    ];
    for (token, reason) in cases {
        let r = c.send(0, me(token)).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (401, Some("invalid_token")), "{token}: {}", r.text);
        assert!(r.body["error"]["message"].as_str().unwrap().contains(reason), "{token}: {}", r.text);
    }
    let missing = c.send(0, Call::new("GET", "/api/v1/auth/me")).await;
    assert_eq!(missing.status, 401);
    let (_, user, _) = c.user(0, "ursula").await;
    let forbidden = c.send(0, Call::new("POST", "/api/v1/auth/keys/rotate").token(&user)).await;
    assert_eq!(forbidden.status, 403, "{}", forbidden.text);
    let admin = c.token().await;
    let out = panal_tests::run_panal(
        &["token", "rotate", "jwt", "--node", &c.nodes[0].api(), "--password", &c.password],
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(c.send(0, me(&user)).await.status, 200, "a token signed with the previous key still works");
    assert_eq!(c.send(0, me(&admin)).await.status, 200);
    let dup = c
        .send(
            0,
            Call::new("POST", "/api/v1/auth/register")
                .json(json!({"username": "ursula", "password": "another-password"})),
        )
        .await;
    assert_eq!((dup.status, dup.body["error"]["code"].as_str()), (409, Some("username_taken")), "{}", dup.text);
    let weak = c
        .send(0, Call::new("POST", "/api/v1/auth/register").json(json!({"username": "u2", "password": "short"})))
        .await;
    assert_eq!(weak.status, 400, "{}", weak.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_concurrent_purchases_over_three_nodes_sell_exactly_the_stock() {
    let c = Cluster::start(3, 0, &[]).await;
    c.wait_mesh(0).await;
    let (_, seller, _) = c.user(0, "seller").await;
    let mut buyers = Vec::new();
    for (i, name) in ["buyer0", "buyer1", "buyer2", "buyer3"].into_iter().enumerate() {
        buyers.push(c.user(i % 3, name).await.1);
    }
    let listing = c.send(0, Call::new("POST", "/api/v1/books").token(&seller).json(book("Scarce", 50))).await;
    let book_id = listing.body["id"].as_i64().unwrap();
    let statuses: Vec<(u16, String)> = futures::stream::iter(0..200)
        .map(|n| {
            let call = Call::new("POST", "/api/v1/orders")
                .token(&buyers[n % buyers.len()])
                .json(json!({"book_id": book_id, "quantity": 1}))
                .after(listing.index);
            let c = &c;
            async move {
                let r = c.send(n % 3, call).await;
                (r.status, r.body["error"]["code"].as_str().unwrap_or("").to_string())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let sold = statuses.iter().filter(|(s, _)| *s == 201).count();
    let refused = statuses.iter().filter(|(s, code)| *s == 409 && code == "out_of_stock").count();
    assert_eq!((sold, refused), (50, 150), "{statuses:?}");
    for i in 0..3 {
        let r = c
            .send(i, Call::new("GET", format!("/api/v1/books/{book_id}")).header("x-panal-consistency", "linearizable"))
            .await;
        assert_eq!(r.body["stock"], 0, "node {i}: {}", r.text);
    }
    c.converged_checksum().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn users_cannot_read_or_change_each_others_things() {
    let c = Cluster::start(1, 0, &[]).await;
    let (_, alice, _) = c.user(0, "alice").await;
    let (_, bob, _) = c.user(0, "bob").await;
    let (_, carol, _) = c.user(0, "carol").await;
    let l = c.send(0, Call::new("POST", "/api/v1/books").token(&alice).json(book("Mine", 5))).await;
    let book_id = l.body["id"].as_i64().unwrap();
    let d = c
        .send(0, Call::new("POST", "/api/v1/devices").token(&alice).json(json!({"name": "meter", "kind": "meter"})))
        .await;
    assert_eq!(d.status, 201, "{}", d.text);
    let device_id = d.body["id"].as_i64().unwrap();
    let o = c
        .send(0, Call::new("POST", "/api/v1/orders").token(&carol).json(json!({"book_id": book_id, "quantity": 1})))
        .await;
    let order_id = o.body["id"].as_i64().unwrap();

    let attempts = [
        Call::new("PATCH", format!("/api/v1/books/{book_id}")).json(json!({"price_cents": 1})),
        Call::new("DELETE", format!("/api/v1/books/{book_id}")),
        Call::new("GET", format!("/api/v1/devices/{device_id}")),
        Call::new("PATCH", format!("/api/v1/devices/{device_id}")).json(json!({"name": "mine now"})),
        Call::new("DELETE", format!("/api/v1/devices/{device_id}")),
        Call::new("GET", format!("/api/v1/devices/{device_id}/readings")),
        Call::new("POST", format!("/api/v1/devices/{device_id}/readings"))
            .json(json!({"ts": "2026-11-01T00:00:00Z", "consumption_kwh": 1.0})),
        Call::new("GET", format!("/api/v1/orders/{order_id}")),
        Call::new("POST", format!("/api/v1/orders/{order_id}/pay")).json(card_json(GOOD_CARD)),
        Call::new("GET", format!("/api/v1/orders/{order_id}/invoice")),
    ];
    for call in attempts {
        let what = format!("{} {}", call.method, call.path);
        let r = c.send(0, call.token(&bob)).await;
        assert!(matches!(r.status, 403 | 404), "bob must not: {what} → {} {}", r.status, r.text);
    }
    let devices = c.send(0, Call::new("GET", "/api/v1/devices").token(&bob)).await;
    assert_eq!(devices.body["items"].as_array().unwrap().len(), 0);
    // Nothing changed.
    assert_eq!(c.send(0, Call::new("GET", format!("/api/v1/books/{book_id}"))).await.body["price_cents"], 1250);
    assert_eq!(
        c.send(0, Call::new("GET", format!("/api/v1/devices/{device_id}")).token(&alice)).await.body["name"],
        "meter"
    );
    // The admin sees everything.
    let admin = c.token().await;
    assert_eq!(c.send(0, Call::new("GET", format!("/api/v1/devices/{device_id}")).token(&admin)).await.status, 200);
    assert_eq!(c.send(0, Call::new("GET", format!("/api/v1/orders/{order_id}")).token(&admin)).await.status, 200);
}
