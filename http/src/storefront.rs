//! The web front at `/`: a storefront for shoppers and a console for admins,
//! one page of plain HTML, CSS and JavaScript (`http/web/`), embedded in the
//! binary. It is a client of the public REST API only; its routes live in
//! the URL's fragment (`/#/orders/…`), so no API path changes.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::Digest;

use crate::AppState;

/// One embedded file, with its validator.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: String,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Self {
        let digest = sha2::Sha256::digest(body.as_bytes());
        let etag = format!("\"{}\"", hex::encode(&digest[..12]));
        Self {
            body,
            content_type,
            etag,
        }
    }

    /// The file, or `304` when the browser has this version. Revalidated on
    /// every load (`no-cache`): a new binary's page shows at once.
    fn serve(&self, headers: &HeaderMap) -> Response {
        let fresh = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| tags.split(',').any(|t| t.trim() == self.etag));
        let validators = [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::ETAG,
                HeaderValue::from_str(&self.etag).unwrap_or(HeaderValue::from_static("\"\"")),
            ),
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

static PAGE: std::sync::LazyLock<Asset> = std::sync::LazyLock::new(|| {
    Asset::new(
        include_str!("../web/index.html"),
        "text/html; charset=utf-8",
    )
});
static SCRIPT: std::sync::LazyLock<Asset> = std::sync::LazyLock::new(|| {
    Asset::new(
        include_str!("../web/app.js"),
        "text/javascript; charset=utf-8",
    )
});
static STYLE: std::sync::LazyLock<Asset> = std::sync::LazyLock::new(|| {
    Asset::new(include_str!("../web/app.css"), "text/css; charset=utf-8")
});

/// `/`, `/assets/app.js`, `/assets/app.css`; outside the OpenAPI (they are
/// pages, not API).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|headers: HeaderMap| async move { PAGE.serve(&headers) }),
        )
        .route(
            "/assets/app.js",
            get(|headers: HeaderMap| async move { SCRIPT.serve(&headers) }),
        )
        .route(
            "/assets/app.css",
            get(|headers: HeaderMap| async move { STYLE.serve(&headers) }),
        )
}
