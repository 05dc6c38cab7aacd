//! Auth routes: register, login, logout, me, signing-key rotation. Each is served by an
//! auth service instance somewhere in the cluster.

use axum::extract::State;
use axum::response::Response;
use panal_actors::auth::ops::{
    KeyRotated, Login, LoginRequest, Logout, Me, Register, RegisterRequest, Revoked, RotateKey, TokenResponse,
};
use panal_actors::auth::User;

use super::extract::{CallMeta, Caller, JsonBody};
use super::openapi::ApiErrors;
use super::services::call;
use super::AppState;
use crate::error::Result;

/// Creates an account (role `user`).
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = User), ApiErrors))]
pub async fn register(
    State(s): State<AppState>,
    meta: CallMeta,
    JsonBody(b): JsonBody<RegisterRequest>,
) -> Result<Response> {
    call(&s, None, meta, Register { account: b }).await
}

/// Exchanges a username and password for an access token (JWT, HS256, 1 hour).
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), ApiErrors))]
pub async fn login(State(s): State<AppState>, meta: CallMeta, JsonBody(b): JsonBody<LoginRequest>) -> Result<Response> {
    call(&s, None, meta, Login { credentials: b }).await
}

/// Revokes the presented token everywhere in the cluster until it expires.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Revoked), ApiErrors))]
pub async fn logout(State(s): State<AppState>, caller: Caller, meta: CallMeta) -> Result<Response> {
    call(&s, caller, meta, Logout).await
}

/// The caller's account.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = User), ApiErrors))]
pub async fn me(State(s): State<AppState>, caller: Caller, meta: CallMeta) -> Result<Response> {
    call(&s, caller, meta, Me).await
}

/// Adds a new signing key (admin). New tokens use it; older tokens stay valid until they expire.
#[utoipa::path(post, path = "/api/v1/auth/keys/rotate", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = KeyRotated), ApiErrors))]
pub async fn rotate_key(State(s): State<AppState>, caller: Caller, meta: CallMeta) -> Result<Response> {
    call(&s, caller, meta, RotateKey).await
}
