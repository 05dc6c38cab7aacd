//! The OpenAPI 3 contract, generated from the handlers' annotations and the request and
//! response types (utoipa), served at `/openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The one error shape of every failing request.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_token`, `out_of_stock`, `validation_failed`, …
    code: String,
    message: String,
    request_id: String,
    /// For `validation_failed`: every invalid field.
    fields: Option<Vec<panal_actors::error::FieldError>>,
}

/// Failures every service route can answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ApiErrors {
    /// Invalid input (`validation_failed` lists the fields; `malformed_json`, `invalid_body`).
    #[response(status = 400)]
    BadRequest(#[to_schema] ErrorBody),
    /// Missing, malformed, badly signed, `alg: none`, expired or revoked token (`invalid_token`).
    #[response(status = 401)]
    Unauthorized(#[to_schema] ErrorBody),
    /// The caller may not do this (`forbidden`).
    #[response(status = 403)]
    Forbidden(#[to_schema] ErrorBody),
    /// No such resource, or not the caller's (`not_found`).
    #[response(status = 404)]
    NotFound(#[to_schema] ErrorBody),
    /// Conflicts with the current state (`out_of_stock`, `username_taken`, `invalid_state`, …).
    #[response(status = 409)]
    Conflict(#[to_schema] ErrorBody),
    /// Well-formed but refused by a business rule (`own_listing`, `insufficient_history`, …).
    #[response(status = 422)]
    Unprocessable(#[to_schema] ErrorBody),
    /// No leader, a lagging replica or no live instance: retry after `Retry-After`.
    #[response(status = 503)]
    Unavailable(#[to_schema] ErrorBody),
}

/// `Authorization: Bearer <token>` from `POST /api/v1/auth/login`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Panal",
        description = "The services of a Panal cluster: auth, catalog (BookStore), energy, prediction. Any node \
            answers every route. Reads take `X-Panal-Consistency: stale|session|linearizable` (default session) \
            and `X-Panal-Index` (the index of the client's last write, returned by every write); writes take \
            `Idempotency-Key`. Timestamps are RFC 3339 UTC; money is integer cents with a currency code."
    ),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody, ErrorDetail)),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "catalog", description = "Books, orders, payment, shipping, invoices"),
        (name = "energy", description = "Devices, readings, battery data"),
        (name = "prediction", description = "Consumption forecasts"),
        (name = "metrics", description = "The cluster view: every node's process and system statistics (admin)")
    )
)]
pub struct ApiDoc;
