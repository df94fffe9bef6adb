//! The catalog's paths (the seed's, kept): `/products`, `/products/{id}`.
//! Browsing needs no token; changes need an admin.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mart_schema::product::{NewProduct, Product, ProductPatch, ProductQuery};
use mart_schema::{Page, ProductId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Body, Path, Query};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_products, create_product))
        .routes(routes!(get_product, update_product, delete_product))
}

/// Add a product (admin). `price` is in minor units (1999 = 19.99).
#[utoipa::path(post, path = "/products", tag = "products", security(("bearer" = [])),
    request_body = NewProduct,
    responses((status = 201, description = "created", body = Product), (status = 403, description = "not allowed for this caller", body = Problem), (status = 422, description = "a field is invalid (named in `errors`)", body = Problem)))]
async fn create_product(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Body(product): Body<NewProduct>,
) -> Result<impl IntoResponse, ApiError> {
    let product = state.products.create(caller, product).await?;
    Ok((StatusCode::CREATED, Json(product)))
}

/// Browse the catalog: full-text `q`, price range, `sort`, keyset pages.
#[utoipa::path(get, path = "/products", tag = "products", params(ProductQuery),
    responses((status = 200, description = "OK", body = Page<Product>), (status = 422, description = "a field is invalid (named in `errors`)", body = Problem)))]
async fn list_products(
    State(state): State<AppState>,
    Query(query): Query<ProductQuery>,
) -> Result<Json<Page<Product>>, ApiError> {
    Ok(Json(state.products.list(query).await?))
}

/// One product. Send the `ETag` back as `If-None-Match` to get `304` while
/// it is unchanged.
#[utoipa::path(get, path = "/products/{id}", tag = "products",
    params(("id" = String, Path, description = "product id"),
           ("If-None-Match" = Option<String>, Header, description = "an ETag of this product")),
    responses((status = 200, description = "OK", body = Product), (status = 304, description = "unchanged"),
              (status = 404, description = "no such resource", body = Problem)))]
async fn get_product(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let view = state.products.view(product_id(&id)?).await?;
    let etag = HeaderValue::from_str(&view.etag).map_err(ApiError::internal)?;
    // Browsers may keep it, but ask again each time: a change shows at once.
    let cache = (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let unchanged = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == view.etag || tag == "*");
    if unchanged {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag), cache]).into_response());
    }
    let json = (
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok((
        StatusCode::OK,
        [(header::ETAG, etag), cache, json],
        view.json.clone(),
    )
        .into_response())
}

/// Change a product (admin); only the fields present change.
#[utoipa::path(patch, path = "/products/{id}", tag = "products", security(("bearer" = [])),
    params(("id" = String, Path, description = "product id")),
    request_body = ProductPatch,
    responses((status = 200, description = "OK", body = Product), (status = 404, description = "no such resource", body = Problem), (status = 422, description = "a field is invalid (named in `errors`)", body = Problem)))]
async fn update_product(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(patch): Body<ProductPatch>,
) -> Result<Json<Product>, ApiError> {
    Ok(Json(
        state
            .products
            .update(caller, product_id(&id)?, patch)
            .await?,
    ))
}

/// Archive a product (admin): gone from the catalog, kept in past orders.
#[utoipa::path(delete, path = "/products/{id}", tag = "products", security(("bearer" = [])),
    params(("id" = String, Path, description = "product id")),
    responses((status = 204, description = "done, no content"), (status = 404, description = "no such resource", body = Problem)))]
async fn delete_product(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.products.delete(caller, product_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A malformed id names no product: 404, like an unknown one.
pub(crate) fn product_id(raw: &str) -> Result<ProductId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found("no such product"))
}
