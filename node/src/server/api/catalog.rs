//! Catalog routes (the BookStore): listings, orders, payment, shipping, invoices. Each is
//! served by a catalog service instance somewhere in the cluster.

use axum::extract::State;
use axum::response::Response;
use panal_actors::catalog::ops::{
    CreateBook, DeleteBook, GetBook, GetInvoice, GetOrder, ListBooks, ListOrders, ListSales, NewOrder, PayOrder,
    PlaceOrder, ShipOrder, ShipRequest, UpdateBook,
};
use panal_actors::catalog::payment::CardPayment;
use panal_actors::catalog::{Book, BookPatch, BookQuery, Invoice, NewBook, Order};
use panal_actors::page::{Page, PageParams};
use panal_actors::services::Deleted;

use super::extract::{CallMeta, Caller, JsonBody, Path, QueryParams};
use super::openapi::ApiErrors;
use super::services::call;
use super::AppState;
use crate::error::Result;

/// Publishes a listing; the caller is its seller.
#[utoipa::path(post, path = "/api/v1/books", tag = "catalog", security(("bearer" = [])), request_body = NewBook,
    responses((status = 201, body = Book), ApiErrors))]
pub async fn create_book(
    State(s): State<AppState>,
    c: Caller,
    m: CallMeta,
    JsonBody(b): JsonBody<NewBook>,
) -> Result<Response> {
    call(&s, c, m, CreateBook { book: b }).await
}

/// Lists books, filtered by words (`q`) and author, a page at a time.
#[utoipa::path(get, path = "/api/v1/books", tag = "catalog", params(BookQuery),
    responses((status = 200, body = Page<Book>), ApiErrors))]
pub async fn list_books(
    State(s): State<AppState>,
    c: Option<Caller>,
    m: CallMeta,
    QueryParams(q): QueryParams<BookQuery>,
) -> Result<Response> {
    call(&s, c, m, ListBooks { query: q }).await
}

#[utoipa::path(get, path = "/api/v1/books/{id}", tag = "catalog", params(("id" = i64, Path)),
    responses((status = 200, body = Book), ApiErrors))]
pub async fn get_book(
    State(s): State<AppState>,
    c: Option<Caller>,
    m: CallMeta,
    Path(id): Path<i64>,
) -> Result<Response> {
    call(&s, c, m, GetBook { id }).await
}

/// Changes a listing (its seller or an admin).
#[utoipa::path(patch, path = "/api/v1/books/{id}", tag = "catalog", security(("bearer" = [])), params(("id" = i64, Path)),
    request_body = BookPatch, responses((status = 200, body = Book), ApiErrors))]
pub async fn update_book(
    State(s): State<AppState>,
    c: Caller,
    m: CallMeta,
    Path(id): Path<i64>,
    JsonBody(b): JsonBody<BookPatch>,
) -> Result<Response> {
    call(&s, c, m, UpdateBook { id, patch: b }).await
}

/// Removes a listing (its seller or an admin). Existing orders are kept.
#[utoipa::path(delete, path = "/api/v1/books/{id}", tag = "catalog", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = Deleted), ApiErrors))]
pub async fn delete_book(State(s): State<AppState>, c: Caller, m: CallMeta, Path(id): Path<i64>) -> Result<Response> {
    call(&s, c, m, DeleteBook { id }).await
}

/// Places an order: reserves the stock for 15 minutes, or fails with 409 `out_of_stock`.
#[utoipa::path(post, path = "/api/v1/orders", tag = "catalog", security(("bearer" = [])), request_body = NewOrder,
    responses((status = 201, body = Order), ApiErrors))]
pub async fn create_order(
    State(s): State<AppState>,
    c: Caller,
    m: CallMeta,
    JsonBody(b): JsonBody<NewOrder>,
) -> Result<Response> {
    call(&s, c, m, PlaceOrder { order: b }).await
}

/// The caller's orders as buyer.
#[utoipa::path(get, path = "/api/v1/orders", tag = "catalog", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = Page<Order>), ApiErrors))]
pub async fn list_orders(
    State(s): State<AppState>,
    c: Caller,
    m: CallMeta,
    QueryParams(p): QueryParams<PageParams>,
) -> Result<Response> {
    call(&s, c, m, ListOrders { page: p }).await
}

/// The caller's sales (orders of their listings).
#[utoipa::path(get, path = "/api/v1/sales", tag = "catalog", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = Page<Order>), ApiErrors))]
pub async fn list_sales(
    State(s): State<AppState>,
    c: Caller,
    m: CallMeta,
    QueryParams(p): QueryParams<PageParams>,
) -> Result<Response> {
    call(&s, c, m, ListSales { page: p }).await
}

/// One order with its status history (its buyer, its seller or an admin).
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "catalog", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = Order), ApiErrors))]
pub async fn get_order(State(s): State<AppState>, c: Caller, m: CallMeta, Path(id): Path<i64>) -> Result<Response> {
    call(&s, c, m, GetOrder { id }).await
}

/// Pays an order by card (simulated). Test cards: 4242 4242 4242 4242 approves,
/// 4000 0000 0000 0002 declines (402 `card_declined`), 4000 0000 0000 9995 declines
/// (402 `insufficient_funds`). Only the last four digits are kept.
#[utoipa::path(post, path = "/api/v1/orders/{id}/pay", tag = "catalog", security(("bearer" = [])), params(("id" = i64, Path)),
    request_body = CardPayment,
    responses((status = 200, body = Order), (status = 402, description = "card declined", body = super::openapi::ErrorBody), ApiErrors))]
pub async fn pay_order(
    State(s): State<AppState>,
    c: Caller,
    m: CallMeta,
    Path(id): Path<i64>,
    JsonBody(b): JsonBody<CardPayment>,
) -> Result<Response> {
    call(&s, c, m, PayOrder { id, card: b }).await
}

/// Ships a paid order (its seller or an admin): carrier, tracking number; the parcel is
/// then in transit after 1 hour and delivered after 48 hours.
#[utoipa::path(post, path = "/api/v1/orders/{id}/ship", tag = "catalog", security(("bearer" = [])), params(("id" = i64, Path)),
    request_body = ShipRequest, responses((status = 200, body = Order), ApiErrors))]
pub async fn ship_order(
    State(s): State<AppState>,
    c: Caller,
    m: CallMeta,
    Path(id): Path<i64>,
    JsonBody(b): JsonBody<ShipRequest>,
) -> Result<Response> {
    call(&s, c, m, ShipOrder { id, ship: b }).await
}

/// The invoice of a paid order, as JSON or, with `Accept: text/html`, as a printable page.
#[utoipa::path(get, path = "/api/v1/orders/{id}/invoice", tag = "catalog", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, description = "The invoice: JSON, or HTML with `Accept: text/html`",
        content((Invoice = "application/json"), (String = "text/html"))), ApiErrors))]
pub async fn invoice(State(s): State<AppState>, c: Caller, m: CallMeta, Path(id): Path<i64>) -> Result<Response> {
    let html = m.wants_html;
    call(&s, c, m, GetInvoice { id, html }).await
}
