//! The drill's figures, pure functions of the history: failover time per fault (fault →
//! first acknowledged write sent after it), the longest window without an acknowledged
//! write, errors and retries by kind, throughput per second. Business rejections (the
//! cluster worked and a rule said no: `out_of_stock`…) are counted apart from failures.

use std::collections::BTreeMap;

use serde::Serialize;

use super::history::{History, Ms, Outcome};

/// Whether an answer is a business rule's refusal (`out_of_stock`, `own_listing`,
/// `card_declined`…: 402, 409, 422) rather than a failure: the cluster answered correctly.
pub fn is_rejection(status: u16) -> bool {
    matches!(status, 402 | 409 | 422)
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KindCounts {
    pub ok: u64,
    /// Refused by a business rule (see [`is_rejection`]).
    pub rejected: u64,
    pub failed: u64,
    pub indeterminate: u64,
    /// Attempts beyond the first.
    pub retries: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failover {
    pub kind: String,
    pub nodes: Vec<String>,
    pub hit_leader: bool,
    pub at_ms: Ms,
    /// Fault → first acknowledged write whose request was sent after the fault began
    /// ("writes resumed after").
    pub first_write_ms: Option<Ms>,
    /// What the drill measured during the fault (see [`FaultEvent`](super::history::FaultEvent)).
    pub new_leader_ms: Option<Ms>,
    pub refused_ms: Option<Ms>,
    pub unready_ms: Option<Ms>,
    pub drained_ms: Option<Ms>,
}

/// Median and max of one figure over the faults of one kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Spread {
    pub count: usize,
    pub median_ms: Option<Ms>,
    pub max_ms: Option<Ms>,
}

impl Spread {
    fn of(xs: impl Iterator<Item = Option<Ms>>) -> Self {
        let xs: Vec<Ms> = xs.flatten().collect();
        Spread { count: xs.len(), max_ms: xs.iter().copied().max_by(|a, b| a.total_cmp(b)), median_ms: median(xs) }
    }
}

/// The figures of one kind of fault.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FaultKindFigures {
    pub faults: usize,
    /// Fault → first acknowledged write sent after it began.
    pub writes_resumed: Spread,
    /// Fault → a new leader known to the others.
    pub new_leader: Spread,
    /// `isolate-leader`: → the isolated side answered a write 503 (aim < 1 s).
    pub refused: Spread,
    /// `isolate-leader`: → its `/ready` answered 503 (aim < 1 s).
    pub unready: Spread,
    /// `drain`, `rolling-upgrade`: → the node ran no task.
    pub drained: Spread,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Second {
    pub second: usize,
    pub ok: u64,
    pub writes_ok: u64,
    /// Failed attempts (business rejections not included).
    pub errors: u64,
    pub rejected: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub duration_s: f64,
    pub ops: u64,
    pub ok: u64,
    /// Operations refused by a business rule: not failures.
    pub rejected: u64,
    pub failed: u64,
    pub indeterminate: u64,
    /// Acknowledged operations per second over the whole workload.
    pub ops_per_second: f64,
    pub by_kind: BTreeMap<String, KindCounts>,
    /// Failed attempts by error kind (JSON error code, `timeout`, `connection…`).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Attempts refused by a business rule, by error code.
    pub rejections_by_kind: BTreeMap<String, u64>,
    pub retries: u64,
    pub failovers: Vec<Failover>,
    /// Per kind of fault (`leader-pause`, `isolate-leader`…).
    pub by_fault: BTreeMap<String, FaultKindFigures>,
    /// Median failover time over the faults that hit the leader.
    pub leader_failover_median_ms: Option<Ms>,
    pub leader_failover_max_ms: Option<Ms>,
    /// Longest window without an acknowledged write: (from, to) in ms.
    pub longest_write_gap_ms: Ms,
    pub longest_write_gap_at: (Ms, Ms),
    pub per_second: Vec<Second>,
}

fn median(mut xs: Vec<Ms>) -> Option<Ms> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    Some(xs[xs.len() / 2])
}

pub fn figures(h: &History) -> Figures {
    let mut f = Figures { duration_s: h.end / 1000.0, ..Default::default() };
    let seconds = (h.end / 1000.0).ceil().max(1.0) as usize;
    f.per_second = (0..seconds).map(|second| Second { second, ..Default::default() }).collect();
    let bucket = |t: Ms| ((t / 1000.0).max(0.0) as usize).min(seconds - 1);
    let mut write_acks: Vec<(Ms, Ms)> = Vec::new();
    for op in &h.ops {
        f.ops += 1;
        let counts = f.by_kind.entry(op.kind.name().to_string()).or_default();
        let retries = op.attempts.len().saturating_sub(1) as u64;
        counts.retries += retries;
        f.retries += retries;
        match op.outcome {
            Outcome::Ok => {
                counts.ok += 1;
                f.ok += 1;
            }
            Outcome::Failed(_) if op.attempts.last().is_some_and(|a| is_rejection(a.status)) => {
                counts.rejected += 1;
                f.rejected += 1;
            }
            Outcome::Failed(_) => {
                counts.failed += 1;
                f.failed += 1;
            }
            Outcome::Indeterminate(_) => {
                counts.indeterminate += 1;
                f.indeterminate += 1;
            }
        }
        for a in &op.attempts {
            let Some(kind) = &a.error else { continue };
            if is_rejection(a.status) {
                *f.rejections_by_kind.entry(kind.clone()).or_default() += 1;
                f.per_second[bucket(a.end)].rejected += 1;
            } else {
                *f.errors_by_kind.entry(kind.clone()).or_default() += 1;
                f.per_second[bucket(a.end)].errors += 1;
            }
        }
        if let Some(a) = op.acknowledged() {
            f.per_second[bucket(a.end)].ok += 1;
            if op.kind.is_write() {
                f.per_second[bucket(a.end)].writes_ok += 1;
                write_acks.push((a.start, a.end));
            }
        }
    }
    f.ops_per_second = if h.end > 0.0 { f.ok as f64 / (h.end / 1000.0) } else { 0.0 };
    write_acks.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut last = 0.0;
    for &(_, end) in write_acks.iter().chain(std::iter::once(&(h.end, h.end))) {
        if end - last > f.longest_write_gap_ms {
            f.longest_write_gap_ms = end - last;
            f.longest_write_gap_at = (last, end);
        }
        last = last.max(end);
    }
    for fault in &h.faults {
        let first = write_acks
            .iter()
            .filter(|(start, _)| *start >= fault.start)
            .map(|(_, end)| end - fault.start)
            .min_by(|a, b| a.total_cmp(b));
        f.failovers.push(Failover {
            kind: fault.kind.clone(),
            nodes: fault.nodes.clone(),
            hit_leader: fault.hit_leader,
            at_ms: fault.start,
            first_write_ms: first,
            new_leader_ms: fault.new_leader_after,
            refused_ms: fault.refused_after,
            unready_ms: fault.unready_after,
            drained_ms: fault.drained_after,
        });
    }
    let kinds: std::collections::BTreeSet<&str> = f.failovers.iter().map(|x| x.kind.as_str()).collect();
    for kind in kinds {
        let of = || f.failovers.iter().filter(move |x| x.kind == kind);
        let figures = FaultKindFigures {
            faults: of().count(),
            writes_resumed: Spread::of(of().map(|x| x.first_write_ms)),
            new_leader: Spread::of(of().map(|x| x.new_leader_ms)),
            refused: Spread::of(of().map(|x| x.refused_ms)),
            unready: Spread::of(of().map(|x| x.unready_ms)),
            drained: Spread::of(of().map(|x| x.drained_ms)),
        };
        f.by_fault.insert(kind.to_string(), figures);
    }
    let leader: Vec<Ms> = f.failovers.iter().filter(|x| x.hit_leader).filter_map(|x| x.first_write_ms).collect();
    f.leader_failover_max_ms = leader.iter().copied().max_by(|a, b| a.total_cmp(b));
    f.leader_failover_median_ms = median(leader);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tooling::drill::history::{Attempt, FaultEvent, Op, OpKind};

    fn write(start: Ms, end: Ms, outcome: Outcome, errors: &[&str]) -> Op {
        let mut attempts: Vec<Attempt> = errors
            .iter()
            .map(|e| Attempt {
                node: 0,
                start,
                end: start + 1.0,
                status: 503,
                error: Some(e.to_string()),
                served_by: None,
            })
            .collect();
        let status = if outcome == Outcome::Ok { 201 } else { 503 };
        attempts.push(Attempt {
            node: 1,
            start,
            end,
            status,
            error: (outcome != Outcome::Ok).then(|| "x".into()),
            served_by: None,
        });
        Op {
            client: 0,
            kind: OpKind::Readings { key: "k".into(), device_id: 1, timestamps: vec![1] },
            attempts,
            outcome,
        }
    }

    #[test]
    fn failover_gap_errors_and_throughput_come_from_the_history() {
        let h = History {
            ops: vec![
                write(100.0, 200.0, Outcome::Ok, &[]),
                // In flight when the fault began: does not count as the first write after it.
                write(950.0, 2500.0, Outcome::Ok, &["no_leader"]),
                write(1500.0, 1800.0, Outcome::Ok, &["timeout", "no_leader"]),
                write(3000.0, 3100.0, Outcome::Indeterminate("timeout".into()), &[]),
            ],
            faults: vec![FaultEvent {
                kind: "leader-kill".into(),
                nodes: vec!["node1".into()],
                start: 1000.0,
                healed: Some(3000.0),
                hit_leader: true,
                ..Default::default()
            }],
            end: 4000.0,
            ..Default::default()
        };
        let f = figures(&h);
        assert_eq!(f.failovers[0].first_write_ms, Some(800.0));
        let kind = &f.by_fault["leader-kill"];
        assert_eq!((kind.faults, kind.writes_resumed.median_ms, kind.new_leader.count), (1, Some(800.0), 0));
        assert_eq!(f.leader_failover_median_ms, Some(800.0));
        // Acks at 200, 1800, 2500; the workload ended at 4000.
        assert_eq!(f.longest_write_gap_ms, 1600.0);
        assert_eq!(f.longest_write_gap_at, (200.0, 1800.0));
        assert_eq!(f.errors_by_kind["no_leader"], 2);
        assert_eq!(f.errors_by_kind["timeout"], 1);
        assert_eq!(f.retries, 3);
        assert_eq!((f.ok, f.indeterminate), (3, 1));
        assert_eq!(f.per_second.len(), 4);
        assert_eq!(f.per_second[1].ok, 1);
        assert_eq!(f.per_second[2].ok, 1);
        assert_eq!(f.ops_per_second, 0.75);
    }

    #[test]
    fn business_rejections_are_not_failures() {
        let sold_out = Op {
            client: 0,
            kind: OpKind::Purchase { key: "k".into(), buyer_id: 1, book_id: 1, quantity: 1, order_id: None },
            attempts: vec![Attempt {
                node: 0,
                start: 10.0,
                end: 20.0,
                status: 409,
                error: Some("out_of_stock".into()),
                served_by: None,
            }],
            outcome: Outcome::Failed("out_of_stock".into()),
        };
        let mut lost = write(30.0, 40.0, Outcome::Failed("not_found".into()), &[]);
        lost.attempts[0].status = 404;
        let h = History { ops: vec![sold_out, lost], end: 1000.0, ..Default::default() };
        let f = figures(&h);
        assert_eq!((f.ok, f.rejected, f.failed), (0, 1, 1));
        assert_eq!(f.by_kind["purchase"].rejected, 1);
        assert_eq!(f.rejections_by_kind["out_of_stock"], 1);
        assert!(!f.errors_by_kind.contains_key("out_of_stock"));
        assert_eq!((f.per_second[0].errors, f.per_second[0].rejected), (1, 1));
        assert!(is_rejection(422) && is_rejection(402) && !is_rejection(400) && !is_rejection(503));
    }
}
