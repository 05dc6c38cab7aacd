//! Every catalog command applied to an in-memory database, without a network.

use panal_raft::rusqlite::{self, Connection};
use panal_raft::{Application, ApplyContext};

use super::payment::{DeclineCode, PaymentOutcome};
use super::*;
use crate::auth::{create_user, Role};
use crate::{Command, PanalApp, Reply, Response};

const T0: i64 = 1_795_000_000_000;

struct Db {
    db: Connection,
    index: u64,
    now: i64,
}

impl Db {
    fn new() -> Self {
        let db = Connection::open_in_memory().unwrap();
        PanalApp.migrate(&db).unwrap();
        let ctx = ApplyContext { index: 1, now_ms: T0 };
        for name in ["seller", "buyer", "other"] {
            create_user(&db, &ctx, name, "h", None, Role::User).unwrap().unwrap();
        }
        Db { db, index: 1, now: T0 }
    }

    fn apply(&mut self, c: impl Into<CatalogCommand>) -> Response {
        self.index += 1;
        let ctx = ApplyContext { index: self.index, now_ms: self.now };
        PanalApp.apply(&self.db, &ctx, Command::Catalog(c.into())).unwrap()
    }

    fn book(&mut self, stock: i64) -> Book {
        let book = NewBook {
            title: "Dune".into(),
            author: "Frank Herbert".into(),
            description: "Spice".into(),
            price_cents: 1000,
            currency: "EUR".into(),
            stock,
        };
        match self.apply(command::CreateBook { seller_id: SELLER, book }).unwrap() {
            Reply::Book(b) => b,
            other => panic!("{other:?}"),
        }
    }

    fn order(&mut self, book_id: i64, quantity: i64) -> Response {
        self.apply(command::PlaceOrder { buyer_id: BUYER, book_id, quantity })
    }

    fn stock(&self, id: i64) -> i64 {
        self.db.query_row("SELECT stock FROM books WHERE id = ?1", [id], |r| r.get(0)).unwrap()
    }
}

const SELLER: i64 = 1;
const BUYER: i64 = 2;
const OTHER: i64 = 3;

fn approved() -> PaymentOutcome {
    PaymentOutcome::Approved { card: CardOnFile { brand: "visa".into(), last4: "4242".into() } }
}

fn order_of(r: Response) -> Order {
    match r.unwrap() {
        Reply::Order(o) => o,
        other => panic!("{other:?}"),
    }
}

#[test]
fn orders_reserve_stock_and_never_oversell() {
    let mut db = Db::new();
    let book = db.book(3);
    order_of(db.order(book.id, 2));
    assert_eq!(db.stock(book.id), 1);
    assert_eq!(db.order(book.id, 2).unwrap_err().code, "out_of_stock");
    assert_eq!(db.stock(book.id), 1, "a refused order changes nothing");
    order_of(db.order(book.id, 1));
    assert_eq!(db.order(book.id, 1).unwrap_err().code, "out_of_stock");
    assert_eq!(db.stock(book.id), 0);
    let orders: i64 = db.db.query_row("SELECT count(*) FROM orders", [], |r| r.get(0)).unwrap();
    assert_eq!(orders, 2);
}

#[test]
fn nobody_buys_their_own_listing_or_bad_quantities() {
    let mut db = Db::new();
    let book = db.book(5);
    let own = db.apply(command::PlaceOrder { buyer_id: SELLER, book_id: book.id, quantity: 1 });
    assert_eq!(own.unwrap_err().code, "own_listing");
    assert_eq!(db.order(book.id, 0).unwrap_err().code, "validation_failed");
    assert_eq!(db.order(999, 1).unwrap_err().code, "not_found");
    assert_eq!(db.stock(book.id), 5);
}

#[test]
fn payment_issues_gapless_invoices_and_declines_keep_the_reservation() {
    let mut db = Db::new();
    let book = db.book(10);
    let a = order_of(db.order(book.id, 1));
    let b = order_of(db.order(book.id, 2));
    let declined = PaymentOutcome::Declined {
        card: CardOnFile { brand: "visa".into(), last4: "0002".into() },
        code: DeclineCode::CardDeclined,
        reason: "declined".into(),
    };
    let r = db.apply(command::Pay { order_id: a.id, buyer_id: BUYER, outcome: declined });
    assert_eq!(r.unwrap_err().code, "card_declined");
    let after_decline = order_by_id(&db.db, a.id).unwrap().unwrap();
    assert_eq!(after_decline.status, OrderStatus::PendingPayment);
    assert_eq!(after_decline.history.last().unwrap().event, "payment_declined");
    let wrong = db.apply(command::Pay { order_id: a.id, buyer_id: OTHER, outcome: approved() });
    assert_eq!(wrong.unwrap_err().code, "not_found", "a stranger cannot see the order, so cannot pay it");
    let by_seller = db.apply(command::Pay { order_id: a.id, buyer_id: SELLER, outcome: approved() });
    assert_eq!(by_seller.unwrap_err().code, "forbidden", "the seller sees the order and is told why not");
    let paid_b = order_of(db.apply(command::Pay { order_id: b.id, buyer_id: BUYER, outcome: approved() }));
    let paid_a = order_of(db.apply(command::Pay { order_id: a.id, buyer_id: BUYER, outcome: approved() }));
    assert_eq!((paid_b.invoice_number, paid_a.invoice_number), (Some(1), Some(2)));
    assert_eq!(paid_a.card.as_ref().unwrap().last4, "4242");
    let again = db.apply(command::Pay { order_id: a.id, buyer_id: BUYER, outcome: approved() });
    assert_eq!(again.unwrap_err().code, "invalid_state");
    let inv = invoice::by_order(&db.db, b.id).unwrap().unwrap();
    // Prices include tax: the invoice's total is what the order charged, 21 % of it is tax.
    assert_eq!(inv.total_cents, paid_b.total_cents);
    assert_eq!((inv.subtotal_cents, inv.tax_cents, inv.total_cents), (1653, 347, 2000));
    assert_eq!(inv.lines.iter().map(|l| l.total_cents).sum::<i64>(), inv.total_cents);
    assert_eq!((inv.seller.username.as_str(), inv.buyer.username.as_str()), ("seller", "buyer"));
}

#[test]
fn unpaid_orders_expire_and_release_their_stock() {
    let mut db = Db::new();
    let book = db.book(4);
    let o = order_of(db.order(book.id, 3));
    assert_eq!(next_due(&db.db).unwrap(), Some(T0 + RESERVATION_MS));
    db.now = T0 + RESERVATION_MS - 1;
    assert_eq!(db.apply(CatalogCommand::Tick).unwrap(), Reply::Count(0));
    db.now = T0 + RESERVATION_MS;
    let late = db.apply(command::Pay { order_id: o.id, buyer_id: BUYER, outcome: approved() });
    assert_eq!(late.unwrap_err().code, "order_expired");
    assert_eq!(db.apply(CatalogCommand::Tick).unwrap(), Reply::Count(1));
    assert_eq!(db.stock(book.id), 4);
    assert_eq!(order_by_id(&db.db, o.id).unwrap().unwrap().status, OrderStatus::Expired);
    assert_eq!(next_due(&db.db).unwrap(), None);
}

#[test]
fn shipping_moves_along_with_the_clock() {
    let mut db = Db::new();
    let book = db.book(1);
    let o = order_of(db.order(book.id, 1));
    let early = db.apply(command::Ship {
        order_id: o.id,
        actor: Actor { user_id: SELLER, admin: false },
        address: "1 Main St".into(),
    });
    assert_eq!(early.unwrap_err().code, "invalid_state");
    order_of(db.apply(command::Pay { order_id: o.id, buyer_id: BUYER, outcome: approved() }));
    let by_buyer = db.apply(command::Ship {
        order_id: o.id,
        actor: Actor { user_id: BUYER, admin: false },
        address: "1 Main St".into(),
    });
    assert_eq!(by_buyer.unwrap_err().code, "forbidden");
    let by_stranger = db.apply(command::Ship {
        order_id: o.id,
        actor: Actor { user_id: OTHER, admin: false },
        address: "1 Main St".into(),
    });
    assert_eq!(by_stranger.unwrap_err().code, "not_found");
    let shipped = order_of(db.apply(command::Ship {
        order_id: o.id,
        actor: Actor { user_id: OTHER, admin: true },
        address: "1 Main St".into(),
    }));
    assert_eq!(shipped.status, OrderStatus::Shipped);
    assert!(shipped.shipment.as_ref().unwrap().tracking_number.starts_with("PP"));
    db.now = T0 + IN_TRANSIT_AFTER_MS;
    db.apply(CatalogCommand::Tick).unwrap();
    assert_eq!(order_by_id(&db.db, o.id).unwrap().unwrap().status, OrderStatus::InTransit);
    db.now = T0 + DELIVERED_AFTER_MS;
    db.apply(CatalogCommand::Tick).unwrap();
    let done = order_by_id(&db.db, o.id).unwrap().unwrap();
    assert_eq!(done.status, OrderStatus::Delivered);
    let events: Vec<&str> = done.history.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(events, ["pending_payment", "paid", "shipped", "in_transit", "delivered"]);
}

#[test]
fn only_the_seller_or_an_admin_changes_a_listing() {
    let mut db = Db::new();
    let book = db.book(1);
    let patch = BookPatch { price_cents: Some(1500), ..Default::default() };
    let r = db.apply(command::UpdateBook {
        book_id: book.id,
        actor: Actor { user_id: OTHER, admin: false },
        patch: patch.clone(),
    });
    assert_eq!(r.unwrap_err().code, "forbidden");
    let bad = BookPatch { stock: Some(-1), ..Default::default() };
    let r =
        db.apply(command::UpdateBook { book_id: book.id, actor: Actor { user_id: SELLER, admin: false }, patch: bad });
    assert_eq!(r.unwrap_err().code, "validation_failed");
    let r = db.apply(command::UpdateBook { book_id: book.id, actor: Actor { user_id: SELLER, admin: false }, patch });
    assert!(matches!(r.unwrap(), Reply::Book(b) if b.price_cents == 1500));
    let r = db.apply(command::DeleteBook { book_id: book.id, actor: Actor { user_id: OTHER, admin: false } });
    assert_eq!(r.unwrap_err().code, "forbidden");
    db.apply(command::DeleteBook { book_id: book.id, actor: Actor { user_id: OTHER, admin: true } }).unwrap();
    assert_eq!(book_by_id(&db.db, book.id).unwrap(), None);
    assert_eq!(db.order(book.id, 1).unwrap_err().code, "not_found");
}

#[test]
fn book_lists_filter_and_paginate() {
    let mut db = Db::new();
    for _ in 0..5 {
        db.book(1);
    }
    let other = NewBook {
        title: "100% Pure_Fun".into(),
        author: "Ana".into(),
        description: String::new(),
        price_cents: 500,
        currency: "USD".into(),
        stock: 1,
    };
    db.apply(command::CreateBook { seller_id: OTHER, book: other }).unwrap();
    let all = BookQuery::default();
    let p1 = list_books(&db.db, &all, 4, 0).unwrap();
    assert_eq!(p1.items.len(), 4);
    let after: i64 = p1.next_cursor.unwrap().parse().unwrap();
    let p2 = list_books(&db.db, &all, 4, after).unwrap();
    assert_eq!((p2.items.len(), p2.next_cursor), (2, None));
    let q = |q: &str| BookQuery { q: Some(q.into()), ..Default::default() };
    assert_eq!(list_books(&db.db, &q("100%"), 10, 0).unwrap().items.len(), 1);
    assert_eq!(list_books(&db.db, &q("%"), 10, 0).unwrap().items.len(), 1, "% is literal");
    assert_eq!(list_books(&db.db, &q("spice"), 10, 0).unwrap().items.len(), 5);
    let by = BookQuery { author: Some("frank herbert".into()), ..Default::default() };
    assert_eq!(list_books(&db.db, &by, 10, 0).unwrap().items.len(), 5);
    for empty in ["", "  "] {
        let any = BookQuery { author: Some(empty.into()), ..Default::default() };
        assert_eq!(list_books(&db.db, &any, 10, 0).unwrap().items.len(), 6, "?author={empty:?} filters nothing");
    }
}

#[test]
fn the_plain_book_list_is_never_prepared_again() {
    let mut db = Db::new();
    db.book(1);
    for (after, limit) in [(0, 20), (1, 5), (0, 100)] {
        list_books(&db.db, &BookQuery::default(), limit, after).unwrap();
    }
    let stmt = db.db.prepare_cached(&super::list_books_sql(false, false)).unwrap();
    assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0, "SQLite prepared the catalog page again");
}

#[test]
fn a_patch_that_changes_nothing_keeps_updated_at() {
    let mut db = Db::new();
    let book = db.book(3);
    db.now = T0 + HOUR_MS;
    let seller = Actor { user_id: SELLER, admin: false };
    let same = BookPatch { title: Some(" Dune ".into()), stock: Some(3), ..Default::default() };
    for patch in [BookPatch::default(), same] {
        let r = db.apply(command::UpdateBook { book_id: book.id, actor: seller, patch });
        assert_eq!(r, Ok(Reply::Book(book.clone())));
    }
    let changed = db.apply(command::UpdateBook {
        book_id: book.id,
        actor: seller,
        patch: BookPatch { stock: Some(4), ..Default::default() },
    });
    assert!(matches!(changed, Ok(Reply::Book(b)) if b.updated_ms == T0 + HOUR_MS && b.stock == 4));
}

#[test]
fn edge_validation_lists_every_bad_field() {
    let bad = NewBook {
        title: " ".into(),
        author: "A".into(),
        description: String::new(),
        price_cents: 0,
        currency: "XYZ".into(),
        stock: -1,
    };
    let err = bad.validate().unwrap_err();
    let fields: Vec<_> = err.fields().unwrap().iter().map(|f| f.field.as_str()).collect();
    assert_eq!(fields, ["title", "price_cents", "currency", "stock"]);
}
