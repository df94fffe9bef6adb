//! Keyset pagination shared by every list endpoint: `limit` (default 20, max 100)
//! and an opaque `cursor`; answers are `{items, next_cursor}`.

use serde::{Deserialize, Serialize};

use crate::FieldErrors;

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest page a client may ask for.
pub const MAX_LIMIT: u32 = 100;

/// One page of a list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page from a query that fetched one row more than `limit` (keyset
    /// paging's over-fetch): the extra row only says another page exists, and
    /// the cursor is the key of the last row kept.
    pub fn from_overfetch(mut items: Vec<T>, limit: u32, key: impl Fn(&T) -> String) -> Self {
        let limit = limit as usize;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(key)
        } else {
            None
        };
        Page { items, next_cursor }
    }
}

/// A checked list request (see [`PageRequest::checked`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked<K, S> {
    pub limit: u32,
    pub after: Option<K>,
    pub status: Option<S>,
}

/// Which page a client asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl PageRequest {
    /// How many rows to ask the database for: one more than the page holds.
    pub fn overfetch(limit: u32) -> i64 {
        i64::from(limit) + 1
    }

    /// The page size to use, or a 422 naming `limit`.
    pub fn limit(&self) -> Result<u32, FieldErrors> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(_) => Err(FieldErrors::single(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            )),
        }
    }

    /// A list request checked field by field: the page size, where to start
    /// (the cursor's key) and an optional status filter, or every field that
    /// is wrong.
    pub fn checked<K, S>(&self, status: Option<&str>) -> Result<Checked<K, S>, FieldErrors>
    where
        K: std::str::FromStr,
        S: std::str::FromStr<Err = String>,
    {
        let mut errors = FieldErrors::default();
        let limit = self.limit().map_err(|e| errors.0.extend(e.0)).unwrap_or(0);
        let after = self
            .cursor_key::<K>()
            .map_err(|e| errors.0.extend(e.0))
            .unwrap_or(None);
        let status = match status.map(str::parse::<S>) {
            Some(Ok(status)) => Some(status),
            Some(Err(e)) => {
                errors.add("status", e);
                None
            }
            None => None,
        };
        errors.into_result()?;
        Ok(Checked {
            limit,
            after,
            status,
        })
    }

    /// The cursor decoded as the key it carries, or a 422 naming `cursor`.
    pub fn cursor_key<K: std::str::FromStr>(&self) -> Result<Option<K>, FieldErrors> {
        self.cursor
            .as_deref()
            .map(|c| {
                c.parse().map_err(|_| {
                    FieldErrors::single("cursor", "is not a cursor this list returned")
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overfetched_row_means_another_page_from_the_last_kept_key() {
        let page = Page::from_overfetch(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!(
            (page.items, page.next_cursor),
            (vec![1, 2], Some("2".into()))
        );
        let last = Page::from_overfetch(vec![1, 2], 2, |n| n.to_string());
        assert_eq!(last.next_cursor, None);
        assert_eq!(PageRequest::overfetch(20), 21);
    }

    #[test]
    fn a_listing_names_each_bad_field() {
        let bad = PageRequest {
            limit: Some(0),
            cursor: Some("not a number".into()),
        };
        let errors = bad
            .checked::<u64, crate::order::OrderStatus>(Some("lost"))
            .expect_err("invalid");
        for field in ["limit", "cursor", "status"] {
            assert!(errors.0.contains_key(field), "{field}: {errors}");
        }
        let good = PageRequest::default()
            .checked::<u64, crate::order::OrderStatus>(Some("paid"))
            .expect("valid");
        assert_eq!(good.limit, DEFAULT_LIMIT);
        assert_eq!(good.status, Some(crate::order::OrderStatus::Paid));
    }
}
