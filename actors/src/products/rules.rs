//! What makes a product or a listing request acceptable, and the cursors that
//! carry a listing's place. Pure: no I/O.

use mart_schema::product::ProductQuery;
use mart_schema::{Currency, FieldErrors, PageRequest};

use super::store::{Key, Listing, Sort};

/// Largest price accepted, in minor units (ten billion of the major unit).
pub(super) const MAX_PRICE: i64 = 1_000_000_000_000;
/// Largest initial stock accepted: inventory's limit on every later change.
pub(super) const MAX_STOCK: i64 = mart_schema::inventory::MAX_ON_HAND;

pub(super) fn check_text(errors: &mut FieldErrors, name: Option<&str>, description: Option<&str>) {
    if let Some(name) = name {
        if name.trim().is_empty() {
            errors.add("name", "must not be empty");
        } else if name.chars().count() > 200 {
            errors.add("name", "must be at most 200 characters");
        }
    }
    if description.is_some_and(|d| d.chars().count() > 10_000) {
        errors.add("description", "must be at most 10000 characters");
    }
}

pub(super) fn check_price(errors: &mut FieldErrors, field: &str, price: Option<i64>) {
    match price {
        Some(p) if p < 0 => errors.add(field, "must not be negative"),
        Some(p) if p > MAX_PRICE => errors.add(field, format!("must be at most {MAX_PRICE}")),
        _ => {}
    }
}

pub(super) fn parse_currency(errors: &mut FieldErrors, code: Option<&str>) -> Option<Currency> {
    let code = code?;
    match code.parse() {
        Ok(currency) => Some(currency),
        Err(e) => {
            errors.add("currency", e.to_string());
            None
        }
    }
}

/// A listing request checked field by field; the page size is returned with it.
pub(super) fn listing(query: ProductQuery) -> Result<(Listing, u32), FieldErrors> {
    let mut errors = FieldErrors::default();
    let page = PageRequest {
        limit: query.limit,
        cursor: None,
    };
    let limit = page.limit().map_err(|e| errors.0.extend(e.0)).unwrap_or(0);
    check_price(&mut errors, "min_price", query.min_price);
    check_price(&mut errors, "max_price", query.max_price);
    if let (Some(min), Some(max)) = (query.min_price, query.max_price)
        && min > max
    {
        errors.add("min_price", "must not exceed max_price");
    }
    let sort = match query.sort.as_deref().unwrap_or("created_at") {
        "created_at" | "-created_at" => Sort::NewestFirst,
        "price" => Sort::PriceAscending,
        "-price" => Sort::PriceDescending,
        "name" => Sort::Name,
        _ => {
            errors.add("sort", "must be one of created_at, price, -price, name");
            Sort::NewestFirst
        }
    };
    let search = query
        .q
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty());
    if search.as_ref().is_some_and(|q| q.chars().count() > 200) {
        errors.add("q", "must be at most 200 characters");
    }
    let after = match query.cursor.as_deref().map(decode_cursor) {
        None => None,
        Some(Some((cursor_sort, key))) if cursor_sort == sort_name(sort) && key.fits(sort) => {
            Some(key)
        }
        Some(_) => {
            errors.add(
                "cursor",
                "is not a cursor this list returned (with this sort)",
            );
            None
        }
    };
    errors.into_result()?;
    let listing = Listing {
        search,
        min_price: query.min_price,
        max_price: query.max_price,
        sort,
        after,
        limit: PageRequest::overfetch(limit),
    };
    Ok((listing, limit))
}

fn sort_name(sort: Sort) -> &'static str {
    match sort {
        Sort::NewestFirst => "created_at",
        Sort::PriceAscending => "price",
        Sort::PriceDescending => "-price",
        Sort::Name => "name",
    }
}

/// Cursors are opaque to clients: hex of the sort and the last key.
pub(super) fn encode_cursor(sort: Sort, key: &Key) -> String {
    let json = serde_json::to_vec(&(sort_name(sort), key)).unwrap_or_default();
    hex::encode(json)
}

fn decode_cursor(cursor: &str) -> Option<(String, Key)> {
    if cursor.len() > 2048 {
        return None;
    }
    serde_json::from_slice(&hex::decode(cursor).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mart_schema::ProductId;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let key = Key::Name("Mug".into(), ProductId::new());
        let cursor = encode_cursor(Sort::Name, &key);
        assert_eq!(decode_cursor(&cursor), Some(("name".to_owned(), key)));
        assert_eq!(decode_cursor("zz"), None);
        assert_eq!(decode_cursor("abc"), None);
    }

    #[test]
    fn a_cursor_whose_key_does_not_fit_its_sort_is_refused() {
        let id = ProductId::new();
        for (sort, key) in [
            // The sort says price, the key is a name: once a 503 and a crash.
            ("price", Key::Name("x".into(), id)),
            ("name", Key::Price(5, id)),
            ("name", Key::Name("x\0".into(), id)),
        ] {
            let json = serde_json::to_vec(&(sort, key)).expect("json");
            let query = ProductQuery {
                sort: Some(sort.into()),
                cursor: Some(hex::encode(json)),
                ..ProductQuery::default()
            };
            let errors = listing(query).expect_err("a crafted cursor");
            assert!(errors.0.contains_key("cursor"), "{errors}");
        }
    }

    #[test]
    fn a_listing_names_every_bad_field() {
        let query = ProductQuery {
            limit: Some(0),
            min_price: Some(5),
            max_price: Some(1),
            sort: Some("colour".into()),
            cursor: Some("zz".into()),
            ..ProductQuery::default()
        };
        let errors = listing(query).expect_err("invalid");
        for field in ["limit", "min_price", "sort", "cursor"] {
            assert!(errors.0.contains_key(field), "{field} not named: {errors}");
        }
    }
}
