//! Worker threads, listeners, HTTP and TLS, shutdown. See `serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Largest request header block.
    pub header_bytes_max: usize,
    /// Time a client has to send its request headers (slowloris bound).
    pub header_read_timeout: Duration,
}
