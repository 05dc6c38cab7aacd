//! The OpenAPI 3 contract, generated from the handlers' annotations and the request and
//! response types (utoipa), served at `/openapi.json`. What every operation shares (the
//! request id and node headers, the consistency, index and idempotency headers, the error
//! statuses) is added here once, by [`Contract`], so that no operation can forget it.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Required, Server};
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
    /// One code always comes with the same status.
    code: String,
    message: String,
    /// The request's id (also in the `X-Request-Id` response header).
    request_id: String,
    /// For `validation_failed`: every invalid field, all at once.
    #[schema(nullable = false)]
    fields: Option<Vec<panal_actors::error::FieldError>>,
}

/// Failures of the service and metrics routes.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ApiErrors {
    /// Invalid input: `validation_failed` (with `fields`), `malformed_json`, `invalid_header`, `invalid_body`.
    #[response(status = 400)]
    BadRequest(#[to_schema] ErrorBody),
    /// Missing, malformed, badly signed, `alg: none`, expired or revoked token (`invalid_token`);
    /// wrong password (`invalid_credentials`).
    #[response(status = 401)]
    Unauthorized(#[to_schema] ErrorBody),
    /// The caller may not do this (`forbidden`).
    #[response(status = 403)]
    Forbidden(#[to_schema] ErrorBody),
    /// No such resource, or not the caller's (`not_found`).
    #[response(status = 404)]
    NotFound(#[to_schema] ErrorBody),
    /// Conflicts with the current state (`out_of_stock`, `username_taken`, `invalid_state`, `order_expired`).
    #[response(status = 409)]
    Conflict(#[to_schema] ErrorBody),
    /// The body is over 2 MiB (`payload_too_large`).
    #[response(status = 413)]
    PayloadTooLarge(#[to_schema] ErrorBody),
    /// The body is not of the documented content type (`unsupported_media_type`).
    #[response(status = 415)]
    UnsupportedMediaType(#[to_schema] ErrorBody),
    /// Well-formed but refused by a business rule (`own_listing`, `insufficient_history`,
    /// `not_a_battery`, `idempotency_key_reused`, `index_ahead`).
    #[response(status = 422)]
    Unprocessable(#[to_schema] ErrorBody),
    /// Too many requests (`rate_limited`): retry after `Retry-After`.
    #[response(status = 429)]
    TooManyRequests(#[to_schema] ErrorBody),
    /// No leader, a lagging replica or no live instance (`no_leader`, `replica_lagging`,
    /// `service_unavailable`, `overloaded`, …): retry after `Retry-After`.
    #[response(status = 503)]
    Unavailable(#[to_schema] ErrorBody),
    /// The serving instance did not answer in time (`gateway_timeout`).
    #[response(status = 504)]
    GatewayTimeout(#[to_schema] ErrorBody),
}

/// Failures of the admin and cluster routes (the same codes and statuses).
pub type AdminErrors = ApiErrors;

/// `X-Panal-Consistency` and `X-Panal-Index`: how a read is served.
#[derive(utoipa::IntoParams, serde::Deserialize)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct ReadHeaders {
    /// `stale` (this node as it is), `session` (default: at least `X-Panal-Index`) or
    /// `linearizable` (everything committed when the read began).
    #[serde(rename = "X-Panal-Consistency")]
    #[param(nullable = false, pattern = "^(stale|session|linearizable)$")]
    consistency: Option<String>,
    /// The index of the client's last write (from that write's `X-Panal-Index`): the read
    /// reflects it. An index the cluster has not reached is a 422 `index_ahead`.
    #[serde(rename = "X-Panal-Index")]
    #[param(nullable = false, minimum = 0)]
    index: Option<u64>,
}

/// `Authorization: Bearer <token>` from `POST /api/v1/auth/login`.
const BEARER: &str = "bearer";

/// Adds what every operation shares: the security scheme, `servers`, the request-id,
/// consistency, index and idempotency request headers, and the `X-Request-Id`,
/// `X-Panal-Node` (and on 429/503 `Retry-After`, on writes `X-Panal-Index`) response headers.
pub struct Contract;

fn string_schema(pattern: Option<&str>, min: Option<usize>, max: Option<usize>) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).pattern(pattern).min_length(min).max_length(max)
}

fn header_param(name: &str, description: &str, schema: ObjectBuilder) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

impl Modify for Contract {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        openapi.servers = Some(vec![Server::new("/")]);
        let request_id = header_param(
            "X-Request-Id",
            "Your id for this request, echoed in `X-Request-Id` and error bodies when it is 1 to 64 letters, digits \
             or '-'; any other value is replaced by a fresh id.",
            string_schema(None, None, None),
        );
        let idempotency = header_param(
            "Idempotency-Key",
            "Makes a retried write happen once: the same key with the same request answers the first result; \
             with another request, 422 `idempotency_key_reused`.",
            string_schema(None, Some(1), Some(128)),
        );
        let read_params = <ReadHeaders as utoipa::IntoParams>::into_params(|| None);
        let text = || ObjectBuilder::new().schema_type(Type::String);
        let int = || {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(0))
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let service = path.starts_with("/api/v1/") && !path.starts_with("/api/v1/metrics/stream");
            for (method, op) in [
                ("get", &mut item.get),
                ("post", &mut item.post),
                ("put", &mut item.put),
                ("patch", &mut item.patch),
                ("delete", &mut item.delete),
            ] {
                let Some(op) = op.as_mut() else { continue };
                let params = op.parameters.get_or_insert_with(Vec::new);
                let has =
                    |params: &Vec<Parameter>, name: &str| params.iter().any(|p| p.name.eq_ignore_ascii_case(name));
                if !has(params, "X-Request-Id") {
                    params.push(request_id.clone());
                }
                if service {
                    for p in &read_params {
                        if !has(params, &p.name) {
                            params.push(p.clone());
                        }
                    }
                    if method != "get" && !has(params, "Idempotency-Key") {
                        params.push(idempotency.clone());
                    }
                }
                for (status, resp) in op.responses.responses.iter_mut() {
                    let utoipa::openapi::RefOr::T(resp) = resp else { continue };
                    resp.headers.entry("X-Request-Id".into()).or_insert_with(|| {
                        HeaderBuilder::new().schema(text()).description(Some("The request's id")).build()
                    });
                    resp.headers.entry("X-Panal-Node".into()).or_insert_with(|| {
                        HeaderBuilder::new()
                            .schema(text())
                            .description(Some("The node that served the request"))
                            .build()
                    });
                    if status == "429" || status == "503" {
                        resp.headers.entry("Retry-After".into()).or_insert_with(|| {
                            HeaderBuilder::new()
                                .schema(int())
                                .description(Some("Seconds to wait before retrying"))
                                .build()
                        });
                    }
                    if service && status.starts_with('2') {
                        resp.headers.entry("X-Panal-Index".into()).or_insert_with(|| {
                            HeaderBuilder::new()
                                .schema(int())
                                .description(Some("The log index this answer reflects (send it back as X-Panal-Index)"))
                                .build()
                        });
                    }
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Panal",
        description = "The services of a Panal cluster: auth, catalog (BookStore), energy, prediction, the \
            metrics view and cluster administration. Any node answers every route. Reads take \
            `X-Panal-Consistency: stale|session|linearizable` (default session) and `X-Panal-Index` (the index \
            of the client's last write, returned by every write); writes take `Idempotency-Key`. Every error is \
            `{\"error\": {\"code\", \"message\", \"request_id\", \"fields\"?}}`, and one code always has one \
            status. Timestamps are RFC 3339 UTC; money is integer cents with a currency code."
    ),
    components(schemas(ErrorBody, ErrorDetail, panal_actors::energy::Bucket, panal_actors::cluster::JoinRole)),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "catalog", description = "Books, orders, payment, shipping, invoices"),
        (name = "energy", description = "Devices, readings, battery data"),
        (name = "prediction", description = "Consumption forecasts"),
        (name = "metrics", description = "The cluster view: every node's process and system statistics (admin)"),
        (name = "cluster", description = "Membership, tokens, snapshots, backups, the application clock (admin)"),
        (name = "chaos", description = "Fault injection for drills (admin, nodes started with --chaos; 404 elsewhere)")
    )
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// Every `$ref` in `v`.
    fn refs(v: &serde_json::Value, out: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    if k == "$ref" {
                        out.insert(v.as_str().unwrap_or_default().to_string());
                    }
                    refs(v, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_document_is_self_consistent() {
        let (_, spec) = super::super::service_routes();
        let doc = serde_json::to_value(&spec).unwrap();
        // For scripts/schemathesis-test.sh users debugging offline.
        let _ = std::fs::write(std::env::temp_dir().join("panal-openapi.json"), spec.to_pretty_json().unwrap());
        let mut ids = BTreeSet::new();
        let mut ops = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                ops += 1;
                let id = op["operationId"].as_str().unwrap_or_default().to_string();
                assert!(ids.insert(id.clone()), "operationId {id:?} of {method} {path} is not unique");
                let headers: Vec<&str> =
                    op["parameters"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
                assert!(headers.contains(&"X-Request-Id"), "{method} {path} does not declare X-Request-Id");
                for (status, resp) in op["responses"].as_object().unwrap() {
                    assert!(resp["headers"]["X-Panal-Node"].is_object(), "{method} {path} {status}: no X-Panal-Node");
                }
            }
        }
        assert!(ops >= 40, "only {ops} operations");
        let mut all = BTreeSet::new();
        refs(&doc, &mut all);
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("odd $ref {r}"));
            assert!(doc["components"]["schemas"][name].is_object(), "{r} points nowhere");
        }
        assert_eq!(doc["servers"][0]["url"], "/");
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }
}
