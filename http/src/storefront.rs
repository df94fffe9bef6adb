//! The web front at `/`: a storefront for shoppers and a console for admins,
//! one page of plain HTML, CSS and JavaScript (`http/web/`), embedded in the
//! binary. It is a client of the public REST API only; its routes live in
//! the URL's fragment (`/#/orders/…`), so no API path changes.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;

use sha2::Digest;

use crate::AppState;

/// One embedded file, with its validator.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Self {
        let digest = sha2::Sha256::digest(body.as_bytes());
        let etag = format!("\"{}\"", hex::encode(&digest[..12]));
        Self {
            body,
            content_type,
            // Hex in quotes: always a valid header value.
            etag: HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\"")),
        }
    }

    /// The file, or `304` when the browser has this version. Revalidated on
    /// every load (`no-cache`): a new binary's page shows at once.
    fn serve(&self, headers: &HeaderMap) -> Response {
        let etag = self.etag.to_str().unwrap_or_default();
        let fresh = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag));
        let validators = [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::ETAG, self.etag.clone()),
        ];
        if fresh {
            return (StatusCode::NOT_MODIFIED, validators).into_response();
        }
        let kind = [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        )];
        (validators, kind, self.body).into_response()
    }
}

/// The page and its two files: path, body, content type.
const FILES: [(&str, &str, &str); 3] = [
    (
        "/",
        include_str!("../web/index.html"),
        "text/html; charset=utf-8",
    ),
    (
        "/assets/app.js",
        include_str!("../web/app.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "/assets/app.css",
        include_str!("../web/app.css"),
        "text/css; charset=utf-8",
    ),
];

/// `/`, `/assets/app.js`, `/assets/app.css`; outside the OpenAPI (they are
/// pages, not API).
pub(crate) fn routes() -> Router<AppState> {
    FILES
        .iter()
        .fold(Router::new(), |router, (path, body, content_type)| {
            let asset = Arc::new(Asset::new(body, content_type));
            router.route(
                path,
                get(move |headers: HeaderMap| async move { asset.serve(&headers) }),
            )
        })
}
