//! The drill's workload: a seeded BookStore and energy dataset, then several concurrent
//! clients spread over every node, each behaving like a real client (writes carry an
//! `Idempotency-Key` and are retried with the same key on 5xx, timeouts and dropped
//! connections, on the next node), every request recorded in the history.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::history::{Attempt, Level, Ms, Op, OpKind, Outcome, SeededBook};
use crate::error::Result;
use crate::tooling::client::{Client, ClientError, Consistency};
use crate::tooling::seed;
use panal_actors::catalog::{BookPatch, NewBook};
use panal_actors::energy::{DeviceKind, NewDevice};

/// One request's deadline: long enough for a write that waits out an election, short
/// enough that a client stuck on a frozen or isolated node moves to another.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Operations after which a client that moved away from its home node (after failures)
/// goes back to it, so that the load stays spread over every node.
const BACK_HOME_EVERY: u64 = 20;
/// How long one operation keeps retrying before its outcome is recorded as it stands.
const OP_DEADLINE: Duration = Duration::from_secs(20);
/// Books seeded: one with little stock (sells out within seconds, so the out-of-stock edge
/// is exercised all along), one sized to sell out mid-drill, two that never run out.
const BOOKS: usize = 4;
const TINY_STOCK: i64 = 50;
/// Share of purchases that still try a book the client saw sold out: the out-of-stock edge
/// stays exercised, while the rest of the purchases go to books with stock, so the whole
/// drill exercises purchases that succeed (and business rejections stay a small share).
const PROBE_SOLD_OUT: f64 = 0.05;
/// Distinct buyer accounts (shared by the clients; registering hashes a password).
const MAX_BUYERS: usize = 4;
/// Readings per ingestion request.
const READINGS_PER_OP: i64 = 10;
/// First reading timestamp of the drill's devices: 2021-01-01T00:00:00Z.
const READINGS_FROM_MS: i64 = 1_609_459_200_000;
const PASSWORD: &str = "drill-password";
/// How often the seller looks for sold-out books to restock.
const RESTOCK_EVERY: Duration = Duration::from_millis(500);

/// Counters the progress line reads.
#[derive(Debug, Default)]
pub struct Progress {
    pub ok: AtomicU64,
    /// Failed attempts (timeouts, 5xx, lost connections…).
    pub errors: AtomicU64,
    /// Attempts a business rule refused (`out_of_stock`…): the cluster worked.
    pub rejections: AtomicU64,
}

/// What the clients need from the seeded data.
#[derive(Debug, Clone)]
pub struct Seed {
    pub books: Vec<SeededBook>,
    /// The seller's session (restocks go through it).
    pub seller: Client,
    pub seller_token: String,
    /// (user id, token) per buyer.
    pub buyers: Vec<(i64, String)>,
    pub meter_token: String,
    /// One device per client.
    pub devices: Vec<i64>,
}

/// A JSON answer with its status and `X-Panal-Index` / `X-Panal-Node`.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub index: Option<u64>,
    pub node: Option<String>,
}

/// Sends one request and reads the whole answer.
pub async fn send(req: reqwest::RequestBuilder) -> std::result::Result<Answer, reqwest::Error> {
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let index = header("x-panal-index").and_then(|v| v.parse().ok());
    let node = header("x-panal-node");
    let text = resp.text().await?;
    Ok(Answer { status, body: serde_json::from_str(&text).unwrap_or(Value::Null), index, node })
}

/// The error kind of a failed request: the JSON error code, `timeout` or `connection`.
pub fn error_kind(result: &std::result::Result<Answer, reqwest::Error>) -> String {
    match result {
        Ok(a) => a.body["error"]["code"].as_str().map(str::to_string).unwrap_or_else(|| format!("http_{}", a.status)),
        Err(e) if e.is_timeout() => "timeout".into(),
        Err(e) if e.is_connect() => "connection_refused".into(),
        Err(_) => "connection".into(),
    }
}

/// Whether a failed write attempt may still have been applied.
fn ambiguous(result: &std::result::Result<Answer, reqwest::Error>) -> bool {
    match result {
        Ok(a) => a.status >= 500 || a.status == 408 || a.status == 429,
        // A refused connection never reached the node.
        Err(e) => !e.is_connect(),
    }
}

/// Whether to try again (elsewhere) after this answer.
fn retryable(result: &std::result::Result<Answer, reqwest::Error>) -> bool {
    match result {
        Ok(a) => a.status >= 500 || a.status == 408 || a.status == 429,
        Err(_) => true,
    }
}

/// Creates the drill's accounts, books and devices with the one seeder, through `api` (a
/// client of every node). `run` makes names unique per drill, so that drills can run one
/// after another against the same cluster. `expected_units` is how many units the workload
/// may try to buy at its target rate.
pub async fn seed(api: &Client, run: &str, clients: usize, expected_units: i64) -> Result<Seed> {
    let seller = api.new_session();
    let seller_token = seed::account(&seller, &format!("drill-{run}-seller"), PASSWORD, None).await?.token;
    let mut buyers = Vec::new();
    for b in 0..clients.clamp(1, MAX_BUYERS) {
        let buyer = seed::account(&api.new_session(), &format!("drill-{run}-buyer{b}"), PASSWORD, None).await?;
        buyers.push((buyer.id, buyer.token));
    }
    let meter = api.new_session();
    let meter_token = seed::account(&meter, &format!("drill-{run}-meter"), PASSWORD, None).await?.token;
    let scarce = (expected_units / (BOOKS as i64 * 3)).clamp(20, 100_000);
    let stocks: Vec<i64> = (0..BOOKS)
        .map(|b| match b {
            0 => TINY_STOCK,
            2 => scarce,
            _ => panal_actors::catalog::MAX_STOCK,
        })
        .collect();
    let listings: Vec<NewBook> = stocks
        .iter()
        .enumerate()
        .map(|(b, &stock)| NewBook {
            title: format!("Drill {run} book {b}"),
            author: "Drill".into(),
            description: String::new(),
            price_cents: 1000 + b as i64,
            currency: "EUR".into(),
            stock,
        })
        .collect();
    let ids = seed::books(&seller, &listings, 1).await?;
    let books = ids.into_iter().zip(stocks).map(|(id, initial_stock)| SeededBook { id, initial_stock }).collect();
    let meters: Vec<NewDevice> =
        (0..clients).map(|c| NewDevice { name: format!("drill {run} meter {c}"), kind: DeviceKind::Meter }).collect();
    let devices = seed::devices(&meter, &meters, 4).await?;
    Ok(Seed { books, seller, seller_token, buyers, meter_token, devices })
}

/// Everything the clients share.
pub struct Workload {
    pub http: reqwest::Client,
    pub urls: Vec<String>,
    pub seed: Seed,
    pub run: String,
    pub t0: Instant,
    pub ops: Mutex<Vec<Op>>,
    pub progress: Progress,
}

impl Workload {
    pub fn ms(&self, t: Instant) -> Ms {
        t.saturating_duration_since(self.t0).as_secs_f64() * 1000.0
    }

    fn record(&self, op: Op) {
        if op.is_ok() {
            self.progress.ok.fetch_add(1, Ordering::Relaxed);
        }
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).push(op);
    }
}

/// One request to try, built for a node's URL.
type Build<'a> = dyn Fn(&str) -> reqwest::RequestBuilder + Send + Sync + 'a;

/// Runs one operation: attempts on successive nodes until an answer is final or the
/// deadline passes. Returns the attempts (the last names the node the client stays on),
/// the final answer (if any) and whether any failed attempt may have been applied.
async fn attempts(w: &Workload, first_node: usize, build: &Build<'_>) -> (Vec<Attempt>, Option<Answer>, bool) {
    let deadline = Instant::now() + OP_DEADLINE;
    let mut tries = Vec::new();
    let mut maybe_applied = false;
    let mut node = first_node;
    loop {
        let start = Instant::now();
        let result = send(build(&w.urls[node]).timeout(ATTEMPT_TIMEOUT)).await;
        let end = Instant::now();
        let status = result.as_ref().map(|a| a.status).unwrap_or(0);
        let failed = !result.as_ref().is_ok_and(|a| (200..300).contains(&a.status));
        let error = failed.then(|| error_kind(&result));
        if failed {
            let counter =
                if super::figures::is_rejection(status) { &w.progress.rejections } else { &w.progress.errors };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let served_by = result.as_ref().ok().and_then(|a| a.node.clone());
        tries.push(Attempt { node, start: w.ms(start), end: w.ms(end), status, error, served_by });
        if !failed || !retryable(&result) || Instant::now() >= deadline {
            maybe_applied |= failed && ambiguous(&result);
            return (tries, result.ok(), maybe_applied);
        }
        maybe_applied |= ambiguous(&result);
        // Back off a little, more after each failure, and go to the next node.
        let pause = Duration::from_millis(50 * tries.len().min(10) as u64);
        tokio::time::sleep(pause).await;
        node = (node + 1) % w.urls.len();
    }
}

/// The outcome of a write from its final answer.
fn write_outcome(answer: &Option<Answer>, last_error: Option<&str>, maybe_applied: bool) -> Outcome {
    match answer {
        Some(a) if (200..300).contains(&a.status) => Outcome::Ok,
        Some(a) if (400..500).contains(&a.status) && a.status != 408 && a.status != 429 => {
            // A refusal is final: a retry with the same key would have replayed an earlier
            // application instead.
            Outcome::Failed(a.body["error"]["code"].as_str().unwrap_or("client_error").to_string())
        }
        _ if maybe_applied => Outcome::Indeterminate(last_error.unwrap_or("unknown").to_string()),
        _ => Outcome::Failed(last_error.unwrap_or("unknown").to_string()),
    }
}

/// One client: until `stop`, picks an operation (from its own seeded generator), paced to
/// its share of the rate, and records it.
pub async fn client(w: Arc<Workload>, c: usize, seed: u64, interval: Duration, stop: Instant) {
    let mut rng = StdRng::seed_from_u64(seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let (buyer_id, buyer_token) = w.seed.buyers[c % w.seed.buyers.len()].clone();
    let device = w.seed.devices[c];
    let mut last_index: u64 = 0;
    let mut next = Instant::now() + interval.mul_f64(rng.random::<f64>());
    let (mut purchases, mut batches) = (0u64, 0i64);
    // Books this client saw sold out (`out_of_stock`), by seed position.
    let mut sold_out = vec![false; w.seed.books.len()];
    // Like a client library: stay on a node while it answers, move to the next on failure.
    let home = c % w.urls.len();
    let mut node = home;
    let mut n = 0u64;
    while Instant::now() < stop {
        tokio::time::sleep_until(next.into()).await;
        // A client that fell behind (slow answers) does not burst to catch up.
        next = (next + interval).max(Instant::now());
        n += 1;
        if n.is_multiple_of(BACK_HOME_EVERY) {
            node = home;
        }
        let roll: f64 = rng.random();
        let op = if roll < 0.40 {
            purchases += 1;
            let pick = pick_book(&mut rng, &sold_out);
            let book = &w.seed.books[pick];
            let quantity = rng.random_range(1..=3);
            let key = format!("drill-{}-c{c}-p{purchases}", w.run);
            let body = json!({ "book_id": book.id, "quantity": quantity });
            let build = |u: &str| {
                w.http
                    .post(format!("{u}/api/v1/orders"))
                    .bearer_auth(&buyer_token)
                    .header("idempotency-key", &key)
                    .json(&body)
            };
            let (tries, answer, maybe) = attempts(&w, node, &build).await;
            let outcome = write_outcome(&answer, tries.last().and_then(|t| t.error.as_deref()), maybe);
            if matches!(&outcome, Outcome::Failed(code) if code == "out_of_stock") {
                sold_out[pick] = true;
            }
            let order_id = answer.as_ref().filter(|_| outcome == Outcome::Ok).and_then(|a| a.body["id"].as_i64());
            if let Some(i) = answer.as_ref().and_then(|a| a.index) {
                last_index = last_index.max(i);
            }
            Op {
                client: c,
                kind: OpKind::Purchase { key, buyer_id, book_id: book.id, quantity, order_id },
                attempts: tries,
                outcome,
            }
        } else if roll < 0.75 {
            let pick = rng.random_range(0..w.seed.books.len());
            let book = &w.seed.books[pick];
            let level = if rng.random_bool(0.5) { Level::Session } else { Level::Linearizable };
            let index = last_index.to_string();
            let build = |u: &str| {
                w.http
                    .get(format!("{u}/api/v1/books/{}", book.id))
                    .header("x-panal-consistency", level.header())
                    .header("x-panal-index", &index)
            };
            let (tries, answer, _) = attempts(&w, node, &build).await;
            let stock = answer.as_ref().filter(|a| a.status == 200).and_then(|a| a.body["stock"].as_i64());
            // Stock comes back when unpaid reservations expire.
            if stock.is_some_and(|s| s > 0) {
                sold_out[pick] = false;
            }
            let outcome = match stock {
                Some(_) => Outcome::Ok,
                None => {
                    Outcome::Failed(tries.last().and_then(|t| t.error.clone()).unwrap_or_else(|| "no_stock".into()))
                }
            };
            Op { client: c, kind: OpKind::ReadStock { book_id: book.id, level, stock }, attempts: tries, outcome }
        } else {
            batches += 1;
            let key = format!("drill-{}-c{c}-r{batches}", w.run);
            let timestamps: Vec<i64> = (0..READINGS_PER_OP)
                .map(|k| READINGS_FROM_MS + ((batches - 1) * READINGS_PER_OP + k) * 60_000)
                .collect();
            let readings: Vec<Value> = timestamps
                .iter()
                .map(|t| json!({ "ts": panal_actors::time::rfc3339(*t), "consumption_kwh": 0.5 + (*t % 7) as f64 / 10.0 }))
                .collect();
            let body = json!({ "readings": readings });
            let build = |u: &str| {
                w.http
                    .post(format!("{u}/api/v1/devices/{device}/readings"))
                    .bearer_auth(&w.seed.meter_token)
                    .header("idempotency-key", &key)
                    .json(&body)
            };
            let (tries, answer, maybe) = attempts(&w, node, &build).await;
            let outcome = write_outcome(&answer, tries.last().and_then(|t| t.error.as_deref()), maybe);
            if let Some(i) = answer.as_ref().and_then(|a| a.index) {
                last_index = last_index.max(i);
            }
            Op { client: c, kind: OpKind::Readings { key, device_id: device, timestamps }, attempts: tries, outcome }
        };
        node = op.node().unwrap_or(node);
        w.record(op);
    }
}

/// The seller: until `stop`, every [`RESTOCK_EVERY`], reads each book with a finite
/// initial stock linearizably and, when it is sold out, puts its initial stock back with
/// `PATCH /api/v1/books/{id}`, so that purchases go on for the whole drill. Only a sold-out
/// book is restocked and only the seller raises stock, so a restock applies at 0 and adds
/// exactly its units (the checker counts them). A restock that may or may not have been
/// applied ends the restocking of its book: applied late, it must still find the book at 0.
pub async fn restocker(w: Arc<Workload>, stop: Instant) {
    let mut books: Vec<SeededBook> = w.seed.books.iter().filter(|b| restockable(b.initial_stock)).cloned().collect();
    let client = w.seed.devices.len();
    let mut k = 0usize;
    while Instant::now() < stop {
        tokio::time::sleep(RESTOCK_EVERY).await;
        let mut given_up = Vec::new();
        for book in &books {
            k += 1;
            let node = k % w.urls.len();
            let seller = w.seed.seller.pinned(node);
            let linearizable = seller.clone().with_consistency(Consistency::Linearizable);
            let read = tokio::time::timeout(ATTEMPT_TIMEOUT, linearizable.get_book(book.id)).await;
            if !matches!(read, Ok(Ok(ref b)) if b.stock == 0) {
                continue;
            }
            let patch = BookPatch { stock: Some(book.initial_stock), ..Default::default() };
            let start = Instant::now();
            let result = tokio::time::timeout(ATTEMPT_TIMEOUT, seller.update_book(book.id, &patch)).await;
            let end = Instant::now();
            let (status, outcome) = restock_outcome(result.as_ref().map(|r| r.as_ref().map(drop)).ok());
            let error = match &outcome {
                Outcome::Ok => None,
                Outcome::Failed(e) | Outcome::Indeterminate(e) => Some(e.clone()),
            };
            if matches!(outcome, Outcome::Indeterminate(_)) {
                given_up.push(book.id);
            }
            w.record(Op {
                client,
                kind: OpKind::Restock { book_id: book.id, units: book.initial_stock },
                attempts: vec![Attempt { node, start: w.ms(start), end: w.ms(end), status, error, served_by: None }],
                outcome,
            });
        }
        books.retain(|b| !given_up.contains(&b.id));
    }
}

/// Whether the seller restocks a book listed with `initial_stock` (the others never run out).
fn restockable(initial_stock: i64) -> bool {
    initial_stock < panal_actors::catalog::MAX_STOCK
}

/// The status and outcome of a restock from its answer (`None`: no answer in time).
fn restock_outcome(result: Option<std::result::Result<(), &ClientError>>) -> (u16, Outcome) {
    match result {
        Some(Ok(())) => (200, Outcome::Ok),
        None => (0, Outcome::Indeterminate("timeout".into())),
        // No node accepted the connection: nothing was sent.
        Some(Err(ClientError::Unreachable { .. })) => (0, Outcome::Failed("connection_refused".into())),
        Some(Err(e)) => match e.status() {
            Some(s) if s >= 500 || s == 408 || s == 429 => {
                (s, Outcome::Indeterminate(e.code().unwrap_or("server_error").to_string()))
            }
            Some(s) => (s, Outcome::Failed(e.code().unwrap_or("client_error").to_string())),
            None => (0, Outcome::Indeterminate("connection".into())),
        },
    }
}

/// The seed position of the book to buy: one with stock as far as this client knows,
/// except a [`PROBE_SOLD_OUT`] share of purchases that try a book seen sold out.
fn pick_book(rng: &mut StdRng, sold_out: &[bool]) -> usize {
    let (gone, left): (Vec<usize>, Vec<usize>) = (0..sold_out.len()).partition(|&i| sold_out[i]);
    let from = if left.is_empty() || (!gone.is_empty() && rng.random_bool(PROBE_SOLD_OUT)) { &gone } else { &left };
    from[rng.random_range(0..from.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purchases_go_to_books_with_stock_but_still_probe_sold_out_ones() {
        let mut rng = StdRng::seed_from_u64(7);
        let sold_out = [true, false, true, false];
        let mut picks = [0u32; 4];
        for _ in 0..10_000 {
            picks[pick_book(&mut rng, &sold_out)] += 1;
        }
        let probes = picks[0] + picks[2];
        assert!((300..=700).contains(&probes), "about 5% of 10,000 try a sold-out book: {picks:?}");
        assert!(picks.iter().all(|&n| n > 0), "every book is tried: {picks:?}");
        let mut rng = StdRng::seed_from_u64(7);
        assert!((0..100).all(|_| pick_book(&mut rng, &[false, false]) < 2));
        assert!((0..100).all(|_| pick_book(&mut rng, &[true, true]) < 2), "all sold out: still a book");
    }

    #[test]
    fn the_seller_restocks_the_books_that_run_out_and_counts_only_what_surely_applied() {
        assert!(restockable(TINY_STOCK) && restockable(20));
        assert!(!restockable(panal_actors::catalog::MAX_STOCK), "a book at the most stock never runs out");
        assert_eq!(restock_outcome(Some(Ok(()))), (200, Outcome::Ok));
        assert_eq!(restock_outcome(None), (0, Outcome::Indeterminate("timeout".into())));
        let unreachable = ClientError::Unreachable { tried: vec![], hint: None };
        assert_eq!(restock_outcome(Some(Err(&unreachable))), (0, Outcome::Failed("connection_refused".into())));
        let api = |status: u16, code: &str| ClientError::Api {
            method: "PATCH".into(),
            path: "/api/v1/books/1".into(),
            status,
            error: Box::new(crate::tooling::client::ApiError::from_body(
                status,
                format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#).as_bytes(),
            )),
            retry_after: None,
        };
        assert_eq!(
            restock_outcome(Some(Err(&api(503, "no_leader")))),
            (503, Outcome::Indeterminate("no_leader".into()))
        );
        assert_eq!(restock_outcome(Some(Err(&api(404, "not_found")))), (404, Outcome::Failed("not_found".into())));
    }
}
