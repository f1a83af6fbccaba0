//! The engine: worker threads (one per core, each with its own single-threaded runtime and
//! its own descriptor of one listener), HTTP/1.1 and HTTP/2 through hyper, TLS through rustls,
//! drive I/O through io_uring or a blocking pool, and graceful shutdown.
//!
//! It knows nothing of S3 or Delta: it serves any cloneable hyper service and reads and
//! writes bytes on drives.

pub mod io;
pub mod server;
