//! The auth service's operations: register, login, logout, me, signing-key rotation.

use serde::{Deserialize, Serialize};

use super::{command, Role, User};
use crate::error::Validator;
use crate::services::{service_ops, Call, Operation};
use crate::Error;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// 3 to 64 letters, digits, `.`, `_` or `-`.
    #[schema(pattern = "^[A-Za-z0-9._-]{3,64}$")]
    pub username: String,
    /// 8 to 256 characters.
    #[schema(min_length = 8, max_length = 256)]
    pub password: String,
    #[serde(default)]
    #[schema(max_length = 254, pattern = "^[^@\\s]+@[^@\\s.][^@\\s]*\\.[^@\\s]*[^@\\s.]$")]
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

/// The answer of a logout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Revoked {
    pub revoked: bool,
}

service_ops! {
    /// The auth service's operations.
    AuthOp => Auth { Register, Login, Logout, Me, RotateKey }
}

/// Creates an account (role `user`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Register {
    pub account: RegisterRequest,
}

impl Operation for Register {
    type Output = User;
    const STATUS: u16 = 201;

    async fn handle(self, call: &Call) -> Result<User, Error> {
        let RegisterRequest { username, password, email } = self.account;
        let mut v = Validator::default();
        super::validate_registration(&mut v, &username, &password, email.as_deref());
        v.finish()?;
        // Hashing is slow and salted at random: done here, once, never inside `apply`.
        let password_hash = super::password::pool().hash(password).await?;
        call.write(command::CreateUser { username, password_hash, email, role: Role::User }).await
    }
}

/// Exchanges a username and password for an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Login {
    pub credentials: LoginRequest,
}

impl Operation for Login {
    type Output = TokenResponse;

    async fn handle(self, call: &Call) -> Result<TokenResponse, Error> {
        let LoginRequest { username, password } = self.credentials;
        if username.is_empty() || password.is_empty() || username.len() > 256 || password.len() > 1024 {
            return Err(Error::BadCredentials);
        }
        // Throttled per account and client address, before any password is checked.
        let keys = super::login_keys(&username, call.meta.client.map(|a| a.ip()));
        let attempt = super::check_throttle(&keys)?;
        let found = call.read(move |db| Ok(super::user_with_hash(db, &username)?)).await?;
        let user = super::verify_login(attempt, password, found).await?;
        let now = crate::time::wall_ms() / 1000;
        let (access_token, expires_in) = call.read(move |db| super::issue_token(db, &user, now)).await?;
        Ok(TokenResponse { access_token, token_type: "Bearer".into(), expires_in })
    }
}

/// Revokes the caller's token everywhere until it expires.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Logout;

impl Operation for Logout {
    type Output = Revoked;

    async fn handle(self, call: &Call) -> Result<Revoked, Error> {
        let who = call.caller()?;
        let command = command::RevokeToken { jti: who.jti.clone(), expires_ms: who.expires_at.saturating_mul(1000) };
        call.write(command).await?;
        Ok(Revoked { revoked: true })
    }
}

/// The caller's account.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Me;

impl Operation for Me {
    type Output = User;

    async fn handle(self, call: &Call) -> Result<User, Error> {
        let id = call.caller()?.user_id;
        call.read(move |db| super::user(db, id)?.ok_or_else(|| Error::NotFound("no such user".into()))).await
    }
}

/// Adds a new signing key (admin).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RotateKey;

impl Operation for RotateKey {
    type Output = KeyRotated;

    async fn handle(self, call: &Call) -> Result<KeyRotated, Error> {
        call.admin()?;
        let kid = format!("k{}", hex::encode(rand::random::<[u8; 4]>()));
        let secret = hex::encode(rand::random::<[u8; 32]>());
        call.write(command::RotateJwtKey { kid: kid.clone(), secret }).await?;
        Ok(KeyRotated { kid })
    }
}
