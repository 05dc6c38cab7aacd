//! Demo data for `panal up --demo`, loaded through the public API of every node in turn (so
//! loading it also exercises forwarding) with the one seeder (`seed.rs`): three users, a
//! bookshop with stock and one paid order, a home meter with 30 days of hourly readings,
//! and a battery with a 48-hour CSV.

use panal_actors::catalog::ops::NewOrder;
use panal_actors::catalog::payment::CardPayment;
use panal_actors::catalog::{BookQuery, NewBook};
use panal_actors::energy::ops::{ReadingInput, ReadingsInput};
use panal_actors::energy::{DeviceKind, NewDevice};
use panal_actors::page::PageParams;

use crate::error::Result;
use crate::tooling::client::Client;
use crate::tooling::seed;

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

/// The users' sessions; call `k` goes to node `k mod n` (so loading also exercises
/// forwarding), and every session starts from the index of the one before, so each call
/// sees the writes before it wherever it lands.
struct Rotation {
    next: std::cell::Cell<usize>,
}

impl Rotation {
    fn on(&self, client: &Client) -> Client {
        let k = self.next.get();
        self.next.set(k + 1);
        client.pinned(k % client.nodes().len())
    }
}

/// Loads the demo data through `api` (a client of every node) unless it is there already
/// (carol can log in).
pub async fn load(api: &Client) -> Result<Loaded> {
    let turn = Rotation { next: Default::default() };
    let carol = api.new_session();
    if turn.on(&carol).login(USERS[2].0, USERS[2].1).await.is_ok() {
        let books = turn.on(&carol).list_books(&BookQuery { limit: Some(100), ..Default::default() }).await?;
        let devices = turn.on(&carol).list_devices(&PageParams::default()).await?;
        let id_of = |kind: DeviceKind| devices.items.iter().find(|d| d.kind == kind).map(|d| d.id);
        return Ok(Loaded {
            books: books.items.len(),
            readings: 0,
            meter_id: id_of(DeviceKind::Meter).unwrap_or_default(),
            battery_id: id_of(DeviceKind::Battery).unwrap_or_default(),
            fresh: false,
        });
    }
    let mut sessions = Vec::new();
    let mut last = api.clone();
    for (username, password, _) in USERS {
        let user = last.new_session();
        seed::account(&turn.on(&user), username, password, Some(format!("{username}@example.com"))).await?;
        last = user.clone();
        sessions.push(user);
    }
    let (alice, bob, carol) = (&sessions[0], &sessions[1], &sessions[2]);
    // Each session must also see the others' writes (bob buys alice's book).
    let sync = |c: &Client| c.observe_index(carol.last_index().max(alice.last_index()).max(bob.last_index()));

    let books: Vec<NewBook> = BOOKS
        .iter()
        .map(|&(title, author, price_cents, stock)| NewBook {
            title: title.into(),
            author: author.into(),
            description: format!("{title} by {author}."),
            price_cents,
            currency: "EUR".into(),
            stock,
        })
        .collect();
    let first_book = seed::books(alice, &books, 1).await?[0];
    sync(bob);
    let order = turn.on(bob).place_order(&NewOrder { book_id: first_book, quantity: 1 }, None).await?;
    let card = CardPayment { card_number: "4242 4242 4242 4242".into(), expiry: "12/39".into(), cvc: "123".into() };
    turn.on(bob).pay_order(order.id, &card).await?;

    sync(carol);
    let devices = [
        NewDevice { name: "home meter".into(), kind: DeviceKind::Meter },
        NewDevice { name: "powerwall".into(), kind: DeviceKind::Battery },
    ];
    let ids = seed::devices(carol, &devices, 1).await?;
    let (meter_id, battery_id) = (ids[0], ids[1]);
    let hour_ms = 3_600_000;
    let now_hour = panal_actors::time::wall_ms() / hour_ms * hour_ms;
    let hours = 30 * 24;
    let readings: Vec<ReadingInput> = (0..hours)
        .map(|h| {
            let ts = now_hour - (hours - h) * hour_ms;
            ReadingInput {
                ts: panal_actors::time::rfc3339(ts),
                consumption_kwh: Some(consumption(ts)),
                generation_kwh: Some(generation(ts)),
            }
        })
        .collect();
    let count = readings.len();
    turn.on(carol).add_readings(meter_id, &ReadingsInput::Batch { readings }).await?;

    let csv = battery_csv(now_hour - 48 * hour_ms);
    turn.on(carol).upload_battery_csv(battery_id, &csv).await?;
    Ok(Loaded { books: BOOKS.len(), readings: count, meter_id, battery_id, fresh: true })
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
