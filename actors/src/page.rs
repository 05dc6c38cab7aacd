//! Keyset pagination shared by every list: `?limit=&cursor=` in, `{items, next_cursor}` out.
//! Cursors are opaque to clients; here they are the last key of the previous page.

use serde::{Deserialize, Serialize};

use crate::Error;

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// One page of a list. `next_cursor` is `null` on the last page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched in key order: the extra row only
    /// says that there is a next page.
    pub fn from_rows(mut rows: Vec<T>, limit: u32, key: impl Fn(&T) -> String) -> Self {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = if more { rows.last().map(key) } else { None };
        Page { items: rows, next_cursor }
    }
}

/// The first `limit + 1` rows of a query in key order, for [`Page::from_rows`]. The query
/// has no `LIMIT ?`: SQLite prepares a statement whose LIMIT is a parameter again at every
/// run (its plan depends on the value), so the page stops stepping the rows instead.
pub fn page_rows<T>(
    rows: impl Iterator<Item = panal_raft::rusqlite::Result<T>>,
    limit: u32,
) -> panal_raft::rusqlite::Result<Vec<T>> {
    rows.take(limit as usize + 1).collect()
}

/// `limit` and `cursor` as sent by the client.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page (1 to 100, default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn limit(&self, max: u32) -> Result<u32, Error> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT.min(max)),
            Some(n) if (1..=max).contains(&n) => Ok(n),
            Some(_) => Err(Error::Validation(vec![crate::error::FieldError {
                field: "limit".into(),
                message: format!("must be 1 to {max}"),
            }])),
        }
    }

    /// The cursor as the integer key it wraps (0 when absent).
    pub fn int_cursor(&self) -> Result<i64, Error> {
        match &self.cursor {
            None => Ok(0),
            Some(c) => c.parse().map_err(|_| {
                Error::Validation(vec![crate::error::FieldError {
                    field: "cursor".into(),
                    message: "not a cursor returned by this list".into(),
                }])
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_know_whether_more_follow() {
        let p = Page::from_rows(vec![1, 2, 3], 2, |v| v.to_string());
        assert_eq!((p.items, p.next_cursor), (vec![1, 2], Some("2".into())));
        let p = Page::from_rows(vec![1, 2], 2, |v| v.to_string());
        assert_eq!(p.next_cursor, None);
    }

    #[test]
    fn limits_and_cursors_are_checked() {
        assert_eq!(PageParams::default().limit(MAX_LIMIT).unwrap(), 20);
        assert!(PageParams { limit: Some(0), cursor: None }.limit(MAX_LIMIT).is_err());
        assert!(PageParams { limit: Some(101), cursor: None }.limit(MAX_LIMIT).is_err());
        assert!(PageParams { limit: None, cursor: Some("x".into()) }.int_cursor().is_err());
        assert_eq!(PageParams { limit: None, cursor: Some("7".into()) }.int_cursor().unwrap(), 7);
    }
}
