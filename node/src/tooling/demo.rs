//! Demo data for `panal up --demo`, loaded through the public API of every node in turn (so
//! loading it also exercises forwarding): three users, a bookshop with stock and one paid
//! order, a home meter with 30 days of hourly readings, and a battery with a 48-hour CSV.

use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// The demo accounts: (username, password, what they do).
pub const USERS: [(&str, &str, &str); 3] = [
    ("alice", "alice-demo-pass", "sells the books"),
    ("bob", "bob-demo-pass", "bought one book"),
    ("carol", "carol-demo-pass", "owns the meter and the battery"),
];

const BOOKS: [(&str, &str, i64, i64); 10] = [
    ("The Dispossessed", "Ursula K. Le Guin", 1250, 12),
    ("A Wizard of Earthsea", "Ursula K. Le Guin", 990, 20),
    ("Dune", "Frank Herbert", 1490, 8),
    ("Neuromancer", "William Gibson", 1100, 15),
    ("The Left Hand of Darkness", "Ursula K. Le Guin", 1190, 5),
    ("Solaris", "Stanisław Lem", 1050, 10),
    ("Kindred", "Octavia E. Butler", 1290, 25),
    ("Parable of the Sower", "Octavia E. Butler", 1150, 30),
    ("Foundation", "Isaac Asimov", 999, 40),
    ("Hyperion", "Dan Simmons", 1399, 6),
];

/// What was loaded, for the banner.
#[derive(Debug)]
pub struct Loaded {
    pub books: usize,
    pub readings: usize,
    pub meter_id: i64,
    pub battery_id: i64,
    /// False when the data was already there (a restarted demo cluster).
    pub fresh: bool,
}

struct Api {
    http: reqwest::Client,
    urls: Vec<String>,
    next: std::cell::Cell<usize>,
    /// The highest `X-Panal-Index` answered so far, sent with every request: each call
    /// goes to another node, and must see the writes before it (session consistency).
    index: std::cell::Cell<u64>,
}

impl Api {
    /// Sends to the next node in turn; `body` is JSON, or (content type, text).
    async fn call(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Body<'_>) -> Result<Value> {
        let i = self.next.get();
        self.next.set(i + 1);
        let url = format!("{}{path}", self.urls[i % self.urls.len()]);
        let mut req = self.http.request(method, &url).header("x-panal-index", self.index.get().to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(&v),
            Body::Text(content_type, text) => req.header("content-type", content_type).body(text.to_string()),
        };
        let resp = req.send().await.map_err(|e| Error::Fatal(format!("demo data: {url}: {e}")))?;
        let status = resp.status();
        let index = resp.headers().get("x-panal-index").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        self.index.set(self.index.get().max(index.unwrap_or(0)));
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(Error::Fatal(format!("demo data: {url} answered {status}: {value}")));
        }
        Ok(value)
    }

    async fn login(&self, username: &str, password: &str) -> Result<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/api/v1/auth/login",
                None,
                Body::Json(json!({"username": username, "password": password})),
            )
            .await?;
        v["access_token"].as_str().map(str::to_string).ok_or_else(|| Error::Fatal("login answer has no token".into()))
    }
}

enum Body<'a> {
    None,
    Json(Value),
    Text(&'static str, &'a str),
}

/// Loads the demo data unless it is there already (alice can log in).
pub async fn load(urls: &[String]) -> Result<Loaded> {
    let http =
        reqwest::Client::builder().timeout(Duration::from_secs(60)).build().map_err(|e| Error::Fatal(e.to_string()))?;
    let api = Api { http, urls: urls.to_vec(), next: Default::default(), index: Default::default() };
    use reqwest::Method;
    if let Ok(carol) = api.login(USERS[2].0, USERS[2].1).await {
        let books = api.call(Method::GET, "/api/v1/books?limit=100", None, Body::None).await?;
        let devices = api.call(Method::GET, "/api/v1/devices", Some(&carol), Body::None).await?;
        let id_of = |kind: &str| {
            devices["items"].as_array().into_iter().flatten().find(|d| d["kind"] == kind).and_then(|d| d["id"].as_i64())
        };
        return Ok(Loaded {
            books: books["items"].as_array().map_or(0, Vec::len),
            readings: 0,
            meter_id: id_of("meter").unwrap_or_default(),
            battery_id: id_of("battery").unwrap_or_default(),
            fresh: false,
        });
    }
    let mut tokens = Vec::new();
    for (username, password, _) in USERS {
        api.call(
            Method::POST,
            "/api/v1/auth/register",
            None,
            Body::Json(json!({"username": username, "password": password, "email": format!("{username}@example.com")})),
        )
        .await?;
        tokens.push(api.login(username, password).await?);
    }
    let (alice, bob, carol) = (&tokens[0], &tokens[1], &tokens[2]);

    let mut first_book = 0;
    for (title, author, price_cents, stock) in BOOKS {
        let book = json!({"title": title, "author": author, "description": format!("{title} by {author}."),
            "price_cents": price_cents, "currency": "EUR", "stock": stock});
        let v = api.call(Method::POST, "/api/v1/books", Some(alice), Body::Json(book)).await?;
        if first_book == 0 {
            first_book = v["id"].as_i64().unwrap_or_default();
        }
    }
    let order = api
        .call(Method::POST, "/api/v1/orders", Some(bob), Body::Json(json!({"book_id": first_book, "quantity": 1})))
        .await?;
    let order_id = order["id"].as_i64().unwrap_or_default();
    api.call(
        Method::POST,
        &format!("/api/v1/orders/{order_id}/pay"),
        Some(bob),
        Body::Json(json!({"card_number": "4242 4242 4242 4242", "expiry": "12/39", "cvc": "123"})),
    )
    .await?;

    let meter = api
        .call(Method::POST, "/api/v1/devices", Some(carol), Body::Json(json!({"name": "home meter", "kind": "meter"})))
        .await?;
    let meter_id = meter["id"].as_i64().unwrap_or_default();
    let hour_ms = 3_600_000;
    let now_hour = panal_actors::time::wall_ms() / hour_ms * hour_ms;
    let hours = 30 * 24;
    let readings: Vec<Value> = (0..hours)
        .map(|h| {
            let ts = now_hour - (hours - h) * hour_ms;
            json!({"ts": panal_actors::time::rfc3339(ts), "consumption_kwh": consumption(ts),
                "generation_kwh": generation(ts)})
        })
        .collect();
    api.call(
        Method::POST,
        &format!("/api/v1/devices/{meter_id}/readings"),
        Some(carol),
        Body::Json(json!({ "readings": readings })),
    )
    .await?;

    let battery = api
        .call(Method::POST, "/api/v1/devices", Some(carol), Body::Json(json!({"name": "powerwall", "kind": "battery"})))
        .await?;
    let battery_id = battery["id"].as_i64().unwrap_or_default();
    let csv = battery_csv(now_hour - 48 * hour_ms);
    api.call(
        Method::POST,
        &format!("/api/v1/devices/{battery_id}/battery.csv"),
        Some(carol),
        Body::Text("text/csv", &csv),
    )
    .await?;
    Ok(Loaded { books: BOOKS.len(), readings: readings.len(), meter_id, battery_id, fresh: true })
}

/// Household consumption in kWh for the hour starting at `ts_ms`: a morning and an evening
/// peak, less at weekends, and a little deterministic noise.
fn consumption(ts_ms: i64) -> f64 {
    let hour = (ts_ms / 3_600_000) % 24;
    let weekday = (ts_ms / 86_400_000 + 3) % 7; // 1970-01-01 was a Thursday
    let peaks = match hour {
        6..=8 => 0.9,
        17..=21 => 1.4,
        0..=5 => 0.25,
        _ => 0.5,
    };
    let weekend = if weekday >= 5 { 1.2 } else { 1.0 };
    let noise = ((ts_ms / 3_600_000 * 7919) % 17) as f64 / 100.0;
    ((peaks * weekend + noise) * 100.0).round() / 100.0
}

/// Rooftop solar in kWh: a bell around noon.
fn generation(ts_ms: i64) -> f64 {
    let hour = ((ts_ms / 3_600_000) % 24) as f64;
    let sun = (1.0 - ((hour - 12.5) / 5.0).powi(2)).max(0.0);
    (sun * 1.8 * 100.0).round() / 100.0
}

/// 48 hours of battery samples from `start_ms`: charging by day, discharging at night.
fn battery_csv(start_ms: i64) -> String {
    let mut csv = String::from("timestamp,soc,voltage,current,temperature\n");
    for h in 0..48i64 {
        let ts = start_ms + h * 3_600_000;
        let hour = (ts / 3_600_000) % 24;
        let charging = (9..17).contains(&hour);
        let soc = if charging { 30.0 + (hour - 9) as f64 * 8.0 } else { 90.0 - ((hour + 7) % 24) as f64 * 4.0 };
        let current = if charging { 12.0 } else { -6.0 };
        csv.push_str(&format!("{},{soc:.1},48.2,{current},24\n", panal_actors::time::rfc3339(ts)));
    }
    csv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_values_are_in_range() {
        for h in 0..24 * 14 {
            let ts = h * 3_600_000;
            assert!((0.0..5.0).contains(&consumption(ts)));
            assert!((0.0..=1.8).contains(&generation(ts)));
        }
        for line in battery_csv(0).lines().skip(1) {
            let soc: f64 = line.split(',').nth(1).unwrap().parse().unwrap();
            assert!((0.0..=100.0).contains(&soc), "{line}");
        }
    }
}
