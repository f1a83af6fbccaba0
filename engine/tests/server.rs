//! The server on a real port: HTTP/1.1, h2c, TLS with ALPN, header bounds, slow clients,
//! the connection limit, and graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lakeshare_engine::server::{bind, ServerConfig, ShutdownHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};

/// Guard against a hang, not a timing assertion.
const HANG_GUARD: Duration = Duration::from_secs(60);

struct Running {
    address: SocketAddr,
    handle: ShutdownHandle,
    thread: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops the server and waits for `run` to return, while this runtime keeps driving
    /// the client connections (which must see the server's goodbye and close).
    async fn stop(self) {
        self.handle.shutdown();
        let thread = self.thread;
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        let result = joined.expect("join task").expect("server thread");
        assert!(result.is_ok(), "run returns Ok after a stop: {result:?}");
    }
}

fn config() -> ServerConfig {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("address"));
    config.threads = 2;
    config.shutdown_timeout = Duration::from_secs(30);
    config.header_bytes_max = 16 * 1024;
    config.header_read_timeout = Duration::from_secs(1);
    config
}

/// Answers `<path> <version>`; `/slow` waits for `release` after telling `started`.
fn start(config: ServerConfig) -> (Running, mpsc::UnboundedReceiver<()>, Arc<Notify>) {
    let (started, started_receiver) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let service_release = release.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        let started = started.clone();
        let release = service_release.clone();
        async move {
            if request.uri().path() == "/slow" {
                let _ = started.send(());
                release.notified().await;
            }
            let text = format!("{} {:?}", request.uri().path(), request.version());
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
        }
    });
    let bound = bind(&config).expect("bind");
    let address = bound.local_addr();
    assert_ne!(address.port(), 0, "the bound port is known");
    let handle = bound.shutdown_handle();
    let thread = std::thread::spawn(move || bound.run(service));
    let running = Running {
        address,
        handle,
        thread,
    };
    (running, started_receiver, release)
}

async fn get_http1(address: SocketAddr, path: &str) -> (StatusCode, String) {
    let stream = TcpStream::connect(address).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1 handshake");
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(http::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .expect("request");
    read_response(sender.send_request(request).await.expect("HTTP/1 response")).await
}

async fn get_http2<I>(io: I, path: &str) -> (StatusCode, String, Version)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let request = Request::get(format!("http://localhost{path}"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("HTTP/2 response");
    let version = response.version();
    let (status, body) = read_response(response).await;
    (status, body, version)
}

async fn read_response(response: Response<Incoming>) -> (StatusCode, String) {
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Reads until the server closes (or resets) the connection.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(HANG_GUARD, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(count) => received.extend_from_slice(&chunk[..count]),
            }
        }
    });
    read.await.expect("the server closes the connection");
    received
}

#[tokio::test]
async fn serves_http1_and_h2c_on_two_workers() {
    let (running, _, _) = start(config());
    for _ in 0..8 {
        let (status, body) = get_http1(running.address, "/one").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "/one HTTP/1.1");
        let stream = TcpStream::connect(running.address).await.expect("connect");
        let (status, body, version) = get_http2(stream, "/two").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(version, Version::HTTP_2);
        assert_eq!(body, "/two HTTP/2.0");
    }
    running.stop().await;
}

/// Regression (issue 11, bug 5): a second server on the same address is refused; with
/// `SO_REUSEPORT` it used to bind and take a share of the connections.
#[tokio::test]
async fn r11_a_second_bind_on_the_same_address_is_refused() {
    let (running, _, _) = start(config());
    let second = bind(&ServerConfig::new(running.address));
    let error = second.err().expect("the second bind must fail");
    assert!(
        format!("{error:#}").contains("binding"),
        "the error names the bind: {error:#}"
    );
    let (status, _) = get_http1(running.address, "/still").await;
    assert_eq!(status, StatusCode::OK, "the first server keeps serving");
    running.stop().await;
}

#[tokio::test]
async fn oversized_header_block_is_refused_and_others_are_served() {
    let (running, _, _) = start(config());
    let mut stream = TcpStream::connect(running.address).await.expect("connect");
    let mut request = b"GET /big HTTP/1.1\r\nHost: localhost\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 256 * 1024));
    request.extend_from_slice(b"\r\n\r\n");
    // The server may close while the block is still being sent.
    let _ = stream.write_all(&request).await;
    let answer = read_until_closed(&mut stream).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "refused with 431 or a close, got {answer:?}"
    );

    let (status, body) = get_http1(running.address, "/small").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "/small HTTP/1.1");
    running.stop().await;
}

#[tokio::test]
async fn slow_and_silent_clients_are_dropped() {
    let (running, _, _) = start(config());
    let mut slow = TcpStream::connect(running.address).await.expect("connect");
    slow.write_all(b"GET /slowloris HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("write");
    let answer = read_until_closed(&mut slow).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains(" 200 "),
        "no answer to half a request"
    );

    let mut silent = TcpStream::connect(running.address).await.expect("connect");
    let answer = read_until_closed(&mut silent).await;
    assert!(
        answer.is_empty(),
        "a silent client gets nothing and is closed"
    );

    let (status, _) = get_http1(running.address, "/after").await;
    assert_eq!(status, StatusCode::OK);
    running.stop().await;
}

#[tokio::test]
async fn connection_limit_holds_new_connections_until_one_closes() {
    let mut config = config();
    config.threads = 1;
    config.connections_max = 1;
    config.header_read_timeout = Duration::from_secs(30);
    let (running, _, _) = start(config);

    let stream = TcpStream::connect(running.address).await.expect("connect");
    let (mut first, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let first_connection = tokio::spawn(connection);
    let request = || {
        Request::get("/held")
            .header(http::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
            .expect("request")
    };
    let response = first.send_request(request()).await.expect("first response");
    assert_eq!(response.status(), StatusCode::OK);

    let mut second = TcpStream::connect(running.address).await.expect("connect");
    second
        .write_all(b"GET /second HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), second.read(&mut byte)).await;
    assert!(early.is_err(), "no answer while the only slot is taken");

    drop(first);
    first_connection.abort();
    let answer = read_until_closed(&mut second).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "served once the slot frees: {answer:?}"
    );
    assert!(
        answer.ends_with("/second HTTP/1.1"),
        "the held request's answer: {answer:?}"
    );
    running.stop().await;
}

#[tokio::test]
async fn tls_serves_h2_through_alpn() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("self-signed certificate");
    let folder = tempfile::tempdir().expect("temp folder");
    std::fs::write(folder.path().join("public.crt"), certified.cert.pem()).expect("cert");
    std::fs::write(
        folder.path().join("private.key"),
        certified.key_pair.serialize_pem(),
    )
    .expect("key");
    let mut config = config();
    config.certs_dir = Some(folder.path().to_owned());
    let bound = bind(&config).expect("bind");
    assert!(bound.is_tls(), "both files present: TLS");
    drop(bound);
    let (running, _, _) = start(config);

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(certified.cert.der().clone())
        .expect("trust the certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let stream = TcpStream::connect(running.address).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = connector
        .connect(name, stream)
        .await
        .expect("TLS handshake");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(b"h2".as_slice()),
        "ALPN picks h2"
    );
    let (status, body, version) = get_http2(tls, "/secure").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(body, "/secure HTTP/2.0");
    running.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_then_stops_accepting() {
    let (running, mut started, release) = start(config());
    let address = running.address;
    let in_flight = tokio::spawn(async move { get_http1(address, "/slow").await });
    tokio::time::timeout(HANG_GUARD, started.recv())
        .await
        .expect("the slow request reaches the service");

    running.handle.shutdown();
    // Wait until every listener is closed, so the stop is seen while the request is held.
    let closed = tokio::time::timeout(HANG_GUARD, async {
        while TcpStream::connect(address).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    closed.await.expect("the listeners close");
    release.notify_one();
    let (status, body) = tokio::time::timeout(HANG_GUARD, in_flight)
        .await
        .expect("the request in flight ends")
        .expect("client task");
    assert_eq!(status, StatusCode::OK, "the request in flight is answered");
    assert_eq!(body, "/slow HTTP/1.1");
    running.stop().await;
}
