//! The auth service's operations: register, login, logout, me, signing-key rotation.

use serde::{Deserialize, Serialize};

use super::{AuthCommand, Role, User};
use crate::error::Validator;
use crate::services::{Call, Output};
use crate::{Command, Error, Reply};

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyRotated {
    /// Id of the new signing key (the `kid` of tokens issued from now on).
    pub kid: String,
}

pub async fn handle(call: &Call) -> Result<Output, Error> {
    match call.req.op.as_str() {
        "register" => register(call).await,
        "login" => login(call).await,
        "logout" => logout(call).await,
        "me" => me(call).await,
        "rotate_key" => rotate_key(call).await,
        other => Err(Error::NotFound(format!("the auth service has no operation {other:?}"))),
    }
}

async fn register(call: &Call) -> Result<Output, Error> {
    let req: RegisterRequest = call.input()?;
    let mut v = Validator::default();
    super::validate_registration(&mut v, &req.username, &req.password, req.email.as_deref());
    v.finish()?;
    // Hashing is slow and salted at random: done here, once, never inside `apply`.
    let password_hash = super::password::pool().hash(req.password).await?;
    let command = AuthCommand::CreateUser { username: req.username, password_hash, email: req.email, role: Role::User };
    match call.write(Command::Auth(command)).await? {
        (Reply::User(user), index) => Output::written(201, user, index),
        (other, _) => Err(unexpected(other)),
    }
}

async fn login(call: &Call) -> Result<Output, Error> {
    let req: LoginRequest = call.input()?;
    if req.username.is_empty() || req.password.is_empty() || req.username.len() > 256 || req.password.len() > 1024 {
        return Err(Error::BadCredentials);
    }
    let keys = super::login_keys(&req.username, call.req.client);
    super::check_throttle(&keys)?;
    let username = req.username.clone();
    let found = call.read(move |db| Ok(super::user_with_hash(db, &username)?)).await?;
    let user = super::verify_login(&keys, req.password, found).await?;
    let now = crate::time::wall_ms() / 1000;
    let (access_token, expires_in) = call.read(move |db| super::issue_token(db, &user, now)).await?;
    Output::ok(TokenResponse { access_token, token_type: "Bearer".into(), expires_in })
}

async fn logout(call: &Call) -> Result<Output, Error> {
    let who = call.caller()?;
    let command = AuthCommand::RevokeToken { jti: who.jti.clone(), expires_ms: who.expires_at.saturating_mul(1000) };
    let (_, index) = call.write(Command::Auth(command)).await?;
    Output::written(200, serde_json::json!({ "revoked": true }), index)
}

async fn me(call: &Call) -> Result<Output, Error> {
    let id = call.caller()?.user_id;
    let user: User =
        call.read(move |db| super::user(db, id)?.ok_or_else(|| Error::NotFound("no such user".into()))).await?;
    Output::ok(user)
}

async fn rotate_key(call: &Call) -> Result<Output, Error> {
    call.admin()?;
    let kid = format!("k{}", hex::encode(rand::random::<[u8; 4]>()));
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let (_, index) = call.write(Command::Auth(AuthCommand::RotateJwtKey { kid: kid.clone(), secret })).await?;
    Output::written(200, KeyRotated { kid }, index)
}

pub(crate) fn unexpected(reply: Reply) -> Error {
    Error::Internal(format!("unexpected reply from the state machine: {reply:?}"))
}
