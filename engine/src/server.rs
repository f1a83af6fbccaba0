//! Worker threads, listeners, HTTP and TLS, shutdown. See `bind` and `serve`.
//!
//! `bind` opens one listener on the address (picking the port when it is 0), gives every
//! worker its own descriptor of it, and loads the TLS certificate, so every start-up error
//! surfaces before any thread starts. The socket is not `SO_REUSEPORT`: a second process
//! cannot bind the same address and silently take half of the connections. `BoundServer::run` starts one thread per listener, each with
//! its own current-thread tokio runtime serving HTTP/1.1 and HTTP/2 through hyper-util's
//! `auto::Builder` (h2c by prior knowledge on plain TCP, ALPN under TLS), and blocks until
//! a stop: SIGTERM, SIGINT, a `ShutdownHandle`, or a worker that ends on its own.
//!
//! Invariants:
//! - A worker holds at most `connections_max` connections; it stops accepting at the limit
//!   (the kernel backlog queues the rest) and resumes when one closes.
//! - A client must complete its TLS handshake, and send enough bytes to tell HTTP/1 from
//!   HTTP/2, within `header_read_timeout`; HTTP/1 headers must arrive within it too.
//! - On stop, workers close their listeners at once, let open connections finish the
//!   requests in flight (hyper's graceful shutdown), and give up after `shutdown_timeout`.
//! - Nothing here prints; events go to `tracing`.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub address: SocketAddr,
    /// Worker threads, one runtime and one listener each.
    pub threads: usize,
    /// Folder with `public.crt` and `private.key`; TLS when both exist.
    pub certs_dir: Option<PathBuf>,
    /// Longest wait for in-flight requests after a stop signal.
    pub shutdown_timeout: Duration,
    /// Largest request header block (HTTP/1 read buffer, at least 8 KiB; HTTP/2 header list).
    pub header_bytes_max: usize,
    /// Time a client has to send its request headers (slowloris bound).
    pub header_read_timeout: Duration,
    /// Open connections per worker thread; more wait in the listen backlog.
    pub connections_max: usize,
}

impl ServerConfig {
    /// A configuration with the defaults: one worker per core, no TLS, 30 s to shut down,
    /// 64 KiB of headers read within 30 s, 4096 connections per worker.
    pub fn new(address: SocketAddr) -> ServerConfig {
        ServerConfig {
            address,
            threads: thread::available_parallelism().map_or(1, usize::from),
            certs_dir: None,
            shutdown_timeout: Duration::from_secs(30),
            header_bytes_max: 64 * 1024,
            header_read_timeout: Duration::from_secs(30),
            connections_max: 4096,
        }
    }
}

/// File handles kept free of connections for drive files, the catalog and the runtime.
const HANDLES_RESERVED: u64 = 256;
/// Most connections one worker holds, however many handles the process may open.
const CONNECTIONS_PER_WORKER_MAX: usize = 65_536;

/// Raises the process's open-files limit to its hard limit (as MinIO does) and returns the
/// limit in force afterwards. A refusal leaves the soft limit, which is then returned.
pub fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Connections per worker for a process that may open `open_files` handles: three quarters
/// of the handles beyond a reserve, split over the workers, so that connections never take
/// the handles the drives need (further connections wait in the listen backlog).
pub fn connections_per_worker(open_files: u64, threads: usize) -> usize {
    let for_connections = open_files.saturating_sub(HANDLES_RESERVED) / 4 * 3;
    let per_worker = for_connections / threads.max(1) as u64;
    usize::try_from(per_worker)
        .unwrap_or(usize::MAX)
        .clamp(1, CONNECTIONS_PER_WORKER_MAX)
}

/// Listeners bound and TLS loaded, not yet serving. See `bind`.
pub struct BoundServer {
    listeners: Vec<std::net::TcpListener>,
    local_addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    config: ServerConfig,
    stop: Arc<watch::Sender<bool>>,
}

/// Stops a running (or not yet running) server, as SIGTERM would. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    stop: Arc<watch::Sender<bool>>,
}

impl ShutdownHandle {
    /// Asks every worker to stop accepting and to finish its connections.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }
}

/// Binds, then serves until a stop signal: `bind(&config)?.run(service)`.
pub fn serve<S, B>(config: ServerConfig, service: S) -> anyhow::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    bind(&config)?.run(service)
}

/// Opens the listener (one descriptor per worker thread) and loads TLS from `certs_dir`.
pub fn bind(config: &ServerConfig) -> anyhow::Result<BoundServer> {
    if config.threads == 0 {
        bail!("the server needs at least one worker thread");
    }
    if config.connections_max == 0 {
        bail!("connections_max must be at least 1");
    }
    let tls = match &config.certs_dir {
        Some(folder) => load_tls(folder)?,
        None => None,
    };
    let first = exclusive_listener(config.address)?;
    let local_addr = first.local_addr().context("reading the bound address")?;
    let mut listeners = Vec::with_capacity(config.threads);
    for _ in 1..config.threads {
        listeners.push(first.try_clone().context("sharing the listener")?);
    }
    listeners.push(first);
    let (stop, _) = watch::channel(false);
    Ok(BoundServer {
        listeners,
        local_addr,
        tls,
        config: config.clone(),
        stop: Arc::new(stop),
    })
}

impl BoundServer {
    /// The address the listeners are bound to (with the port picked when it was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether connections are served over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            stop: self.stop.clone(),
        }
    }

    /// Serves on every worker thread until SIGTERM, SIGINT or a `ShutdownHandle` stops it,
    /// then waits for the workers to finish (each bounded by `shutdown_timeout`).
    pub fn run<S, B>(self, service: S) -> anyhow::Result<()>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn StdError + Send + Sync>>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let BoundServer {
            listeners,
            tls,
            config,
            stop,
            ..
        } = self;
        let shared = Arc::new(WorkerShared {
            builders: Builders::new(&config),
            tls,
            config,
        });
        let (exited_sender, mut exited) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut workers = Vec::with_capacity(listeners.len());
        let mut start_error = None;
        for (index, listener) in listeners.into_iter().enumerate() {
            let shared = shared.clone();
            let service = service.clone();
            let stopped = stop.subscribe();
            let exited_sender = exited_sender.clone();
            let spawned = thread::Builder::new()
                .name(format!("lakeshare-worker-{index}"))
                .spawn(move || {
                    let result = run_worker(listener, &shared, service, stopped);
                    // Tells the control loop a worker is gone (early, if no stop was asked).
                    let _ = exited_sender.send(());
                    result
                });
            match spawned {
                Ok(worker) => workers.push(worker),
                Err(error) => {
                    start_error = Some(anyhow!(error).context("starting a worker thread"));
                    break;
                }
            }
        }
        drop(exited_sender);

        let control = match start_error {
            Some(error) => Err(error),
            None => wait_for_stop(&stop, &mut exited),
        };
        stop.send_replace(true);

        let mut result = control;
        for worker in workers {
            let ended = match worker.join() {
                Ok(ended) => ended,
                Err(_) => Err(anyhow!("a worker thread panicked")),
            };
            if let Err(error) = ended {
                tracing::error!(error = %format!("{error:#}"), "worker failed");
                if result.is_ok() {
                    result = Err(error);
                }
            }
        }
        result
    }
}

/// Read by every worker; built once.
struct WorkerShared {
    builders: Builders,
    tls: Option<TlsAcceptor>,
    config: ServerConfig,
}

/// One builder per protocol, so no connection waits in version detection.
struct Builders {
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(config: &ServerConfig) -> Builders {
        // hyper refuses HTTP/1 buffers under 8 KiB.
        let buffer_bytes_max = config.header_bytes_max.max(HTTP1_BUFFER_BYTES_MIN);
        let header_list_bytes_max = u32::try_from(config.header_bytes_max).unwrap_or(u32::MAX);
        let mut http1 = auto::Builder::new(TokioExecutor::new()).http1_only();
        http1
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(buffer_bytes_max);
        let mut http2 = auto::Builder::new(TokioExecutor::new()).http2_only();
        http2
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(header_list_bytes_max);
        Builders { http1, http2 }
    }

    fn for_protocol(&self, http2: bool) -> &auto::Builder<TokioExecutor> {
        if http2 {
            &self.http2
        } else {
            &self.http1
        }
    }
}

const HTTP1_BUFFER_BYTES_MIN: usize = 8192;
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const LISTEN_BACKLOG: i32 = 1024;
/// Pause after an accept error that is not the peer's (out of descriptors, ...).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Pause between peeks while a client has sent only part of the HTTP/2 preface.
const PREFACE_PEEK_PAUSE: Duration = Duration::from_millis(5);

/// Blocks on a small runtime until a signal, a `ShutdownHandle`, or a worker's exit.
fn wait_for_stop(
    stop: &watch::Sender<bool>,
    exited: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the control runtime")?;
    let mut stopped = stop.subscribe();
    runtime.block_on(async {
        let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT")?;
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
            _ = stopped.wait_for(|stopped| *stopped) => tracing::debug!("shutdown requested"),
            _ = exited.recv() => tracing::warn!("a worker ended before a stop; shutting down"),
        }
        Ok(())
    })
}

fn run_worker<S, B>(
    listener: std::net::TcpListener,
    shared: &Arc<WorkerShared>,
    service: S,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a worker runtime")?;
    runtime.block_on(accept_loop(listener, shared, service, stopped))
}

async fn accept_loop<S, B>(
    listener: std::net::TcpListener,
    shared: &Arc<WorkerShared>,
    service: S,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let listener = TcpListener::from_std(listener).context("registering a listener")?;
    let connections = Arc::new(Semaphore::new(shared.config.connections_max));
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            biased;
            _ = stopped.wait_for(|stopped| *stopped) => break,
            permit = connections.clone().acquire_owned() => permit?,
        };
        let accepted = tokio::select! {
            biased;
            _ = stopped.wait_for(|stopped| *stopped) => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) if is_peer_error(&error) => continue,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let connection = serve_connection(
            stream,
            shared.clone(),
            service.clone(),
            graceful.watcher(),
            permit,
        );
        tokio::spawn(connection);
    }
    drop(listener);
    let timeout = shared.config.shutdown_timeout;
    if tokio::time::timeout(timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?timeout,
            "connections still open after the shutdown timeout"
        );
    }
    Ok(())
}

/// Serves one connection; `_permit` holds its place under `connections_max`.
async fn serve_connection<S, B>(
    stream: TcpStream,
    shared: Arc<WorkerShared>,
    service: S,
    watcher: Watcher,
    _permit: OwnedSemaphorePermit,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let timeout = shared.config.header_read_timeout;
    let served = match &shared.tls {
        None => {
            let http2 = match tokio::time::timeout(timeout, sends_http2_preface(&stream)).await {
                Ok(Ok(Some(http2))) => http2,
                // Closed, failed or too slow before saying which protocol it speaks.
                _ => return,
            };
            let builder = shared.builders.for_protocol(http2);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            watcher.watch(connection).await
        }
        Some(acceptor) => {
            let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
            let builder = shared.builders.for_protocol(http2);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            watcher.watch(connection).await
        }
    };
    if let Err(error) = served {
        tracing::debug!(error = %error, "connection ended with an error");
    }
}

/// Peeks until the first bytes tell HTTP/2 prior knowledge from HTTP/1;
/// `None` when the client closes first.
async fn sends_http2_preface(stream: &TcpStream) -> std::io::Result<Option<bool>> {
    let mut start = [0u8; HTTP2_PREFACE.len()];
    loop {
        let count = stream.peek(&mut start).await?;
        if count == 0 {
            return Ok(None);
        }
        if start[..count] != HTTP2_PREFACE[..count] {
            return Ok(Some(false));
        }
        if count == HTTP2_PREFACE.len() {
            return Ok(Some(true));
        }
        // Part of the preface: peek returns at once, so wait for more bytes.
        tokio::time::sleep(PREFACE_PEEK_PAUSE).await;
    }
}

/// A listening socket only this process serves: `SO_REUSEADDR` (so a restart binds while old
/// connections linger in TIME_WAIT) but not `SO_REUSEPORT`, so a second bind fails.
fn exclusive_listener(address: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .context("creating a socket")?;
    socket
        .set_reuse_address(true)
        .context("setting SO_REUSEADDR")?;
    socket.set_nonblocking(true).context("setting O_NONBLOCK")?;
    socket
        .bind(&address.into())
        .with_context(|| format!("binding {address} (is another server running on it?)"))?;
    socket
        .listen(LISTEN_BACKLOG)
        .with_context(|| format!("listening on {address}"))?;
    Ok(socket.into())
}

/// TLS from `folder/public.crt` and `folder/private.key` (PEM); `None` unless both exist.
fn load_tls(folder: &Path) -> anyhow::Result<Option<TlsAcceptor>> {
    let certificate_path = folder.join("public.crt");
    let key_path = folder.join("private.key");
    if !certificate_path.is_file() || !key_path.is_file() {
        return Ok(None);
    }
    let certificates = CertificateDer::pem_file_iter(&certificate_path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| anyhow!("reading {}: {error}", certificate_path.display()))?;
    if certificates.is_empty() {
        bail!("{} holds no certificate", certificate_path.display());
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|error| anyhow!("reading {}: {error}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .with_context(|| format!("loading the certificate in {}", folder.display()))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(tls))))
}

/// Accept errors that concern one peer only.
fn is_peer_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_leave_handles_for_the_drives() {
        assert_eq!(connections_per_worker(20_000, 2), 7_404);
        assert_eq!(connections_per_worker(512, 2), 96);
        assert_eq!(connections_per_worker(100, 4), 1);
        assert_eq!(
            connections_per_worker(u64::MAX, 1),
            CONNECTIONS_PER_WORKER_MAX
        );
    }

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let raised = raise_open_files_limit();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only the struct passed.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!((raised, limit.rlim_cur), (limit.rlim_max, limit.rlim_max));
    }
}
