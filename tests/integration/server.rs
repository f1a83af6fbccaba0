//! Starts the real `lakeshare server` binary for a test and stops it when dropped.
//!
//! The node listens on `127.0.0.1:0`; the port comes from its ready line on stderr
//! (`lakeshare: listening on http://127.0.0.1:PORT`). Every stderr line is kept, and printed
//! when the test panics, so a failure shows what the node said. `LAKESHARE_IO` (when set) is
//! passed on as `--io`, so the suite runs on the back-end CI asks for.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use sha2::{Digest, Sha256};

pub const ACCESS_KEY: &str = "integration-user";
pub const SECRET_KEY: &str = "integration-secret-key";
pub const REGION: &str = "us-east-1";
const READY_PREFIX: &str = "lakeshare: listening on http://127.0.0.1:";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running node over its own temp drives.
pub struct Node {
    child: Child,
    pub port: u16,
    stderr_lines: Arc<Mutex<Vec<String>>>,
    _drives: tempfile::TempDir,
}

impl Node {
    /// Starts a node with `drive_count` empty drive folders and waits until it listens.
    pub fn start(drive_count: usize) -> Node {
        let drives = tempfile::tempdir().expect("temp dir for drives");
        let mut command = Command::new(env!("CARGO_BIN_EXE_lakeshare"));
        command.args(["server", "--address", "127.0.0.1:0", "--threads", "2"]);
        if let Ok(io_mode) = std::env::var("LAKESHARE_IO") {
            command.args(["--io", &io_mode]);
        }
        for index in 1..=drive_count {
            let drive = drives.path().join(format!("drive{index}"));
            std::fs::create_dir_all(&drive).expect("create drive folder");
            command.arg(drive);
        }
        command
            .env("LAKESHARE_ROOT_USER", ACCESS_KEY)
            .env("LAKESHARE_ROOT_PASSWORD", SECRET_KEY)
            .current_dir(drives.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn the lakeshare binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let (port_sender, port_receiver) = mpsc::channel();
        let lines = Arc::clone(&stderr_lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = parse_ready_port(&line) {
                    let _ = port_sender.send(port);
                }
                lines.lock().expect("stderr lines").push(line);
            }
        });
        let port = match port_receiver.recv_timeout(STARTUP_TIMEOUT) {
            Ok(port) => port,
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                let said = stderr_lines.lock().expect("stderr lines").join("\n");
                panic!("lakeshare did not become ready ({error}); its stderr:\n{said}");
            }
        };
        Node {
            child,
            port,
            stderr_lines,
            _drives: drives,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An `object_store` client for `bucket`, configured the way delta-rs configures it.
    pub fn store(&self, bucket: &str) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_bucket_name(bucket)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_region(REGION)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .build()
            .expect("build the S3 client")
    }

    /// Creates a bucket with a SigV4-signed `PUT /bucket` (object_store cannot).
    pub fn create_bucket(&self, bucket: &str) {
        let status = self.signed_empty_request("PUT", &format!("/{bucket}"));
        assert_eq!(status, 200, "create bucket {bucket}");
    }

    /// Sends one SigV4-signed request with an empty body; returns the HTTP status.
    fn signed_empty_request(&self, method: &str, path: &str) -> u16 {
        let host = format!("127.0.0.1:{}", self.port);
        let now = time::OffsetDateTime::now_utc();
        let amz_date = now
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .expect("format x-amz-date");
        let date = &amz_date[..8];
        let payload_hash = hex::encode(Sha256::digest(b""));
        let canonical_request = format!(
            "{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:{payload_hash}\n\
             x-amz-date:{amz_date}\n\nhost;x-amz-content-sha256;x-amz-date\n{payload_hash}"
        );
        let scope = format!("{date}/{REGION}/s3/aws4_request");
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        );
        let mut key = hmac_sha256(format!("AWS4{SECRET_KEY}").as_bytes(), date.as_bytes());
        for part in [REGION, "s3", "aws4_request"] {
            key = hmac_sha256(&key, part.as_bytes());
        }
        let signature = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()));
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nx-amz-date: {amz_date}\r\n\
             x-amz-content-sha256: {payload_hash}\r\nAuthorization: AWS4-HMAC-SHA256 \
             Credential={ACCESS_KEY}/{scope}, SignedHeaders=host;x-amz-content-sha256;\
             x-amz-date, Signature={signature}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let mut stream = TcpStream::connect(&host).expect("connect to the node");
        stream
            .set_read_timeout(Some(STOP_TIMEOUT))
            .expect("read timeout");
        stream.write_all(request.as_bytes()).expect("send request");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
            .split_whitespace()
            .nth(1)
            .and_then(|status| status.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP status in {response:?}"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // SIGTERM asks for the graceful shutdown; SIGKILL follows only after the timeout.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + STOP_TIMEOUT;
        let exit = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
            }
        };
        if std::thread::panicking() {
            let said = self
                .stderr_lines
                .lock()
                .map(|lines| lines.join("\n"))
                .unwrap_or_default();
            eprintln!("----- lakeshare stderr (exit {exit:?}) -----\n{said}\n-----");
        }
    }
}

fn parse_ready_port(line: &str) -> Option<u16> {
    let rest = &line[line.find(READY_PREFIX)? + READY_PREFIX.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}
