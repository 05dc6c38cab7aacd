//! The catalog service's operations: listings, orders, payment, shipping, invoices.

use serde::{Deserialize, Serialize};

use super::payment::{self, CardPayment};
use super::{invoice, Actor, BookPatch, BookQuery, CatalogCommand, NewBook, Order, Side};
use crate::auth::{Identity, Role};
use crate::page::{PageParams, MAX_LIMIT};
use crate::services::{ById, Call, Id, Output};
use crate::{Command, Error, Reply};

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    pub book_id: i64,
    pub quantity: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipRequest {
    /// Delivery address, free text (1 to 500 characters).
    pub address: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvoiceRequest {
    pub id: i64,
    /// Render as an HTML page instead of JSON.
    #[serde(default)]
    pub html: bool,
}

pub async fn handle(call: &Call) -> Result<Output, Error> {
    match call.req.op.as_str() {
        "books.create" => {
            let who = call.caller()?;
            let book: NewBook = call.input()?;
            book.validate()?;
            write(call, CatalogCommand::CreateBook { seller_id: who.user_id, book }, 201).await
        }
        "books.list" => {
            let q: BookQuery = call.input()?;
            let page = PageParams { limit: q.limit, cursor: q.cursor.clone() };
            let (limit, after) = (page.limit(MAX_LIMIT)?, page.int_cursor()?);
            Output::ok(call.read(move |db| Ok(super::list_books(db, &q, limit, after)?)).await?)
        }
        "books.get" => {
            let Id { id } = call.input::<Id>()?;
            let book = call.read(move |db| super::book_by_id(db, id)?.ok_or_else(|| no_book(id))).await?;
            Output::ok(book)
        }
        "books.update" => {
            let actor = actor(call.caller()?);
            let ById { id, body } = call.input::<ById<BookPatch>>()?;
            write(call, CatalogCommand::UpdateBook { book_id: id, actor, patch: body }, 200).await
        }
        "books.delete" => {
            let actor = actor(call.caller()?);
            let Id { id } = call.input::<Id>()?;
            let (_, index) = call.write(Command::Catalog(CatalogCommand::DeleteBook { book_id: id, actor })).await?;
            Output::written(200, serde_json::json!({ "deleted": id }), index)
        }
        "orders.create" => {
            let who = call.caller()?;
            let o: NewOrder = call.input()?;
            let mut v = crate::error::Validator::default();
            v.check(
                (1..=super::MAX_QUANTITY).contains(&o.quantity),
                "quantity",
                format!("must be 1 to {}", super::MAX_QUANTITY),
            );
            v.finish()?;
            let command =
                CatalogCommand::PlaceOrder { buyer_id: who.user_id, book_id: o.book_id, quantity: o.quantity };
            write(call, command, 201).await
        }
        "orders.get" => {
            let who = call.caller()?.clone();
            let Id { id } = call.input::<Id>()?;
            Output::ok(call.read(move |db| visible_order(db, &who, id)).await?)
        }
        "orders.list" | "sales.list" => {
            let who = call.caller()?.user_id;
            let page: PageParams = call.input()?;
            let (limit, after) = (page.limit(MAX_LIMIT)?, page.int_cursor()?);
            let side = if call.req.op == "orders.list" { Side::Buyer } else { Side::Seller };
            Output::ok(call.read(move |db| Ok(super::list_orders(db, who, side, limit, after)?)).await?)
        }
        "orders.pay" => {
            let who = call.caller()?;
            let ById { id, body } = call.input::<ById<CardPayment>>()?;
            let outcome = payment::authorize(&body, crate::time::wall_ms())?;
            write(call, CatalogCommand::Pay { order_id: id, buyer_id: who.user_id, outcome }, 200).await
        }
        "orders.ship" => {
            let actor = actor(call.caller()?);
            let ById { id, body } = call.input::<ById<ShipRequest>>()?;
            let mut v = crate::error::Validator::default();
            let len = body.address.trim().chars().count();
            v.check((1..=500).contains(&len), "address", "required, at most 500 characters");
            v.finish()?;
            write(call, CatalogCommand::Ship { order_id: id, actor, address: body.address }, 200).await
        }
        "orders.invoice" => {
            let who = call.caller()?.clone();
            let req: InvoiceRequest = call.input()?;
            let id = req.id;
            let inv = call
                .read(move |db| {
                    visible_order(db, &who, id)?;
                    invoice::by_order(db, id)?
                        .ok_or_else(|| Error::NotFound(format!("order {id} has no invoice: it is not paid")))
                })
                .await?;
            if req.html {
                Ok(Output::Text { content_type: "text/html; charset=utf-8", body: invoice::render_html(&inv) })
            } else {
                Output::ok(inv)
            }
        }
        other => Err(Error::NotFound(format!("the catalog service has no operation {other:?}"))),
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

async fn write(call: &Call, command: CatalogCommand, status: u16) -> Result<Output, Error> {
    match call.write(Command::Catalog(command)).await? {
        (Reply::Book(b), index) => Output::written(status, b, index),
        (Reply::Order(o), index) => Output::written(status, o, index),
        (other, _) => Err(crate::auth::ops::unexpected(other)),
    }
}
