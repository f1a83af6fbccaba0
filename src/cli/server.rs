//! `lakeshare server`: opens the node on a small background runtime, then serves S3 (and
//! the routes sharing its port) on the engine's per-core runtimes.
//!
//! Invariant: the line `lakeshare: listening on <scheme>://<addr>` is printed to stderr only
//! once the listeners are bound, so a reader of that line can connect at once.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use lakeshare_engine::io::{IoBackend, IoBackendKind, IoChoice};
use lakeshare_engine::server::{
    bind, connections_per_worker, raise_open_files_limit, ServerConfig,
};
use lakeshare_protocol::presign::SharingCredential;
use lakeshare_protocol::store::SharingStore;
use lakeshare_protocol::SharingOptions;
use lakeshare_storage::s3::form::FormUploads;
use lakeshare_storage::s3::{build_gateway_service, build_service, ReadOnlyCredential};
use lakeshare_storage::{Node, StorageConfig};

use crate::admin_route::AdminRoute;
use crate::config::{Config, DEFAULT_CREDENTIALS_WARNING};
use crate::front::FrontService;
use crate::remote_objects::RemoteObjects;
use crate::remote_store::RemoteSharingStore;
use crate::sharing_store::NodeSharingStore;

/// Threads of the background runtime (node start-up, scanner, healing).
const BACKGROUND_THREADS: usize = 2;
/// Threads of the replay pool (Delta log replay, which blocks).
const REPLAY_THREADS: usize = 2;
/// How often a sharing node over a remote store reads the catalog again (changes made on
/// other nodes, revoked tokens, take effect within this).
const CATALOG_RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait for background tasks when the server stops.
const BACKGROUND_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the server until a stop signal.
pub fn run(config: Config) -> anyhow::Result<()> {
    if config.credentials_defaulted {
        eprintln!("{DEFAULT_CREDENTIALS_WARNING}");
    }
    let background = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(BACKGROUND_THREADS)
        .thread_name("lakeshare-background")
        .enable_all()
        .build()
        .context("starting the background runtime")?;
    let node = match &config.backend {
        Some(backend) => {
            tracing::info!(
                "sharing node over the remote store {} (catalog in bucket '{}')",
                backend.endpoint,
                backend.bucket
            );
            None
        }
        None => Some(open_node(&config, &background)?),
    };

    let open_files = raise_open_files_limit();
    let mut server_config = ServerConfig::new(config.address);
    server_config.threads = config.threads;
    server_config.connections_max = connections_per_worker(open_files, config.threads);
    server_config.certs_dir = config.certs_dir.clone();
    let server = bind(&server_config)?;
    let scheme = if server.is_tls() { "https" } else { "http" };
    let public_endpoint = match &config.sharing_endpoint {
        Some(endpoint) => endpoint.trim_end_matches('/').to_owned(),
        None => {
            let mut address = server.local_addr();
            if address.ip().is_unspecified() {
                address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                tracing::warn!(
                    "profiles and presigned URLs name {scheme}://{address}: set \
                     LAKESHARE_SHARING_ENDPOINT to the URL recipients reach this node at"
                );
            }
            format!("{scheme}://{address}")
        }
    };
    let service = background
        .block_on(sharing_service(node, &config, &public_endpoint))
        .context("opening the sharing catalog")?;
    tracing::info!(
        threads = config.threads,
        open_files,
        connections_max = server_config.connections_max * config.threads,
        sharing_endpoint = %public_endpoint,
        "serving S3 and Delta Sharing on {}",
        server.local_addr()
    );
    eprintln!("lakeshare: listening on {scheme}://{}", server.local_addr());
    let result = server.run(service);
    background.shutdown_timeout(BACKGROUND_SHUTDOWN_TIMEOUT);
    result
}

/// Opens the node's drives on the chosen I/O back-end.
fn open_node(config: &Config, background: &tokio::runtime::Runtime) -> anyhow::Result<Arc<Node>> {
    let backend = IoBackend::new(config.io).with_context(|| match config.io {
        IoChoice::Uring => "io_uring was asked for (--io uring) but is not available".to_owned(),
        _ => "starting the drive I/O back-end".to_owned(),
    })?;
    match (backend.kind(), &backend.fallback_reason) {
        (IoBackendKind::Uring, _) => tracing::info!("drive I/O: io_uring"),
        (_, Some(reason)) => {
            tracing::warn!("drive I/O: blocking thread pool (io_uring unavailable: {reason})")
        }
        (_, None) => tracing::info!("drive I/O: blocking thread pool"),
    }
    let io = backend.io;

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

    Ok(node)
}

/// Opens the sharing catalog and assembles the port's service: Delta Sharing in front, then
/// S3 with the admin routes; presigned sharing URLs are signed with a read-only credential
/// that may read only files under a shared table's root.
async fn sharing_service(
    node: Option<Arc<Node>>,
    config: &Config,
    public_endpoint: &str,
) -> anyhow::Result<FrontService> {
    let mut options = SharingOptions {
        public_endpoint: public_endpoint.to_owned(),
        presign_expiry_seconds: config.presign_expiry_seconds,
        file_lists_bytes_max: config.cache_bytes,
        replay_threads: REPLAY_THREADS,
        presign_for: None,
    };
    let mut remote = None;
    let store: Arc<dyn SharingStore> = match (&node, &config.backend) {
        (Some(node), _) => NodeSharingStore::new(node.clone()),
        (None, Some(backend)) => {
            if let Some(direct) = &backend.presign_direct {
                // Recipients read files from the store itself, with URLs signed for it.
                options.presign_for = Some((
                    direct.clone(),
                    SharingCredential {
                        access_key: backend.access_key.clone(),
                        secret_key: backend.secret_key.clone(),
                    },
                ));
            }
            let store = RemoteSharingStore::new(backend.clone())
                .map_err(|error| anyhow::anyhow!("--backend: {error}"))?;
            remote = Some(store.clone());
            store
        }
        (None, None) => anyhow::bail!("neither drives nor a remote store to share from"),
    };
    let sharing = lakeshare_protocol::open(store, options)
        .await
        .map_err(|error| anyhow::anyhow!("{}", error.message))?;
    let admin_route: Box<dyn s3s::route::S3Route> = Box::new(AdminRoute::new(
        sharing.admin.clone(),
        config.credentials.access_key.clone(),
    ));
    let shared_files = sharing.catalog.clone();
    let reader = ReadOnlyCredential {
        access_key: sharing.url_credential.access_key.clone(),
        secret_key: sharing.url_credential.secret_key.clone(),
        allows: Arc::new(move |bucket: &str, key: &str| {
            shared_files.snapshot().is_shared_object(bucket, key)
        }),
    };
    let Some(node) = node else {
        // Other nodes change the catalog too: read it again every second.
        let catalog = sharing.catalog.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(CATALOG_RELOAD_INTERVAL);
            loop {
                every.tick().await;
                if let Err(error) = catalog.reload().await {
                    tracing::warn!(%error, "reading the catalog from the remote store failed");
                }
            }
        });
        let remote = remote.expect("a node without drives shares from a remote store");
        // URLs signed for the store itself are checked there; the node checks its own.
        let direct = config
            .backend
            .as_ref()
            .is_some_and(|backend| backend.presign_direct.is_some());
        let reader = (!direct).then_some(reader);
        let s3 = build_gateway_service(
            RemoteObjects::new(remote),
            config.credentials.clone(),
            reader,
            vec![admin_route],
        );
        return Ok(FrontService::new(s3, None, sharing.service));
    };
    let forms = FormUploads::new(node.clone(), config.credentials.clone());
    let s3 = build_service(
        node,
        config.credentials.clone(),
        Some(reader),
        config.domains.clone(),
        vec![admin_route],
    );
    Ok(FrontService::new(s3, Some(forms), sharing.service))
}
