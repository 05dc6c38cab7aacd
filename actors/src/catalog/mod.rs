//! The BookStore: listings with stock, orders that reserve stock atomically, simulated
//! payment and shipping, and invoices with gapless numbers. Every rule that protects an
//! invariant (stock never negative, one invoice per paid order, who may change what) is
//! enforced here, inside `apply`, identically on every replica.

pub mod invoice;
pub mod ops;
pub mod payment;

use panal_raft::rusqlite::{self, params, Connection, OptionalExtension, Row};
use panal_raft::ApplyContext;
use serde::{Deserialize, Serialize};

use crate::command::{commands, Proposal};
use crate::error::Validator;
use crate::page::{page_rows, Page};
use crate::time::{self, HOUR_MS, MINUTE_MS};
use crate::{Error, Rejection};

pub use invoice::Invoice;
pub use payment::PaymentOutcome;

/// How long an order holds its stock while unpaid (a declined payment may be retried).
pub const RESERVATION_MS: i64 = 15 * MINUTE_MS;
/// Simulated carrier: a shipped parcel is in transit after this long…
pub const IN_TRANSIT_AFTER_MS: i64 = HOUR_MS;
/// …and delivered after this long (both counted from shipping).
pub const DELIVERED_AFTER_MS: i64 = 48 * HOUR_MS;
pub const CARRIER: &str = "Panal Post";
/// Accepted currencies.
pub const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];
pub const MAX_QUANTITY: i64 = 100;
pub const MAX_PRICE_CENTS: i64 = 100_000_000;
pub const MAX_STOCK: i64 = 1_000_000;

/// A listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Book {
    pub id: i64,
    pub seller_id: i64,
    pub seller: String,
    pub title: String,
    pub author: String,
    pub description: String,
    /// Price of one unit in cents of `currency`.
    pub price_cents: i64,
    /// ISO 4217 code: EUR, USD or GBP.
    pub currency: String,
    pub stock: i64,
    #[serde(rename = "created_at", with = "time::as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_ms: i64,
    #[serde(rename = "updated_at", with = "time::as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_ms: i64,
}

/// A new listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBook {
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub title: String,
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub author: String,
    #[serde(default)]
    #[schema(max_length = 5000)]
    pub description: String,
    #[schema(minimum = 1, maximum = 100000000)]
    pub price_cents: i64,
    #[schema(pattern = "^(EUR|USD|GBP)$")]
    pub currency: String,
    #[schema(minimum = 0, maximum = 1000000)]
    pub stock: i64,
}

/// Changes to a listing; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookPatch {
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub title: Option<String>,
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub author: Option<String>,
    #[schema(max_length = 5000)]
    pub description: Option<String>,
    #[schema(minimum = 1, maximum = 100000000)]
    pub price_cents: Option<i64>,
    #[schema(pattern = "^(EUR|USD|GBP)$")]
    pub currency: Option<String>,
    #[schema(minimum = 0, maximum = 1000000)]
    pub stock: Option<i64>,
}

impl NewBook {
    /// Every rule a listing must satisfy; all failures are reported at once.
    pub fn validate(&self) -> Result<(), Error> {
        let mut v = Validator::default();
        let text = |s: &str, max: usize| !s.trim().is_empty() && s.chars().count() <= max;
        v.check(text(&self.title, 200), "title", "required, at most 200 characters");
        v.check(text(&self.author, 200), "author", "required, at most 200 characters");
        v.check(self.description.chars().count() <= 5000, "description", "at most 5000 characters");
        v.check(
            (1..=MAX_PRICE_CENTS).contains(&self.price_cents),
            "price_cents",
            format!("must be 1 to {MAX_PRICE_CENTS} cents"),
        );
        v.check(CURRENCIES.contains(&self.currency.as_str()), "currency", "must be one of EUR, USD, GBP");
        v.check((0..=MAX_STOCK).contains(&self.stock), "stock", format!("must be 0 to {MAX_STOCK}"));
        v.finish()
    }

    /// The listing as stored: titles and authors without surrounding blanks.
    fn normalized(mut self) -> NewBook {
        self.title = self.title.trim().to_string();
        self.author = self.author.trim().to_string();
        self
    }

    fn patched(mut self, p: BookPatch) -> NewBook {
        self.title = p.title.unwrap_or(self.title);
        self.author = p.author.unwrap_or(self.author);
        self.description = p.description.unwrap_or(self.description);
        self.price_cents = p.price_cents.unwrap_or(self.price_cents);
        self.currency = p.currency.unwrap_or(self.currency);
        self.stock = p.stock.unwrap_or(self.stock);
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Stock reserved, waiting for payment until `reserved_until`.
    PendingPayment,
    Paid,
    Shipped,
    InTransit,
    Delivered,
    /// Not paid in time: its stock went back to the listing.
    Expired,
}

impl OrderStatus {
    fn as_str(self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "pending_payment",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::InTransit => "in_transit",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Expired => "expired",
        }
    }

    fn parse(s: &str) -> OrderStatus {
        match s {
            "paid" => OrderStatus::Paid,
            "shipped" => OrderStatus::Shipped,
            "in_transit" => OrderStatus::InTransit,
            "delivered" => OrderStatus::Delivered,
            "expired" => OrderStatus::Expired,
            _ => OrderStatus::PendingPayment,
        }
    }
}

/// One step of an order's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderEvent {
    /// A status, or `payment_declined`.
    pub event: String,
    #[serde(rename = "at", with = "time::as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at_ms: i64,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CardOnFile {
    pub brand: String,
    /// The only digits ever stored.
    pub last4: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Shipment {
    pub carrier: String,
    pub tracking_number: String,
    pub address: String,
    #[serde(rename = "shipped_at", with = "time::as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub shipped_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Order {
    pub id: i64,
    pub book_id: i64,
    pub book_title: String,
    pub buyer_id: i64,
    pub seller_id: i64,
    pub quantity: i64,
    pub unit_price_cents: i64,
    pub total_cents: i64,
    pub currency: String,
    pub status: OrderStatus,
    #[serde(rename = "created_at", with = "time::as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_ms: i64,
    /// Until when the stock is held for an unpaid order.
    #[serde(rename = "reserved_until", with = "time::as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub reserved_until_ms: i64,
    #[serde(rename = "paid_at", with = "time::as_rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub paid_ms: Option<i64>,
    pub card: Option<CardOnFile>,
    pub shipment: Option<Shipment>,
    pub invoice_number: Option<i64>,
    pub history: Vec<OrderEvent>,
}

/// Who is asking for a change: the caller's id and whether they are an admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub user_id: i64,
    pub admin: bool,
}

commands! {
    pub enum CatalogCommand {
        CreateBook {
            pub seller_id: i64,
            pub book: NewBook,
        },
        UpdateBook {
            pub book_id: i64,
            pub actor: Actor,
            pub patch: BookPatch,
        },
        DeleteBook {
            pub book_id: i64,
            pub actor: Actor,
        },
        /// Reserves `quantity` units of the book for the buyer, or fails with `out_of_stock`.
        PlaceOrder {
            pub buyer_id: i64,
            pub book_id: i64,
            pub quantity: i64,
        },
        /// The outcome of a card payment, decided by the proposer (the card number itself is
        /// never proposed, so it never reaches the log or the database).
        Pay {
            pub order_id: i64,
            pub buyer_id: i64,
            pub outcome: PaymentOutcome,
        },
        Ship {
            pub order_id: i64,
            pub actor: Actor,
            pub address: String,
        },
        /// Advances time-driven state: releases expired reservations, moves parcels along.
        /// Proposed by the leader when something is due.
        Tick,
    }
}

pub(crate) fn migrate(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS books (
             id INTEGER PRIMARY KEY,
             seller_id INTEGER NOT NULL,
             title TEXT NOT NULL,
             author TEXT NOT NULL,
             description TEXT NOT NULL,
             price_cents INTEGER NOT NULL,
             currency TEXT NOT NULL,
             stock INTEGER NOT NULL CHECK (stock >= 0),
             created_ms INTEGER NOT NULL,
             updated_ms INTEGER NOT NULL,
             deleted INTEGER NOT NULL DEFAULT 0
         );
         CREATE INDEX IF NOT EXISTS books_author ON books (author COLLATE NOCASE);
         CREATE TABLE IF NOT EXISTS orders (
             id INTEGER PRIMARY KEY,
             book_id INTEGER NOT NULL,
             buyer_id INTEGER NOT NULL,
             seller_id INTEGER NOT NULL,
             quantity INTEGER NOT NULL CHECK (quantity > 0),
             unit_price_cents INTEGER NOT NULL,
             currency TEXT NOT NULL,
             status TEXT NOT NULL,
             created_ms INTEGER NOT NULL,
             reserved_until_ms INTEGER NOT NULL,
             paid_ms INTEGER,
             card_brand TEXT,
             card_last4 TEXT,
             carrier TEXT,
             tracking_number TEXT,
             address TEXT,
             shipped_ms INTEGER,
             invoice_number INTEGER
         );
         CREATE INDEX IF NOT EXISTS orders_buyer ON orders (buyer_id, id);
         CREATE INDEX IF NOT EXISTS orders_seller ON orders (seller_id, id);
         CREATE INDEX IF NOT EXISTS orders_status ON orders (status);
         CREATE TABLE IF NOT EXISTS order_events (
             order_id INTEGER NOT NULL,
             seq INTEGER NOT NULL,
             event TEXT NOT NULL,
             at_ms INTEGER NOT NULL,
             note TEXT,
             PRIMARY KEY (order_id, seq)
         ) WITHOUT ROWID;",
    )?;
    invoice::migrate(db)
}

impl Proposal for command::CreateBook {
    type Reply = Book;

    fn apply(self, db: &Connection, ctx: &ApplyContext) -> rusqlite::Result<Result<Book, Rejection>> {
        let Self { seller_id, book } = self;
        let now = time::now(db, ctx)?;
        if let Err(e) = book.validate() {
            return Ok(Err(Rejection::new("validation_failed", e.to_string())));
        }
        db.prepare_cached(
            "INSERT INTO books (seller_id, title, author, description, price_cents, currency, stock, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        )?
        .execute(params![
            seller_id,
            book.title.trim(),
            book.author.trim(),
            book.description,
            book.price_cents,
            book.currency,
            book.stock,
            now
        ])?;
        let id = db.last_insert_rowid();
        Ok(book_by_id(db, id)?.ok_or_else(|| Rejection::not_found("book")))
    }
}

impl Proposal for command::UpdateBook {
    type Reply = Book;

    fn apply(self, db: &Connection, ctx: &ApplyContext) -> rusqlite::Result<Result<Book, Rejection>> {
        let Self { book_id, actor, patch } = self;
        let now = time::now(db, ctx)?;
        let book = match owned_book(db, book_id, actor)? {
            Ok(b) => b,
            Err(r) => return Ok(Err(r)),
        };
        let current = NewBook {
            title: book.title.clone(),
            author: book.author.clone(),
            description: book.description.clone(),
            price_cents: book.price_cents,
            currency: book.currency.clone(),
            stock: book.stock,
        };
        let next = current.clone().patched(patch).normalized();
        if let Err(e) = next.validate() {
            return Ok(Err(Rejection::new("validation_failed", e.to_string())));
        }
        // A patch that changes nothing (empty, or every field as it is) is not a change:
        // `updated_at` keeps telling when the listing last changed.
        if next == current {
            return Ok(Ok(book));
        }
        db.prepare_cached(
            "UPDATE books SET title = ?2, author = ?3, description = ?4, price_cents = ?5, currency = ?6,
                 stock = ?7, updated_ms = ?8 WHERE id = ?1",
        )?
        .execute(params![
            book_id,
            next.title.trim(),
            next.author.trim(),
            next.description,
            next.price_cents,
            next.currency,
            next.stock,
            now
        ])?;
        Ok(book_by_id(db, book_id)?.ok_or_else(|| Rejection::not_found("book")))
    }
}

impl Proposal for command::DeleteBook {
    type Reply = ();

    fn apply(self, db: &Connection, ctx: &ApplyContext) -> rusqlite::Result<Result<(), Rejection>> {
        let now = time::now(db, ctx)?;
        if let Err(r) = owned_book(db, self.book_id, self.actor)? {
            return Ok(Err(r));
        }
        db.execute("UPDATE books SET deleted = 1, updated_ms = ?2 WHERE id = ?1", params![self.book_id, now])?;
        Ok(Ok(()))
    }
}

impl Proposal for command::PlaceOrder {
    type Reply = Order;

    fn apply(self, db: &Connection, ctx: &ApplyContext) -> rusqlite::Result<Result<Order, Rejection>> {
        place_order(db, time::now(db, ctx)?, self.buyer_id, self.book_id, self.quantity)
    }
}

impl Proposal for command::Pay {
    type Reply = Order;

    fn apply(self, db: &Connection, ctx: &ApplyContext) -> rusqlite::Result<Result<Order, Rejection>> {
        pay(db, time::now(db, ctx)?, self.order_id, self.buyer_id, self.outcome)
    }
}

impl Proposal for command::Ship {
    type Reply = Order;

    fn apply(self, db: &Connection, ctx: &ApplyContext) -> rusqlite::Result<Result<Order, Rejection>> {
        ship(db, ctx, time::now(db, ctx)?, self.order_id, self.actor, &self.address)
    }
}

/// Answers how many orders changed.
impl Proposal for command::Tick {
    type Reply = u64;

    fn apply(self, db: &Connection, ctx: &ApplyContext) -> rusqlite::Result<Result<u64, Rejection>> {
        Ok(Ok(tick(db, time::now(db, ctx)?)?))
    }
}

fn owned_book(db: &Connection, book_id: i64, actor: Actor) -> rusqlite::Result<Result<Book, Rejection>> {
    let Some(book) = book_by_id(db, book_id)? else {
        return Ok(Err(Rejection::not_found(format!("no book {book_id}"))));
    };
    if book.seller_id != actor.user_id && !actor.admin {
        return Ok(Err(Rejection::forbidden("only the seller or an admin may change this listing")));
    }
    Ok(Ok(book))
}

fn place_order(
    db: &Connection,
    now: i64,
    buyer_id: i64,
    book_id: i64,
    quantity: i64,
) -> rusqlite::Result<Result<Order, Rejection>> {
    if !(1..=MAX_QUANTITY).contains(&quantity) {
        return Ok(Err(Rejection::new("validation_failed", format!("quantity must be 1 to {MAX_QUANTITY}"))));
    }
    let Some(book) = book_by_id(db, book_id)? else {
        return Ok(Err(Rejection::not_found(format!("no book {book_id}"))));
    };
    if book.seller_id == buyer_id {
        return Ok(Err(Rejection::new("own_listing", "you cannot buy your own listing")));
    }
    // The check and the decrement are one statement in the entry's transaction: however
    // many nodes sell at once, entries apply one after another and stock never goes below 0.
    let reserved = db
        .prepare_cached("UPDATE books SET stock = stock - ?2 WHERE id = ?1 AND deleted = 0 AND stock >= ?2")?
        .execute(params![book_id, quantity])?;
    if reserved == 0 {
        return Ok(Err(Rejection::new(
            "out_of_stock",
            format!("only {} of {:?} left, {quantity} requested", book.stock, book.title),
        )));
    }
    db.prepare_cached(
        "INSERT INTO orders (book_id, buyer_id, seller_id, quantity, unit_price_cents, currency, status, created_ms, reserved_until_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending_payment', ?7, ?8)",
    )?
    .execute(params![book_id, buyer_id, book.seller_id, quantity, book.price_cents, book.currency, now, now + RESERVATION_MS])?;
    let id = db.last_insert_rowid();
    add_event(db, id, "pending_payment", now, None)?;
    order_reply(db, id)
}

fn pay(
    db: &Connection,
    now: i64,
    order_id: i64,
    buyer_id: i64,
    outcome: PaymentOutcome,
) -> rusqlite::Result<Result<Order, Rejection>> {
    let Some(order) = order_by_id(db, order_id)? else {
        return Ok(Err(Rejection::not_found(format!("no order {order_id}"))));
    };
    if order.buyer_id != buyer_id {
        // The seller and admins see the order: they are told why not. To anyone else the
        // order does not exist, as when they try to read it.
        if order.seller_id == buyer_id || is_admin(db, buyer_id)? {
            return Ok(Err(Rejection::forbidden("only the buyer may pay an order")));
        }
        return Ok(Err(Rejection::not_found(format!("no order {order_id}"))));
    }
    match order.status {
        OrderStatus::PendingPayment if order.reserved_until_ms > now => {}
        OrderStatus::PendingPayment | OrderStatus::Expired => {
            return Ok(Err(Rejection::new("order_expired", "the reservation expired; place a new order")));
        }
        _ => return Ok(Err(Rejection::new("invalid_state", "the order is paid already"))),
    }
    match outcome {
        PaymentOutcome::Approved { card } => {
            let number = invoice::issue(db, &order, now)?;
            db.prepare_cached(
                "UPDATE orders SET status = 'paid', paid_ms = ?2, card_brand = ?3, card_last4 = ?4, invoice_number = ?5
                 WHERE id = ?1",
            )?
            .execute(params![order_id, now, card.brand, card.last4, number])?;
            add_event(db, order_id, "paid", now, Some(&format!("{} ending {}", card.brand, card.last4)))?;
            order_reply(db, order_id)
        }
        PaymentOutcome::Declined { card, code, reason } => {
            // The decline is part of the order's history; the stock stays reserved until
            // the reservation ends, so the buyer may try another card.
            add_event(
                db,
                order_id,
                "payment_declined",
                now,
                Some(&format!("{}: {} ending {}", code.as_str(), card.brand, card.last4)),
            )?;
            Ok(Err(Rejection::new(code.as_str(), reason)))
        }
    }
}

fn ship(
    db: &Connection,
    ctx: &ApplyContext,
    now: i64,
    order_id: i64,
    actor: Actor,
    address: &str,
) -> rusqlite::Result<Result<Order, Rejection>> {
    let Some(order) = order_by_id(db, order_id)? else {
        return Ok(Err(Rejection::not_found(format!("no order {order_id}"))));
    };
    if order.seller_id != actor.user_id && !actor.admin {
        // As for payment: the buyer sees the order and is told why not; others get 404.
        if order.buyer_id == actor.user_id {
            return Ok(Err(Rejection::forbidden("only the seller or an admin may ship an order")));
        }
        return Ok(Err(Rejection::not_found(format!("no order {order_id}"))));
    }
    if order.status != OrderStatus::Paid {
        return Ok(Err(Rejection::new(
            "invalid_state",
            format!("only a paid order ships; this one is {}", order.status.as_str()),
        )));
    }
    let address = address.trim();
    if address.is_empty() || address.chars().count() > 500 {
        return Ok(Err(Rejection::new("validation_failed", "address: required, at most 500 characters")));
    }
    // Deterministic on every replica: derived from the order and the entry's index.
    let tracking = format!("PP{order_id:08}{:04}", ctx.index % 10_000);
    db.prepare_cached(
        "UPDATE orders SET status = 'shipped', carrier = ?2, tracking_number = ?3, address = ?4, shipped_ms = ?5 WHERE id = ?1",
    )?
    .execute(params![order_id, CARRIER, tracking, address, now])?;
    add_event(db, order_id, "shipped", now, Some(&format!("{CARRIER} {tracking}")))?;
    order_reply(db, order_id)
}

/// Applies everything due at `now`; returns how many orders changed.
fn tick(db: &Connection, now: i64) -> rusqlite::Result<u64> {
    let mut changed = 0;
    let expired: Vec<(i64, i64, i64)> = db
        .prepare_cached(
            "SELECT id, book_id, quantity FROM orders WHERE status = 'pending_payment' AND reserved_until_ms <= ?1 ORDER BY id",
        )?
        .query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, book_id, quantity) in expired {
        db.execute("UPDATE books SET stock = stock + ?2 WHERE id = ?1", params![book_id, quantity])?;
        db.execute("UPDATE orders SET status = 'expired' WHERE id = ?1", [id])?;
        add_event(db, id, "expired", now, Some("unpaid: stock released"))?;
        changed += 1;
    }
    for (from, to, after, note) in [
        ("shipped", "in_transit", IN_TRANSIT_AFTER_MS, "picked up by the carrier"),
        ("in_transit", "delivered", DELIVERED_AFTER_MS, "delivered"),
    ] {
        let due: Vec<i64> = db
            .prepare_cached("SELECT id FROM orders WHERE status = ?1 AND shipped_ms + ?2 <= ?3 ORDER BY id")?
            .query_map(params![from, after, now], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for id in due {
            db.execute("UPDATE orders SET status = ?2 WHERE id = ?1", params![id, to])?;
            add_event(db, id, to, now, Some(note))?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// When the next time-driven change falls due (application time), if any.
pub fn next_due(db: &Connection) -> rusqlite::Result<Option<i64>> {
    db.query_row(
        "SELECT min(due) FROM (
             SELECT min(reserved_until_ms) AS due FROM orders WHERE status = 'pending_payment'
             UNION ALL SELECT min(shipped_ms) + ?1 FROM orders WHERE status = 'shipped'
             UNION ALL SELECT min(shipped_ms) + ?2 FROM orders WHERE status = 'in_transit')",
        params![IN_TRANSIT_AFTER_MS, DELIVERED_AFTER_MS],
        |r| r.get(0),
    )
}

/// Drives time-driven changes (expired reservations, parcels moving along): while this
/// node leads, proposes a `Tick` whenever something has fallen due. Runs for the life of
/// the node; every replica applies the tick with the same replicated clock.
pub async fn drive_time(replica: crate::Replica) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if replica.leader().map(|(id, _)| id) != Some(replica.id()) {
            continue;
        }
        let due = replica.state_machine().read(|db| Ok::<_, rusqlite::Error>((next_due(db)?, time::app_now(db)?)));
        let Ok(Ok((Some(due), now))) = due else { continue };
        if due > now {
            continue;
        }
        match crate::propose(&replica, command::Tick, None, crate::services::WRITE_TIMEOUT).await {
            Ok(out) => tracing::debug!(index = out.index, "time-driven catalog changes applied"),
            Err(e) => tracing::debug!(error = %e, "tick not applied; retrying on the next round"),
        }
    }
}

fn is_admin(db: &Connection, user_id: i64) -> rusqlite::Result<bool> {
    Ok(crate::auth::user(db, user_id)?.is_some_and(|u| u.role == crate::auth::Role::Admin))
}

fn add_event(db: &Connection, order_id: i64, event: &str, at_ms: i64, note: Option<&str>) -> rusqlite::Result<()> {
    db.prepare_cached(
        "INSERT INTO order_events (order_id, seq, event, at_ms, note)
         VALUES (?1, (SELECT count(*) FROM order_events WHERE order_id = ?1), ?2, ?3, ?4)",
    )?
    .execute(params![order_id, event, at_ms, note])?;
    Ok(())
}

fn order_reply(db: &Connection, id: i64) -> rusqlite::Result<Result<Order, Rejection>> {
    Ok(order_by_id(db, id)?.ok_or_else(|| Rejection::not_found(format!("no order {id}"))))
}

const BOOK_COLUMNS: &str = "b.id, b.seller_id, coalesce(u.username, ''), b.title, b.author, b.description,
     b.price_cents, b.currency, b.stock, b.created_ms, b.updated_ms";

fn book_row(r: &Row) -> rusqlite::Result<Book> {
    Ok(Book {
        id: r.get(0)?,
        seller_id: r.get(1)?,
        seller: r.get(2)?,
        title: r.get(3)?,
        author: r.get(4)?,
        description: r.get(5)?,
        price_cents: r.get(6)?,
        currency: r.get(7)?,
        stock: r.get(8)?,
        created_ms: r.get(9)?,
        updated_ms: r.get(10)?,
    })
}

/// A listing that was not deleted.
pub fn book_by_id(db: &Connection, id: i64) -> rusqlite::Result<Option<Book>> {
    db.prepare_cached(&format!(
        "SELECT {BOOK_COLUMNS} FROM books b LEFT JOIN users u ON u.id = b.seller_id WHERE b.id = ?1 AND b.deleted = 0"
    ))?
    .query_row([id], book_row)
    .optional()
}

/// Filters of the book list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BookQuery {
    /// Words to find in the title, author or description.
    pub q: Option<String>,
    /// Exact author (case-insensitive); empty: any author.
    pub author: Option<String>,
    /// Items per page (1 to 100, default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

fn like_pattern(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

/// Listings in id order, filtered, one page.
pub fn list_books(db: &Connection, q: &BookQuery, limit: u32, after: i64) -> rusqlite::Result<Page<Book>> {
    let pattern = q.q.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(like_pattern);
    // `?author=` (empty) filters nothing, as `?q=` does.
    let author = q.author.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let mut params: Vec<(&str, &dyn rusqlite::ToSql)> = vec![(":after", &after)];
    if let Some(pattern) = &pattern {
        params.push((":pattern", pattern));
    }
    if let Some(author) = &author {
        params.push((":author", author));
    }
    let mut stmt = db.prepare_cached(&list_books_sql(pattern.is_some(), author.is_some()))?;
    let rows = page_rows(stmt.query_map(params.as_slice(), book_row)?, limit)?;
    Ok(Page::from_rows(rows, limit, |b| b.id.to_string()))
}

/// The book list's statement with only the filters in use. A parameter the planner looks
/// at (a LIMIT, a LIKE pattern) makes SQLite prepare the statement again at every run (its
/// plan depends on the value): the plain catalog page, the common request, has none.
fn list_books_sql(search: bool, by_author: bool) -> String {
    let search = if search {
        "AND (b.title LIKE :pattern ESCAPE '\\' OR b.author LIKE :pattern ESCAPE '\\' OR b.description LIKE :pattern ESCAPE '\\')"
    } else {
        ""
    };
    let author = if by_author { "AND b.author = :author COLLATE NOCASE" } else { "" };
    format!(
        "SELECT {BOOK_COLUMNS} FROM books b LEFT JOIN users u ON u.id = b.seller_id
         WHERE b.deleted = 0 AND b.id > :after {search} {author}
         ORDER BY b.id"
    )
}

const ORDER_COLUMNS: &str = "o.id, o.book_id, coalesce(b.title, ''), o.buyer_id, o.seller_id, o.quantity,
     o.unit_price_cents, o.currency, o.status, o.created_ms, o.reserved_until_ms, o.paid_ms, o.card_brand,
     o.card_last4, o.carrier, o.tracking_number, o.address, o.shipped_ms, o.invoice_number";

fn order_row(r: &Row) -> rusqlite::Result<Order> {
    let quantity: i64 = r.get(5)?;
    let unit: i64 = r.get(6)?;
    let card = match (r.get::<_, Option<String>>(12)?, r.get::<_, Option<String>>(13)?) {
        (Some(brand), Some(last4)) => Some(CardOnFile { brand, last4 }),
        _ => None,
    };
    let shipment = match (r.get::<_, Option<String>>(14)?, r.get(15)?, r.get(16)?, r.get(17)?) {
        (Some(carrier), Some(tracking_number), Some(address), Some(shipped_ms)) => {
            Some(Shipment { carrier, tracking_number, address, shipped_ms })
        }
        _ => None,
    };
    Ok(Order {
        id: r.get(0)?,
        book_id: r.get(1)?,
        book_title: r.get(2)?,
        buyer_id: r.get(3)?,
        seller_id: r.get(4)?,
        quantity,
        unit_price_cents: unit,
        total_cents: quantity * unit,
        currency: r.get(7)?,
        status: OrderStatus::parse(&r.get::<_, String>(8)?),
        created_ms: r.get(9)?,
        reserved_until_ms: r.get(10)?,
        paid_ms: r.get(11)?,
        card,
        shipment,
        invoice_number: r.get(18)?,
        history: Vec::new(),
    })
}

fn with_history(db: &Connection, mut order: Order) -> rusqlite::Result<Order> {
    order.history = db
        .prepare_cached("SELECT event, at_ms, note FROM order_events WHERE order_id = ?1 ORDER BY seq")?
        .query_map([order.id], |r| Ok(OrderEvent { event: r.get(0)?, at_ms: r.get(1)?, note: r.get(2)? }))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(order)
}

pub fn order_by_id(db: &Connection, id: i64) -> rusqlite::Result<Option<Order>> {
    let order = db
        .prepare_cached(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders o LEFT JOIN books b ON b.id = o.book_id WHERE o.id = ?1"
        ))?
        .query_row([id], order_row)
        .optional()?;
    order.map(|o| with_history(db, o)).transpose()
}

/// Which side of the orders to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Buyer,
    Seller,
}

/// The user's orders as buyer or seller, in id order, one page.
pub fn list_orders(db: &Connection, user_id: i64, side: Side, limit: u32, after: i64) -> rusqlite::Result<Page<Order>> {
    let column = match side {
        Side::Buyer => "buyer_id",
        Side::Seller => "seller_id",
    };
    let mut stmt = db.prepare_cached(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders o LEFT JOIN books b ON b.id = o.book_id
         WHERE o.{column} = ?1 AND o.id > ?2 ORDER BY o.id"
    ))?;
    let rows = page_rows(stmt.query_map(params![user_id, after], order_row)?, limit)?;
    let rows = rows.into_iter().map(|o| with_history(db, o)).collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Page::from_rows(rows, limit, |o| o.id.to_string()))
}

#[cfg(test)]
mod tests;
