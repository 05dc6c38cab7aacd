//! The catalog service's operations: listings, orders, payment, shipping, invoices.

use serde::{Deserialize, Serialize};

use super::invoice::{self, Invoice};
use super::payment::{self, CardPayment};
use super::{command, Actor, Book, BookPatch, BookQuery, NewBook, Order, Side};
use crate::auth::{Identity, Role};
use crate::page::{Page, PageParams, MAX_LIMIT};
use crate::services::service_ops;
use crate::services::{Body, Call, Deleted, Operation};
use crate::Error;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    pub book_id: i64,
    #[schema(minimum = 1, maximum = 100)]
    pub quantity: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipRequest {
    /// Delivery address, free text (1 to 500 characters).
    #[schema(min_length = 1, max_length = 500, pattern = "\\S")]
    pub address: String,
}

service_ops! {
    /// The catalog service's operations.
    CatalogOp => Catalog {
        CreateBook, ListBooks, GetBook, UpdateBook, DeleteBook,
        PlaceOrder, GetOrder, ListOrders, ListSales, PayOrder, ShipOrder, GetInvoice,
    }
}

/// Publishes a listing; the caller is its seller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateBook {
    pub book: NewBook,
}

impl Operation for CreateBook {
    type Output = Book;
    const STATUS: u16 = 201;

    async fn handle(self, call: &Call) -> Result<Book, Error> {
        let who = call.caller()?;
        self.book.validate()?;
        call.write(command::CreateBook { seller_id: who.user_id, book: self.book }).await
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListBooks {
    pub query: BookQuery,
}

impl Operation for ListBooks {
    type Output = Page<Book>;
    const CACHED: bool = true;

    async fn handle(self, call: &Call) -> Result<Page<Book>, Error> {
        let q = self.query;
        let page = PageParams { limit: q.limit, cursor: q.cursor.clone() };
        let (limit, after) = (page.limit(MAX_LIMIT)?, page.int_cursor()?);
        call.read(move |db| Ok(super::list_books(db, &q, limit, after)?)).await
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct GetBook {
    pub id: i64,
}

impl Operation for GetBook {
    type Output = Book;
    const CACHED: bool = true;

    async fn handle(self, call: &Call) -> Result<Book, Error> {
        let id = self.id;
        call.read(move |db| super::book_by_id(db, id)?.ok_or_else(|| no_book(id))).await
    }
}

/// Changes a listing (its seller or an admin).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateBook {
    pub id: i64,
    pub patch: BookPatch,
}

impl Operation for UpdateBook {
    type Output = Book;

    async fn handle(self, call: &Call) -> Result<Book, Error> {
        let actor = actor(call.caller()?);
        call.write(command::UpdateBook { book_id: self.id, actor, patch: self.patch }).await
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct DeleteBook {
    pub id: i64,
}

impl Operation for DeleteBook {
    type Output = Deleted;

    async fn handle(self, call: &Call) -> Result<Deleted, Error> {
        let actor = actor(call.caller()?);
        call.write(command::DeleteBook { book_id: self.id, actor }).await?;
        Ok(Deleted { deleted: self.id })
    }
}

/// Places an order: reserves the stock, or fails with `out_of_stock`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaceOrder {
    pub order: NewOrder,
}

impl Operation for PlaceOrder {
    type Output = Order;
    const STATUS: u16 = 201;

    async fn handle(self, call: &Call) -> Result<Order, Error> {
        let who = call.caller()?;
        let NewOrder { book_id, quantity } = self.order;
        let mut v = crate::error::Validator::default();
        v.check(
            (1..=super::MAX_QUANTITY).contains(&quantity),
            "quantity",
            format!("must be 1 to {}", super::MAX_QUANTITY),
        );
        v.finish()?;
        call.write(command::PlaceOrder { buyer_id: who.user_id, book_id, quantity }).await
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct GetOrder {
    pub id: i64,
}

impl Operation for GetOrder {
    type Output = Order;

    async fn handle(self, call: &Call) -> Result<Order, Error> {
        let (who, id) = (call.caller()?.clone(), self.id);
        call.read(move |db| visible_order(db, &who, id)).await
    }
}

/// The caller's orders as buyer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListOrders {
    pub page: PageParams,
}

impl Operation for ListOrders {
    type Output = Page<Order>;

    async fn handle(self, call: &Call) -> Result<Page<Order>, Error> {
        list_orders(call, self.page, Side::Buyer).await
    }
}

/// The caller's sales (orders of their listings).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListSales {
    pub page: PageParams,
}

impl Operation for ListSales {
    type Output = Page<Order>;

    async fn handle(self, call: &Call) -> Result<Page<Order>, Error> {
        list_orders(call, self.page, Side::Seller).await
    }
}

async fn list_orders(call: &Call, page: PageParams, side: Side) -> Result<Page<Order>, Error> {
    let who = call.caller()?.user_id;
    let (limit, after) = (page.limit(MAX_LIMIT)?, page.int_cursor()?);
    call.read(move |db| Ok(super::list_orders(db, who, side, limit, after)?)).await
}

/// Pays an order by card (simulated).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PayOrder {
    pub id: i64,
    pub card: CardPayment,
}

impl Operation for PayOrder {
    type Output = Order;

    async fn handle(self, call: &Call) -> Result<Order, Error> {
        let who = call.caller()?;
        let outcome = payment::authorize(&self.card, crate::time::wall_ms())?;
        call.write(command::Pay { order_id: self.id, buyer_id: who.user_id, outcome }).await
    }
}

/// Ships a paid order (its seller or an admin).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShipOrder {
    pub id: i64,
    pub ship: ShipRequest,
}

impl Operation for ShipOrder {
    type Output = Order;

    async fn handle(self, call: &Call) -> Result<Order, Error> {
        let actor = actor(call.caller()?);
        let address = self.ship.address;
        let mut v = crate::error::Validator::default();
        let len = address.trim().chars().count();
        v.check((1..=500).contains(&len), "address", "required, at most 500 characters");
        v.finish()?;
        call.write(command::Ship { order_id: self.id, actor, address }).await
    }
}

/// The invoice of a paid order, as JSON or as a printable HTML page.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct GetInvoice {
    pub id: i64,
    /// Render as an HTML page instead of JSON.
    pub html: bool,
}

/// An invoice as asked for: the document, or its HTML page.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum InvoiceView {
    Json(Invoice),
    Html(String),
}

impl Operation for GetInvoice {
    type Output = InvoiceView;

    async fn handle(self, call: &Call) -> Result<InvoiceView, Error> {
        let (who, id) = (call.caller()?.clone(), self.id);
        let inv = call
            .read(move |db| {
                visible_order(db, &who, id)?;
                invoice::by_order(db, id)?
                    .ok_or_else(|| Error::NotFound(format!("order {id} has no invoice: it is not paid")))
            })
            .await?;
        Ok(if self.html { InvoiceView::Html(invoice::render_html(&inv)) } else { InvoiceView::Json(inv) })
    }

    fn encode(output: InvoiceView) -> Result<Body, Error> {
        match output {
            InvoiceView::Json(inv) => Body::json(&inv),
            InvoiceView::Html(page) => Ok(Body::text("text/html; charset=utf-8", page)),
        }
    }
}

fn actor(who: &Identity) -> Actor {
    Actor { user_id: who.user_id, admin: who.role == Role::Admin }
}

fn no_book(id: i64) -> Error {
    Error::NotFound(format!("no book {id}"))
}

/// The order, if the caller is its buyer, its seller or an admin; others get 404.
fn visible_order(db: &panal_raft::rusqlite::Connection, who: &Identity, id: i64) -> Result<Order, Error> {
    match super::order_by_id(db, id)? {
        Some(o) if o.buyer_id == who.user_id || o.seller_id == who.user_id || who.role == Role::Admin => Ok(o),
        _ => Err(Error::NotFound(format!("no order {id}"))),
    }
}
