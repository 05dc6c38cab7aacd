//! Accounts and tokens: users with argon2id password hashes, replicated JWT signing keys
//! (rotation keeps old keys until their tokens expire), token issue, local verification on
//! any node, and cluster-wide revocation (logout).

pub mod ops;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use panal_raft::rusqlite::{self, params, Connection, OptionalExtension};
use panal_raft::ApplyContext;
use serde::{Deserialize, Serialize};

use crate::{Error, Rejection, Reply, Response};

/// Lifetime of an access token.
pub const TOKEN_TTL_SECS: i64 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
    fn parse(s: &str) -> Role {
        if s == "admin" {
            Role::Admin
        } else {
            Role::User
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub role: Role,
    #[serde(rename = "created_at", with = "crate::time::as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_ms: i64,
}

/// Shortest accepted password.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest accepted password (hashing cost is bounded).
pub const MAX_PASSWORD_LEN: usize = 256;

/// Who a verified token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub user_id: i64,
    pub username: String,
    pub role: Role,
    pub jti: String,
    pub expires_at: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    uid: i64,
    role: Role,
    jti: String,
    iat: i64,
    exp: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthCommand {
    /// `password_hash` is computed by the proposer: hashing is slow and salted at random,
    /// so it must not run inside the deterministic `apply`.
    CreateUser { username: String, password_hash: String, email: Option<String>, role: Role },
    /// Logout: the token id is refused everywhere until the token would have expired.
    RevokeToken { jti: String, expires_ms: i64 },
    /// Adds a signing key; new tokens use it, tokens signed with older keys stay valid.
    RotateJwtKey { kid: String, secret: String },
}

pub(crate) fn migrate(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS users (
             id INTEGER PRIMARY KEY,
             username TEXT NOT NULL UNIQUE,
             password_hash TEXT NOT NULL,
             email TEXT,
             role TEXT NOT NULL,
             created_ms INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS jwt_keys (
             kid TEXT PRIMARY KEY,
             secret TEXT NOT NULL,
             created_ms INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS revoked_tokens (
             jti TEXT PRIMARY KEY,
             expires_ms INTEGER NOT NULL
         );",
    )
}

pub(crate) fn apply(db: &Connection, ctx: &ApplyContext, command: AuthCommand) -> rusqlite::Result<Response> {
    match command {
        AuthCommand::CreateUser { username, password_hash, email, role } => {
            Ok(create_user(db, ctx, &username, &password_hash, email.as_deref(), role)?.map(Reply::User))
        }
        AuthCommand::RevokeToken { jti, expires_ms } => {
            // Revocations of expired tokens are useless: drop them as we go.
            db.prepare_cached("DELETE FROM revoked_tokens WHERE expires_ms < ?1")?.execute([ctx.now_ms])?;
            db.prepare_cached("INSERT OR IGNORE INTO revoked_tokens (jti, expires_ms) VALUES (?1, ?2)")?
                .execute(params![jti, expires_ms])?;
            Ok(Ok(Reply::Done))
        }
        AuthCommand::RotateJwtKey { kid, secret } => {
            if jwt_secret(db, &kid)?.is_some() {
                return Ok(Err(Rejection::new("invalid_state", format!("signing key {kid:?} already exists"))));
            }
            install_jwt_key(db, ctx, &kid, &secret)?;
            Ok(Ok(Reply::Done))
        }
    }
}

/// Whether the token id was revoked by a logout.
pub fn is_revoked(db: &Connection, jti: &str) -> rusqlite::Result<bool> {
    db.prepare_cached("SELECT EXISTS(SELECT 1 FROM revoked_tokens WHERE jti = ?1)")?.query_row([jti], |r| r.get(0))
}

/// A user by id.
pub fn user(db: &Connection, id: i64) -> rusqlite::Result<Option<User>> {
    db.query_row("SELECT id, username, email, role, created_ms FROM users WHERE id = ?1", [id], |r| {
        Ok(User {
            id: r.get(0)?,
            username: r.get(1)?,
            email: r.get(2)?,
            role: Role::parse(&r.get::<_, String>(3)?),
            created_ms: r.get(4)?,
        })
    })
    .optional()
}

/// Checks a registration's password and email (the username is checked in `apply`).
pub fn validate_registration(v: &mut crate::error::Validator, username: &str, password: &str, email: Option<&str>) {
    if let Err(r) = validate_username(username) {
        v.fail("username", r.message);
    }
    let len = password.chars().count();
    v.check(
        (MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&len),
        "password",
        format!("must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters"),
    );
    if let Some(email) = email {
        let ok = email.len() <= 254
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
            })
            && !email.chars().any(char::is_whitespace);
        v.check(ok, "email", "must be an email address such as ada@example.com");
    }
}

pub(crate) fn create_user(
    db: &Connection,
    ctx: &ApplyContext,
    username: &str,
    password_hash: &str,
    email: Option<&str>,
    role: Role,
) -> rusqlite::Result<Result<User, Rejection>> {
    if let Err(r) = validate_username(username) {
        return Ok(Err(r));
    }
    let taken: bool =
        db.query_row("SELECT EXISTS(SELECT 1 FROM users WHERE username = ?1)", [username], |r| r.get(0))?;
    if taken {
        return Ok(Err(Rejection::new("username_taken", format!("the username {username:?} is taken"))));
    }
    db.execute(
        "INSERT INTO users (username, password_hash, email, role, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![username, password_hash, email, role.as_str(), ctx.now_ms],
    )?;
    Ok(Ok(User {
        id: db.last_insert_rowid(),
        username: username.into(),
        email: email.map(String::from),
        role,
        created_ms: ctx.now_ms,
    }))
}

pub(crate) fn install_jwt_key(db: &Connection, ctx: &ApplyContext, kid: &str, secret: &str) -> rusqlite::Result<()> {
    db.execute(
        "INSERT OR REPLACE INTO jwt_keys (kid, secret, created_ms) VALUES (?1, ?2, ?3)",
        params![kid, secret, ctx.now_ms],
    )?;
    Ok(())
}

pub fn validate_username(username: &str) -> Result<(), Rejection> {
    let ok_len = (3..=64).contains(&username.len());
    let ok_chars = username.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(Rejection::new(
            "invalid_username",
            "username must be 3 to 64 characters of letters, digits, '.', '_' or '-'",
        ))
    }
}

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String, Error> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| Error::Hashing(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Hashing(e.to_string()))
}

/// Checks a username and password against the local replica.
pub fn authenticate(db: &Connection, username: &str, password: &str) -> Result<User, Error> {
    let row: Option<(User, String)> = db
        .query_row(
            "SELECT id, username, email, role, created_ms, password_hash FROM users WHERE username = ?1",
            [username],
            |r| {
                Ok((
                    User {
                        id: r.get(0)?,
                        username: r.get(1)?,
                        email: r.get(2)?,
                        role: Role::parse(&r.get::<_, String>(3)?),
                        created_ms: r.get(4)?,
                    },
                    r.get(5)?,
                ))
            },
        )
        .optional()?;
    // Hash even for unknown users, so timing does not reveal which usernames exist.
    let (user, hash) = match row {
        Some(found) => found,
        None => {
            let _ = hash_password(password);
            return Err(Error::BadCredentials);
        }
    };
    let parsed = PasswordHash::new(&hash).map_err(|e| Error::Hashing(e.to_string()))?;
    Argon2::default().verify_password(password.as_bytes(), &parsed).map_err(|_| Error::BadCredentials)?;
    Ok(user)
}

fn newest_key(db: &Connection) -> rusqlite::Result<Option<(String, String)>> {
    db.query_row("SELECT kid, secret FROM jwt_keys ORDER BY created_ms DESC, rowid DESC LIMIT 1", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .optional()
}

/// Signs an access token for `user` with the newest replicated key.
pub fn issue_token(db: &Connection, user: &User, now_secs: i64) -> Result<(String, i64), Error> {
    let (kid, secret) = newest_key(db)?.ok_or(Error::NotInitialized)?;
    let claims = Claims {
        sub: user.username.clone(),
        uid: user.id,
        role: user.role,
        jti: hex::encode(rand::random::<[u8; 16]>()),
        iat: now_secs,
        exp: now_secs + TOKEN_TTL_SECS,
    };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid);
    let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret.as_bytes()))
        .map_err(|e| Error::InvalidToken(format!("signing failed: {e}")))?;
    Ok((token, TOKEN_TTL_SECS))
}

/// Verifies a bearer token locally: structure, algorithm (HS256 only), key id, signature,
/// expiry. Every failure is `InvalidToken` with a message naming the problem.
pub fn verify_token(db: &Connection, token: &str) -> Result<Identity, Error> {
    let kid = key_id(token)?;
    let secret = jwt_secret(db, &kid)?.ok_or_else(unknown_key)?;
    verify_with_key(token, &secret)
}

fn invalid(m: &str) -> Error {
    Error::InvalidToken(m.to_string())
}

pub fn unknown_key() -> Error {
    invalid("token was signed with an unknown key")
}

/// Checks the token's structure and algorithm and returns the id of its signing key.
pub fn key_id(token: &str) -> Result<String, Error> {
    let segments = token.split('.').count();
    if segments != 3 {
        return Err(invalid(&format!("malformed token: not enough segments (expected 3, found {segments})")));
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
        ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
            invalid("unsupported signing algorithm (only HS256 is accepted; \"none\" never is)")
        }
        // An algorithm name the library does not know, such as "none", fails as JSON.
        ErrorKind::Json(j) if j.to_string().contains("unknown variant") => {
            invalid("unsupported signing algorithm (only HS256 is accepted; \"none\" never is)")
        }
        _ => invalid(&format!("malformed token header: {e}")),
    })?;
    if header.alg != Algorithm::HS256 {
        return Err(invalid(&format!("unsupported signing algorithm {:?} (only HS256 is accepted)", header.alg)));
    }
    header.kid.ok_or_else(|| invalid("token has no key id"))
}

/// The secret of signing key `kid`. Keys never change once created (rotation adds a new
/// one), so callers may cache the answer.
pub fn jwt_secret(db: &Connection, kid: &str) -> rusqlite::Result<Option<String>> {
    db.query_row("SELECT secret FROM jwt_keys WHERE kid = ?1", [kid], |r| r.get(0)).optional()
}

/// Checks signature and expiry with the given key secret.
pub fn verify_with_key(token: &str, secret: &str) -> Result<Identity, Error> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 5;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let data = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret.as_bytes()), &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => invalid("token has expired"),
            ErrorKind::InvalidSignature => invalid("bad token signature"),
            ErrorKind::InvalidAlgorithm => invalid("unsupported signing algorithm (only HS256 is accepted)"),
            _ => invalid(&format!("malformed token: {e}")),
        })?;
    let c = data.claims;
    Ok(Identity { user_id: c.uid, username: c.sub, role: c.role, jti: c.jti, expires_at: c.exp })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_with_admin() -> (Connection, User) {
        let db = Connection::open_in_memory().unwrap();
        migrate(&db).unwrap();
        let ctx = ApplyContext { index: 1, now_ms: 0 };
        install_jwt_key(&db, &ctx, "k1", "secret-one").unwrap();
        let hash = hash_password("correct horse").unwrap();
        let user = create_user(&db, &ctx, "admin", &hash, None, Role::Admin).unwrap().unwrap();
        (db, user)
    }

    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn message(e: Error) -> String {
        match e {
            Error::InvalidToken(m) => m,
            other => panic!("expected InvalidToken, got {other:?}"),
        }
    }

    #[test]
    fn login_and_verify_round_trip() {
        let (db, _) = db_with_admin();
        assert!(matches!(authenticate(&db, "admin", "wrong"), Err(Error::BadCredentials)));
        assert!(matches!(authenticate(&db, "nobody", "x"), Err(Error::BadCredentials)));
        let user = authenticate(&db, "admin", "correct horse").unwrap();
        let (token, ttl) = issue_token(&db, &user, now()).unwrap();
        assert_eq!(ttl, TOKEN_TTL_SECS);
        let id = verify_token(&db, &token).unwrap();
        assert_eq!((id.username.as_str(), id.role), ("admin", Role::Admin));
    }

    #[test]
    fn bad_tokens_are_rejected_with_a_reason() {
        let (db, user) = db_with_admin();
        assert!(message(verify_token(&db, "abc").unwrap_err()).contains("not enough segments"));
        let (token, _) = issue_token(&db, &user, now()).unwrap();
        let mut forged = token.clone();
        forged.push('x');
        assert!(message(verify_token(&db, &forged).unwrap_err()).contains("signature"));
        let (old, _) = issue_token(&db, &user, now() - 2 * TOKEN_TTL_SECS).unwrap();
        assert!(message(verify_token(&db, &old).unwrap_err()).contains("expired"));
        // alg "none": header {"alg":"none","typ":"JWT"}
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", token.split('.').nth(1).unwrap());
        let m = message(verify_token(&db, &none).unwrap_err());
        assert!(m.contains("algorithm"), "{m}");
        let garbage = "e30.e30.sig";
        assert!(verify_token(&db, garbage).is_err());
    }

    #[test]
    fn revoked_tokens_are_remembered_until_they_expire() {
        let (db, _) = db_with_admin();
        let ctx = ApplyContext { index: 2, now_ms: 1_000 };
        apply(&db, &ctx, AuthCommand::RevokeToken { jti: "a".into(), expires_ms: 5_000 }).unwrap().unwrap();
        assert!(is_revoked(&db, "a").unwrap());
        assert!(!is_revoked(&db, "b").unwrap());
        let later = ApplyContext { index: 3, now_ms: 6_000 };
        apply(&db, &later, AuthCommand::RevokeToken { jti: "b".into(), expires_ms: 9_000 }).unwrap().unwrap();
        assert!(!is_revoked(&db, "a").unwrap(), "expired revocations are purged");
        assert!(is_revoked(&db, "b").unwrap());
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key() {
        let (db, user) = db_with_admin();
        let (old, _) = issue_token(&db, &user, now()).unwrap();
        let ctx = ApplyContext { index: 2, now_ms: 10 };
        apply(&db, &ctx, AuthCommand::RotateJwtKey { kid: "k2".into(), secret: "secret-two".into() }).unwrap().unwrap();
        let (new, _) = issue_token(&db, &user, now()).unwrap();
        assert_eq!(key_id(&new).unwrap(), "k2");
        assert_eq!(key_id(&old).unwrap(), "k1");
        verify_token(&db, &old).unwrap();
        verify_token(&db, &new).unwrap();
        let again = apply(&db, &ctx, AuthCommand::RotateJwtKey { kid: "k2".into(), secret: "x".into() }).unwrap();
        assert_eq!(again.unwrap_err().code, "invalid_state");
    }

    #[test]
    fn registration_rules_name_each_bad_field() {
        let mut v = crate::error::Validator::default();
        validate_registration(&mut v, "x", "short", Some("not-an-email"));
        let fields: Vec<String> = v.finish().unwrap_err().fields().unwrap().iter().map(|f| f.field.clone()).collect();
        assert_eq!(fields, ["username", "password", "email"]);
        let mut v = crate::error::Validator::default();
        validate_registration(&mut v, "ada", "long enough", Some("ada@example.com"));
        v.finish().unwrap();
    }

    #[test]
    fn usernames_are_unique_and_validated() {
        let (db, _) = db_with_admin();
        let ctx = ApplyContext { index: 2, now_ms: 0 };
        assert_eq!(create_user(&db, &ctx, "admin", "h", None, Role::User).unwrap().unwrap_err().code, "username_taken");
        assert_eq!(create_user(&db, &ctx, "a b", "h", None, Role::User).unwrap().unwrap_err().code, "invalid_username");
    }
}
