//! Typed dispatch without a network: envelopes through MessagePack, served by the
//! worker's dispatch against a real single-node replica.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::worker::serve;
use super::*;
use crate::auth::ops::{Login, LoginRequest, Me, Register, RegisterRequest, TokenResponse};
use crate::auth::{Role, User};
use crate::catalog::ops::{CreateBook, GetBook, GetInvoice, PlaceOrder};
use crate::catalog::{Book, NewBook};
use crate::energy::ops::{AddReadings, ReadingInput, ReadingsInput};
use crate::PanalApp;
use panal_raft::{NodeInfo, ReplicaConfig};

async fn context(dir: &std::path::Path) -> Arc<ServiceContext> {
    let node = NodeInfo { name: "t1".into(), ..Default::default() };
    let cfg = ReplicaConfig::new(1, node, dir.to_path_buf(), "s".into());
    let replica = panal_raft::Replica::open(cfg, PanalApp).await.unwrap();
    replica.initialize().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while replica.leader().map(|(id, _)| id) != Some(1) {
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A signing key, as cluster initialisation would install it.
    let key = crate::auth::command::RotateJwtKey { kid: "k1".into(), secret: "00".repeat(32) };
    crate::propose(&replica, key, None, Duration::from_secs(10)).await.unwrap();
    ServiceContext::new("t1".into(), replica)
}

fn dune() -> NewBook {
    NewBook {
        title: "Dune".into(),
        author: "Frank Herbert".into(),
        description: String::new(),
        price_cents: 999,
        currency: "EUR".into(),
        stock: 2,
    }
}

fn identity(user: &User) -> Identity {
    Identity {
        user_id: user.id,
        username: user.username.clone(),
        role: user.role,
        jti: "j1".into(),
        expires_at: i64::MAX / 2000,
    }
}

/// Sends `op` as the gateway sends it to another node: encoded as the mesh carries it,
/// decoded, served by the worker dispatch, and the answer back the same way.
async fn send(ctx: &Arc<ServiceContext>, op: impl Into<ServiceCall>, identity: Option<Identity>) -> ServiceResponse {
    use ractor::BytesConvertable;
    let meta = RequestMeta { identity, request_id: "r1".into(), ..Default::default() };
    let req = Envelope::<ServiceRequest>::from_bytes(Envelope::new(ServiceRequest::new(op, meta)).into_bytes());
    let req = req.open().unwrap();
    let service = req.call.service();
    let resp = serve(ctx, service, 0, req).await;
    Envelope::<ServiceResponse>::from_bytes(Envelope::new(resp).into_bytes()).open().unwrap()
}

#[test]
fn bytes_that_are_no_request_open_as_an_error() {
    use ractor::BytesConvertable;
    let garbage = Envelope::<ServiceRequest>::from_bytes(vec![0xc1, 0x00]);
    assert!(garbage.open().is_err());
    assert!(Envelope::<ServiceRequest>::from_bytes(Vec::new()).open().is_err());
}

fn json<T: serde::de::DeserializeOwned>(resp: &ServiceResponse) -> T {
    assert_eq!(resp.content_type, Body::JSON);
    serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&resp.body)))
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_operations_are_served_end_to_end_without_a_network() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path()).await;

    // A write: 201, its log index, the typed output as JSON.
    let account = RegisterRequest { username: "ada".into(), password: "correct horse".into(), email: None };
    let resp = send(&ctx, Register { account }, None).await;
    assert_eq!(resp.status, 201, "{}", String::from_utf8_lossy(&resp.body));
    assert!(resp.index.is_some_and(|i| i > 0));
    assert_eq!(resp.node, "t1");
    let ada: User = json(&resp);
    assert_eq!((ada.username.as_str(), ada.role), ("ada", Role::User));

    // A read needing no caller, and one needing the caller.
    let credentials = LoginRequest { username: "ada".into(), password: "correct horse".into() };
    let token: TokenResponse = json(&send(&ctx, Login { credentials }, None).await);
    assert_eq!(token.token_type, "Bearer");
    let me = send(&ctx, Me, Some(identity(&ada))).await;
    assert_eq!((me.status, me.index), (200, None));
    assert_eq!(json::<User>(&me).id, ada.id);

    // Without a token: 401 in the one error shape, with the gateway's request id.
    let anonymous = send(&ctx, Me, None).await;
    assert_eq!(anonymous.status, 401);
    let err: serde_json::Value = json(&anonymous);
    assert_eq!(
        (err["error"]["code"].as_str(), err["error"]["request_id"].as_str()),
        (Some("invalid_token"), Some("r1"))
    );

    // Catalog: create, read back, a validation failure naming every field, a 404.
    let book = dune();
    let created = send(&ctx, CreateBook { book: book.clone() }, Some(identity(&ada))).await;
    assert_eq!(created.status, 201);
    let created: Book = json(&created);
    let got: Book = json(&send(&ctx, GetBook { id: created.id }, None).await);
    assert_eq!(got, created);
    let bad = NewBook { title: String::new(), price_cents: 0, ..book };
    let invalid = send(&ctx, CreateBook { book: bad }, Some(identity(&ada))).await;
    let err: serde_json::Value = json(&invalid);
    assert_eq!(invalid.status, 400);
    assert_eq!(err["error"]["fields"].as_array().map(Vec::len), Some(2));
    assert_eq!(send(&ctx, GetBook { id: 999 }, None).await.status, 404);

    // Another user's order, then its invoice before payment: 404, as JSON even when HTML
    // was asked for.
    let account = RegisterRequest { username: "bob".into(), password: "battery staple".into(), email: None };
    let bob: User = json(&send(&ctx, Register { account }, None).await);
    let order = crate::catalog::ops::NewOrder { book_id: created.id, quantity: 1 };
    let placed = send(&ctx, PlaceOrder { order }, Some(identity(&bob))).await;
    let order: crate::catalog::Order = json(&placed);
    assert_eq!((placed.status, order.buyer_id), (201, bob.id));
    let invoice = send(&ctx, GetInvoice { id: order.id, html: true }, Some(identity(&bob))).await;
    assert_eq!(invoice.content_type, Body::JSON);
    assert_eq!(invoice.status, 404);

    // Energy readings: the three input shapes travel as one typed list.
    let one = ReadingInput { ts: "x".into(), consumption_kwh: Some(1.0), generation_kwh: None };
    let readings = ReadingsInput::One(one).into_list();
    let resp = send(&ctx, AddReadings { id: 12345, readings }, Some(identity(&ada))).await;
    let err: serde_json::Value = json(&resp);
    assert_eq!((resp.status, err["error"]["fields"][0]["field"].as_str()), (400, Some("readings[0].ts")));
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_tells_the_user_count_only_to_a_verified_caller_and_misrouted_calls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path()).await;
    let anonymous: serde_json::Value = json(&send(&ctx, Ping { service: Service::Energy }, None).await);
    assert_eq!(anonymous["service"], "energy");
    assert_eq!(anonymous["worker"], "t1/energy/0");
    assert!(anonymous.get("users").is_none(), "{anonymous}");

    let who = Identity { user_id: 1, username: "root".into(), role: Role::Admin, jti: "j".into(), expires_at: 0 };
    let known: serde_json::Value = json(&send(&ctx, Ping { service: Service::Auth }, Some(who)).await);
    assert_eq!((known["users"].as_i64(), known["caller"].as_str()), (Some(0), Some("root")));

    // A catalog operation sent to an auth worker is refused, not served.
    let meta = RequestMeta::default();
    let resp = serve(&ctx, Service::Auth, 0, ServiceRequest::new(GetBook { id: 1 }, meta)).await;
    assert_eq!(resp.status, 404);
}

#[test]
fn delays_are_kept_per_service_for_every_service() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctx = rt.block_on(context(dir.path()));
    for (i, s) in Service::ALL.into_iter().enumerate() {
        ctx.set_delay_ms(s, i as u64 * 10);
    }
    assert_eq!(Service::ALL.map(|s| ctx.delay_ms(s)), [0, 10, 20, 30, 40]);
    ctx.set_delay_ms(Service::Energy, 0);
    assert_eq!(ctx.delay_ms(Service::Energy), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_answer_is_served_until_the_next_write_and_never_after() {
    use crate::catalog::ops::{ListBooks, UpdateBook};
    use crate::catalog::{BookPatch, BookQuery};
    use crate::page::Page;

    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path()).await;
    let account = RegisterRequest { username: "ada".into(), password: "correct horse".into(), email: None };
    let ada: User = json(&send(&ctx, Register { account }, None).await);
    let book = dune();
    let dune: Book = json(&send(&ctx, CreateBook { book: book.clone() }, Some(identity(&ada))).await);
    let list = || ListBooks { query: BookQuery::default() };

    let first = send(&ctx, list(), None).await;
    assert_eq!(ctx.answers.kept(), 1, "the list was kept");
    let second = send(&ctx, list(), None).await;
    assert_eq!((second.status, &second.body), (first.status, &first.body));
    assert_eq!(ctx.answers.kept(), 1, "served from the kept answer");
    // Another caller is another answer: nothing a caller sees is shown to another.
    send(&ctx, list(), Some(identity(&ada))).await;
    assert_eq!(ctx.answers.kept(), 2);

    // A write moves the applied index: the list and the page are read again.
    let patch = BookPatch { price_cents: Some(1299), ..Default::default() };
    send(&ctx, UpdateBook { id: dune.id, patch }, Some(identity(&ada))).await;
    let page: Page<Book> = json(&send(&ctx, list(), None).await);
    assert_eq!(page.items.iter().map(|b| b.price_cents).collect::<Vec<_>>(), [1299]);
    assert_eq!(json::<Book>(&send(&ctx, GetBook { id: dune.id }, None).await).price_cents, 1299);
    let more = NewBook { title: "Emma".into(), ..book };
    send(&ctx, CreateBook { book: more }, Some(identity(&ada))).await;
    let page: Page<Book> = json(&send(&ctx, list(), None).await);
    assert_eq!(page.items.len(), 2);
    // Errors are not kept.
    assert_eq!(send(&ctx, GetBook { id: 999 }, None).await.status, 404);
    assert_eq!(ctx.answers.kept(), 1, "only the list read after the last write");
}
