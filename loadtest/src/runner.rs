//! The load loop: `concurrency` workers on a multi-thread tokio runtime, each with its own
//! keep-alive HTTP/1.1 connection (hyper 1 client), taking request indexes from one shared
//! counter until the request count or the duration is reached.
//!
//! Invariants: every run ends, by count or by deadline (a request in flight at the deadline
//! is finished and counted); a worker owns one connection at a time and reconnects only after
//! the previous one failed or was closed; only the URLs the caller built are contacted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{header, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::report::Report;

/// When a run stops.
#[derive(Clone, Copy, Debug)]
pub enum Limit {
    /// After this many requests, counted when they start.
    Requests(u64),
    /// No request starts after this much time.
    Duration(Duration),
}

/// One request ready to send: the `host:port` to connect to, and a request whose URI is in
/// origin form (`/path?query`) with its `Host` header set.
pub struct PlannedRequest {
    pub authority: String,
    pub request: Request<Full<Bytes>>,
    /// Bytes of the request body, counted as moved when the request succeeds.
    pub sent_bytes: u64,
}

/// Builds the request for a request index. Called concurrently from every worker.
pub type RequestFactory = Arc<dyn Fn(u64) -> anyhow::Result<PlannedRequest> + Send + Sync>;

/// Largest read buffer of one connection: large reads keep syscalls few on big bodies.
const READ_BUFFER_BYTES_MAX: usize = 1 << 20;
/// Pause after a failed connect, so a refused port does not spin a worker.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);
/// Bytes of a failed response's body kept for the report.
const ERROR_BODY_BYTES_MAX: usize = 512;
/// Latencies above this are recorded as this (one hour, in microseconds).
const LATENCY_US_MAX: u64 = 3_600_000_000;

/// An empty latency histogram in microseconds, as every run records them.
pub fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)?)
}

/// Records the time since `started` in `latency_us`.
pub fn record_latency(latency_us: &mut Histogram<u64>, started: Instant) {
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    latency_us.saturating_record(micros.clamp(1, LATENCY_US_MAX));
}

/// A number no earlier run used (the wall clock in nanoseconds), for fresh names.
pub fn run_nonce() -> anyhow::Result<u128> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("clock before 1970")?
        .as_nanos())
}

/// Plans a `method` request to an absolute `url`, with extra `headers` and `body`.
pub fn plan_request(
    method: http::Method,
    url: &str,
    headers: &[(String, String)],
    body: Bytes,
) -> anyhow::Result<PlannedRequest> {
    let uri: Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
    let authority = uri
        .authority()
        .with_context(|| format!("URL {url:?} has no host"))?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "URL {url:?}: only http:// is supported"
    );
    let port = authority.port_u16().unwrap_or(80);
    let connect_to = format!("{}:{port}", authority.host());
    let origin = uri.path_and_query().map_or("/", |path| path.as_str());
    let sent_bytes = body.len() as u64;
    let mut builder = Request::builder()
        .method(method)
        .uri(origin)
        .header(header::HOST, authority.as_str())
        .header(header::CONTENT_LENGTH, sent_bytes);
    for (name, value) in headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let request = builder.body(Full::new(body)).context("build request")?;
    Ok(PlannedRequest {
        authority: connect_to,
        request,
        sent_bytes,
    })
}

/// Runs `factory`'s requests with `concurrency` workers until `limit`, and reports.
pub async fn run(
    scenario: &str,
    concurrency: usize,
    limit: Limit,
    factory: RequestFactory,
) -> anyhow::Result<Report> {
    anyhow::ensure!(concurrency > 0, "concurrency must be at least 1");
    let started = Instant::now();
    let shared = Arc::new(Shared {
        next_index: AtomicU64::new(0),
        requests_max: match limit {
            Limit::Requests(count) => Some(count),
            Limit::Duration(_) => None,
        },
        deadline: match limit {
            Limit::Requests(_) => None,
            Limit::Duration(duration) => Some(started + duration),
        },
        factory,
    });
    let workers: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(worker(Arc::clone(&shared))))
        .collect();
    let mut total = Tally::new()?;
    for handle in workers {
        let tally = handle.await.context("worker task failed")??;
        total.merge(tally)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut report = Report::new(
        scenario,
        concurrency,
        total.ok,
        total.errors,
        seconds,
        total.bytes,
        &total.latency_us,
    );
    report.first_error = total.first_error;
    Ok(report)
}

struct Shared {
    next_index: AtomicU64,
    requests_max: Option<u64>,
    deadline: Option<Instant>,
    factory: RequestFactory,
}

struct Tally {
    ok: u64,
    errors: BTreeMap<String, u64>,
    /// The first failed response of this worker: status and the start of its body.
    first_error: Option<String>,
    bytes: u64,
    latency_us: Histogram<u64>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            ok: 0,
            errors: BTreeMap::new(),
            first_error: None,
            bytes: 0,
            latency_us: latency_histogram()?,
        })
    }

    fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_insert(0) += 1;
    }

    fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.ok += other.ok;
        self.bytes += other.bytes;
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_insert(0) += count;
        }
        self.latency_us.add(&other.latency_us)?;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }
}

struct Connection {
    authority: String,
    sender: SendRequest<Full<Bytes>>,
}

enum Outcome {
    Success {
        moved_bytes: u64,
    },
    Failure {
        kind: String,
    },
    /// A complete response with a non-2xx status.
    Rejected {
        status: u16,
        body_start: String,
    },
}

async fn worker(shared: Arc<Shared>) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let mut connection: Option<Connection> = None;
    loop {
        if shared
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            break;
        }
        let index = shared.next_index.fetch_add(1, Ordering::Relaxed);
        if shared.requests_max.is_some_and(|count| index >= count) {
            break;
        }
        let planned = (shared.factory)(index)?;
        let started = Instant::now();
        match send(&mut connection, planned).await {
            Outcome::Success { moved_bytes } => {
                tally.ok += 1;
                tally.bytes += moved_bytes;
                record_latency(&mut tally.latency_us, started);
            }
            Outcome::Rejected { status, body_start } => {
                tally.error(&status.to_string());
                if tally.first_error.is_none() {
                    tally.first_error = Some(format!("{status}: {body_start}"));
                }
            }
            Outcome::Failure { kind } => {
                if kind == "connect" {
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
                tally.error(&kind);
            }
        }
    }
    Ok(tally)
}

async fn send(connection: &mut Option<Connection>, planned: PlannedRequest) -> Outcome {
    let reusable = connection
        .as_ref()
        .is_some_and(|open| open.authority == planned.authority && !open.sender.is_closed());
    if !reusable {
        *connection = None;
        match connect(&planned.authority).await {
            Ok(opened) => *connection = Some(opened),
            Err(_) => {
                return Outcome::Failure {
                    kind: "connect".to_string(),
                }
            }
        }
    }
    let Some(open) = connection.as_mut() else {
        return Outcome::Failure {
            kind: "connect".to_string(),
        };
    };
    let outcome = exchange(&mut open.sender, planned).await;
    if matches!(&outcome, Outcome::Failure { kind } if kind == "io") {
        *connection = None;
    }
    outcome
}

async fn exchange(sender: &mut SendRequest<Full<Bytes>>, planned: PlannedRequest) -> Outcome {
    let io_failure = || Outcome::Failure {
        kind: "io".to_string(),
    };
    if sender.ready().await.is_err() {
        return io_failure();
    }
    let Ok(response) = sender.send_request(planned.request).await else {
        return io_failure();
    };
    let status = response.status();
    let content_length = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let mut body = response.into_body();
    let mut received_bytes = 0u64;
    let mut body_start = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    received_bytes += data.len() as u64;
                    if !status.is_success() && body_start.len() < ERROR_BODY_BYTES_MAX {
                        let room = ERROR_BODY_BYTES_MAX - body_start.len();
                        body_start.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
            }
            Err(_) => return io_failure(),
        }
    }
    if !status.is_success() {
        let body_start = String::from_utf8_lossy(&body_start).into_owned();
        return Outcome::Rejected {
            status: status.as_u16(),
            body_start,
        };
    }
    if content_length.is_some_and(|expected| expected != received_bytes) {
        return Outcome::Failure {
            kind: "short_body".to_string(),
        };
    }
    Outcome::Success {
        moved_bytes: received_bytes + planned.sent_bytes,
    }
}

async fn connect(authority: &str) -> anyhow::Result<Connection> {
    let stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(READ_BUFFER_BYTES_MAX)
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        // The connection ends when its sender is dropped or the peer closes; either way the
        // worker notices through `is_closed` or a failed send.
        let _ = connection.await;
    });
    Ok(Connection {
        authority: authority.to_string(),
        sender,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_request_uses_origin_form_and_host() {
        let planned = plan_request(
            http::Method::GET,
            "http://127.0.0.1:8080/obj-3?x=1",
            &[("range".to_string(), "bytes=0-9".to_string())],
            Bytes::new(),
        )
        .unwrap();
        assert_eq!(planned.authority, "127.0.0.1:8080");
        assert_eq!(planned.request.uri(), "/obj-3?x=1");
        assert_eq!(planned.request.headers()["host"], "127.0.0.1:8080");
        assert_eq!(planned.request.headers()["range"], "bytes=0-9");
        assert!(plan_request(http::Method::GET, "https://x/", &[], Bytes::new()).is_err());
    }

    /// A tiny HTTP/1.1 server answering every request on a keep-alive connection with a
    /// fixed status and body; counts the connections it accepted.
    async fn serve_fixed_body(
        status: &'static str,
        body: &'static [u8],
    ) -> (String, Arc<AtomicU64>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 4096];
                    let mut pending = Vec::new();
                    loop {
                        let Ok(read) = stream.read(&mut buffer).await else {
                            return;
                        };
                        if read == 0 {
                            return;
                        }
                        pending.extend_from_slice(&buffer[..read]);
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            let head = format!(
                                "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n",
                                body.len()
                            );
                            if stream.write_all(head.as_bytes()).await.is_err()
                                || stream.write_all(body).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (address, connections)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_counts_requests_bytes_and_keeps_connections_alive() {
        let (address, connections) = serve_fixed_body("200 OK", b"hello world").await;
        let url = format!("http://{address}/x");
        let factory: RequestFactory =
            Arc::new(move |_| plan_request(http::Method::GET, &url, &[], Bytes::new()));
        let report = run("http-get", 3, Limit::Requests(30), factory)
            .await
            .unwrap();
        assert_eq!(report.requests, 30);
        assert_eq!(report.ok, 30);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.bytes, 30 * 11);
        assert_eq!(connections.load(Ordering::Relaxed), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rejected_requests_are_counted_by_status_with_the_first_body() {
        let (address, _) = serve_fixed_body("404 Not Found", b"<Code>NoSuchKey</Code>").await;
        let url = format!("http://{address}/missing");
        let factory: RequestFactory =
            Arc::new(move |_| plan_request(http::Method::GET, &url, &[], Bytes::new()));
        let report = run("get", 2, Limit::Requests(5), factory).await.unwrap();
        assert_eq!(report.ok, 0);
        assert_eq!(report.bytes, 0);
        assert_eq!(report.errors.get("404"), Some(&5));
        assert_eq!(
            report.first_error.as_deref(),
            Some("404: <Code>NoSuchKey</Code>")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_connections_are_counted_and_the_run_still_ends() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let url = format!("http://{address}/");
        let factory: RequestFactory =
            Arc::new(move |_| plan_request(http::Method::GET, &url, &[], Bytes::new()));
        let report = run("http-get", 2, Limit::Requests(4), factory)
            .await
            .unwrap();
        assert_eq!(report.ok, 0);
        assert_eq!(report.errors.get("connect"), Some(&4));
        assert_eq!(report.first_error, None);
    }
}
