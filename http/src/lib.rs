//! mart's REST edge: translates HTTP into service calls. No business rules here.
//!
//! - [`router`] builds the whole app: routes, OpenAPI document, and the layers
//!   every request goes through (request id, deadline and access log in
//!   `access`, body limit, panic guard, CORS, compression, trailing-slash
//!   tolerance), and the API reference page at `/docs`.
//! - `users`, `products`, `inventory`, `orders`, `payments`, `notifications`, `health`: routes per area.
//! - [`error`]: `ApiError`, rendered as RFC 9457 problem documents.
//! - [`extract`]: body/query/bearer extractors whose rejections are problems.
//! - [`throttle`]: login and registration attempts per account and address.
//! - `storefront`: the web front at `/` (shop and admin console), files from
//!   `http/web/` embedded in the binary.

mod access;
mod contract;
pub mod error;
pub mod extract;
mod health;
mod inventory;
mod notifications;
mod orders;
mod payments;
mod products;
mod storefront;
pub mod throttle;
mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::IntoResponse;
use futures::future::BoxFuture;
use mart_actors::auth::TokenKeys;
use mart_actors::{Hosted, Inventory, Notifications, Orders, Payments, Products, Users};
use tower::Layer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate, SizeAbove};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_scalar::{Scalar, Servable};

use crate::error::ApiError;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Describes the cluster as this node sees it (`GET /cluster`).
pub type ClusterView = Arc<dyn Fn() -> BoxFuture<'static, serde_json::Value> + Send + Sync>;

/// What handlers need, behind one `Arc`: axum clones the state for every
/// request, and a clone of the fields themselves (a dozen reference counts)
/// was 5% of a product read's CPU (`perf`).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The edge's handles and settings (see [`AppState`]).
#[derive(Clone)]
pub struct Shared {
    pub users: Users,
    pub products: Products,
    pub inventory: Inventory,
    pub orders: Orders,
    pub payments: Payments,
    pub notifications: Notifications,
    pub keys: Arc<TokenKeys>,
    /// How long one request may take, end to end (`--call-timeout`): every
    /// call made for it, on any node, gets what is left.
    pub deadline: Duration,
    /// The services this node hosts (readiness).
    pub hosted: Arc<Hosted>,
    pub cluster: ClusterView,
    /// Login and registration attempts, per account and address.
    pub throttle: throttle::Throttle,
    /// Browser origins allowed to call the API (CORS); none: same origin only.
    pub cors: Cors,
    /// Renders the node's metrics for `GET /metrics` (Prometheus text);
    /// `None` when they are served elsewhere (`--metrics-addr`) or not at all.
    pub metrics: Option<MetricsRender>,
}

/// Renders the process's metrics in Prometheus' text format.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Which browser origins may call the API from their pages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Cors {
    /// Same origin only: no CORS headers.
    #[default]
    Off,
    /// Any origin (`*`): fine for an API that takes bearer tokens, not cookies.
    Any,
    /// These origins (`https://shop.example.com`), exactly.
    Origins(Vec<HeaderValue>),
}

impl AppState {
    /// The edge of a node hosting `hosted`: handles on every service.
    pub fn new(
        keys: Arc<TokenKeys>,
        deadline: Duration,
        hosted: Arc<Hosted>,
        cluster: ClusterView,
    ) -> Self {
        Self(Arc::new(Shared {
            users: Users::default(),
            products: Products::default(),
            inventory: Inventory::default(),
            orders: Orders::default(),
            payments: Payments::default(),
            notifications: Notifications::default(),
            keys,
            deadline,
            hosted,
            cluster,
            throttle: throttle::Throttle::default(),
            cors: Cors::Off,
            metrics: None,
        }))
    }

    /// Serves the node's metrics at `GET /metrics`.
    pub fn with_metrics(mut self, render: MetricsRender) -> Self {
        Arc::make_mut(&mut self.0).metrics = Some(render);
        self
    }

    /// Lets pages from these origins call the API.
    pub fn with_cors(mut self, cors: Cors) -> Self {
        Arc::make_mut(&mut self.0).cors = cors;
        self
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "mart", description = "Event-driven commerce backend: the REST edge."),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// `GET /metrics`: Prometheus' text format, when this edge serves them.
async fn metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::response::Response {
    match &state.metrics {
        Some(render) => metrics_text(render),
        None => ApiError::not_found("metrics are not served on this edge").into_response(),
    }
}

/// The metrics as Prometheus scrapes them: here, and on `--metrics-addr`.
pub fn metrics_text(render: &MetricsRender) -> axum::response::Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(),
    )
        .into_response()
}

/// Bodies smaller than this go out uncompressed.
const COMPRESS_ABOVE: u16 = 1024;

/// CORS for the configured origins: the methods and headers the API uses,
/// and the response headers a page needs to read.
fn cors_layer(cors: &Cors) -> tower::util::Either<CorsLayer, tower::layer::util::Identity> {
    let origins = match cors {
        Cors::Off => return tower::util::Either::Right(tower::layer::util::Identity::new()),
        Cors::Any => AllowOrigin::any(),
        Cors::Origins(origins) => AllowOrigin::list(origins.iter().cloned()),
    };
    let layer = CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([
            header::ETAG,
            header::LOCATION,
            header::RETRY_AFTER,
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("idempotent-replayed"),
        ])
        .max_age(Duration::from_secs(3600));
    tower::util::Either::Left(layer)
}

/// The edge as one service, ready for `axum::serve`.
pub fn router(state: AppState) -> NormalizePath<Router> {
    let (routes, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(users::routes())
        .merge(products::routes())
        .merge(inventory::routes())
        .merge(orders::routes())
        .merge(payments::routes())
        .merge(notifications::routes())
        .merge(health::routes())
        .split_for_parts();
    // After the merge: the shared statuses go on every route's operation.
    let mut api = api;
    utoipa::Modify::modify(&contract::Contract, &mut api);
    let docs: Router<AppState> = Scalar::with_url("/docs", api.clone())
        .title("mart API")
        .into();
    let api = Arc::new(api);
    let x_request_id = HeaderName::from_static("x-request-id");
    let deadline = state.deadline;
    let cors = cors_layer(&state.cors);
    let app = routes
        .merge(docs)
        .merge(storefront::routes())
        .route("/metrics", axum::routing::get(metrics))
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let api = api.clone();
                async move { axum::Json(api.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::not_found("no such resource") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "this method is not allowed on this resource",
            )
        })
        .with_state(state)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("a handler panicked").into_response()
        }))
        // Lists and documents shrink several times over; a single product
        // is not worth the CPU.
        .layer(
            CompressionLayer::new()
                .gzip(true)
                .br(true)
                .compress_when(DefaultPredicate::new().and(SizeAbove::new(COMPRESS_ABOVE))),
        )
        .layer(cors)
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        // The request's deadline (every call made for it inherits it), its
        // id for the log, and one log line when it fails or is slow.
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| access::serve(req, next, deadline),
        ))
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid));
    // The seed's paths end in '/', ours do not: accept both.
    NormalizePathLayer::trim_trailing_slash().layer(app)
}
