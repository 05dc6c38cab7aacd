//! What a drill records: every operation of the workload (each attempt with its node, times
//! and result), every fault injected, and what was seeded. The checker and the figures are
//! pure functions of this record.

use serde::{Deserialize, Serialize};

/// Milliseconds since the start of the drill's workload.
pub type Ms = f64;

/// Read consistency levels the workload uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Session,
    Linearizable,
}

impl Level {
    pub fn header(self) -> &'static str {
        match self {
            Level::Session => "session",
            Level::Linearizable => "linearizable",
        }
    }
}

/// What an operation did, with the values the checker needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OpKind {
    /// `POST /api/v1/orders`; `order_id` is known once acknowledged.
    Purchase { key: String, buyer_id: i64, book_id: i64, quantity: i64, order_id: Option<i64> },
    /// `GET /api/v1/books/{id}`; `stock` is what the successful attempt returned.
    ReadStock { book_id: i64, level: Level, stock: Option<i64> },
    /// `POST /api/v1/devices/{id}/readings` with readings at these timestamps (ms).
    Readings { key: String, device_id: i64, timestamps: Vec<i64> },
    /// `PATCH /api/v1/books/{id}` `{"stock": units}` by the seller, sent only after a
    /// linearizable read found the book sold out: nothing else raises the stock, so it
    /// applies at 0 and adds exactly `units`.
    Restock { book_id: i64, units: i64 },
}

impl OpKind {
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Purchase { .. } => "purchase",
            OpKind::ReadStock { level: Level::Session, .. } => "read_session",
            OpKind::ReadStock { level: Level::Linearizable, .. } => "read_linearizable",
            OpKind::Readings { .. } => "readings",
            OpKind::Restock { .. } => "restock",
        }
    }

    pub fn is_write(&self) -> bool {
        !matches!(self, OpKind::ReadStock { .. })
    }
}

/// How an operation ended, as a client can know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged (2xx).
    Ok,
    /// Definitely not applied: a 4xx answer (for a read: no value).
    Failed(String),
    /// A write that may or may not have been applied (every attempt ended in a timeout, a
    /// dropped connection or a 5xx).
    Indeterminate(String),
}

/// One HTTP request of an operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// Index of the node the request was sent to.
    pub node: usize,
    pub start: Ms,
    pub end: Ms,
    /// HTTP status, or 0 when no answer came.
    pub status: u16,
    /// Error kind of a failed attempt: the JSON error code, `timeout` or `connection`.
    pub error: Option<String>,
    /// `X-Panal-Node` of the answer: the node whose instance served it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
}

/// One operation of one client, with its retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub client: usize,
    pub kind: OpKind,
    pub attempts: Vec<Attempt>,
    pub outcome: Outcome,
}

impl Op {
    pub fn start(&self) -> Ms {
        self.attempts.first().map(|a| a.start).unwrap_or(0.0)
    }

    pub fn end(&self) -> Ms {
        self.attempts.last().map(|a| a.end).unwrap_or(0.0)
    }

    /// The node that answered last.
    pub fn node(&self) -> Option<usize> {
        self.attempts.last().map(|a| a.node)
    }

    /// The attempt that succeeded, if one did.
    pub fn acknowledged(&self) -> Option<&Attempt> {
        match self.outcome {
            Outcome::Ok => self.attempts.last(),
            _ => None,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }

    /// Whether the operation may have changed the state (acknowledged or indeterminate).
    pub fn may_have_applied(&self) -> bool {
        !matches!(self.outcome, Outcome::Failed(_))
    }
}

/// A fault the drill injected, with what was measured while it lasted (times in ms since
/// the fault began, unless named `_at`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultEvent {
    /// `leader-kill`, `leader-pause`, …
    pub kind: String,
    /// Names of the nodes it hit (`scale`: the service and its replicas, `catalog=1`).
    pub nodes: Vec<String>,
    pub start: Ms,
    /// When the drill undid it (restart, SIGCONT, isolation over), if it did.
    pub healed: Option<Ms>,
    /// Whether the node hit was the leader when the fault began.
    pub hit_leader: bool,
    /// `remove-node`: when the removal was acknowledged (ms since the workload began); from
    /// then until `healed` (the node rejoining afresh) it must serve nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_at: Option<Ms>,
    /// Until the survivors (or the majority) knew a new leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_leader_after: Option<Ms>,
    /// `isolate-leader`: until the isolated side answered a write with 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_after: Option<Ms>,
    /// `isolate-leader`: until the isolated side's `/ready` answered 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unready_after: Option<Ms>,
    /// `drain`, `rolling-upgrade`: until the node ran no task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained_after: Option<Ms>,
}

/// A book the drill listed, with the stock it was created with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeededBook {
    pub id: i64,
    pub initial_stock: i64,
}

/// Everything a drill recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub scenario: String,
    pub seed: u64,
    pub nodes: Vec<String>,
    pub books: Vec<SeededBook>,
    pub devices: Vec<i64>,
    pub ops: Vec<Op>,
    pub faults: Vec<FaultEvent>,
    /// Faults the drill could not inject or undo as planned.
    pub fault_errors: Vec<String>,
    /// When the workload stopped.
    pub end: Ms,
}
