//! `POST /api/v1/auth/login`: checks credentials against the local replica and signs a
//! token with the replicated key. No other node is involved.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;

use super::extract::JsonBody;
use super::AppState;
use crate::error::{Error, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    username: String,
    password: String,
}

pub async fn login(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Json<serde_json::Value>> {
    if req.username.is_empty() || req.password.is_empty() || req.username.len() > 256 || req.password.len() > 1024 {
        return Err(Error::BadRequest("invalid_body", "username and password are required".into()));
    }
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (token, expires_in) = s
        .replica
        .state_machine()
        .read(move |db| {
            let user = panal_actors::auth::authenticate(db, &req.username, &req.password)?;
            panal_actors::auth::issue_token(db, &user, now)
        })
        .await??;
    Ok(Json(serde_json::json!({ "access_token": token, "token_type": "Bearer", "expires_in": expires_in })))
}
