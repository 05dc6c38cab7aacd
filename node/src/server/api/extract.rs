//! Request extractors: JSON bodies, bearer tokens and read options, each failing with a
//! 4xx in the one error shape.

use std::str::FromStr;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use panal_actors::auth::{self, Identity, Role};
use panal_raft::Consistency;
use serde::de::DeserializeOwned;

use super::AppState;
use crate::error::{error_response, Error};

/// A JSON body; malformed or oversized bodies are 400 / 413 in the one error shape.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> Response {
    match rej {
        JsonRejection::MissingJsonContentType(_) => error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/json",
            None,
        ),
        JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            error_response(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is too large", None)
        }
        JsonRejection::JsonDataError(e) => {
            error_response(StatusCode::BAD_REQUEST, "invalid_body", &e.body_text(), None)
        }
        other => error_response(StatusCode::BAD_REQUEST, "malformed_json", &other.body_text(), None),
    }
}

/// The caller's verified identity, from `Authorization: Bearer …` (or the web console's
/// session cookie, see `ui::session_token`), checked locally
/// against the replicated signing keys.
pub struct Caller(pub Identity);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            // A browser session (web console): the cookie, once its CSRF checks pass.
            return match super::ui::session_token(parts)? {
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

/// Checks a token against the replicated signing keys and the revocation list.
async fn verify(token: String, parts: &Parts, state: &AppState) -> Result<Caller, Error> {
    {
        let kid = auth::key_id(&token)?;
        // A retired key stays retired: cached for good. The newest key is looked up again
        // after a second, so that a rotation starts its retirement clock here too.
        let cached = state.jwt_keys.read().unwrap_or_else(|p| p.into_inner()).get(&kid).cloned();
        let fresh = |(key, at): &(auth::SigningKey, std::time::Instant)| {
            key.retired_ms.is_some() || at.elapsed() < std::time::Duration::from_secs(1)
        };
        let key = match cached.filter(fresh) {
            Some((key, _)) => key,
            None => {
                let lookup = kid.clone();
                let key = state
                    .replica
                    .state_machine()
                    .read(move |db| auth::signing_key(db, &lookup))
                    .await??
                    .ok_or_else(auth::unknown_key)?;
                state
                    .jwt_keys
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(kid, (key.clone(), std::time::Instant::now()));
                key
            }
        };
        let identity = auth::verify_with_key(&token, &key, panal_actors::time::wall_ms())?;
        // A client that logged out on another node sends that write's index: wait for it,
        // so its revocation is seen here too.
        if let Some(index) = parts.headers.get("x-panal-index").and_then(|v| v.to_str().ok()?.trim().parse().ok()) {
            state.replica.wait_applied(index, super::READ_TIMEOUT).await?;
        }
        let jti = identity.jti.clone();
        if state.replica.state_machine().read(move |db| auth::is_revoked(db, &jti)).await?? {
            return Err(Error::InvalidToken("token has been revoked (logged out)".into()));
        }
        Ok(Caller(identity))
    }
}

/// No `Authorization` header: no caller. A header with a bad token is still a 401.
impl axum::extract::OptionalFromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Error> {
        if parts.headers.contains_key(axum::http::header::AUTHORIZATION) || super::ui::has_session(parts) {
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

/// How a read wants to be served: `X-Panal-Consistency` (or `?consistency=`) and the
/// client's last seen write index `X-Panal-Index`.
pub struct ReadOptions {
    pub consistency: Consistency,
    pub min_index: u64,
}

impl<S: Send + Sync> FromRequestParts<S> for ReadOptions {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let bad = |m: String| error_response(StatusCode::BAD_REQUEST, "invalid_header", &m, None).into_response();
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
        Ok(ReadOptions { consistency, min_index })
    }
}

/// Query parameters; a malformed query string is a 400 in the one error shape.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(QueryParams(v)),
            Err(rej) => Err(error_response(StatusCode::BAD_REQUEST, "invalid_query", &rej.body_text(), None)),
        }
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
