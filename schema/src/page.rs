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

/// Which page a client asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl PageRequest {
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
