//! Hand-made histories: one that passes, and one per kind of violation that must fail.

use super::*;
use crate::tooling::drill::history::{Attempt, FaultEvent, Outcome, SeededBook};

const BOOK: i64 = 7;
const DEVICE: i64 = 3;
const BUYER: i64 = 11;

fn attempt(node: usize, start: Ms, end: Ms, status: u16) -> Attempt {
    Attempt { node, start, end, status, error: None, served_by: None }
}

fn purchase(
    client: usize,
    key: &str,
    quantity: i64,
    order_id: Option<i64>,
    start: Ms,
    end: Ms,
    outcome: Outcome,
) -> Op {
    let status = if outcome == Outcome::Ok { 201 } else { 503 };
    Op {
        client,
        kind: OpKind::Purchase { key: key.into(), buyer_id: BUYER, book_id: BOOK, quantity, order_id },
        attempts: vec![attempt(0, start, end, status)],
        outcome,
    }
}

fn read(client: usize, level: Level, stock: i64, start: Ms, end: Ms) -> Op {
    Op {
        client,
        kind: OpKind::ReadStock { book_id: BOOK, level, stock: Some(stock) },
        attempts: vec![attempt(1, start, end, 200)],
        outcome: Outcome::Ok,
    }
}

fn readings(key: &str, timestamps: &[i64], start: Ms, end: Ms, outcome: Outcome) -> Op {
    Op {
        client: 0,
        kind: OpKind::Readings { key: key.into(), device_id: DEVICE, timestamps: timestamps.to_vec() },
        attempts: vec![attempt(2, start, end, 201)],
        outcome,
    }
}

fn order(id: i64, quantity: i64) -> StoredOrder {
    StoredOrder { id, buyer_id: BUYER, book_id: BOOK, quantity, status: "pending_payment".into() }
}

/// Initial stock 10; purchase a (2 units, acknowledged at 20 ms), purchase b (3 units,
/// indeterminate, in fact applied), purchase c (refused: out of stock); two readings
/// batches; reads consistent with all of it.
fn good_history() -> History {
    History {
        scenario: "test".into(),
        seed: 1,
        nodes: vec!["node1".into(), "node2".into(), "node3".into()],
        books: vec![SeededBook { id: BOOK, initial_stock: 10 }],
        devices: vec![DEVICE],
        ops: vec![
            purchase(0, "a", 2, Some(100), 10.0, 20.0, Outcome::Ok),
            purchase(1, "b", 3, None, 30.0, 40.0, Outcome::Indeterminate("timeout".into())),
            purchase(1, "c", 9, None, 50.0, 60.0, Outcome::Failed("out_of_stock".into())),
            // Before anything was acknowledged: the full stock, or with a's 2 units gone.
            read(2, Level::Linearizable, 10, 5.0, 15.0),
            // After a was acknowledged: at most 8; b may or may not be visible (8 or 5).
            read(2, Level::Linearizable, 8, 25.0, 35.0),
            read(2, Level::Linearizable, 5, 45.0, 50.0),
            // a's own client reads at session level after its write.
            read(0, Level::Session, 8, 21.0, 22.0),
            readings("r1", &[1000, 2000], 10.0, 12.0, Outcome::Ok),
            readings("r2", &[3000], 12.0, 14.0, Outcome::Indeterminate("timeout".into())),
        ],
        faults: vec![
            FaultEvent {
                kind: "leader-kill".into(),
                nodes: vec!["node1".into()],
                start: 26.0,
                healed: Some(60.0),
                hit_leader: true,
                ..Default::default()
            },
            FaultEvent {
                kind: "remove-node".into(),
                nodes: vec!["node3".into()],
                start: 30.0,
                removed_at: Some(31.0),
                healed: Some(55.0),
                ..Default::default()
            },
            FaultEvent {
                kind: "isolate-leader".into(),
                nodes: vec!["node2".into()],
                start: 60.0,
                healed: Some(90.0),
                hit_leader: true,
                refused_after: Some(300.0),
                unready_after: Some(250.0),
                ..Default::default()
            },
        ],
        fault_errors: vec![],
        end: 100.0,
    }
}

fn node(name: &str) -> NodeState {
    NodeState {
        name: name.into(),
        ready: true,
        checksum: Some((42, "abcdef".into())),
        stock: BTreeMap::from([(BOOK, 5)]),
        orders: vec![order(100, 2), order(101, 3)],
        readings: BTreeMap::from([(DEVICE, BTreeMap::from([(1000, 1), (2000, 1), (3000, 1)]))]),
        error: None,
    }
}

fn good_observed() -> Observed {
    Observed {
        nodes: vec![node("node1"), node("node2"), node("node3")],
        converged_after: Some(120.0),
        convergence_bound: 30_000.0,
    }
}

fn failed(checks: &[Check]) -> Vec<&'static str> {
    checks.iter().filter(|c| !c.passed()).map(|c| c.name).collect()
}

#[test]
fn a_consistent_history_passes_every_check() {
    let checks = check(&good_history(), &good_observed());
    for c in &checks {
        assert!(c.passed(), "{} failed: {:?}", c.name, c.violations);
        // That one applies to rolling upgrades only.
        let applies = c.name != "rolling_upgrade_without_failures";
        assert!(c.checked > 0 || !applies, "{} checked nothing", c.name);
    }
}

#[test]
fn a_lost_acknowledged_order_fails() {
    let mut o = good_observed();
    // node3 lost order 100 (and with it the stock it took).
    o.nodes[2].orders.retain(|s| s.id != 100);
    o.nodes[2].stock.insert(BOOK, 7);
    let checks = check(&good_history(), &o);
    assert!(failed(&checks).contains(&"acknowledged_writes_present"), "{:?}", failed(&checks));
    let c = checks.iter().find(|c| c.name == "acknowledged_writes_present").unwrap();
    assert!(c.violations[0].contains("node3: order 100"), "{:?}", c.violations);
}

#[test]
fn a_lost_acknowledged_reading_fails() {
    let mut o = good_observed();
    o.nodes[0].readings.get_mut(&DEVICE).unwrap().remove(&2000);
    assert_eq!(failed(&check(&good_history(), &o)), vec!["acknowledged_writes_present"]);
}

#[test]
fn a_purchase_applied_twice_fails() {
    let mut o = good_observed();
    // Purchase a's retry created a second order of 2 units.
    for n in &mut o.nodes {
        n.orders.push(order(102, 2));
        n.stock.insert(BOOK, 3);
    }
    let f = failed(&check(&good_history(), &o));
    assert!(f.contains(&"no_duplicate_apply"), "{f:?}");
    assert!(f.contains(&"stock_conserved"), "{f:?}");
}

#[test]
fn a_reading_stored_twice_or_out_of_nowhere_fails() {
    let mut o = good_observed();
    o.nodes[1].readings.get_mut(&DEVICE).unwrap().insert(1000, 2);
    assert_eq!(failed(&check(&good_history(), &o)), vec!["no_duplicate_apply"]);
    let mut o = good_observed();
    o.nodes[1].readings.get_mut(&DEVICE).unwrap().insert(9999, 1);
    assert_eq!(failed(&check(&good_history(), &o)), vec!["no_duplicate_apply"]);
}

#[test]
fn an_order_id_acknowledged_twice_fails() {
    let mut h = good_history();
    h.ops.push(purchase(1, "d", 2, Some(100), 70.0, 80.0, Outcome::Ok));
    let c = no_duplicate_apply(&h, &good_observed());
    assert!(c.violations.iter().any(|v| v.contains("acknowledged to two purchases")), "{:?}", c.violations);
}

#[test]
fn a_stale_linearizable_read_fails() {
    let mut h = good_history();
    // Began at 25 ms, after purchase a was acknowledged at 20 ms, yet saw the full stock.
    h.ops.push(read(2, Level::Linearizable, 10, 25.0, 30.0));
    assert_eq!(failed(&check(&h, &good_observed())), vec!["linearizable_reads"]);
}

#[test]
fn a_read_of_a_write_that_had_not_begun_fails() {
    let mut h = good_history();
    // Ended at 8 ms, before any purchase began, yet saw 2 units gone.
    h.ops.push(read(2, Level::Linearizable, 8, 1.0, 8.0));
    assert_eq!(failed(&check(&h, &good_observed())), vec!["linearizable_reads"]);
}

#[test]
fn a_session_read_missing_its_own_write_fails() {
    let mut h = good_history();
    h.ops.push(read(0, Level::Session, 10, 21.0, 22.0));
    assert_eq!(failed(&check(&h, &good_observed())), vec!["session_reads"]);
    // Another client's session read may still see the old stock.
    let mut h = good_history();
    h.ops.push(read(2, Level::Session, 10, 21.0, 22.0));
    assert!(failed(&check(&h, &good_observed())).is_empty());
}

#[test]
fn a_negative_stock_fails() {
    let mut h = good_history();
    h.books[0].initial_stock = 4;
    let mut o = good_observed();
    for n in &mut o.nodes {
        n.stock.insert(BOOK, -1);
    }
    let c = stock_conserved(&h, &o);
    assert!(!c.passed());
    assert!(c.violations.iter().any(|v| v.contains("negative stock -1")), "{:?}", c.violations);
}

#[test]
fn stock_that_does_not_add_up_fails() {
    let mut o = good_observed();
    o.nodes[1].stock.insert(BOOK, 6);
    assert_eq!(failed(&check(&good_history(), &o)), vec!["stock_conserved"]);
}

#[test]
fn diverged_slow_or_unready_nodes_fail() {
    let mut o = good_observed();
    o.nodes[2].checksum = Some((42, "other".into()));
    assert_eq!(failed(&check(&good_history(), &o)), vec!["converged"]);
    let mut o = good_observed();
    o.converged_after = Some(40_000.0);
    assert_eq!(failed(&check(&good_history(), &o)), vec!["converged"]);
    let mut o = good_observed();
    o.nodes[0].ready = false;
    assert_eq!(failed(&check(&good_history(), &o)), vec!["nodes_ready"]);
}

#[test]
fn an_unreadable_node_fails() {
    let mut o = good_observed();
    o.nodes[1].error = Some("connection refused".into());
    assert_eq!(failed(&check(&good_history(), &o)), vec!["acknowledged_writes_present"]);
}

#[test]
fn a_fault_that_could_not_be_undone_fails() {
    let mut h = good_history();
    h.fault_errors.push("node2 not ready within 60s".into());
    assert_eq!(failed(&check(&h, &good_observed())), vec!["faults_injected"]);
}

fn restock(units: i64, start: Ms, end: Ms, outcome: Outcome) -> Op {
    Op {
        client: 9,
        kind: OpKind::Restock { book_id: BOOK, units },
        attempts: vec![attempt(0, start, end, if outcome == Outcome::Ok { 200 } else { 503 })],
        outcome,
    }
}

#[test]
fn restocks_count_in_the_stock_and_in_read_bounds() {
    // 5 units restocked at 60–62 ms: every node holds 10 instead of 5.
    let mut h = good_history();
    h.ops.push(restock(5, 60.0, 62.0, Outcome::Ok));
    let mut o = good_observed();
    o.nodes.iter_mut().for_each(|n| _ = n.stock.insert(BOOK, 10));
    assert!(failed(&check(&h, &o)).is_empty(), "{:?}", failed(&check(&h, &o)));
    // A linearizable read after the restock sees it; one that misses it is stale…
    h.ops.push(read(2, Level::Linearizable, 10, 70.0, 71.0));
    assert!(failed(&check(&h, &o)).is_empty());
    h.ops.push(read(2, Level::Linearizable, 5, 70.0, 71.0));
    assert_eq!(failed(&check(&h, &o)), vec!["linearizable_reads"]);
    // A session read of another client need not see it (the seller's write)…
    let mut h = good_history();
    h.ops.push(restock(5, 60.0, 62.0, Outcome::Ok));
    h.ops.push(read(2, Level::Session, 5, 70.0, 71.0));
    assert!(failed(&check(&h, &o)).is_empty(), "{:?}", failed(&check(&h, &o)));
    // … and a read before it began cannot see it.
    let mut h = good_history();
    h.ops.push(restock(5, 60.0, 62.0, Outcome::Ok));
    h.ops.push(read(2, Level::Linearizable, 10, 40.0, 45.0));
    assert_eq!(failed(&check(&h, &o)), vec!["linearizable_reads"]);
    // Without the restock in the history the extra units come from nowhere.
    assert_eq!(failed(&check(&good_history(), &o)), vec!["stock_conserved"]);
    // A restock that may or may not have applied: both outcomes add up.
    let mut h = good_history();
    h.ops.push(restock(5, 60.0, 62.0, Outcome::Indeterminate("timeout".into())));
    assert!(failed(&check(&h, &o)).is_empty());
    assert!(failed(&check(&h, &good_observed())).is_empty());
}

#[test]
fn a_read_served_by_a_removed_node_fails() {
    let mut h = good_history();
    let mut served = read(1, Level::Linearizable, 5, 40.0, 41.0);
    served.attempts[0].served_by = Some("node3".into());
    h.ops.push(served.clone());
    let c = removed_nodes_silent(&h);
    assert!(!c.passed() && c.violations[0].contains("served by node3, removed at 31 ms"), "{:?}", c.violations);
    // Before the removal was acknowledged, or once it joined again, it may serve.
    for start in [29.0, 56.0] {
        let mut h = good_history();
        served.attempts[0].start = start;
        served.attempts[0].end = start + 1.0;
        h.ops.push(served.clone());
        assert!(removed_nodes_silent(&h).passed(), "{start}");
    }
}

#[test]
fn an_isolated_leader_that_never_refused_fails() {
    let mut h = good_history();
    h.faults[2].refused_after = None;
    assert_eq!(failed(&check(&h, &good_observed())), vec!["isolated_leader_refused"]);
    let mut h = good_history();
    h.faults[2].unready_after = None;
    assert_eq!(failed(&check(&h, &good_observed())), vec!["isolated_leader_refused"]);
}

#[test]
fn a_rolling_upgrade_fails_on_any_failed_request_but_not_on_business_rejections() {
    let mut h = good_history();
    h.scenario = "rolling-upgrade".into();
    h.ops.retain(|op| op.is_ok());
    let mut sold_out = purchase(1, "x", 1, None, 70.0, 71.0, Outcome::Failed("out_of_stock".into()));
    sold_out.attempts[0].status = 409;
    h.ops.push(sold_out);
    assert!(rolling_upgrade_without_failures(&h).passed());
    h.ops.push(read(2, Level::Session, 0, 72.0, 73.0));
    let last = h.ops.len() - 1;
    h.ops[last].outcome = Outcome::Failed("timeout".into());
    let c = rolling_upgrade_without_failures(&h);
    assert_eq!(c.violation_count, 1, "{:?}", c.violations);
    // Other scenarios may fail requests (a killed node's in-flight ones).
    h.scenario = "leader-kill".into();
    assert!(rolling_upgrade_without_failures(&h).passed());
}
