//! The verdict: pure checks of a drill's [`History`] against the state read back from every
//! node once the cluster was healed ([`Observed`]). Each check lists its first violations
//! with the evidence (operation, node, expected and found values).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::history::{History, Level, Ms, Op, OpKind};

/// One order as a node stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOrder {
    pub id: i64,
    pub buyer_id: i64,
    pub book_id: i64,
    pub quantity: i64,
    pub status: String,
}

/// What one node held after the drill, read from that node itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    /// `GET /ready` answered 200 within the deadline.
    pub ready: bool,
    /// Applied index and checksum of the application tables.
    pub checksum: Option<(u64, String)>,
    /// Stock of each seeded book.
    pub stock: BTreeMap<i64, i64>,
    /// Orders of the seeded books.
    pub orders: Vec<StoredOrder>,
    /// Per seeded device: stored reading timestamps (ms) and how many rows each has.
    pub readings: BTreeMap<i64, BTreeMap<i64, i64>>,
    /// Why the node's state could not be read, if it could not.
    pub error: Option<String>,
}

/// The healed cluster as the drill read it back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    pub nodes: Vec<NodeState>,
    /// Time from the end of healing until every node reported the same checksum.
    pub converged_after: Option<Ms>,
    /// The bound that time must stay within.
    pub convergence_bound: Ms,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: &'static str,
    pub description: &'static str,
    /// How many items (operations, books, nodes…) were checked.
    pub checked: usize,
    /// The first violations, each with its evidence; none when it passed.
    pub violations: Vec<String>,
    /// Total number of violations (the list above is capped).
    pub violation_count: usize,
}

impl Check {
    fn new(name: &'static str, description: &'static str) -> Self {
        Check { name, description, checked: 0, violations: Vec::new(), violation_count: 0 }
    }

    fn violation(&mut self, evidence: String) {
        self.violation_count += 1;
        if self.violations.len() < MAX_EVIDENCE {
            self.violations.push(evidence);
        }
    }

    pub fn passed(&self) -> bool {
        self.violation_count == 0
    }
}

/// Violations listed per check; the count covers the rest.
const MAX_EVIDENCE: usize = 20;

/// Runs every check.
pub fn check(h: &History, o: &Observed) -> Vec<Check> {
    vec![
        faults_injected(h),
        nodes_ready(o),
        convergence(o),
        acknowledged_writes_present(h, o),
        no_duplicate_apply(h, o),
        stock_conserved(h, o),
        linearizable_reads(h),
        session_reads(h),
        removed_nodes_silent(h),
        isolated_leader_refused(h),
        rolling_upgrade_without_failures(h),
    ]
}

fn initial_stock(h: &History) -> HashMap<i64, i64> {
    h.books.iter().map(|b| (b.id, b.initial_stock)).collect()
}

/// Purchases with their acknowledgement time (end of the successful attempt), if any.
struct Purchase<'a> {
    op: &'a Op,
    buyer_id: i64,
    book_id: i64,
    quantity: i64,
    order_id: Option<i64>,
}

/// The seller's restocks: each adds `units` to a sold-out book.
struct Restock<'a> {
    op: &'a Op,
    book_id: i64,
    units: i64,
}

fn restocks(h: &History) -> Vec<Restock<'_>> {
    h.ops
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::Restock { book_id, units } => Some(Restock { op, book_id: *book_id, units: *units }),
            _ => None,
        })
        .collect()
}

/// Units restocked into `book_id`: (surely: acknowledged, at most: may have applied).
fn restocked(all: &[Restock<'_>], book_id: i64) -> (i64, i64) {
    let of_book = || all.iter().filter(move |r| r.book_id == book_id);
    let acked = of_book().filter(|r| r.op.is_ok()).map(|r| r.units).sum();
    let most = of_book().filter(|r| r.op.may_have_applied()).map(|r| r.units).sum();
    (acked, most)
}

fn purchases(h: &History) -> Vec<Purchase<'_>> {
    h.ops
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::Purchase { buyer_id, book_id, quantity, order_id, .. } => {
                Some(Purchase { op, buyer_id: *buyer_id, book_id: *book_id, quantity: *quantity, order_id: *order_id })
            }
            _ => None,
        })
        .collect()
}

pub fn faults_injected(h: &History) -> Check {
    let mut c = Check::new("faults_injected", "every fault was injected and undone as planned");
    c.checked = h.faults.len();
    for e in &h.fault_errors {
        c.violation(e.clone());
    }
    c
}

pub fn nodes_ready(o: &Observed) -> Check {
    let mut c = Check::new("nodes_ready", "every node is ready again after healing");
    if o.nodes.is_empty() {
        c.violation("no node was observed".into());
    }
    for n in &o.nodes {
        c.checked += 1;
        if !n.ready {
            c.violation(format!("{} is not ready", n.name));
        }
    }
    c
}

pub fn convergence(o: &Observed) -> Check {
    let mut c = Check::new("converged", "all nodes reach the same state checksum within the bound");
    let sums: BTreeSet<&(u64, String)> = o.nodes.iter().filter_map(|n| n.checksum.as_ref()).collect();
    c.checked = o.nodes.len();
    for n in o.nodes.iter().filter(|n| n.checksum.is_none()) {
        c.violation(format!("{} reported no checksum", n.name));
    }
    if sums.len() > 1 {
        let all: Vec<String> = o
            .nodes
            .iter()
            .map(|n| match &n.checksum {
                Some((i, s)) => format!("{}@{i}:{}", n.name, &s[..s.len().min(12)]),
                None => format!("{}:-", n.name),
            })
            .collect();
        c.violation(format!("nodes differ: {}", all.join(", ")));
    }
    match o.converged_after {
        None => c.violation(format!("no convergence within {:.0} ms", o.convergence_bound)),
        Some(t) if t > o.convergence_bound => {
            c.violation(format!("converged after {t:.0} ms, bound {:.0} ms", o.convergence_bound))
        }
        Some(_) => {}
    }
    c
}

/// Every acknowledged order and reading is stored on every node.
pub fn acknowledged_writes_present(h: &History, o: &Observed) -> Check {
    let mut c = Check::new("acknowledged_writes_present", "every acknowledged write is present on every node");
    for n in &o.nodes {
        if let Some(e) = &n.error {
            c.violation(format!("{}: state could not be read: {e}", n.name));
            continue;
        }
        let orders: HashMap<i64, &StoredOrder> = n.orders.iter().map(|s| (s.id, s)).collect();
        for p in purchases(h).iter().filter(|p| p.op.is_ok()) {
            c.checked += 1;
            let Some(id) = p.order_id else {
                c.violation(format!("purchase {} was acknowledged without an order id", key_of(p.op)));
                continue;
            };
            match orders.get(&id) {
                None => c.violation(format!(
                    "{}: order {id} (purchase {}, acknowledged at {:.0} ms by node {}) is missing",
                    n.name,
                    key_of(p.op),
                    p.op.end(),
                    node_name(h, p.op.node())
                )),
                Some(s) if (s.buyer_id, s.book_id, s.quantity) != (p.buyer_id, p.book_id, p.quantity) => {
                    c.violation(format!(
                        "{}: order {id} holds buyer {} book {} ×{}, purchase {} asked buyer {} book {} ×{}",
                        n.name,
                        s.buyer_id,
                        s.book_id,
                        s.quantity,
                        key_of(p.op),
                        p.buyer_id,
                        p.book_id,
                        p.quantity
                    ))
                }
                Some(_) => {}
            }
        }
        for op in h.ops.iter().filter(|op| op.is_ok()) {
            if let OpKind::Readings { device_id, timestamps, key } = &op.kind {
                c.checked += 1;
                let stored = n.readings.get(device_id);
                let missing: Vec<i64> =
                    timestamps.iter().copied().filter(|t| stored.is_none_or(|s| !s.contains_key(t))).collect();
                if !missing.is_empty() {
                    c.violation(format!(
                        "{}: readings {key} on device {device_id} (acknowledged at {:.0} ms) miss {} of {} timestamps, first {}",
                        n.name,
                        op.end(),
                        missing.len(),
                        timestamps.len(),
                        missing[0]
                    ));
                }
            }
        }
    }
    c
}

/// No operation took effect twice: per buyer and book, no more orders than purchases that
/// may have applied (acknowledged or indeterminate) and no fewer than acknowledged ones; no
/// order id acknowledged to two purchases; each reading timestamp stored once, and only
/// timestamps some operation sent.
pub fn no_duplicate_apply(h: &History, o: &Observed) -> Check {
    let mut c =
        Check::new("no_duplicate_apply", "no write was applied twice (orders per buyer and book, reading rows)");
    let all = purchases(h);
    let mut may: HashMap<(i64, i64), usize> = HashMap::new();
    let mut acked: HashMap<(i64, i64), usize> = HashMap::new();
    let mut ack_ids: HashMap<i64, &str> = HashMap::new();
    for p in &all {
        if p.op.may_have_applied() {
            *may.entry((p.buyer_id, p.book_id)).or_default() += 1;
        }
        if p.op.is_ok() {
            *acked.entry((p.buyer_id, p.book_id)).or_default() += 1;
            if let Some(id) = p.order_id {
                if let Some(other) = ack_ids.insert(id, key_of(p.op)) {
                    c.violation(format!("order {id} was acknowledged to two purchases: {other} and {}", key_of(p.op)));
                }
            }
        }
    }
    let books: BTreeSet<i64> = h.books.iter().map(|b| b.id).collect();
    let mut sent: HashMap<i64, HashMap<i64, bool>> = HashMap::new();
    for op in &h.ops {
        if let OpKind::Readings { device_id, timestamps, .. } = &op.kind {
            let device = sent.entry(*device_id).or_default();
            for t in timestamps {
                *device.entry(*t).or_default() |= op.may_have_applied();
            }
        }
    }
    for n in o.nodes.iter().filter(|n| n.error.is_none()) {
        let mut stored: HashMap<(i64, i64), usize> = HashMap::new();
        for s in n.orders.iter().filter(|s| books.contains(&s.book_id)) {
            *stored.entry((s.buyer_id, s.book_id)).or_default() += 1;
        }
        let pairs: BTreeSet<(i64, i64)> = stored.keys().chain(may.keys()).copied().collect();
        for pair in pairs {
            c.checked += 1;
            let (found, most, least) = (
                stored.get(&pair).copied().unwrap_or(0),
                may.get(&pair).copied().unwrap_or(0),
                acked.get(&pair).copied().unwrap_or(0),
            );
            if found > most {
                c.violation(format!(
                    "{}: buyer {} has {found} orders of book {}, but only {most} purchases may have applied ({least} acknowledged)",
                    n.name, pair.0, pair.1
                ));
            }
        }
        for (device, rows) in &n.readings {
            for (ts, count) in rows {
                c.checked += 1;
                if *count != 1 {
                    c.violation(format!("{}: device {device} stores {count} rows at timestamp {ts}", n.name));
                }
                match sent.get(device).and_then(|d| d.get(ts)) {
                    Some(true) => {}
                    Some(false) => c.violation(format!(
                        "{}: device {device} stores a reading at {ts} that was only sent by operations refused for good",
                        n.name
                    )),
                    None => c.violation(format!(
                        "{}: device {device} stores a reading at {ts} that no operation sent",
                        n.name
                    )),
                }
            }
        }
    }
    c
}

/// Per book on every node: stock never negative, initial + restocked = remaining + units
/// in live orders (a range when a restock may or may not have applied), and the units sold
/// lie between what was acknowledged and what may have applied.
pub fn stock_conserved(h: &History, o: &Observed) -> Check {
    let mut c =
        Check::new("stock_conserved", "per book: initial stock + restocks = remaining + units sold, never negative");
    let all = purchases(h);
    let supplies = restocks(h);
    for n in o.nodes.iter().filter(|n| n.error.is_none()) {
        for book in &h.books {
            c.checked += 1;
            let Some(&stock) = n.stock.get(&book.id) else {
                c.violation(format!("{}: book {} is missing", n.name, book.id));
                continue;
            };
            if stock < 0 {
                c.violation(format!("{}: book {} has negative stock {stock}", n.name, book.id));
            }
            let sold: i64 =
                n.orders.iter().filter(|s| s.book_id == book.id && s.status != "expired").map(|s| s.quantity).sum();
            let (surely, at_most) = restocked(&supplies, book.id);
            let (least, most_supplied) = (book.initial_stock + surely, book.initial_stock + at_most);
            if !(least..=most_supplied).contains(&(stock + sold)) {
                let restocks = if surely == at_most {
                    format!("restocked {surely}")
                } else {
                    format!("restocked {surely} to {at_most}")
                };
                c.violation(format!(
                    "{}: book {}: initial {} + {restocks} ≠ remaining {stock} + sold {sold}",
                    n.name, book.id, book.initial_stock
                ));
            }
            let of_book = all.iter().filter(|p| p.book_id == book.id);
            let acked: i64 = of_book.clone().filter(|p| p.op.is_ok()).map(|p| p.quantity).sum();
            let most: i64 = of_book.filter(|p| p.op.may_have_applied()).map(|p| p.quantity).sum();
            if sold < acked || sold > most {
                c.violation(format!(
                    "{}: book {}: {sold} units sold, acknowledged purchases took {acked}, at most {most} may have applied",
                    n.name, book.id
                ));
            }
        }
    }
    c
}

/// Bounds on a stock read that ran from `start` to `end`. At most: the initial stock plus
/// every restock begun before it ended that may have applied, minus every purchase
/// acknowledged before it began. At least: the initial stock plus every restock
/// acknowledged before it began, minus every purchase begun before it ended that may have
/// applied. With `client` (a session read), only that client's acknowledged writes count
/// as seen.
fn stock_bounds(
    all: &[Purchase<'_>],
    supplies: &[Restock<'_>],
    book_id: i64,
    initial: i64,
    (start, end): (Ms, Ms),
    client: Option<usize>,
) -> (i64, i64) {
    let of_book = || all.iter().filter(move |p| p.book_id == book_id);
    let acked_before: i64 = of_book()
        .filter(|p| client.is_none_or(|c| p.op.client == c))
        .filter(|p| p.op.acknowledged().is_some_and(|a| a.end < start))
        .map(|p| p.quantity)
        .sum();
    let begun_before: i64 =
        of_book().filter(|p| p.op.may_have_applied() && p.op.start() < end).map(|p| p.quantity).sum();
    let restocks = || supplies.iter().filter(move |r| r.book_id == book_id);
    // A session read need not see another client's restock: only the restocks it must see.
    let restocked_before: i64 = restocks()
        .filter(|r| client.is_none_or(|c| r.op.client == c))
        .filter(|r| r.op.acknowledged().is_some_and(|a| a.end < start))
        .map(|r| r.units)
        .sum();
    let restock_begun: i64 =
        restocks().filter(|r| r.op.may_have_applied() && r.op.start() < end).map(|r| r.units).sum();
    (initial + restocked_before - begun_before, initial + restock_begun - acked_before)
}

fn check_reads(c: &mut Check, h: &History, level: Level, own_writes_only: bool) {
    let initial = initial_stock(h);
    let all = purchases(h);
    let supplies = restocks(h);
    for op in &h.ops {
        let OpKind::ReadStock { book_id, level: l, stock } = &op.kind else { continue };
        if *l != level {
            continue;
        }
        let (Some(read), Some(stock)) = (op.acknowledged(), stock) else { continue };
        let Some(&init) = initial.get(book_id) else { continue };
        c.checked += 1;
        let client = own_writes_only.then_some(op.client);
        let (low, high) = stock_bounds(&all, &supplies, *book_id, init, (read.start, read.end), client);
        if *stock > high {
            c.violation(format!(
                "stale {} read of book {book_id} on node {} at {:.0}–{:.0} ms: stock {stock}, but acknowledged purchases had left at most {high}",
                level.header(),
                node_name(h, Some(read.node)),
                read.start,
                read.end
            ));
        } else if *stock < low {
            c.violation(format!(
                "{} read of book {book_id} on node {} at {:.0}–{:.0} ms: stock {stock}, below {low} (more than every purchase begun by then, or a restock missing)",
                level.header(),
                node_name(h, Some(read.node)),
                read.start,
                read.end
            ));
        }
        if *stock < 0 {
            c.violation(format!("read of book {book_id} returned negative stock {stock}"));
        }
    }
}

/// Every linearizable read saw every purchase acknowledged before it began.
pub fn linearizable_reads(h: &History) -> Check {
    let mut c = Check::new(
        "linearizable_reads",
        "every linearizable read is at least as new as every write acknowledged before it began",
    );
    check_reads(&mut c, h, Level::Linearizable, false);
    c
}

/// Every session read saw its own client's acknowledged purchases (read-your-writes).
pub fn session_reads(h: &History) -> Check {
    let mut c = Check::new("session_reads", "every session read sees its client's own acknowledged writes");
    check_reads(&mut c, h, Level::Session, true);
    c
}

/// No answer was served by a removed node between its removal being acknowledged and its
/// joining again (`X-Panal-Node` names the node whose instance served each answer).
pub fn removed_nodes_silent(h: &History) -> Check {
    let mut c = Check::new(
        "removed_nodes_silent",
        "a removed node serves nothing once its removal is acknowledged (X-Panal-Node of every answer)",
    );
    for fault in &h.faults {
        let Some(removed_at) = fault.removed_at else { continue };
        let until = fault.healed.unwrap_or(h.end);
        for op in &h.ops {
            for a in op.attempts.iter().filter(|a| a.start >= removed_at && a.start < until) {
                c.checked += 1;
                let served = a.error.is_none() && (200..300).contains(&a.status);
                if served && a.served_by.as_ref().is_some_and(|n| fault.nodes.contains(n)) {
                    c.violation(format!(
                        "{} of client {} at {:.0}–{:.0} ms was served by {}, removed at {removed_at:.0} ms",
                        op.kind.name(),
                        op.client,
                        a.start,
                        a.end,
                        a.served_by.as_deref().unwrap_or("?")
                    ));
                }
            }
        }
    }
    c
}

/// Every isolated leader's side refused a write (503) and reported not ready while it was
/// cut off (how soon is a figure; the aim is under a second).
pub fn isolated_leader_refused(h: &History) -> Check {
    let mut c = Check::new(
        "isolated_leader_refused",
        "an isolated leader answers writes 503 and /ready 503 while it is cut off",
    );
    for fault in h.faults.iter().filter(|f| f.kind == "isolate-leader") {
        c.checked += 1;
        let nodes = fault.nodes.join(",");
        if fault.refused_after.is_none() {
            c.violation(format!("{nodes}, isolated at {:.0} ms, never answered a write with 503", fault.start));
        }
        if fault.unready_after.is_none() {
            c.violation(format!("{nodes}, isolated at {:.0} ms, never reported not ready", fault.start));
        }
    }
    c
}

/// A rolling upgrade drains each node before stopping it: no request may fail for it.
/// Only business rejections (a rule said no) are allowed.
pub fn rolling_upgrade_without_failures(h: &History) -> Check {
    let mut c = Check::new(
        "rolling_upgrade_without_failures",
        "rolling-upgrade: every (idempotent) request ends acknowledged or refused by a business rule",
    );
    if h.scenario != "rolling-upgrade" {
        return c;
    }
    for op in &h.ops {
        c.checked += 1;
        let rejected = op.attempts.last().is_some_and(|a| super::figures::is_rejection(a.status));
        if !op.is_ok() && !rejected {
            c.violation(format!(
                "{} of client {} at {:.0}–{:.0} ms ended {:?}",
                op.kind.name(),
                op.client,
                op.start(),
                op.end(),
                op.outcome
            ));
        }
    }
    c
}

fn key_of(op: &Op) -> &str {
    match &op.kind {
        OpKind::Purchase { key, .. } | OpKind::Readings { key, .. } => key,
        OpKind::ReadStock { .. } => "read",
        OpKind::Restock { .. } => "restock",
    }
}

fn node_name(h: &History, i: Option<usize>) -> String {
    i.and_then(|i| h.nodes.get(i).cloned()).unwrap_or_else(|| "?".into())
}

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;
