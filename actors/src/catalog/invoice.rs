//! Invoices: issued in the same entry that marks an order paid, numbered from a per-cluster
//! counter in that same transaction (so numbers have no gaps and never repeat), with tax
//! by currency, as JSON or as a printable HTML page.
//!
//! One rule for tax: listed prices include it. The buyer is charged the order's
//! `total_cents` (quantity × unit price), and the invoice's `total_cents` is that same
//! amount; it shows the tax contained in it (`tax_cents`) and the amount before tax
//! (`subtotal_cents = total_cents - tax_cents`).

use panal_raft::rusqlite::{self, params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::Order;
use crate::time;

/// Tax rate in basis points by currency: EUR 21 %, GBP 20 %, USD 0 % (prices include tax).
pub fn tax_rate_bp(currency: &str) -> i64 {
    match currency {
        "EUR" => 2100,
        "GBP" => 2000,
        _ => 0,
    }
}

/// The tax contained in a price that includes it: `gross × rate / (1 + rate)`, rounded
/// half up to the cent.
pub fn included_tax_cents(gross_cents: i64, rate_bp: i64) -> i64 {
    let divisor = 10_000 + rate_bp;
    // i128: a large order's cents times a rate in basis points may not fit in i64.
    ((i128::from(gross_cents) * i128::from(rate_bp) * 2 + i128::from(divisor)) / (2 * i128::from(divisor))) as i64
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Party {
    pub user_id: i64,
    pub username: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvoiceLine {
    pub description: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
    pub total_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Invoice {
    /// Gapless per cluster: 1, 2, 3, …
    pub number: i64,
    /// The number as printed, e.g. `INV-000042`.
    pub reference: String,
    pub order_id: i64,
    #[serde(rename = "issued_at", with = "time::as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub issued_ms: i64,
    pub seller: Party,
    pub buyer: Party,
    pub lines: Vec<InvoiceLine>,
    pub subtotal_cents: i64,
    pub tax_rate_bp: i64,
    pub tax_cents: i64,
    pub total_cents: i64,
    pub currency: String,
}

pub(crate) fn migrate(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS invoices (
             number INTEGER PRIMARY KEY,
             order_id INTEGER NOT NULL UNIQUE,
             body TEXT NOT NULL
         );",
    )
}

fn username(db: &Connection, id: i64) -> rusqlite::Result<String> {
    Ok(db.query_row("SELECT username FROM users WHERE id = ?1", [id], |r| r.get(0)).optional()?.unwrap_or_default())
}

/// Issues the invoice of `order` (being paid at `now`) and returns its number.
pub(crate) fn issue(db: &Connection, order: &Order, now: i64) -> rusqlite::Result<i64> {
    let number: i64 = db.query_row(
        "INSERT INTO counters (name, value) VALUES ('invoice', 1)
         ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
        [],
        |r| r.get(0),
    )?;
    // What the buyer was charged: the order's total, tax included.
    let total = order.total_cents;
    let rate = tax_rate_bp(&order.currency);
    let tax = included_tax_cents(total, rate);
    let invoice = Invoice {
        number,
        reference: format!("INV-{number:06}"),
        order_id: order.id,
        issued_ms: now,
        seller: Party { user_id: order.seller_id, username: username(db, order.seller_id)? },
        buyer: Party { user_id: order.buyer_id, username: username(db, order.buyer_id)? },
        lines: vec![InvoiceLine {
            description: order.book_title.clone(),
            quantity: order.quantity,
            unit_price_cents: order.unit_price_cents,
            total_cents: total,
        }],
        subtotal_cents: total - tax,
        tax_rate_bp: rate,
        tax_cents: tax,
        total_cents: total,
        currency: order.currency.clone(),
    };
    let body = serde_json::to_string(&invoice).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    db.execute("INSERT INTO invoices (number, order_id, body) VALUES (?1, ?2, ?3)", params![number, order.id, body])?;
    Ok(number)
}

pub fn by_order(db: &Connection, order_id: i64) -> rusqlite::Result<Option<Invoice>> {
    let body: Option<String> =
        db.query_row("SELECT body FROM invoices WHERE order_id = ?1", [order_id], |r| r.get(0)).optional()?;
    body.map(|b| {
        serde_json::from_str(&b)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
    })
    .transpose()
}

fn money(cents: i64, currency: &str) -> String {
    format!("{}{}.{:02} {currency}", if cents < 0 { "-" } else { "" }, cents.abs() / 100, cents.abs() % 100)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// A printable HTML page of the invoice. Every user-supplied text is escaped.
pub fn render_html(inv: &Invoice) -> String {
    let lines: String = inv
        .lines
        .iter()
        .map(|l| {
            format!(
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                escape(&l.description),
                l.quantity,
                money(l.unit_price_cents, &inv.currency),
                money(l.total_cents, &inv.currency)
            )
        })
        .collect();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Invoice {reference}</title>\
<style>body{{font-family:sans-serif;max-width:42em;margin:2em auto}}table{{width:100%;border-collapse:collapse}}\
td,th{{border-bottom:1px solid #ccc;padding:.4em;text-align:left}}.n{{text-align:right}}</style></head><body>\
<h1>Invoice {reference}</h1><p>Issued {issued} for order {order}</p>\
<p><strong>Seller:</strong> {seller} &nbsp; <strong>Buyer:</strong> {buyer}</p>\
<table><tr><th>Item</th><th class=\"n\">Qty</th><th class=\"n\">Unit price</th><th class=\"n\">Amount</th></tr>{lines}\
<tr><th colspan=\"3\">Total (tax included)</th><th class=\"n\">{total}</th></tr>\
<tr><td colspan=\"3\">Amount before tax</td><td class=\"n\">{subtotal}</td></tr>\
<tr><td colspan=\"3\">Tax included ({rate}.{rate_frac:02} %)</td><td class=\"n\">{tax}</td></tr></table></body></html>\n",
        reference = escape(&inv.reference),
        issued = time::rfc3339(inv.issued_ms),
        order = inv.order_id,
        seller = escape(&inv.seller.username),
        buyer = escape(&inv.buyer.username),
        subtotal = money(inv.subtotal_cents, &inv.currency),
        rate = inv.tax_rate_bp / 100,
        rate_frac = inv.tax_rate_bp % 100,
        tax = money(inv.tax_cents, &inv.currency),
        total = money(inv.total_cents, &inv.currency),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn included_tax_rounds_half_up_to_the_cent() {
        assert_eq!(included_tax_cents(1210, 2100), 210);
        assert_eq!(included_tax_cents(5000, 2100), 868); // 867.77 → 868
        assert_eq!(included_tax_cents(1200, 2000), 200);
        assert_eq!(included_tax_cents(1, 2100), 0); // 0.17 → 0
        assert_eq!(included_tax_cents(3, 2100), 1); // 0.52 → 1
        assert_eq!(included_tax_cents(999, 0), 0);
        assert_eq!(included_tax_cents(12_100_000_000, 2100), 2_100_000_000);
    }

    #[test]
    fn html_escapes_user_text() {
        let inv = Invoice {
            number: 1,
            reference: "INV-000001".into(),
            order_id: 9,
            issued_ms: 0,
            seller: Party { user_id: 1, username: "s".into() },
            buyer: Party { user_id: 2, username: "b".into() },
            lines: vec![InvoiceLine {
                description: "<script>x</script>".into(),
                quantity: 2,
                unit_price_cents: 1050,
                total_cents: 2100,
            }],
            subtotal_cents: 1736,
            tax_rate_bp: 2100,
            tax_cents: 364,
            total_cents: 2100,
            currency: "EUR".into(),
        };
        let html = render_html(&inv);
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("21.00 EUR"));
        assert!(html.contains("Tax included (21.00 %)"));
    }
}
