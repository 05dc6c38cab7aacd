//! The one data seeder of `up --demo`, `drill` and `bench services`: accounts, books and
//! devices created through the typed client, spread over the nodes (so seeding also
//! exercises forwarding), each request retried for up to a minute while the cluster
//! answers as a cluster in the middle of a change does (5xx, 408, 429, a dropped
//! connection). What to create is the caller's; how is here, once.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use panal_actors::auth::ops::RegisterRequest;
use panal_actors::catalog::NewBook;
use panal_actors::energy::NewDevice;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::tooling::client::{Client, ClientError};

/// How long one seeding step keeps retrying.
const STEP_DEADLINE: Duration = Duration::from_secs(60);
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// A registered user, logged in.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: i64,
    pub token: String,
}

/// The id of what a POST created. Only the id is decoded, so the FastAPI baseline of the
/// benchmarks, whose answers differ in details, is seeded the same way.
#[derive(Deserialize)]
struct Created {
    id: i64,
}

/// Whether a failed request may succeed when sent again.
fn transient(e: &ClientError) -> bool {
    match e.status() {
        Some(status) => status >= 500 || status == 408 || status == 429,
        None => !matches!(e, ClientError::Address { .. } | ClientError::Decode { .. }),
    }
}

/// Runs `step` until it succeeds, fails for good, or [`STEP_DEADLINE`] passes.
async fn retrying<T, F, Fut>(what: &str, mut step: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, ClientError>>,
{
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        match step().await {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) && Instant::now() < deadline => tokio::time::sleep(RETRY_PAUSE).await,
            Err(e) => return Err(Error::Fatal(format!("{what}: {e}"))),
        }
    }
}

/// Registers `username` and logs in through `session`, which keeps the token (and the
/// index of the registration, so the login waits for it wherever it lands).
pub async fn account(session: &Client, username: &str, password: &str, email: Option<String>) -> Result<Account> {
    let user = RegisterRequest { username: username.into(), password: password.into(), email };
    let mut retried = false;
    let registered = retrying(&format!("register {username}"), || {
        let first = !std::mem::replace(&mut retried, true);
        let user = &user;
        async move {
            match session.post::<_, Created>("/api/v1/auth/register", user).await {
                Ok(c) => Ok(Some(c.id)),
                // A retry whose first attempt was applied after all: the user exists.
                Err(e) if !first && e.status() == Some(409) => Ok(None),
                Err(e) => Err(e),
            }
        }
    })
    .await?;
    let token = retrying(&format!("login {username}"), || session.login(username, password)).await?.access_token;
    let id = match registered {
        Some(id) => id,
        None => retrying(&format!("who is {username}"), || session.me()).await?.id,
    };
    Ok(Account { id, token })
}

/// Creates `books` as the holder of `seller`'s session, the k-th through node k mod n,
/// `concurrency` at a time; returns their ids in order.
pub async fn books(seller: &Client, books: &[NewBook], concurrency: usize) -> Result<Vec<i64>> {
    spread(seller, "/api/v1/books", books, concurrency).await
}

/// Creates `devices` as the holder of `owner`'s session, like [`books`].
pub async fn devices(owner: &Client, devices: &[NewDevice], concurrency: usize) -> Result<Vec<i64>> {
    spread(owner, "/api/v1/devices", devices, concurrency).await
}

async fn spread<B: serde::Serialize>(
    session: &Client,
    path: &str,
    items: &[B],
    concurrency: usize,
) -> Result<Vec<i64>> {
    let n = session.nodes().len();
    futures::stream::iter(items.iter().enumerate())
        .map(|(k, item)| {
            let node = session.pinned(k % n);
            async move {
                let what = format!("POST {path} on {}", node.current_node());
                retrying(&what, || node.post::<_, Created>(path, item)).await.map(|c| c.id)
            }
        })
        .buffered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_answers_that_may_change_are_retried() {
        let api = |status| ClientError::Api {
            method: "POST".into(),
            path: "/x".into(),
            status,
            error: Box::new(crate::tooling::client::ApiError::from_body(status, b"{}")),
            retry_after: None,
        };
        assert!(transient(&api(503)) && transient(&api(429)) && transient(&api(408)));
        assert!(!transient(&api(409)) && !transient(&api(400)) && !transient(&api(401)));
    }
}
