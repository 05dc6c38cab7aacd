//! Accounts and tokens: users with argon2id password hashes, replicated JWT signing keys
//! (rotation keeps old keys until their tokens expire), token issue, local verification on
//! any node, and cluster-wide revocation (logout).

pub mod ops;
pub mod password;
pub mod throttle;

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Instant;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use panal_raft::rusqlite::{self, params, Connection, OptionalExtension};
use panal_raft::ApplyContext;
use serde::{Deserialize, Serialize};

use crate::command::{commands, Proposal};
use crate::{Error, Rejection};

/// Default lifetime of an access token (`--token-ttl`).
pub const TOKEN_TTL_SECS: i64 = 3600;

/// The node's auth limits, set once at start-up from its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthConfig {
    /// Lifetime of issued tokens; a token whose `exp - iat` exceeds it is refused, and a
    /// retired signing key stops verifying this long after its retirement.
    pub token_ttl_secs: i64,
    pub hashing: password::HashPoolConfig,
    pub login_throttle: throttle::ThrottleConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { token_ttl_secs: TOKEN_TTL_SECS, hashing: Default::default(), login_throttle: Default::default() }
    }
}

static CONFIG: OnceLock<AuthConfig> = OnceLock::new();

/// Sets the process's auth limits; only the first call counts (start-up, before serving).
pub fn configure(config: AuthConfig) {
    if CONFIG.set(config).is_err() {
        tracing::warn!("auth limits were already set; keeping the first ones");
    }
    password::configure(config.hashing);
}

pub fn config() -> &'static AuthConfig {
    CONFIG.get_or_init(AuthConfig::default)
}

/// The login throttle of this node (per account and per client address).
pub fn login_throttle() -> &'static throttle::Throttle {
    static THROTTLE: OnceLock<throttle::Throttle> = OnceLock::new();
    THROTTLE.get_or_init(|| throttle::Throttle::new(config().login_throttle))
}

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

commands! {
    pub enum AuthCommand {
        /// `password_hash` is computed by the proposer: hashing is slow and salted at random,
        /// so it must not run inside the deterministic `apply`.
        CreateUser { pub username: String, pub password_hash: String, pub email: Option<String>, pub role: Role },
        /// Logout: the token id is refused everywhere until the token would have expired.
        RevokeToken { pub jti: String, pub expires_ms: i64 },
        /// Adds a signing key; new tokens use it, tokens signed with older keys stay valid.
        RotateJwtKey { pub kid: String, pub secret: String },
    }
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

impl Proposal for command::CreateUser {
    type Reply = User;

    fn apply(self, db: &Connection, ctx: &ApplyContext) -> rusqlite::Result<Result<User, Rejection>> {
        let Self { username, password_hash, email, role } = self;
        create_user(db, ctx, &username, &password_hash, email.as_deref(), role)
    }
}

impl Proposal for command::RevokeToken {
    type Reply = ();

    fn apply(self, db: &Connection, ctx: &ApplyContext) -> rusqlite::Result<Result<(), Rejection>> {
        // Revocations of expired tokens are useless: drop them as we go.
        db.prepare_cached("DELETE FROM revoked_tokens WHERE expires_ms < ?1")?.execute([ctx.now_ms])?;
        db.prepare_cached("INSERT OR IGNORE INTO revoked_tokens (jti, expires_ms) VALUES (?1, ?2)")?
            .execute(params![self.jti, self.expires_ms])?;
        Ok(Ok(()))
    }
}

impl Proposal for command::RotateJwtKey {
    type Reply = ();

    fn apply(self, db: &Connection, ctx: &ApplyContext) -> rusqlite::Result<Result<(), Rejection>> {
        let Self { kid, secret } = self;
        if jwt_secret(db, &kid)?.is_some() {
            return Ok(Err(Rejection::new("invalid_state", format!("signing key {kid:?} already exists"))));
        }
        install_jwt_key(db, ctx, &kid, &secret)?;
        Ok(Ok(()))
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

/// Hashes a password with argon2id and a random salt (PHC string) on the calling thread:
/// for one-off hashes outside request serving (cluster creation). Requests use
/// [`password::pool`], which bounds memory and concurrency.
pub fn hash_password(password: &str) -> Result<String, Error> {
    password::hash_now(password)
}

/// A user and their stored password hash, by username.
pub fn user_with_hash(db: &Connection, username: &str) -> rusqlite::Result<Option<(User, String)>> {
    db.query_row(
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
    .optional()
}

/// The throttle keys of a login attempt: the account, and the client's address if known.
pub fn login_keys(username: &str, client: Option<IpAddr>) -> Vec<throttle::ThrottleKey> {
    let mut keys = vec![throttle::ThrottleKey::Account(username.to_string())];
    keys.extend(client.map(throttle::ThrottleKey::Client));
    keys
}

/// Admits a login attempt, or refuses it while one of its keys is locked (before any
/// password is checked).
pub fn check_throttle(keys: &[throttle::ThrottleKey]) -> Result<throttle::Attempt<'static>, Error> {
    login_throttle().begin(keys, Instant::now()).map_err(too_many_attempts)
}

fn too_many_attempts(wait: std::time::Duration) -> Error {
    Error::TooManyAttempts { retry_after_secs: throttle::retry_after_secs(wait) }
}

/// Checks `password` against the stored account (`None`: no such user, checked at the
/// same cost so timing does not reveal which usernames exist) on the hashing pool, and
/// counts the outcome in the login throttle; an attempt that a lock overtook while its
/// password was checked is refused whatever the password.
pub async fn verify_login(
    attempt: throttle::Attempt<'_>,
    password: String,
    found: Option<(User, String)>,
) -> Result<User, Error> {
    let (user, hash) = match found {
        Some((user, hash)) => (Some(user), Some(hash)),
        None => (None, None),
    };
    let matches = password::pool().verify(password, hash).await?;
    match user {
        Some(user) if matches => {
            attempt.succeeded(Instant::now()).map_err(too_many_attempts)?;
            Ok(user)
        }
        _ => {
            attempt.failed(Instant::now()).map_err(too_many_attempts)?;
            Err(Error::BadCredentials)
        }
    }
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
    let ttl = config().token_ttl_secs;
    let claims = Claims {
        sub: user.username.clone(),
        uid: user.id,
        role: user.role,
        jti: hex::encode(rand::random::<[u8; 16]>()),
        iat: now_secs,
        exp: now_secs + ttl,
    };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid);
    let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret.as_bytes()))
        .map_err(|e| Error::InvalidToken(format!("signing failed: {e}")))?;
    Ok((token, ttl))
}

/// Verifies a bearer token locally: structure, algorithm (HS256 only), key id, key
/// retirement, signature, expiry and lifetime. Every failure is `InvalidToken` with a
/// message naming the problem.
pub fn verify_token(db: &Connection, token: &str) -> Result<Identity, Error> {
    let kid = key_id(token)?;
    let key = signing_key(db, &kid)?.ok_or_else(unknown_key)?;
    verify_with_key(token, &key, crate::time::wall_ms())
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

/// Removes from a copy of the state the auth secrets that must not leave the cluster: the
/// signing keys and the revocation list that only concerns tokens of those keys (the
/// cluster identity and join secrets go with `cluster::forget_identity`). A restore
/// creates new ones; run `VACUUM` after, so the deleted rows do not linger in free pages.
pub fn strip_secrets(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch("DELETE FROM jwt_keys; DELETE FROM revoked_tokens;")
}

/// A signing key as verification needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub secret: String,
    /// When a newer key replaced it (ms): it stops verifying one token lifetime later,
    /// when every token it signed has expired. `None` for the newest key.
    pub retired_ms: Option<i64>,
}

/// Signing key `kid`. Secrets never change and a retired key stays retired, so callers
/// may cache a retired key for good and the newest one briefly.
pub fn signing_key(db: &Connection, kid: &str) -> rusqlite::Result<Option<SigningKey>> {
    db.query_row(
        "SELECT k.secret,
                (SELECT min(n.created_ms) FROM jwt_keys n
                  WHERE n.created_ms > k.created_ms OR (n.created_ms = k.created_ms AND n.rowid > k.rowid))
           FROM jwt_keys k WHERE k.kid = ?1",
        [kid],
        |r| Ok(SigningKey { secret: r.get(0)?, retired_ms: r.get(1)? }),
    )
    .optional()
}

/// The secret of signing key `kid`, whether retired or not.
pub fn jwt_secret(db: &Connection, kid: &str) -> rusqlite::Result<Option<String>> {
    Ok(signing_key(db, kid)?.map(|k| k.secret))
}

/// Leeway for clock differences between the node that signed and the one verifying.
const LEEWAY_SECS: i64 = 5;

/// Checks key retirement, signature, expiry and lifetime (`exp - iat` at most the
/// configured token lifetime) at wall time `now_ms`.
pub fn verify_with_key(token: &str, key: &SigningKey, now_ms: i64) -> Result<Identity, Error> {
    let ttl = config().token_ttl_secs;
    if key.retired_ms.is_some_and(|retired| now_ms > retired + (ttl + LEEWAY_SECS) * 1000) {
        return Err(invalid("token was signed with a retired key (every token it signed has expired)"));
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = LEEWAY_SECS as u64;
    validation.set_required_spec_claims(&["exp", "sub", "iat"]);
    let data = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(key.secret.as_bytes()), &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => invalid("token has expired"),
            ErrorKind::InvalidSignature => invalid("bad token signature"),
            ErrorKind::InvalidAlgorithm => invalid("unsupported signing algorithm (only HS256 is accepted)"),
            _ => invalid(&format!("malformed token: {e}")),
        })?;
    let c = data.claims;
    if c.exp.saturating_sub(c.iat) > ttl {
        return Err(invalid(&format!("token lifetime exceeds the {ttl} s this cluster allows")));
    }
    if c.iat > now_ms / 1000 + LEEWAY_SECS {
        return Err(invalid("token was issued in the future"));
    }
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

    fn login(db: &Connection, username: &str, password: &str, client: &str) -> Result<User, Error> {
        let attempt = check_throttle(&login_keys(username, Some(client.parse().unwrap())))?;
        let found = user_with_hash(db, username).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(verify_login(attempt, password.into(), found))
    }

    #[test]
    fn login_and_verify_round_trip() {
        let (db, _) = db_with_admin();
        assert!(matches!(login(&db, "admin", "wrong", "192.0.2.1"), Err(Error::BadCredentials)));
        assert!(matches!(login(&db, "nobody", "x", "192.0.2.1"), Err(Error::BadCredentials)));
        let user = login(&db, "admin", "correct horse", "192.0.2.1").unwrap();
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
        command::RevokeToken { jti: "a".into(), expires_ms: 5_000 }.apply(&db, &ctx).unwrap().unwrap();
        assert!(is_revoked(&db, "a").unwrap());
        assert!(!is_revoked(&db, "b").unwrap());
        let later = ApplyContext { index: 3, now_ms: 6_000 };
        command::RevokeToken { jti: "b".into(), expires_ms: 9_000 }.apply(&db, &later).unwrap().unwrap();
        assert!(!is_revoked(&db, "a").unwrap(), "expired revocations are purged");
        assert!(is_revoked(&db, "b").unwrap());
    }

    /// Issue 13: concurrent wrong logins all pass the throttle before the first one is
    /// checked; those checked after the lock began are refused (429), not answered 401,
    /// and so is the next one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_wrong_logins_past_the_free_failures_are_refused() {
        let (db, _) = db_with_admin();
        let ctx = ApplyContext { index: 2, now_ms: 0 };
        // A username and addresses of their own: the throttle is process-wide. Fewer
        // attempts than the hashing queue holds, so parallel tests are never refused.
        create_user(&db, &ctx, "flooded", &hash_password("the right one").unwrap(), None, Role::User).unwrap().unwrap();
        let flood = 12;
        let attempts: Vec<_> = (0..flood)
            .map(|n| {
                let keys = login_keys("flooded", Some(format!("203.0.113.{n}").parse().unwrap()));
                check_throttle(&keys).expect("nothing has failed yet")
            })
            .collect();
        let found = user_with_hash(&db, "flooded").unwrap();
        let outcomes = futures::future::join_all(
            attempts.into_iter().map(|attempt| verify_login(attempt, "wrong".into(), found.clone())),
        )
        .await;
        let told = outcomes.iter().filter(|o| matches!(o, Err(Error::BadCredentials))).count();
        let refused = outcomes.iter().filter(|o| matches!(o, Err(Error::TooManyAttempts { .. }))).count();
        assert_eq!((told, refused), (config().login_throttle.free_failures as usize + 1, flood - told), "{outcomes:?}");
        let next = check_throttle(&login_keys("flooded", Some("203.0.113.200".parse().unwrap())));
        assert!(matches!(next, Err(Error::TooManyAttempts { .. })), "{next:?}");
    }

    #[test]
    fn wrong_passwords_lock_the_account_and_the_right_one_waits_too() {
        let (db, _) = db_with_admin();
        let user = user_with_hash(&db, "admin").unwrap().unwrap().0;
        // A username of its own: the throttle is process-wide and tests run in parallel.
        let ctx = ApplyContext { index: 2, now_ms: 0 };
        let hash = hash_password("the right one").unwrap();
        create_user(&db, &ctx, "locked-out", &hash, None, Role::User).unwrap().unwrap();
        let free = config().login_throttle.free_failures;
        for n in 0..=free {
            let client = format!("198.51.100.{n}");
            assert!(matches!(login(&db, "locked-out", "wrong", &client), Err(Error::BadCredentials)));
        }
        let refused = login(&db, "locked-out", "the right one", "198.51.100.200").unwrap_err();
        assert!(matches!(refused, Error::TooManyAttempts { retry_after_secs } if retry_after_secs >= 1), "{refused:?}");
        assert_eq!(refused.http().0, 429);
        assert_eq!(refused.http().2, Some(1));
        // Other accounts from other addresses are unaffected.
        assert_eq!(login(&db, "admin", "correct horse", "198.51.100.201").unwrap(), user);
    }

    #[test]
    fn retired_keys_and_over_long_tokens_are_refused() {
        let (db, user) = db_with_admin();
        let ttl = config().token_ttl_secs;
        let now_ms = now() * 1000;
        // k1 was replaced two token lifetimes ago: every token it signed has expired.
        let rotated = ApplyContext { index: 2, now_ms: now_ms - 2 * ttl * 1000 };
        install_jwt_key(&db, &rotated, "k2", "secret-two").unwrap();
        let signed_by = |kid: &str, secret: &str, iat: i64, exp: i64| {
            let claims = Claims { sub: "admin".into(), uid: user.id, role: Role::Admin, jti: "j".into(), iat, exp };
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(kid.into());
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
        };
        // Even a token that claims to be fresh, signed with the retired key, is refused.
        let forged = signed_by("k1", "secret-one", now(), now() + 60);
        assert!(message(verify_token(&db, &forged).unwrap_err()).contains("retired"));
        verify_token(&db, &signed_by("k2", "secret-two", now(), now() + 60)).unwrap();
        let ten_years = signed_by("k2", "secret-two", now(), now() + 10 * 365 * 86_400);
        assert!(message(verify_token(&db, &ten_years).unwrap_err()).contains("lifetime"));
        let key = signing_key(&db, "k1").unwrap().unwrap();
        assert_eq!(key.retired_ms, Some(rotated.now_ms));
        assert_eq!(signing_key(&db, "k2").unwrap().unwrap().retired_ms, None);
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key() {
        let (db, user) = db_with_admin();
        let (old, _) = issue_token(&db, &user, now()).unwrap();
        let ctx = ApplyContext { index: 2, now_ms: now() * 1000 };
        command::RotateJwtKey { kid: "k2".into(), secret: "secret-two".into() }.apply(&db, &ctx).unwrap().unwrap();
        let (new, _) = issue_token(&db, &user, now()).unwrap();
        assert_eq!(key_id(&new).unwrap(), "k2");
        assert_eq!(key_id(&old).unwrap(), "k1");
        verify_token(&db, &old).unwrap();
        verify_token(&db, &new).unwrap();
        let again = command::RotateJwtKey { kid: "k2".into(), secret: "x".into() }.apply(&db, &ctx).unwrap();
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
