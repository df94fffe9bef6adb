//! Every error the edge sends: RFC 9457 `application/problem+json`, with an
//! `errors` object keyed by field name on 422. Internal details never reach a
//! client; a 5xx is logged here, once.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mart_actors::CallError;
use mart_schema::inventory::InventoryError;
use mart_schema::notification::NotificationError;
use mart_schema::order::OrderError;
use mart_schema::payment::PaymentError;
use mart_schema::product::ProductError;
use mart_schema::user::UserError;
use mart_schema::{FieldErrors, ProductId};
use serde::Serialize;

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Short machine-friendly slug, becomes the problem `type`.
    pub kind: &'static str,
    pub detail: String,
    pub errors: Option<FieldErrors>,
    /// A header the status calls for.
    pub header: Option<ExtraHeader>,
    /// What went wrong inside, for the log only; never sent.
    pub cause: Option<Box<str>>,
    /// The RFC 6749 §5.2 error code, on the token endpoint's errors.
    pub oauth: Option<OAuthError>,
    /// The product short of stock, until [`ApiError::at_line`] names its line.
    pub shortage: Option<ProductId>,
}

/// RFC 6749 §5.2 error codes mart answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthError {
    InvalidRequest,
    InvalidGrant,
    UnsupportedGrantType,
}

impl OAuthError {
    fn code(self) -> &'static str {
        match self {
            OAuthError::InvalidRequest => "invalid_request",
            OAuthError::InvalidGrant => "invalid_grant",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
        }
    }
}

/// Headers some errors carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraHeader {
    /// `WWW-Authenticate: Bearer` on 401.
    BearerChallenge,
    /// `Retry-After: 1` when trying again soon may work.
    RetryAfter,
    /// `Retry-After: n` when trying again before then is refused.
    RetryAfterSeconds(u16),
}

/// The problem document (RFC 9457).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<FieldErrors>,
    /// On the token endpoint: the RFC 6749 error code (`invalid_grant`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// On the token endpoint: the same as `detail`, under RFC 6749's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
            errors: None,
            header: None,
            cause: None,
            oauth: None,
            shortage: None,
        }
    }

    /// Names the request line a shortage is about (`items[1].product_id`),
    /// from the (product, field) pairs of the request's lines.
    pub fn at_line(mut self, fields: &[(ProductId, String)]) -> Self {
        let line = self
            .shortage
            .and_then(|short| fields.iter().find(|(product, _)| *product == short));
        if let Some((_, field)) = line {
            self.errors = Some(FieldErrors::single(field, "insufficient stock"));
        }
        self
    }

    pub fn invalid(errors: FieldErrors) -> Self {
        Self {
            errors: Some(errors.clone()),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                format!("invalid input: {errors}"),
            )
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
            .with_header(ExtraHeader::BearerChallenge)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
            .with_header(ExtraHeader::RetryAfter)
    }

    /// Something broke that the client cannot fix; the cause is logged, not sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self {
            cause: Some(cause.to_string().into()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "an internal error occurred; it has been logged",
            )
        }
    }

    pub fn with_header(mut self, header: ExtraHeader) -> Self {
        self.header = Some(header);
        self
    }
}

/// A request body over [`crate::BODY_LIMIT`].
pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-large",
        "the request body is larger than 1 MiB",
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            let cause = self.cause.as_deref().unwrap_or(&self.detail);
            let request_id = crate::access::request_id();
            let status = self.status.as_u16();
            if self.header == Some(ExtraHeader::RetryAfter) {
                // Expected now and then (a peer going away): the client retries.
                tracing::warn!(%request_id, status, %cause, "request failed");
            } else {
                tracing::error!(%request_id, status, %cause, "request failed");
            }
        }
        let problem = Problem {
            type_: format!("urn:mart:problem:{}", self.kind),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            error_description: self.oauth.map(|_| self.detail.clone()),
            error: self.oauth.map(OAuthError::code),
            detail: self.detail,
            errors: self.errors,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            )],
            body,
        )
            .into_response();
        let extra = match self.header {
            Some(ExtraHeader::BearerChallenge) => {
                Some((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")))
            }
            Some(ExtraHeader::RetryAfter) => Some((header::RETRY_AFTER, HeaderValue::from(1))),
            Some(ExtraHeader::RetryAfterSeconds(n)) => {
                Some((header::RETRY_AFTER, HeaderValue::from(n)))
            }
            None => None,
        };
        if let Some((name, value)) = extra {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

impl<E: Into<ApiError>> From<CallError<E>> for ApiError {
    fn from(e: CallError<E>) -> Self {
        match e {
            CallError::Rejected(no) => no.into(),
            CallError::Unavailable(cause) => ApiError {
                cause: Some(cause.into()),
                ..ApiError::unavailable("the service is not reachable right now; try again shortly")
            },
            CallError::Failed(cause) => ApiError::internal(cause),
            CallError::Timeout => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "the service did not answer in time; try again shortly",
            )
            .with_header(ExtraHeader::RetryAfter),
        }
    }
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::Invalid(errors) => ApiError::invalid(errors),
            UserError::Taken { field } => ApiError {
                errors: Some(FieldErrors::single(&field, "is already taken")),
                ..ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!("{field} is already taken"),
                )
            },
            UserError::NotFound => ApiError::not_found("no such user"),
            UserError::BadCredentials => ApiError {
                oauth: Some(OAuthError::InvalidGrant),
                ..ApiError::unauthorized("invalid username or password")
            },
            UserError::BadRefresh => ApiError {
                oauth: Some(OAuthError::InvalidGrant),
                ..ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid-grant",
                    "the refresh token is invalid, expired or already used; log in again",
                )
            },
            UserError::Forbidden => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "you are not allowed to do this",
            ),
        }
    }
}

fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "you are not allowed to do this",
    )
}

impl From<ProductError> for ApiError {
    fn from(e: ProductError) -> Self {
        match e {
            ProductError::Invalid(errors) => ApiError::invalid(errors),
            ProductError::NotFound => ApiError::not_found("no such product"),
            ProductError::Forbidden => forbidden(),
        }
    }
}

impl From<InventoryError> for ApiError {
    fn from(e: InventoryError) -> Self {
        let detail = e.to_string();
        match e {
            InventoryError::Invalid(errors) => ApiError::invalid(errors),
            InventoryError::UnknownProduct(_) | InventoryError::NoReservation(_) => {
                ApiError::not_found(detail)
            }
            InventoryError::InsufficientStock { product_id, .. } => ApiError {
                shortage: Some(product_id),
                errors: Some(FieldErrors::single("product_id", "insufficient stock")),
                ..ApiError::new(StatusCode::CONFLICT, "insufficient-stock", detail)
            },
            InventoryError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", detail),
            InventoryError::Forbidden => forbidden(),
        }
    }
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        let detail = e.to_string();
        match e {
            OrderError::Invalid(errors) => ApiError::invalid(errors),
            OrderError::NotFound => ApiError::not_found(detail),
            OrderError::InsufficientStock { product_id, .. } => ApiError {
                shortage: Some(product_id),
                errors: Some(FieldErrors::single("product_id", "insufficient stock")),
                ..ApiError::new(StatusCode::CONFLICT, "insufficient-stock", detail)
            },
            OrderError::IllegalTransition { .. } => {
                ApiError::new(StatusCode::CONFLICT, "illegal-transition", detail)
            }
            OrderError::IdempotencyInProgress => {
                ApiError::new(StatusCode::CONFLICT, "idempotency-in-progress", detail)
                    .with_header(ExtraHeader::RetryAfter)
            }
            OrderError::IdempotencyMismatch => {
                ApiError::invalid(FieldErrors::single("Idempotency-Key", detail))
            }
            OrderError::Forbidden => forbidden(),
        }
    }
}

impl From<PaymentError> for ApiError {
    fn from(e: PaymentError) -> Self {
        let detail = e.to_string();
        match e {
            PaymentError::Invalid(errors) => ApiError::invalid(errors),
            PaymentError::NotFound | PaymentError::OrderNotFound => ApiError::not_found(detail),
            PaymentError::OrderNotPayable(_) => {
                ApiError::new(StatusCode::CONFLICT, "not-payable", detail)
            }
            PaymentError::BadSignature => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad-signature", detail)
            }
            PaymentError::IdempotencyInProgress => {
                ApiError::new(StatusCode::CONFLICT, "idempotency-in-progress", detail)
                    .with_header(ExtraHeader::RetryAfter)
            }
            PaymentError::IdempotencyMismatch => {
                ApiError::invalid(FieldErrors::single("Idempotency-Key", detail))
            }
            PaymentError::Provider(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "payment-provider", detail)
                    .with_header(ExtraHeader::RetryAfter)
            }
        }
    }
}

impl From<NotificationError> for ApiError {
    fn from(e: NotificationError) -> Self {
        match e {
            NotificationError::Invalid(errors) => ApiError::invalid(errors),
            NotificationError::NotFound => ApiError::not_found("no such notification"),
            NotificationError::Forbidden => forbidden(),
        }
    }
}
