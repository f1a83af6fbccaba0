//! `lakeshare server`: opens the node on a small background runtime, then serves S3 (and
//! the routes sharing its port) on the engine's per-core runtimes.
//!
//! Invariant: the line `lakeshare: listening on <scheme>://<addr>` is printed to stderr only
//! once the listeners are bound, so a reader of that line can connect at once.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use lakeshare_engine::io::{DriveIo, IoBackendKind, IoChoice};
use lakeshare_engine::server::{bind, ServerConfig};
use lakeshare_storage::s3::build_service;
use lakeshare_storage::{Node, StorageConfig};

use crate::config::{Config, DEFAULT_CREDENTIALS_WARNING};

/// Threads of the background runtime (node start-up, scanner, healing).
const BACKGROUND_THREADS: usize = 2;
/// Longest wait for background tasks when the server stops.
const BACKGROUND_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the server until a stop signal.
pub fn run(config: Config) -> anyhow::Result<()> {
    if config.credentials_defaulted {
        eprintln!("{DEFAULT_CREDENTIALS_WARNING}");
    }
    let io = DriveIo::new(config.io).with_context(|| match config.io {
        IoChoice::Uring => "io_uring was asked for (--io uring) but is not available".to_owned(),
        _ => "starting the drive I/O back-end".to_owned(),
    })?;
    match (io.kind(), io.fallback_reason()) {
        (IoBackendKind::Uring, _) => tracing::info!("drive I/O: io_uring"),
        (IoBackendKind::Threads, Some(reason)) => {
            tracing::warn!("drive I/O: blocking thread pool (io_uring unavailable: {reason})")
        }
        (IoBackendKind::Threads, None) => tracing::info!("drive I/O: blocking thread pool"),
    }

    let background = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(BACKGROUND_THREADS)
        .thread_name("lakeshare-background")
        .enable_all()
        .build()
        .context("starting the background runtime")?;
    let mut storage = StorageConfig::new(config.drives.clone());
    storage.parity = config.parity;
    let node: Arc<Node> = background
        .block_on(Node::open(storage, io))
        .context("opening the drives")?;
    let topology = node.topology();
    tracing::info!(
        "storage: {} drive(s) in {} set(s) of {}, parity {}, deployment {}",
        config.drives.len(),
        topology.set_count,
        topology.drives_per_set,
        topology.parity,
        topology.deployment_id
    );

    let service = build_service(node, config.credentials.clone(), Vec::new());
    let mut server_config = ServerConfig::new(config.address);
    server_config.threads = config.threads;
    server_config.certs_dir = config.certs_dir.clone();
    let server = bind(&server_config)?;
    let scheme = if server.is_tls() { "https" } else { "http" };
    tracing::info!(
        threads = config.threads,
        "serving S3 on {}",
        server.local_addr()
    );
    eprintln!("lakeshare: listening on {scheme}://{}", server.local_addr());
    let result = server.run(service);
    background.shutdown_timeout(BACKGROUND_SHUTDOWN_TIMEOUT);
    result
}
