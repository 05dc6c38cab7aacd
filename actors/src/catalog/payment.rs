//! Simulated card payments. The card is checked (Luhn, expiry, CVC) and the outcome is
//! decided here, by the node that received the request, before anything is proposed: the
//! command carries only the outcome, the brand and the last four digits, so the full number
//! never reaches the Raft log or the database.
//!
//! Test cards (any future expiry, any CVC):
//! - `4242 4242 4242 4242`: approved;
//! - `4000 0000 0000 0002`: always declined (`card_declined`);
//! - `4000 0000 0000 9995`: declined for insufficient funds (`insufficient_funds`);
//! - any other number that passes the Luhn check: approved.

use serde::{Deserialize, Serialize};

use super::CardOnFile;
use crate::error::Validator;
use crate::Error;

pub const DECLINED_CARD: &str = "4000000000000002";
pub const INSUFFICIENT_FUNDS_CARD: &str = "4000000000009995";

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardPayment {
    /// 12 to 19 digits; spaces and dashes are ignored. A number that fails the Luhn
    /// checksum is a 422 `rule_violated`.
    #[schema(pattern = "^[ -]*([0-9][ -]*){12,19}$")]
    pub card_number: String,
    /// `MM/YY` or `MM/YYYY`; an expired card is a 422 `rule_violated`.
    #[schema(pattern = "^\\s*(0?[1-9]|1[0-2])\\s*/\\s*([0-9]{2}|[0-9]{4})\\s*$")]
    pub expiry: String,
    /// 3 or 4 digits.
    #[schema(pattern = "^\\s*[0-9]{3,4}\\s*$")]
    pub cvc: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineCode {
    CardDeclined,
    InsufficientFunds,
}

impl DeclineCode {
    pub fn as_str(self) -> &'static str {
        match self {
            DeclineCode::CardDeclined => "card_declined",
            DeclineCode::InsufficientFunds => "insufficient_funds",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentOutcome {
    Approved { card: CardOnFile },
    Declined { card: CardOnFile, code: DeclineCode, reason: String },
}

/// Whether `digits` pass the Luhn checksum.
pub fn luhn_ok(digits: &str) -> bool {
    let mut sum = 0;
    for (i, c) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(c - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

fn brand(digits: &str) -> &'static str {
    match digits.as_bytes().first() {
        Some(b'4') => "visa",
        Some(b'5') => "mastercard",
        Some(b'3') => "amex",
        Some(b'6') => "discover",
        _ => "card",
    }
}

/// Parses `MM/YY` or `MM/YYYY` into (year, month).
fn parse_expiry(text: &str) -> Option<(i32, u32)> {
    let (m, y) = text.trim().split_once('/')?;
    let month: u32 = m.trim().parse().ok().filter(|m| (1..=12).contains(m))?;
    let y = y.trim();
    let year: i32 = match y.len() {
        2 => 2000 + y.parse::<i32>().ok()?,
        4 => y.parse().ok()?,
        _ => return None,
    };
    Some((year, month))
}

/// Validates the card and decides the outcome. `now_ms` is the time the expiry is checked
/// against (a card is valid through the last day of its expiry month).
pub fn authorize(card: &CardPayment, now_ms: i64) -> Result<PaymentOutcome, Error> {
    let digits: String = card.card_number.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let mut v = Validator::default();
    let all_digits = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    if !all_digits || !(12..=19).contains(&digits.len()) {
        v.fail("card_number", "must be 12 to 19 digits");
    } else {
        v.rule(luhn_ok(&digits), "card_number", "is not a valid card number (checksum)");
    }
    match parse_expiry(&card.expiry) {
        None => v.fail("expiry", "must be MM/YY or MM/YYYY"),
        Some((year, month)) => {
            let now = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now_ms).unwrap_or_default();
            use chrono::Datelike;
            let current = (now.year(), now.month());
            v.rule((year, month) >= current, "expiry", "the card has expired");
        }
    }
    let cvc = card.cvc.trim();
    v.check((3..=4).contains(&cvc.len()) && cvc.bytes().all(|b| b.is_ascii_digit()), "cvc", "must be 3 or 4 digits");
    v.finish()?;
    let on_file = CardOnFile { brand: brand(&digits).into(), last4: digits[digits.len() - 4..].into() };
    Ok(match digits.as_str() {
        DECLINED_CARD => PaymentOutcome::Declined {
            card: on_file,
            code: DeclineCode::CardDeclined,
            reason: "the card was declined".into(),
        },
        INSUFFICIENT_FUNDS_CARD => PaymentOutcome::Declined {
            card: on_file,
            code: DeclineCode::InsufficientFunds,
            reason: "the card was declined: insufficient funds".into(),
        },
        _ => PaymentOutcome::Approved { card: on_file },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOV_2026: i64 = 1_795_000_000_000; // 2026-11-18

    fn card(number: &str, expiry: &str, cvc: &str) -> CardPayment {
        CardPayment { card_number: number.into(), expiry: expiry.into(), cvc: cvc.into() }
    }

    #[test]
    fn luhn_accepts_test_cards_and_rejects_typos() {
        assert!(luhn_ok("4242424242424242"));
        assert!(luhn_ok(DECLINED_CARD));
        assert!(luhn_ok(INSUFFICIENT_FUNDS_CARD));
        assert!(!luhn_ok("4242424242424241"));
    }

    #[test]
    fn test_cards_decide_deterministically_and_keep_only_four_digits() {
        let ok = authorize(&card("4242 4242 4242 4242", "12/30", "123"), NOV_2026).unwrap();
        assert_eq!(ok, PaymentOutcome::Approved { card: CardOnFile { brand: "visa".into(), last4: "4242".into() } });
        let declined = authorize(&card(DECLINED_CARD, "12/2030", "123"), NOV_2026).unwrap();
        assert!(matches!(declined, PaymentOutcome::Declined { code: DeclineCode::CardDeclined, .. }));
        let poor = authorize(&card(INSUFFICIENT_FUNDS_CARD, "11/26", "1234"), NOV_2026).unwrap();
        assert!(matches!(poor, PaymentOutcome::Declined { code: DeclineCode::InsufficientFunds, .. }));
        assert!(!serde_json::to_string(&poor).unwrap().contains(INSUFFICIENT_FUNDS_CARD));
    }

    #[test]
    fn every_bad_field_is_named() {
        let err = authorize(&card("4242424242424241", "10/26", "12"), NOV_2026).unwrap_err();
        let fields: Vec<_> = err.fields().unwrap().iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["card_number", "expiry", "cvc"]);
        let err = authorize(&card("abc", "13/30", "123"), NOV_2026).unwrap_err();
        let fields: Vec<_> = err.fields().unwrap().iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["card_number", "expiry"]);
    }
}
