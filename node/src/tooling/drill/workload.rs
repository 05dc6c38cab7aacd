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
use crate::error::{Error, Result};

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

/// A request that must succeed (seeding), retried across nodes for up to a minute.
async fn must(urls: &[String], what: &str, build: impl Fn(&str) -> reqwest::RequestBuilder) -> Result<Answer> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    loop {
        let url = &urls[n % urls.len()];
        n += 1;
        let result = send(build(url).timeout(Duration::from_secs(10))).await;
        match result {
            Ok(a) if (200..300).contains(&a.status) => return Ok(a),
            ref r if retryable(r) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(a) => return Err(Error::Fatal(format!("{what}: {} {}", a.status, a.body))),
            Err(e) => return Err(Error::Fatal(format!("{what}: {e}"))),
        }
    }
}

async fn account(http: &reqwest::Client, urls: &[String], username: &str) -> Result<(i64, String)> {
    let body = json!({ "username": username, "password": PASSWORD });
    let user =
        must(urls, &format!("register {username}"), |u| http.post(format!("{u}/api/v1/auth/register")).json(&body))
            .await?;
    let id = user.body["id"].as_i64().ok_or_else(|| Error::Fatal(format!("register {username}: no id")))?;
    let index = user.index.unwrap_or(0).to_string();
    let login = must(urls, &format!("login {username}"), |u| {
        http.post(format!("{u}/api/v1/auth/login")).header("x-panal-index", &index).json(&body)
    })
    .await?;
    let token =
        login.body["access_token"].as_str().ok_or_else(|| Error::Fatal(format!("login {username}: no token")))?;
    Ok((id, token.to_string()))
}

/// Creates the drill's accounts, books and devices. `run` makes names unique per drill, so
/// that drills can run one after another against the same cluster. `expected_units` is how
/// many units the workload may try to buy at its target rate.
pub async fn seed(
    http: &reqwest::Client,
    urls: &[String],
    run: &str,
    clients: usize,
    expected_units: i64,
) -> Result<Seed> {
    let (_, seller_token) = account(http, urls, &format!("drill-{run}-seller")).await?;
    let mut buyers = Vec::new();
    for b in 0..clients.clamp(1, MAX_BUYERS) {
        buyers.push(account(http, urls, &format!("drill-{run}-buyer{b}")).await?);
    }
    let (_, meter_token) = account(http, urls, &format!("drill-{run}-meter")).await?;
    let scarce = (expected_units / (BOOKS as i64 * 3)).clamp(20, 100_000);
    let mut books = Vec::new();
    for b in 0..BOOKS {
        let stock = match b {
            0 => TINY_STOCK,
            2 => scarce,
            _ => panal_actors::catalog::MAX_STOCK,
        };
        let body = json!({
            "title": format!("Drill {run} book {b}"), "author": "Drill", "price_cents": 1000 + b as i64,
            "currency": "EUR", "stock": stock,
        });
        let a = must(urls, "create a book", |u| {
            http.post(format!("{u}/api/v1/books")).bearer_auth(&seller_token).json(&body)
        })
        .await?;
        let id = a.body["id"].as_i64().ok_or_else(|| Error::Fatal(format!("book created without id: {}", a.body)))?;
        let initial_stock = a.body["stock"].as_i64().unwrap_or(stock);
        books.push(SeededBook { id, initial_stock });
    }
    let mut devices = Vec::new();
    for c in 0..clients {
        let body = json!({ "name": format!("drill {run} meter {c}"), "kind": "meter" });
        let a = must(urls, "create a device", |u| {
            http.post(format!("{u}/api/v1/devices")).bearer_auth(&meter_token).json(&body)
        })
        .await?;
        devices.push(a.body["id"].as_i64().ok_or_else(|| Error::Fatal(format!("device without id: {}", a.body)))?);
    }
    Ok(Seed { books, seller_token, buyers, meter_token, devices })
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
        tries.push(Attempt { node, start: w.ms(start), end: w.ms(end), status, error });
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
}
