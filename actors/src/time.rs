//! Time in the application: RFC 3339 UTC text at the edges, integer milliseconds inside,
//! and the replicated clock that `apply` reads (the leader's clock carried by each entry,
//! plus an offset that tests and drills can advance through Raft).

use chrono::{DateTime, SecondsFormat, Utc};
use panal_raft::rusqlite::{self, Connection, OptionalExtension};
use panal_raft::ApplyContext;

pub const SECOND_MS: i64 = 1000;
pub const MINUTE_MS: i64 = 60 * SECOND_MS;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Formats milliseconds since the epoch as RFC 3339 UTC (`2026-11-23T10:00:00.000Z`).
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Parses an RFC 3339 timestamp (any offset) into milliseconds since the epoch, UTC.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text.trim()).ok().map(|t| t.timestamp_millis())
}

/// Serde adapter: `i64` milliseconds in Rust, RFC 3339 UTC text on the wire.
pub mod as_rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_rfc3339(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 timestamp")))
    }
}

/// The same for `Option<i64>`.
pub mod as_rfc3339_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => s.serialize_str(&super::rfc3339(*ms)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => super::parse_rfc3339(&text)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 timestamp"))),
        }
    }
}

/// This machine's wall clock, in milliseconds since the epoch.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub(crate) fn migrate(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS app_clock (id INTEGER PRIMARY KEY CHECK (id = 1), offset_ms INTEGER NOT NULL)",
    )
}

/// How far the application clock runs ahead of the leader's wall clock (0 unless advanced).
pub fn offset_ms(db: &Connection) -> rusqlite::Result<i64> {
    Ok(db.query_row("SELECT offset_ms FROM app_clock WHERE id = 1", [], |r| r.get(0)).optional()?.unwrap_or(0))
}

/// The application time of the entry being applied: the replicated clock plus the offset.
/// Deterministic: every replica computes the same value for the same entry.
pub fn now(db: &Connection, ctx: &ApplyContext) -> rusqlite::Result<i64> {
    Ok(ctx.now_ms.saturating_add(offset_ms(db)?))
}

/// The application time as seen from this node outside `apply` (wall clock + offset).
pub fn app_now(db: &Connection) -> rusqlite::Result<i64> {
    Ok(wall_ms().saturating_add(offset_ms(db)?))
}

/// Moves the application clock forward by `ms` (tests and drills; never backwards).
pub(crate) fn advance(db: &Connection, ms: i64) -> rusqlite::Result<i64> {
    let offset = offset_ms(db)?.saturating_add(ms.max(0));
    db.execute(
        "INSERT INTO app_clock (id, offset_ms) VALUES (1, ?1) ON CONFLICT(id) DO UPDATE SET offset_ms = excluded.offset_ms",
        [offset],
    )?;
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(parse_rfc3339("2026-11-23T10:00:00+01:00"), parse_rfc3339("2026-11-23T09:00:00Z"));
        assert_eq!(parse_rfc3339(&rfc3339(1_790_000_000_123)), Some(1_790_000_000_123));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn the_offset_only_moves_forward() {
        let db = Connection::open_in_memory().unwrap();
        migrate(&db).unwrap();
        let ctx = ApplyContext { index: 1, now_ms: 1000 };
        assert_eq!(now(&db, &ctx).unwrap(), 1000);
        advance(&db, 500).unwrap();
        advance(&db, -10_000).unwrap();
        assert_eq!(now(&db, &ctx).unwrap(), 1500);
    }
}
