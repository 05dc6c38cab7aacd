//! Serving HTTP on the api and peer ports with limits that strangers cannot exhaust: a
//! header-read timeout (slowloris), an idle keep-alive timeout, and a cap on open
//! connections. At the cap the longest-idle connection is closed to make room, so a pile
//! of idle or half-sent connections never locks real clients (or `/ready`) out.
//! axum's `serve` has none of these, so connections are served by hyper directly.
//! A port may speak TLS ([`TlsConfig`]): the handshake runs inside the connection's own
//! task under the header timeout, so a stranger who stalls it holds one slot, not the
//! accept loop. A client certificate the handshake verified is handed to every request of
//! the connection as a [`ClientCertificate`] extension.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::{Service, ServiceExt};

use crate::server::config::Limits;
use crate::server::tls::ClientCertificate;

/// Connection limits of one port.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl HttpLimits {
    /// From the flags; the cap is lowered to fit the open-file limit (two ports, plus
    /// room for the databases, the mesh and outgoing connections).
    pub fn from_flags(limits: &Limits, open_files: u64) -> Self {
        let fits = (open_files.saturating_sub(512) / 2).max(16);
        let max_connections = limits.max_connections.min(fits);
        if max_connections < limits.max_connections {
            tracing::warn!(
                requested = limits.max_connections,
                max_connections,
                open_files,
                "--max-connections lowered to fit the open-file limit"
            );
        }
        Self {
            header_timeout: Duration::from_secs(limits.header_timeout),
            idle_timeout: Duration::from_secs(limits.idle_timeout),
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
        }
    }
}

/// One open connection, as the cap and the idle reaper see it.
struct Slot {
    opened: Instant,
    /// Requests being served (a connection with none is idle).
    in_flight: AtomicUsize,
    /// When the connection last became idle, in ms since `opened`.
    idle_since_ms: AtomicU64,
    close: Notify,
}

impl Slot {
    fn idle_for(&self, now: Instant) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = self.opened + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(now.saturating_duration_since(since))
    }
}

/// Marks a request in flight until dropped: with its response body, so a streaming
/// answer (the metrics stream) keeps its connection busy until the body ends.
struct Busy(Arc<Slot>);

/// A response body that keeps its connection busy while it is being sent.
struct TrackedBody {
    inner: axum::body::Body,
    _busy: Busy,
}

impl http_body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Busy {
    fn new(slot: Arc<Slot>) -> Self {
        slot.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(slot)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since_ms.store(ms, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Default)]
struct Connections {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Slot>>>,
}

impl Connections {
    fn add(&self) -> (u64, Arc<Slot>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            close: Notify::new(),
        });
        self.open.lock().unwrap_or_else(|p| p.into_inner()).insert(id, slot.clone());
        (id, slot)
    }

    fn remove(&self, id: u64) {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Closes the connection idle for longest; false if every connection is busy.
    fn evict_longest_idle(&self) -> bool {
        let now = Instant::now();
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let victim = open.iter().filter_map(|(id, s)| Some((s.idle_for(now)?, *id))).max();
        match victim.and_then(|(_, id)| open.get(&id)) {
            Some(slot) => {
                slot.close.notify_one();
                true
            }
            None => false,
        }
    }

    /// Closes connections idle for longer than `limit`.
    fn close_idle(&self, limit: Duration) {
        let now = Instant::now();
        for slot in self.open.lock().unwrap_or_else(|p| p.into_inner()).values() {
            if slot.idle_for(now).is_some_and(|idle| idle > limit) {
                slot.close.notify_one();
            }
        }
    }
}

/// The TLS settings of a port, swapped whole when certificates or trust change (a renewed
/// node certificate, a rotated CA, a reloaded key pair): each new connection takes the
/// current one, connections already open keep theirs.
pub type TlsConfig = tokio::sync::watch::Receiver<Arc<rustls::ServerConfig>>;

/// Serves `router` on `listener` until `stop` turns true, then lets requests in flight
/// finish (at most 5 s). With `tls`, every connection is a TLS session first. `port`
/// names the port in logs.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    tls: Option<TlsConfig>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    port: &'static str,
) {
    let connections = Arc::new(Connections::default());
    let reaper = tokio::spawn({
        let connections = connections.clone();
        async move {
            let mut tick = tokio::time::interval(
                (limits.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1)),
            );
            loop {
                tick.tick().await;
                connections.close_idle(limits.idle_timeout);
            }
        }
    });
    let mut make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    // Graceful shutdown: `draining` tells every connection to finish its request in
    // flight and close; `alive` closes once every connection task has ended.
    let (draining, _) = tokio::sync::watch::channel(false);
    let (alive, mut all_ended) = tokio::sync::mpsc::channel::<()>(1);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: make room and breathe.
                tracing::warn!(port, error = %e, "cannot accept a connection");
                connections.evict_longest_idle();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if connections.len() >= limits.max_connections && !connections.evict_longest_idle() {
            tracing::warn!(port, %remote, max = limits.max_connections, "connection cap reached with every connection busy; refusing");
            continue;
        }
        let (id, slot) = connections.add();
        let Ok(tower_service) = make_service.call(remote).await;
        let busy_slot = slot.clone();
        // Set once the TLS handshake verified a client certificate; routes that need one
        // find it in the request's extensions.
        let client_cert: Arc<OnceLock<ClientCertificate>> = Default::default();
        let request_cert = client_cert.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let busy = Busy::new(busy_slot.clone());
            if let Some(cert) = request_cert.get() {
                req.extensions_mut().insert(cert.clone());
            }
            let call = tower_service.clone().oneshot(req);
            async move {
                let response = call.await?;
                Ok::<_, std::convert::Infallible>(response.map(|inner| TrackedBody { inner, _busy: busy }))
            }
        });
        let acceptor = tls.as_ref().map(|config| tokio_rustls::TlsAcceptor::from(config.borrow().clone()));
        let (builder, connections) = (builder.clone(), connections.clone());
        let (watcher, alive) = (draining.subscribe(), alive.clone());
        tokio::spawn(async move {
            let served = async {
                match acceptor {
                    None => serve_connection(&builder, watcher, stream, service, port, remote).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                if let Some(cert) = stream.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                                    let _ = client_cert.set(ClientCertificate(cert.clone().into_owned()));
                                }
                                serve_connection(&builder, watcher, stream, service, port, remote).await
                            }
                            // A client without the right certificate, or not speaking TLS: its problem.
                            Ok(Err(e)) => tracing::debug!(port, %remote, error = %e, "TLS handshake refused"),
                            Err(_) => tracing::debug!(port, %remote, "TLS handshake timed out"),
                        }
                    }
                }
            };
            tokio::select! {
                _ = served => {}
                // Dropping the connection closes the socket.
                _ = slot.close.notified() => tracing::debug!(port, %remote, "closed an idle connection"),
            }
            connections.remove(id);
            drop(alive);
        });
    }
    drop(listener);
    reaper.abort();
    let _ = draining.send(true);
    drop(alive);
    if tokio::time::timeout(Duration::from_secs(5), all_ended.recv()).await.is_err() {
        tracing::warn!(port, "requests still running after 5 s; closing their connections");
    }
}

/// Serves one connection (plain or TLS) until it ends, or until `draining` asks it to
/// finish the request in flight and close. A route may take the connection over with an
/// HTTP upgrade (the peer port's service links); it then lives on outside this function.
/// Header timeouts and client errors end up here; they are the client's.
async fn serve_connection<S, F>(
    builder: &hyper::server::conn::http1::Builder,
    mut draining: tokio::sync::watch::Receiver<bool>,
    stream: S,
    service: F,
    port: &'static str,
    remote: SocketAddr,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: hyper::service::HttpService<Incoming>,
    F::ResBody: 'static,
    <F::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    F::Future: 'static,
{
    let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        // The watch's read guard must not live across the await below (it is not Send).
        _ = async { draining.wait_for(|d| *d).await.is_ok() } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(port, %remote, error = %e, "connection ended with an error");
    }
}

/// Raises this process's open-file limit to its hard limit (connections are files) and
/// returns the soft limit now in force.
pub fn raise_open_file_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum) {
        if current < maximum {
            if let Err(e) = setrlimit(Resource::Nofile, Rlimit { current: Some(maximum), maximum: Some(maximum) }) {
                tracing::debug!(error = %e, "cannot raise the open-file limit");
            }
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_cap_the_longest_idle_connection_is_closed_never_a_busy_one() {
        let connections = Connections::default();
        let (_, oldest) = connections.add();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (_, newer) = connections.add();
        let busy_one = Busy::new(oldest.clone());
        assert!(connections.evict_longest_idle());
        // The oldest is busy: the other one is told to close.
        tokio::time::timeout(Duration::from_secs(1), newer.close.notified()).await.unwrap();
        drop(busy_one);
        assert!(oldest.idle_for(Instant::now()).is_some());
        let all_busy = Connections::default();
        let (_, only) = all_busy.add();
        let _busy = Busy::new(only);
        assert!(!all_busy.evict_longest_idle(), "a busy connection is never evicted");
    }

    #[tokio::test]
    async fn connections_idle_past_the_limit_are_closed() {
        let connections = Connections::default();
        let (_, idle) = connections.add();
        let (_, busy) = connections.add();
        let _busy = Busy::new(busy.clone());
        tokio::time::sleep(Duration::from_millis(60)).await;
        connections.close_idle(Duration::from_millis(50));
        tokio::time::timeout(Duration::from_secs(1), idle.close.notified()).await.unwrap();
        let none = tokio::time::timeout(Duration::from_millis(100), busy.close.notified()).await;
        assert!(none.is_err(), "a connection serving a request is left alone");
    }
}
