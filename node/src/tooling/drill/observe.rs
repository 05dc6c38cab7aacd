//! Reads the healed cluster back for the checker: readiness, the converged checksum, and
//! each node's own copy of the drill's books, orders and readings, at `stale` consistency
//! (the node's local replica). A read the gateway served from another node is sent again
//! until the node itself served it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::checker::{NodeState, Observed, StoredOrder};
use super::target::Target;
use super::workload::{send, Seed};

/// How long the nodes may take to agree on one checksum once healed.
pub const CONVERGENCE_BOUND: Duration = Duration::from_secs(30);
/// Sends of one read before giving up on getting it served by the node asked.
const LOCAL_TRIES: usize = 60;

/// Reads everything back. `unready` lists the nodes that did not become ready when healed.
pub async fn observe(target: &Target, seed: &Seed, unready: &[usize]) -> Observed {
    let healed = Instant::now();
    let (sums, agreed) = converge(target).await;
    let converged_after = agreed.then(|| healed.elapsed().as_secs_f64() * 1000.0);
    let mut nodes = Vec::new();
    for (i, sum) in sums.into_iter().enumerate() {
        // The sums of one round, taken together: the cluster may append entries of its own
        // (timers, the reconciler) while the slower reads below run, node after node.
        let mut state = NodeState {
            name: target.names[i].clone(),
            ready: !unready.contains(&i) && target.is_ready(i).await,
            checksum: sum,
            ..Default::default()
        };
        if let Err(e) = read_node(target, seed, i, &mut state).await {
            state.error = Some(e);
        }
        nodes.push(state);
    }
    Observed { nodes, converged_after, convergence_bound: CONVERGENCE_BOUND.as_secs_f64() * 1000.0 }
}

async fn checksum(target: &Target, i: usize) -> Option<(u64, String)> {
    let req = target.http.get(format!("{}/api/v1/cluster/checksum", target.urls[i])).bearer_auth(&target.token);
    let a = send(req.timeout(Duration::from_secs(5))).await.ok()?;
    Some((a.body["applied_index"].as_u64()?, a.body["checksum"].as_str()?.to_string()))
}

/// Polls every node's checksum until all agree (same applied index, same sum) or the
/// bound passes. Returns the last round's sums and whether they agreed.
async fn converge(target: &Target) -> (Vec<Option<(u64, String)>>, bool) {
    let deadline = Instant::now() + CONVERGENCE_BOUND;
    loop {
        let mut sums = Vec::new();
        for i in 0..target.urls.len() {
            sums.push(checksum(target, i).await);
        }
        let agreed = matches!(sums.first(), Some(Some(first)) if sums.iter().all(|s| s.as_ref() == Some(first)));
        if agreed || Instant::now() > deadline {
            return (sums, agreed);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GETs `path` on node `i` with `token` at stale consistency until node `i` itself served it.
async fn local_get(target: &Target, i: usize, path: &str, token: &str) -> Result<Value, String> {
    let mut last = String::new();
    for _ in 0..LOCAL_TRIES {
        let req = target
            .http
            .get(format!("{}{path}", target.urls[i]))
            .bearer_auth(token)
            .header("x-panal-consistency", "stale")
            .timeout(Duration::from_secs(5));
        match send(req).await {
            Ok(a) if a.status == 200 && a.node.as_deref() == Some(target.names[i].as_str()) => return Ok(a.body),
            Ok(a) if a.status == 200 => last = format!("served by {:?}", a.node),
            Ok(a) => last = format!("{} {}", a.status, a.body),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("GET {path}: {last}"))
}

/// Every page of a list, following `next_cursor`.
async fn all_pages(target: &Target, i: usize, path: &str, token: &str) -> Result<Vec<Value>, String> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let page_path = match &cursor {
            Some(c) => format!("{path}{sep}cursor={c}"),
            None => path.to_string(),
        };
        let page = local_get(target, i, &page_path, token).await?;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Ok(items),
        }
    }
}

async fn read_node(target: &Target, seed: &Seed, i: usize, state: &mut NodeState) -> Result<(), String> {
    for book in &seed.books {
        let b = local_get(target, i, &format!("/api/v1/books/{}", book.id), &seed.seller_token).await?;
        let stock = b["stock"].as_i64().ok_or_else(|| format!("book {} without stock: {b}", book.id))?;
        state.stock.insert(book.id, stock);
    }
    let books: Vec<i64> = seed.books.iter().map(|b| b.id).collect();
    for o in all_pages(target, i, "/api/v1/sales?limit=100", &seed.seller_token).await? {
        let field = |k: &str| o[k].as_i64().ok_or_else(|| format!("order without {k}: {o}"));
        let order = StoredOrder {
            id: field("id")?,
            buyer_id: field("buyer_id")?,
            book_id: field("book_id")?,
            quantity: field("quantity")?,
            status: o["status"].as_str().unwrap_or_default().to_string(),
        };
        if books.contains(&order.book_id) {
            state.orders.push(order);
        }
    }
    for &device in &seed.devices {
        let path = format!("/api/v1/devices/{device}/readings?bucket=raw&limit=1000");
        let mut rows = BTreeMap::new();
        for r in all_pages(target, i, &path, &seed.meter_token).await? {
            let ts = r["ts"].as_str().ok_or_else(|| format!("reading without ts: {r}"))?;
            let ms = panal_actors::time::parse_rfc3339(ts).ok_or_else(|| format!("reading with a bad ts {ts:?}"))?;
            *rows.entry(ms).or_insert(0) += r["count"].as_i64().unwrap_or(0);
        }
        state.readings.insert(device, rows);
    }
    Ok(())
}
