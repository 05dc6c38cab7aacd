//! Service links: calls from this node's gateway to service instances on another node,
//! over one long-lived stream per pair of nodes instead of through the actor mesh.
//!
//! Across the mesh a call passes through session actors on both nodes (a task wake-up
//! at every hop), is framed twice and written alone; with two thirds of the calls remote
//! (round-robin over three nodes) that hop cost as much as serving the call. A link is an
//! HTTP/1.1 upgrade on the peer port, so mutual TLS, the peer key, the cluster and node
//! checks and the isolation switch apply to it as to every peer call. Then:
//!
//! - every call is one frame with an id; its answer comes back with that id, in any order;
//! - one writer per side sends everything queued in one write, so that under load many
//!   calls share a TLS record and a system call;
//! - the serving node runs each call in its own task, as a worker would, at most
//!   [`MAX_IN_FLIGHT`] per link; beyond that it stops reading (backpressure).
//!
//! The mesh still says which instances exist (process groups) and carries the calls to a
//! node while no link to it is up. A link that breaks fails its calls as lost, and the
//! gateway retries them elsewhere as it does when a worker dies under a call. A peer that
//! stops answering pings (frozen) is dropped after [`DEAD_AFTER`]. The serving side closes
//! a link once the calling node is no longer a member, or this node was removed or is
//! isolated.
//!
//! A frame is a `u32` length of what follows, a kind byte, a `u64` call id, and then:
//! - call: the instance's `u64` id on the serving node, then the MessagePack request;
//! - answer: the MessagePack answer;
//! - lost: why the call was not answered (the instance was gone or panicked), as text;
//!   the call may be retried;
//! - ping, pong: nothing.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use panal_actors::services::{ServiceContext, ServiceRequest, ServiceResponse};
use panal_actors::Replica;
use panal_raft::NodeId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::Error;

/// The peer-port route that opens a link.
pub const PATH: &str = "/services/link";
/// The protocol name of the upgrade (versioned: a node without it answers 404 and its
/// calls keep going over the mesh).
pub const PROTOCOL: &str = "panal-services/1";

const CALL: u8 = 1;
const ANSWER: u8 = 2;
const LOST: u8 = 3;
const PING: u8 = 4;
const PONG: u8 = 5;
/// Kind and call id.
const HEADER: usize = 1 + 8;
/// Longest frame either side accepts (the peer port's body limit).
const MAX_FRAME: usize = 64 * 1024 * 1024;
/// Calls one link may have running on the serving node.
const MAX_IN_FLIGHT: usize = 512;
/// Links one node serves at once (a few per member is plenty).
const MAX_LINKS_SERVED: usize = 64;
/// Most bytes gathered into one write.
const WRITE_BATCH: usize = 256 * 1024;
/// While calls wait, the caller pings this often...
const PING_EVERY: Duration = Duration::from_millis(500);
/// ...and drops the link when a ping stays unanswered this long.
const DEAD_AFTER: Duration = Duration::from_secs(2);
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// After a link failed to open, calls to that node use the mesh this long before the
/// next attempt.
const REOPEN_AFTER: Duration = Duration::from_secs(2);
/// An id of a mesh session not known yet makes the node list the sessions' names again,
/// at most this often.
const ASK_NAMES_AFTER: Duration = Duration::from_secs(2);
/// How often the serving side checks that the link may stay open.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Builds a frame: `body` writes what follows the header.
fn frame(kind: u8, id: u64, body: impl FnOnce(&mut Vec<u8>) -> Result<(), String>) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(128);
    buf.extend_from_slice(&[0; 4]);
    buf.push(kind);
    buf.extend_from_slice(&id.to_be_bytes());
    body(&mut buf)?;
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        return Err(format!("a frame of {len} bytes is over the limit of {MAX_FRAME}"));
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

fn empty(_: &mut Vec<u8>) -> Result<(), String> {
    Ok(())
}

/// Reads one frame (without its length): kind, id, body.
async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> io::Result<Vec<u8>> {
    let len = r.read_u32().await? as usize;
    if !(HEADER..=MAX_FRAME).contains(&len) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a frame of {len} bytes")));
    }
    // Grown as the bytes arrive, not reserved at the length the frame claims.
    let mut buf = Vec::with_capacity(len.min(64 * 1024));
    r.take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}

/// Kind and call id of a frame read by [`read_frame`] (at least [`HEADER`] bytes long).
fn kind_and_id(frame: &[u8]) -> (u8, u64) {
    (frame[0], u64::from_be_bytes(std::array::from_fn(|i| frame[1 + i])))
}

/// Writes `first` and every frame already queued behind it, in one write.
async fn write_frames(
    w: &mut (impl AsyncWrite + Unpin),
    batch: &mut Vec<u8>,
    first: Vec<u8>,
    rx: &mut mpsc::UnboundedReceiver<Vec<u8>>,
) -> io::Result<()> {
    batch.clear();
    batch.extend_from_slice(&first);
    while batch.len() < WRITE_BATCH {
        match rx.try_recv() {
            Ok(frame) => batch.extend_from_slice(&frame),
            Err(_) => break,
        }
    }
    w.write_all(batch).await?;
    w.flush().await
}

/// Writes queued frames, as many per write as are waiting, until the queue closes. Every
/// `every`, `tick` may add a frame (a ping) or end the link (`Err`).
async fn write_loop(
    w: &mut (impl AsyncWrite + Unpin),
    rx: &mut mpsc::UnboundedReceiver<Vec<u8>>,
    every: Duration,
    mut tick: impl FnMut() -> io::Result<Option<Vec<u8>>>,
) -> io::Result<()> {
    let mut batch = Vec::new();
    let mut interval = tokio::time::interval(every);
    loop {
        let first = tokio::select! {
            first = rx.recv() => match first {
                Some(first) => first,
                None => return Ok(()),
            },
            _ = interval.tick() => match tick()? {
                Some(frame) => frame,
                None => continue,
            },
        };
        write_frames(w, &mut batch, first, rx).await?;
    }
}

/// How a call over a link ended.
pub enum Outcome {
    Answered(ServiceResponse),
    /// The instance or the link went away before answering: the call may be retried.
    Lost(String),
    /// The answer could not be decoded (a node of another version).
    Undecodable(String),
}

/// One link, as the calling node holds it.
pub struct Link {
    node: String,
    out: mpsc::UnboundedSender<Vec<u8>>,
    /// Calls sent and not answered yet, by id.
    pending: Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>,
    next_id: AtomicU64,
    open: AtomicBool,
}

/// Forgets a call's pending entry when its caller stops waiting (timeout, cancellation).
struct Forget<'a>(&'a Link, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
    }
}

impl Link {
    /// A link to `node` over `stream`, running until the stream breaks.
    fn start(node: &str, stream: impl AsyncRead + AsyncWrite + Send + 'static) -> Arc<Self> {
        let (out, rx) = mpsc::unbounded_channel();
        let link = Arc::new(Link {
            node: node.to_string(),
            out,
            pending: Mutex::default(),
            next_id: AtomicU64::new(0),
            open: AtomicBool::new(true),
        });
        tokio::spawn(link.clone().run(stream, rx));
        link
    }

    fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Fails every waiting call (their senders drop) and refuses new ones.
    fn close(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        self.open.store(false, Ordering::Release);
        pending.clear();
    }

    /// Calls the instance `pid` of the node at the other end.
    pub async fn call(&self, pid: u64, req: &ServiceRequest) -> Outcome {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let encoded = frame(CALL, id, |buf| {
            buf.extend_from_slice(&pid.to_be_bytes());
            req.write_msgpack(buf)
        });
        let bytes = match encoded {
            Ok(bytes) => bytes,
            Err(e) => return Outcome::Undecodable(format!("the request cannot be encoded: {e}")),
        };
        let (tx, rx) = oneshot::channel();
        {
            // Checked under the lock `close` takes: a call is either failed by it or refused.
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if !self.is_open() {
                return Outcome::Lost(format!("the link to {} closed", self.node));
            }
            pending.insert(id, tx);
        }
        let _forget = Forget(self, id);
        if self.out.send(bytes).is_err() {
            return Outcome::Lost(format!("the link to {} closed", self.node));
        }
        let Ok(reply) = rx.await else {
            return Outcome::Lost(format!("the link to {} closed before the answer", self.node));
        };
        let (kind, _) = kind_and_id(&reply);
        let body = &reply[HEADER..];
        match kind {
            ANSWER => ServiceResponse::from_msgpack(body).map_or_else(Outcome::Undecodable, Outcome::Answered),
            _ => Outcome::Lost(String::from_utf8_lossy(body).into_owned()),
        }
    }

    /// Runs the link until it breaks: answers go to their callers; while calls wait, pings
    /// check that the other node still answers.
    async fn run(self: Arc<Self>, stream: impl AsyncRead + AsyncWrite, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
        let (r, mut w) = tokio::io::split(stream);
        let started = Instant::now();
        // When the unanswered ping was sent (ms since `started`, plus one); 0: none.
        let ping_sent = AtomicU64::new(0);
        let reading = async {
            let mut r = BufReader::with_capacity(64 * 1024, r);
            loop {
                let frame = read_frame(&mut r).await?;
                ping_sent.store(0, Ordering::Relaxed);
                let (kind, id) = kind_and_id(&frame);
                if kind == ANSWER || kind == LOST {
                    let waiting = self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                    if let Some(tx) = waiting {
                        let _ = tx.send(frame);
                    }
                }
            }
        };
        let writing = write_loop(&mut w, &mut rx, PING_EVERY, || {
            if self.pending.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
                ping_sent.store(0, Ordering::Relaxed);
                return Ok(None);
            }
            let now = started.elapsed().as_millis() as u64 + 1;
            match ping_sent.load(Ordering::Relaxed) {
                0 => {
                    ping_sent.store(now, Ordering::Relaxed);
                    frame(PING, 0, empty).map(Some).map_err(io::Error::other)
                }
                sent if now - sent > DEAD_AFTER.as_millis() as u64 => {
                    Err(io::Error::new(io::ErrorKind::TimedOut, "pings went unanswered"))
                }
                _ => Ok(None),
            }
        });
        let ended: io::Result<()> = tokio::select! {
            ended = reading => ended,
            ended = writing => ended,
        };
        self.close();
        tracing::debug!(node = %self.node, result = ?ended, "service link closed");
    }
}

/// What the links know about other nodes.
#[derive(Default)]
struct Known {
    /// Node names by the mesh's id of their session.
    names: HashMap<u64, String>,
    names_asked: Option<Instant>,
    links: HashMap<String, Slot>,
}

enum Slot {
    Up(Arc<Link>),
    Opening,
    Failed(Instant),
}

/// This node's links to the others, opened on first use.
pub struct Links {
    replica: Replica,
    known: Mutex<Known>,
    calls: metrics::Counter,
}

impl Links {
    /// Call once the metrics recorder is installed.
    pub fn new(replica: Replica) -> Arc<Self> {
        Arc::new(Self {
            replica,
            known: Mutex::default(),
            calls: metrics::counter!("panal_gateway_remote_calls_total", "transport" => "link"),
        })
    }

    /// The link to the node whose mesh session is `mesh_node`, if one is up. Otherwise
    /// starts opening one, and the caller uses the mesh meanwhile.
    pub fn get(self: &Arc<Self>, mesh_node: u64) -> Option<Arc<Link>> {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if self.replica.peer_client().isolation().is_isolated() {
            for slot in known.links.values() {
                if let Slot::Up(link) = slot {
                    link.close();
                }
            }
            known.links.clear();
            return None;
        }
        let Known { names, names_asked, links } = &mut *known;
        let Some(name) = names.get(&mesh_node) else {
            if names_asked.is_none_or(|at| at.elapsed() >= ASK_NAMES_AFTER) {
                *names_asked = Some(Instant::now());
                tokio::spawn(self.clone().learn_names());
            }
            return None;
        };
        match links.get(name) {
            Some(Slot::Up(link)) if link.is_open() => {
                self.calls.increment(1);
                return Some(link.clone());
            }
            Some(Slot::Opening) => return None,
            Some(Slot::Failed(at)) if at.elapsed() < REOPEN_AFTER => return None,
            _ => {}
        }
        links.insert(name.clone(), Slot::Opening);
        tokio::spawn(self.clone().open(name.clone()));
        None
    }

    async fn learn_names(self: Arc<Self>) {
        let names = crate::server::mesh::session_names().await;
        self.known.lock().unwrap_or_else(|p| p.into_inner()).names = names;
    }

    async fn open(self: Arc<Self>, name: String) {
        let slot = match self.connect(&name).await {
            Ok(link) => Slot::Up(link),
            Err(e) => {
                tracing::debug!(node = %name, error = %e, "cannot open a service link; calls go over the mesh");
                Slot::Failed(Instant::now())
            }
        };
        self.known.lock().unwrap_or_else(|p| p.into_inner()).links.insert(name, slot);
    }

    async fn connect(&self, name: &str) -> Result<Arc<Link>, String> {
        let (id, info, _) = self
            .replica
            .members()
            .into_iter()
            .find(|(_, n, _)| n.name == name)
            .ok_or_else(|| format!("{name} is not a member"))?;
        let path = format!("{PATH}?from={}", self.replica.id());
        let stream = self
            .replica
            .peer_client()
            .open_stream(id, &info.peer_addr, &path, PROTOCOL, OPEN_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        tracing::debug!(node = %name, "service link open");
        Ok(Link::start(name, stream))
    }
}

/// The serving side: the route's state.
#[derive(Clone)]
pub struct LinkServer {
    replica: Replica,
    /// Set once this node's services run; links are refused until then.
    services: Arc<OnceLock<Arc<ServiceContext>>>,
    served: Arc<AtomicUsize>,
}

impl LinkServer {
    pub fn new(replica: Replica) -> Self {
        Self { replica, services: Default::default(), served: Default::default() }
    }

    /// Starts serving links with `services`.
    pub fn serve_with(&self, services: Arc<ServiceContext>) {
        let _ = self.services.set(services);
    }

    pub fn routes(&self) -> axum::Router {
        axum::Router::new().route(PATH, axum::routing::get(accept)).with_state(self.clone())
    }

    /// Why a link from node `from` may not stay open, if it may not.
    fn refusal(&self, from: NodeId) -> Option<String> {
        if self.replica.is_removed() {
            return Some("this node was removed from the cluster".into());
        }
        if self.replica.peer_client().isolation().is_isolated() {
            return Some("this node is isolated (chaos drill)".into());
        }
        if !self.replica.members().iter().any(|(id, _, _)| *id == from) {
            return Some(format!("node {from} is not a member"));
        }
        None
    }
}

#[derive(serde::Deserialize)]
struct Opening {
    /// The calling node's id.
    from: NodeId,
}

/// `GET /services/link?from=ID` with `Upgrade: panal-services/1`: switches the
/// connection to a link served by this node.
async fn accept(
    State(server): State<LinkServer>,
    opening: Result<Query<Opening>, QueryRejection>,
    mut req: Request,
) -> Response {
    let opening = match opening {
        Ok(Query(opening)) => opening,
        Err(e) => {
            return Error::BadRequest("invalid_query", format!("{e}: name the calling node, ?from=<id>"))
                .into_response()
        }
    };
    let upgrade = req.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok());
    if upgrade != Some(PROTOCOL) {
        let message = format!("this route switches to {PROTOCOL}: send Upgrade: {PROTOCOL}");
        return Error::BadRequest("invalid_header", message).into_response();
    }
    let Some(services) = server.services.get().cloned() else {
        return Error::Unavailable("starting", "this node's services are starting".into()).into_response();
    };
    if let Some(why) = server.refusal(opening.from) {
        return Error::Forbidden(why).into_response();
    }
    if server.served.fetch_add(1, Ordering::AcqRel) >= MAX_LINKS_SERVED {
        server.served.fetch_sub(1, Ordering::AcqRel);
        let message = format!("this node serves {MAX_LINKS_SERVED} links already");
        return Error::Unavailable("overloaded", message).into_response();
    }
    let upgraded = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgraded.await {
            Ok(stream) => serve(&server, services, opening.from, TokioIo::new(stream)).await,
            Err(e) => tracing::debug!(error = %e, "a service link was not upgraded"),
        }
        server.served.fetch_sub(1, Ordering::AcqRel);
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    resp.headers_mut().insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    resp
}

/// Serves the calls of one link until it breaks or may no longer stay open.
async fn serve(server: &LinkServer, services: Arc<ServiceContext>, from: NodeId, stream: impl AsyncRead + AsyncWrite) {
    let (r, mut w) = tokio::io::split(stream);
    let (out, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let reading = async {
        let mut r = BufReader::with_capacity(64 * 1024, r);
        loop {
            let received = read_frame(&mut r).await?;
            let (kind, id) = kind_and_id(&received);
            match kind {
                PING => {
                    let _ = out.send(frame(PONG, id, empty).map_err(io::Error::other)?);
                }
                CALL => {
                    let Ok(permit) = permits.clone().acquire_owned().await else { return Ok(()) };
                    let (services, out) = (services.clone(), out.clone());
                    tokio::spawn(async move {
                        let answer = serve_call(&services, &received[HEADER..]).await;
                        let _ = out.send(reply(id, answer));
                        drop(permit);
                    });
                }
                other => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a frame of kind {other}"))),
            }
        }
    };
    let writing = write_loop(&mut w, &mut rx, CHECK_EVERY, || match server.refusal(from) {
        Some(why) => Err(io::Error::other(why)),
        None => Ok(None),
    });
    let ended: io::Result<()> = tokio::select! {
        ended = reading => ended,
        ended = writing => ended,
    };
    tracing::debug!(from, result = ?ended, "served service link closed");
}

/// The frame answering call `id`: the answer, or why it was lost (also when the answer
/// cannot be encoded).
fn reply(id: u64, answer: Result<ServiceResponse, String>) -> Vec<u8> {
    let lost = |why: &str| {
        frame(LOST, id, |buf| {
            buf.extend_from_slice(why.as_bytes());
            Ok(())
        })
    };
    let encoded = match &answer {
        Ok(resp) => frame(ANSWER, id, |buf| resp.write_msgpack(buf)),
        Err(why) => lost(why),
    };
    encoded.or_else(|e| lost(&format!("the answer cannot be sent: {e}"))).unwrap_or_default()
}

/// Serves one call: `body` is the instance's id and the request.
async fn serve_call(services: &Arc<ServiceContext>, body: &[u8]) -> Result<ServiceResponse, String> {
    if body.len() < 8 {
        return Err("a call frame without an instance".into());
    }
    let pid = u64::from_be_bytes(std::array::from_fn(|i| body[i]));
    services.serve_encoded(ractor::ActorId::Local(pid), &body[8..]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_or_short_lengths_are_refused() {
        let call = frame(CALL, 7, |b| {
            b.extend_from_slice(&42u64.to_be_bytes());
            Ok(())
        })
        .unwrap();
        let pong = frame(PONG, 9, empty).unwrap();
        let mut wire: &[u8] = &[call.as_slice(), pong.as_slice()].concat();
        let first = read_frame(&mut wire).await.unwrap();
        assert_eq!(kind_and_id(&first), (CALL, 7));
        assert_eq!(&first[HEADER..], &42u64.to_be_bytes());
        assert_eq!(kind_and_id(&read_frame(&mut wire).await.unwrap()), (PONG, 9));
        assert!(read_frame(&mut wire).await.is_err(), "nothing left");

        for len in [0u32, HEADER as u32 - 1, MAX_FRAME as u32 + 1, u32::MAX] {
            let mut junk: &[u8] = &[len.to_be_bytes().as_slice(), &[0; 16]].concat();
            let e = read_frame(&mut junk).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "length {len}");
        }
        let mut cut: &[u8] = &[20u32.to_be_bytes().as_slice(), &[0; 12]].concat();
        assert_eq!(read_frame(&mut cut).await.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    fn request() -> ServiceRequest {
        let op = panal_actors::catalog::ops::GetBook { id: 1 };
        ServiceRequest::new(op, Default::default())
    }

    fn answer(node: &str) -> ServiceResponse {
        let body = node.as_bytes().to_vec();
        ServiceResponse {
            status: 200,
            content_type: "text/plain".into(),
            body,
            node: node.into(),
            index: None,
            retry_after: None,
        }
    }

    /// Reads calls from `peer`'s side of the stream: the instance id of each, in order.
    async fn next_call(peer: &mut (impl AsyncRead + Unpin)) -> (u64, u64) {
        let frame = read_frame(peer).await.unwrap();
        let (kind, id) = kind_and_id(&frame);
        assert_eq!(kind, CALL);
        let body = &frame[HEADER..];
        ServiceRequest::from_msgpack(&body[8..]).unwrap();
        (id, u64::from_be_bytes(std::array::from_fn(|i| body[i])))
    }

    #[tokio::test]
    async fn answers_reach_their_callers_in_any_order_and_a_broken_stream_fails_the_waiting_calls() {
        let (ours, mut peer) = tokio::io::duplex(1 << 16);
        let link = Link::start("n2", ours);
        let (first, second) = (link.clone(), link.clone());
        let calls = tokio::spawn(async move {
            let (req1, req2) = (request(), request());
            tokio::join!(first.call(11, &req1), second.call(22, &req2))
        });
        let mut seen = [next_call(&mut peer).await, next_call(&mut peer).await];
        seen.sort_by_key(|(_, pid)| *pid);
        // The second call's answer first.
        for (id, pid) in seen.iter().rev() {
            peer.write_all(&reply(*id, Ok(answer(&format!("for {pid}"))))).await.unwrap();
        }
        let (a, b) = calls.await.unwrap();
        let node = |o: Outcome| match o {
            Outcome::Answered(resp) => resp.node,
            _ => panic!("not answered"),
        };
        assert_eq!((node(a), node(b)), ("for 11".to_string(), "for 22".to_string()));

        // A lost instance comes back as lost; a stream that breaks fails what waits on it.
        let waiting = tokio::spawn({
            let link = link.clone();
            async move { link.call(33, &request()).await }
        });
        let (id, _) = next_call(&mut peer).await;
        peer.write_all(&reply(id, Err("the instance stopped".into()))).await.unwrap();
        assert!(matches!(waiting.await.unwrap(), Outcome::Lost(why) if why == "the instance stopped"));
        let waiting = tokio::spawn({
            let link = link.clone();
            async move { link.call(44, &request()).await }
        });
        next_call(&mut peer).await;
        drop(peer);
        assert!(matches!(waiting.await.unwrap(), Outcome::Lost(_)));
        assert!(!link.is_open());
        assert!(matches!(link.call(55, &request()).await, Outcome::Lost(_)), "a closed link takes no call");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_answering_pings_is_dropped() {
        let (ours, mut peer) = tokio::io::duplex(1 << 16);
        let link = Link::start("n3", ours);
        let waiting = tokio::spawn({
            let link = link.clone();
            async move { link.call(1, &request()).await }
        });
        next_call(&mut peer).await;
        // The peer reads (so writes do not block) but never answers: frozen.
        let mut sink = Vec::new();
        let reading = tokio::spawn(async move {
            let _ = peer.read_to_end(&mut sink).await;
        });
        let outcome = waiting.await.unwrap();
        assert!(matches!(outcome, Outcome::Lost(_)));
        assert!(!link.is_open());
        reading.abort();
    }
}
