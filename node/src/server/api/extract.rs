//! Request extractors: JSON bodies, path and query parameters, bearer tokens and read
//! options, each failing with a 4xx in the one error shape. Input that does not fit its
//! type is a `validation_failed` naming every bad field, never serde's or axum's text.

use std::str::FromStr;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use panal_actors::auth::{self, Identity, Role};
use panal_actors::error::FieldError;
use panal_raft::Consistency;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::AppState;
use crate::error::{error_response, error_response_with_fields, Error};

/// Most bad fields one answer lists (a 10,000-reading batch of bad rows stays short).
const MAX_FIELD_ERRORS: usize = 20;

fn invalid(fields: &[FieldError]) -> Response {
    let summary = fields.iter().map(|f| format!("{}: {}", f.field, f.message)).collect::<Vec<_>>().join("; ");
    error_response_with_fields("validation_failed", &format!("invalid request: {summary}"), Some(fields))
}

/// Serde's message without the position suffix that means nothing to a client.
fn serde_message(e: &impl std::fmt::Display) -> String {
    let text = e.to_string();
    match text.find(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// `missing field `x`` → `x`.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

fn join_path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A JSON body. Wrong content type: 415; too large: 413; not JSON: 400 `malformed_json`;
/// JSON that does not fit `T`: 400 `validation_failed` listing every missing or bad field.
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned + utoipa::PartialSchema,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let is_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .is_some_and(|m| m == "application/json" || (m.starts_with("application/") && m.ends_with("+json")));
        if !is_json {
            return Err(error_response("unsupported_media_type", "send the body as Content-Type: application/json"));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(body_rejection)?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| error_response("malformed_json", &e.to_string()))?;
        typed(value).map(JsonBody).map_err(|fields| invalid(&fields))
    }
}

/// A body that could not be read: over the limit (413) or broken off (400).
pub fn body_rejection(rej: axum::extract::rejection::BytesRejection) -> Response {
    if rej.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        error_response("payload_too_large", &format!("the request body is larger than {} bytes", super::MAX_BODY_BYTES))
    } else {
        error_response("invalid_body", &rej.body_text())
    }
}

/// Turns a JSON value into `T`, or lists every field that prevents it: the required
/// fields that are absent (from `T`'s schema, all at once), then each field serde rejects
/// (removed one by one so that the next one shows).
pub fn typed<T: DeserializeOwned + utoipa::PartialSchema>(mut value: Value) -> Result<T, Vec<FieldError>> {
    whole_numbers_as_integers(&mut value);
    let mut fields = Vec::new();
    if let Value::Object(map) = &value {
        for name in required_fields(&T::schema()) {
            if !map.contains_key(&name) {
                fields.push(FieldError { field: name, message: "required".into() });
            }
        }
    }
    while fields.len() < MAX_FIELD_ERRORS {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) if fields.is_empty() => return Ok(v),
            Ok(_) => break,
            Err(err) => err,
        };
        let path: Vec<String> = err.path().iter().map(segment_name).collect();
        let message = serde_message(err.inner());
        let prefix = path.iter().filter(|p| !p.is_empty()).cloned().collect::<Vec<_>>().join(".");
        if let Some(name) = missing_field(&message) {
            let field = join_path(&prefix, name);
            if !fields.iter().any(|f: &FieldError| f.field == field) {
                fields.push(FieldError { field, message: "required".into() });
            }
            break;
        }
        // A type that picks its own shape reports the path inside its message.
        let (field, message) = match (prefix.is_empty(), inner_path(&message)) {
            (true, Some((path, rest))) => (path.to_string(), rest.to_string()),
            (true, None) => ("body".to_string(), message),
            (false, _) => (prefix, message),
        };
        fields.push(FieldError { field, message });
        // Only an object member can be dropped without shifting the names of the others.
        if !remove_member(&mut value, err.path()) {
            break;
        }
    }
    Err(fields)
}

/// `[3].ts: invalid type …` → (`[3].ts`, `invalid type …`).
fn inner_path(message: &str) -> Option<(&str, &str)> {
    let (path, rest) = message.split_once(": ")?;
    let is_path = !path.is_empty()
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.[]".contains(&b))
        && !path.contains("..");
    is_path.then_some((path, rest))
}

/// `16.0` is an integer to JSON Schema (and to the document's clients), not to serde: a
/// number without a fraction is passed on as an integer. A float field takes either.
fn whole_numbers_as_integers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Within ±2^53 every whole f64 is exact, so nothing is rounded on the way.
            if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(map) => map.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

fn segment_name(seg: &serde_path_to_error::Segment) -> String {
    use serde_path_to_error::Segment;
    match seg {
        Segment::Seq { index } => format!("[{index}]"),
        Segment::Map { key } => key.clone(),
        Segment::Enum { variant } => variant.clone(),
        Segment::Unknown => String::new(),
    }
    .replace(".[", "[")
}

/// Removes the object member at `path`; false when the path does not end in one.
fn remove_member(value: &mut Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((Segment::Map { key }, parents)) = segments.split_last() else {
        return false;
    };
    let mut at = value;
    for seg in parents {
        at = match (seg, at) {
            (Segment::Map { key }, Value::Object(m)) => match m.get_mut(key) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, Value::Array(a)) => match a.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match at {
        Value::Object(m) => m.remove(key).is_some(),
        _ => false,
    }
}

/// The required properties of an object schema (or of each part of an `allOf`).
fn required_fields(schema: &utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>) -> Vec<String> {
    use utoipa::openapi::schema::Schema;
    use utoipa::openapi::RefOr;
    match schema {
        RefOr::T(Schema::Object(o)) => o.required.clone(),
        RefOr::T(Schema::AllOf(all)) => all.items.iter().flat_map(required_fields).collect(),
        _ => Vec::new(),
    }
}

/// Path parameters; one that does not parse is a 400 `validation_failed` naming it
/// (axum's own rejection is text/plain).
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        let names: Vec<String> = match axum::extract::RawPathParams::from_request_parts(parts, state).await {
            Ok(raw) => raw.iter().map(|(k, _)| k.to_string()).collect(),
            Err(_) => Vec::new(),
        };
        let first = || names.first().cloned().unwrap_or_else(|| "path".into());
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                let (field, message) = match e.into_kind() {
                    ErrorKind::ParseErrorAtKey { key, value, expected_type } => {
                        (key, format!("{value:?} is not a valid {}", type_word(expected_type)))
                    }
                    ErrorKind::ParseErrorAtIndex { index, value, expected_type } => (
                        names.get(index).cloned().unwrap_or_else(first),
                        format!("{value:?} is not a valid {}", type_word(expected_type)),
                    ),
                    ErrorKind::ParseError { value, expected_type } => {
                        (first(), format!("{value:?} is not a valid {}", type_word(expected_type)))
                    }
                    ErrorKind::InvalidUtf8InPathParam { key } => (key, "not valid UTF-8".into()),
                    ErrorKind::DeserializeError { key, message, .. } => (key, message),
                    other => (first(), other.to_string()),
                };
                Err(invalid(&[FieldError { field, message }]))
            }
            Err(other) => Err(error_response("invalid_path", &other.body_text())),
        }
    }
}

/// `i64` → `integer`: the words of the OpenAPI document, not Rust's.
fn type_word(rust: &str) -> &'static str {
    match rust {
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" | "isize" | "usize" => "integer",
        "f32" | "f64" => "number",
        "bool" => "boolean",
        _ => "value",
    }
}

/// Query parameters. Every parameter that does not fit `T` is named in one 400
/// `validation_failed` (each bad one is dropped in turn so that the next one shows).
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let query = parts.uri.query().unwrap_or("");
        query_params(query).map(QueryParams).map_err(|fields| invalid(&fields))
    }
}

/// Parses a query string into `T`, listing every parameter that does not fit.
pub fn query_params<T: DeserializeOwned>(query: &str) -> Result<T, Vec<FieldError>> {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let mut fields: Vec<FieldError> = Vec::new();
    while fields.len() < MAX_FIELD_ERRORS {
        let encoded = form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(encoded.as_bytes()));
        let err = match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(v) if fields.is_empty() => return Ok(v),
            Ok(_) => break,
            Err(err) => err,
        };
        let message = serde_message(err.inner());
        let name: String = err.path().iter().map(segment_name).collect::<Vec<_>>().join(".");
        if let Some(missing) = missing_field(&message) {
            fields.push(FieldError { field: missing.into(), message: "required".into() });
            break;
        }
        let before = pairs.len();
        pairs.retain(|(k, _)| *k != name);
        fields.push(FieldError { field: if name.is_empty() { "query".into() } else { name }, message });
        if pairs.len() == before {
            break;
        }
    }
    Err(fields)
}

/// The caller's verified identity, from `Authorization: Bearer …` (or the web console's
/// session cookie, see `session::session_token`), checked locally
/// against the replicated signing keys.
pub struct Caller(pub Identity);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            // A browser session (web console): the cookie, once its CSRF checks pass.
            return match super::session::session_token(parts)? {
                Some(token) => verify(token, parts, state).await,
                None => Err(Error::InvalidToken("missing token: send Authorization: Bearer <token>".into())),
            };
        };
        let value = header.to_str().map_err(|_| Error::InvalidToken("malformed Authorization header".into()))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| Error::InvalidToken("the Authorization header must be: Bearer <token>".into()))?
            .trim()
            .to_string();
        verify(token, parts, state).await
    }
}

/// Checks a token against the replicated signing keys and the revocation list. Both are
/// replicated state: a token found valid and not revoked stays so until this node applies
/// another entry or the token expires, so it is kept with the applied index it was checked
/// at (`AppState::tokens`) and the signature, claims and revocation are not checked again
/// while that index holds.
async fn verify(token: String, parts: &Parts, state: &AppState) -> Result<Caller, Error> {
    let index = state.replica.applied_index();
    let now_ms = panal_actors::time::wall_ms();
    let known = state.tokens.get(&token, index).filter(|identity| now_ms < identity.expires_at.saturating_mul(1000));
    let identity = match &known {
        Some(identity) => identity.clone(),
        None => verify_signature(&token, state).await?,
    };
    // Every route takes the read headers (the document says so); a route that does not
    // use them still refuses malformed ones.
    if let Some(v) = parts.headers.get("x-panal-consistency") {
        v.to_str()
            .map_err(|_| "X-Panal-Consistency is not text".to_string())
            .and_then(Consistency::from_str)
            .map_err(|m| Error::BadRequest("invalid_header", m))?;
    }
    idempotency_key(&parts.headers)?;
    // A client that logged out on another node sends that write's index: wait for it,
    // so its revocation is seen here too.
    if let Some(v) = parts.headers.get("x-panal-index") {
        let index = v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or_else(|| {
            Error::BadRequest("invalid_header", "X-Panal-Index must be a non-negative integer".into())
        })?;
        catch_up_to(state, index).await?;
    }
    let checked_at = state.replica.applied_index();
    if known.is_none() || checked_at != index {
        let jti = identity.jti.clone();
        if state.replica.state_machine().read(move |db| auth::is_revoked(db, &jti))?? {
            return Err(Error::InvalidToken("token has been revoked (logged out)".into()));
        }
        if state.replica.applied_index() == checked_at {
            let size = token.len() + identity.username.len() + identity.jti.len() + 64;
            state.tokens.put(token, checked_at, identity.clone(), size);
        }
    }
    Ok(Caller(identity))
}

/// The token's identity, if one of the replicated signing keys signed it and its claims
/// hold now.
async fn verify_signature(token: &str, state: &AppState) -> Result<Identity, Error> {
    let arrived = std::time::Instant::now();
    let kid = auth::key_id(token)?;
    // A retired key stays retired: cached for good. The newest key is looked up again
    // after a second, so that a rotation starts its retirement clock here too.
    let cached = state.jwt_keys.read().unwrap_or_else(|p| p.into_inner()).get(&kid).cloned();
    let fresh = |(key, at): &(auth::SigningKey, std::time::Instant)| {
        key.retired_ms.is_some() || at.elapsed() < std::time::Duration::from_secs(1)
    };
    let key = match cached.filter(fresh) {
        Some((key, _)) => key,
        None => {
            let lookup = |kid: String| async move {
                let found = state.replica.state_machine().read(move |db| auth::signing_key(db, &kid))??;
                Ok::<_, Error>(found)
            };
            let key = match lookup(kid.clone()).await? {
                Some(key) => key,
                None => {
                    catch_up_for_unknown_key(state, arrived).await?;
                    lookup(kid.clone()).await?.ok_or_else(auth::unknown_key)?
                }
            };
            state
                .jwt_keys
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(kid, (key.clone(), std::time::Instant::now()));
            key
        }
    };
    Ok(auth::verify_with_key(token, &key, panal_actors::time::wall_ms())?)
}

/// How long a token with an unknown key waits for this node to catch up with the leader.
const UNKNOWN_KEY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A key this node does not know may be one it has not applied yet (a rotation on the
/// leader, or this node still catching up), so before calling the token invalid, catch up
/// with the leader's commit index. A node that has not caught up since it started cannot
/// judge at all: 503 `catching_up`, never a 401 for a valid token. One catch-up at a
/// time, shared by every request that arrived before it began, so tokens with made-up key
/// ids cost the leader at most one read index at a time.
async fn catch_up_for_unknown_key(state: &AppState, arrived: std::time::Instant) -> Result<(), Error> {
    if !state.caught_up.load(std::sync::atomic::Ordering::Acquire) {
        return Err(Error::Unavailable(
            "catching_up",
            "this node has not caught up with the cluster yet and cannot check this token: retry".into(),
        ));
    }
    let mut last = state.key_barrier.lock().await;
    if last.is_some_and(|began| began >= arrived) {
        return Ok(());
    }
    let began = std::time::Instant::now();
    state.replica.read_barrier(Consistency::Linearizable, 0, UNKNOWN_KEY_WAIT).await?;
    *last = Some(began);
    Ok(())
}

/// No `Authorization` header: no caller. A header with a bad token is still a 401.
impl axum::extract::OptionalFromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Error> {
        if parts.headers.contains_key(axum::http::header::AUTHORIZATION) || super::session::has_session(parts) {
            <Caller as FromRequestParts<AppState>>::from_request_parts(parts, state).await.map(Some)
        } else {
            Ok(None)
        }
    }
}

/// A caller with the admin role.
pub struct Admin(pub Identity);

impl FromRequestParts<AppState> for Admin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let Caller(identity) = Caller::from_request_parts(parts, state).await?;
        if identity.role != Role::Admin {
            return Err(Error::Forbidden("this endpoint needs the admin role".into()));
        }
        Ok(Admin(identity))
    }
}

/// Waits until this node has applied the client's last seen write index. The replica
/// refuses an index beyond the cluster's log at once (422 `index_ahead`) and answers 503
/// `replica_lagging` when it cannot reach a real one in time (or, without a leader, at once).
pub async fn catch_up_to(state: &AppState, index: u64) -> Result<(), Error> {
    state.replica.wait_applied(index, panal_actors::services::READ_TIMEOUT).await?;
    Ok(())
}

/// How a read wants to be served: `X-Panal-Consistency` (or `?consistency=`) and the
/// client's last seen write index `X-Panal-Index` (checked against the cluster's log).
pub struct ReadOptions {
    pub consistency: Consistency,
    pub min_index: u64,
}

impl FromRequestParts<AppState> for ReadOptions {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let bad = |m: String| error_response("invalid_header", &m);
        let from_query = parts
            .uri
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("consistency=")).map(String::from));
        let level = match parts.headers.get("x-panal-consistency") {
            Some(v) => Some(v.to_str().map_err(|_| bad("X-Panal-Consistency is not text".into()))?.to_string()),
            None => from_query,
        };
        let consistency = match level {
            Some(l) => Consistency::from_str(&l).map_err(bad)?,
            None => Consistency::Session,
        };
        let min_index = match parts.headers.get("x-panal-index") {
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| bad("X-Panal-Index must be a non-negative integer".into()))?,
            None => 0,
        };
        if min_index > 0 {
            catch_up_to(state, min_index).await.map_err(IntoResponse::into_response)?;
        }
        Ok(ReadOptions { consistency, min_index })
    }
}

/// A text body (`text/plain`, `text/csv`; a body without a type is taken as text).
/// Another type: 415; over the limit: 413; not UTF-8: 400 — all in the one error shape.
pub struct TextBody(pub String);

impl<S: Send + Sync> FromRequest<S> for TextBody {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let media = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("?").split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        if media.as_deref().is_some_and(|m| !m.starts_with("text/")) {
            return Err(error_response(
                "unsupported_media_type",
                "send the body as Content-Type: text/csv or text/plain",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(body_rejection)?;
        String::from_utf8(bytes.to_vec())
            .map(TextBody)
            .map_err(|e| error_response("invalid_body", &format!("the body is not UTF-8 text: {e}")))
    }
}

/// What every service call carries besides its input: the read options, the write's
/// idempotency key (the client's, or a fresh one so that retries stay safe), and whether
/// the client prefers HTML.
pub struct CallMeta {
    pub read: ReadOptions,
    pub idempotency_key: String,
    pub wants_html: bool,
    /// The client's socket address, when the server knows it.
    pub client: Option<std::net::SocketAddr>,
}

impl FromRequestParts<AppState> for CallMeta {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let read = ReadOptions::from_request_parts(parts, state).await?;
        let key = idempotency_key(&parts.headers).map_err(IntoResponse::into_response)?;
        let wants_html = parts
            .headers
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
        let client = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0);
        let idempotency_key = key.unwrap_or_else(panal_raft::auto_idempotency_key);
        Ok(CallMeta { read, idempotency_key, wants_html, client })
    }
}

/// The client's `Idempotency-Key`, scoped so keys of different routes never collide.
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> crate::error::Result<Option<String>> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let k =
                v.to_str().map_err(|_| Error::BadRequest("invalid_header", "Idempotency-Key must be text".into()))?;
            if k.is_empty() || k.len() > 128 {
                return Err(Error::BadRequest("invalid_header", "Idempotency-Key must be 1 to 128 characters".into()));
            }
            Ok(Some(format!("client:{k}")))
        }
    }
}
