//! Request body verification while it streams into the node: S3 checksums
//! (`x-amz-checksum-*` from a header or an aws-chunked trailer), `Content-MD5`, and the
//! per-PUT size cap.
//!
//! Invariant: the wrapped stream ends cleanly only if every declared checksum matched; on a
//! mismatch it yields an `io::Error` instead of its end, so the node aborts the write and
//! nothing becomes visible. The outcome (verified values, or why it failed) is left in a
//! shared slot for the handler to turn into the S3 answer.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use base64::Engine;
use bytes::Bytes;
use futures::Stream;
use http::HeaderMap;
use md5::Digest as _;
use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme, Sha1, Sha256};
use s3s::dto::StreamingBlob;
use s3s::TrailingHeaders;

use crate::node::ByteStream;

/// Largest body of one PutObject or UploadPart (S3's limit).
pub const PUT_BYTES_MAX: u64 = 5 * 1024 * 1024 * 1024;

/// The S3 checksum algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    pub const ALL: [ChecksumAlgorithm; 5] = [
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc32c,
        ChecksumAlgorithm::Crc64Nvme,
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
    ];

    /// The name S3 uses (`x-amz-checksum-algorithm`), also the key in stored metadata.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "CRC32",
            ChecksumAlgorithm::Crc32c => "CRC32C",
            ChecksumAlgorithm::Crc64Nvme => "CRC64NVME",
            ChecksumAlgorithm::Sha1 => "SHA1",
            ChecksumAlgorithm::Sha256 => "SHA256",
        }
    }

    /// The header (or trailer) carrying the value.
    pub fn header(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "x-amz-checksum-crc32",
            ChecksumAlgorithm::Crc32c => "x-amz-checksum-crc32c",
            ChecksumAlgorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            ChecksumAlgorithm::Sha1 => "x-amz-checksum-sha1",
            ChecksumAlgorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    pub fn from_name(name: &str) -> Option<ChecksumAlgorithm> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    pub fn from_header(header: &str) -> Option<ChecksumAlgorithm> {
        Self::ALL
            .into_iter()
            .find(|a| a.header().eq_ignore_ascii_case(header.trim()))
    }

    /// Base64 of the digest of `data`, as S3 sends it.
    pub fn digest_base64(self, data: &[u8]) -> String {
        let mut hasher = Hasher::new(self);
        hasher.update(data);
        hasher.finish()
    }
}

/// What the client declared about the body.
#[derive(Clone, Debug, Default)]
pub struct BodyExpectations {
    /// Values sent as headers, by algorithm, base64.
    pub checksums: BTreeMap<ChecksumAlgorithm, String>,
    /// An algorithm whose value arrives in the aws-chunked trailer (`x-amz-trailer`).
    pub trailer: Option<ChecksumAlgorithm>,
    /// `Content-MD5`, base64.
    pub content_md5: Option<String>,
}

impl BodyExpectations {
    /// Reads the declarations from the request headers. A `x-amz-trailer` naming an unknown
    /// header is an error.
    pub fn from_headers(headers: &HeaderMap) -> Result<BodyExpectations, BodyFailure> {
        let mut expectations = BodyExpectations::default();
        for algorithm in ChecksumAlgorithm::ALL {
            if let Some(value) = headers.get(algorithm.header()) {
                let value = value.to_str().map_err(|_| {
                    BodyFailure::InvalidRequest(format!("invalid {} header", algorithm.header()))
                })?;
                expectations
                    .checksums
                    .insert(algorithm, value.trim().to_owned());
            }
        }
        if let Some(trailer) = headers.get("x-amz-trailer") {
            let trailer = trailer.to_str().unwrap_or_default();
            let algorithm = ChecksumAlgorithm::from_header(trailer).ok_or_else(|| {
                BodyFailure::InvalidRequest(format!("unsupported x-amz-trailer {trailer:?}"))
            })?;
            expectations.trailer = Some(algorithm);
        }
        if let Some(md5) = headers.get("content-md5") {
            let md5 = md5.to_str().unwrap_or_default().trim().to_owned();
            let decoded = base64::engine::general_purpose::STANDARD.decode(&md5);
            if !decoded.is_ok_and(|d| d.len() == 16) {
                return Err(BodyFailure::InvalidDigest(md5));
            }
            expectations.content_md5 = Some(md5);
        }
        Ok(expectations)
    }
}

/// Why a body was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyFailure {
    /// A declared checksum or Content-MD5 did not match the bytes.
    BadDigest(String),
    /// `Content-MD5` is not the base64 of 16 bytes.
    InvalidDigest(String),
    /// A declared trailer never came, or a checksum header is malformed.
    InvalidRequest(String),
    /// More than `PUT_BYTES_MAX` bytes.
    TooLarge,
    /// The stream under us failed (client went away, bad chunk signature, ...).
    Stream(String),
}

/// Checksums verified, by S3 algorithm name, base64.
pub type VerifiedChecksums = BTreeMap<String, String>;

/// The shared slot a `VerifiedBody` reports into.
#[derive(Clone, Debug, Default)]
pub struct BodyOutcome(Arc<Mutex<Option<Result<VerifiedChecksums, BodyFailure>>>>);

impl BodyOutcome {
    /// The checksums verified (by S3 name), once the body ended cleanly.
    pub fn verified(&self) -> Option<BTreeMap<String, String>> {
        match self.0.lock().ok()?.as_ref()? {
            Ok(map) => Some(map.clone()),
            Err(_) => None,
        }
    }

    /// Why the body failed, if it did.
    pub fn failure(&self) -> Option<BodyFailure> {
        match self.0.lock().ok()?.as_ref()? {
            Ok(_) => None,
            Err(failure) => Some(failure.clone()),
        }
    }

    fn set(&self, value: Result<VerifiedChecksums, BodyFailure>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(value);
        }
    }
}

/// Wraps `body` so it verifies `expectations` as it streams. Returns the stream for the
/// node and the slot where the outcome lands.
pub fn verified_body(
    body: StreamingBlob,
    expectations: BodyExpectations,
    trailing_headers: Option<TrailingHeaders>,
) -> (ByteStream, BodyOutcome) {
    let outcome = BodyOutcome::default();
    let stream = VerifiedBody::new(
        Box::pin(body.map_err_to_io()),
        expectations,
        trailing_headers,
        outcome.clone(),
    );
    (Box::pin(stream), outcome)
}

/// A stream of body bytes checked against the client's declarations; see the module doc.
pub struct VerifiedBody {
    inner: ByteStream,
    hashers: Vec<Hasher>,
    md5: Option<md5::Md5>,
    expectations: BodyExpectations,
    trailing_headers: Option<TrailingHeaders>,
    outcome: BodyOutcome,
    bytes_seen: u64,
    bytes_max: u64,
    done: bool,
}

impl VerifiedBody {
    pub fn new(
        inner: ByteStream,
        expectations: BodyExpectations,
        trailing_headers: Option<TrailingHeaders>,
        outcome: BodyOutcome,
    ) -> VerifiedBody {
        let mut algorithms: Vec<ChecksumAlgorithm> =
            expectations.checksums.keys().copied().collect();
        if let Some(trailer) = expectations.trailer {
            if !algorithms.contains(&trailer) {
                algorithms.push(trailer);
            }
        }
        VerifiedBody {
            inner,
            hashers: algorithms.into_iter().map(Hasher::new).collect(),
            md5: expectations.content_md5.as_ref().map(|_| md5::Md5::new()),
            expectations,
            trailing_headers,
            outcome,
            bytes_seen: 0,
            bytes_max: PUT_BYTES_MAX,
            done: false,
        }
    }

    /// Lowers the size cap (tests).
    pub fn with_bytes_max(mut self, bytes_max: u64) -> VerifiedBody {
        self.bytes_max = bytes_max;
        self
    }

    fn fail(&mut self, failure: BodyFailure) -> io::Error {
        self.done = true;
        let error = io::Error::new(io::ErrorKind::InvalidData, format!("{failure:?}"));
        self.outcome.set(Err(failure));
        error
    }

    /// At the end of the body: compare everything declared with what was computed.
    fn finish(&mut self) -> Result<(), BodyFailure> {
        let mut computed = BTreeMap::new();
        for hasher in std::mem::take(&mut self.hashers) {
            computed.insert(hasher.algorithm(), hasher.finish());
        }
        let mut verified = BTreeMap::new();
        for (algorithm, expected) in &self.expectations.checksums {
            check_equal(*algorithm, expected, computed.get(algorithm))?;
            verified.insert(algorithm.name().to_owned(), expected.clone());
        }
        if let Some(algorithm) = self.expectations.trailer {
            let trailer = self.trailing_headers.as_ref().and_then(|t| {
                t.read(|h| {
                    h.get(algorithm.header())
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                })
            });
            let expected = trailer.flatten().ok_or_else(|| {
                BodyFailure::InvalidRequest(format!(
                    "the trailer {} was announced but not sent",
                    algorithm.header()
                ))
            })?;
            let expected = expected.trim().to_owned();
            check_equal(algorithm, &expected, computed.get(&algorithm))?;
            verified.insert(algorithm.name().to_owned(), expected);
        }
        if let (Some(expected), Some(md5)) = (&self.expectations.content_md5, self.md5.take()) {
            let actual = base64::engine::general_purpose::STANDARD.encode(md5.finalize());
            if *expected != actual {
                return Err(BodyFailure::BadDigest(
                    "The Content-MD5 you specified did not match what we received.".to_owned(),
                ));
            }
        }
        self.outcome.set(Ok(verified.clone()));
        Ok(())
    }
}

impl Stream for VerifiedBody {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(bytes))) => {
                self.bytes_seen += bytes.len() as u64;
                if self.bytes_seen > self.bytes_max {
                    return Poll::Ready(Some(Err(self.fail(BodyFailure::TooLarge))));
                }
                for hasher in &mut self.hashers {
                    hasher.update(&bytes);
                }
                if let Some(md5) = &mut self.md5 {
                    md5.update(&bytes);
                }
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Ready(Some(Err(error))) => {
                let failure = BodyFailure::Stream(error.to_string());
                Poll::Ready(Some(Err(self.fail(failure))))
            }
            Poll::Ready(None) => match self.finish() {
                Ok(()) => {
                    self.done = true;
                    Poll::Ready(None)
                }
                Err(failure) => Poll::Ready(Some(Err(self.fail(failure)))),
            },
        }
    }
}

/// One running digest.
pub enum Hasher {
    Crc32(Crc32),
    Crc32c(Crc32c),
    Crc64Nvme(Crc64Nvme),
    Sha1(Sha1),
    Sha256(Sha256),
}

impl Hasher {
    pub fn new(algorithm: ChecksumAlgorithm) -> Hasher {
        match algorithm {
            ChecksumAlgorithm::Crc32 => Hasher::Crc32(Crc32::new()),
            ChecksumAlgorithm::Crc32c => Hasher::Crc32c(Crc32c::new()),
            ChecksumAlgorithm::Crc64Nvme => Hasher::Crc64Nvme(Crc64Nvme::new()),
            ChecksumAlgorithm::Sha1 => Hasher::Sha1(Sha1::new()),
            ChecksumAlgorithm::Sha256 => Hasher::Sha256(Sha256::new()),
        }
    }

    pub fn algorithm(&self) -> ChecksumAlgorithm {
        match self {
            Hasher::Crc32(_) => ChecksumAlgorithm::Crc32,
            Hasher::Crc32c(_) => ChecksumAlgorithm::Crc32c,
            Hasher::Crc64Nvme(_) => ChecksumAlgorithm::Crc64Nvme,
            Hasher::Sha1(_) => ChecksumAlgorithm::Sha1,
            Hasher::Sha256(_) => ChecksumAlgorithm::Sha256,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Crc32(h) => h.update(data),
            Hasher::Crc32c(h) => h.update(data),
            Hasher::Crc64Nvme(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    /// Base64 of the digest.
    pub fn finish(self) -> String {
        let engine = base64::engine::general_purpose::STANDARD;
        match self {
            Hasher::Crc32(h) => engine.encode(h.finalize()),
            Hasher::Crc32c(h) => engine.encode(h.finalize()),
            Hasher::Crc64Nvme(h) => engine.encode(h.finalize()),
            Hasher::Sha1(h) => engine.encode(h.finalize()),
            Hasher::Sha256(h) => engine.encode(h.finalize()),
        }
    }
}

fn check_equal(
    algorithm: ChecksumAlgorithm,
    expected: &str,
    computed: Option<&String>,
) -> Result<(), BodyFailure> {
    if computed.map(String::as_str) == Some(expected) {
        return Ok(());
    }
    Err(BodyFailure::BadDigest(format!(
        "The {} you specified did not match the calculated checksum.",
        algorithm.header()
    )))
}

trait MapErrToIo {
    fn map_err_to_io(self) -> impl Stream<Item = io::Result<Bytes>> + Send + Sync + 'static;
}

impl MapErrToIo for StreamingBlob {
    fn map_err_to_io(self) -> impl Stream<Item = io::Result<Bytes>> + Send + Sync + 'static {
        use futures::TryStreamExt as _;
        self.map_err(|e| io::Error::other(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;

    /// "123456789" is the check input of every CRC catalogue entry.
    const CHECK_INPUT: &[u8] = b"123456789";

    fn hex_to_base64(hex: &str) -> String {
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn digests_match_published_check_values() {
        let cases = [
            (ChecksumAlgorithm::Crc32, "cbf43926"),
            (ChecksumAlgorithm::Crc32c, "e3069283"),
            (ChecksumAlgorithm::Crc64Nvme, "ae8b14860a799888"),
            (
                ChecksumAlgorithm::Sha1,
                "f7c3bc1d808e04732adf679965ccc34ca7ae3441",
            ),
            (
                ChecksumAlgorithm::Sha256,
                "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225",
            ),
        ];
        for (algorithm, hex) in cases {
            assert_eq!(
                algorithm.digest_base64(CHECK_INPUT),
                hex_to_base64(hex),
                "{algorithm:?}"
            );
        }
    }

    fn body_of(chunks: &[&'static [u8]]) -> ByteStream {
        let items: Vec<io::Result<Bytes>> =
            chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        Box::pin(futures::stream::iter(items))
    }

    async fn drain(mut stream: VerifiedBody) -> Result<Vec<u8>, io::Error> {
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            out.extend_from_slice(&item?);
        }
        Ok(out)
    }

    fn expect(algorithm: ChecksumAlgorithm, value: String) -> BodyExpectations {
        let mut expectations = BodyExpectations::default();
        expectations.checksums.insert(algorithm, value);
        expectations
    }

    #[tokio::test]
    async fn matching_header_checksum_passes_and_is_reported() {
        for algorithm in ChecksumAlgorithm::ALL {
            let value = algorithm.digest_base64(CHECK_INPUT);
            let outcome = BodyOutcome::default();
            let stream = VerifiedBody::new(
                body_of(&[b"1234", b"56789"]),
                expect(algorithm, value.clone()),
                None,
                outcome.clone(),
            );
            assert_eq!(drain(stream).await.unwrap(), CHECK_INPUT);
            let verified = outcome.verified().unwrap();
            assert_eq!(verified.get(algorithm.name()), Some(&value));
        }
    }

    #[tokio::test]
    async fn mismatching_checksum_fails_at_the_end() {
        let value = ChecksumAlgorithm::Crc32.digest_base64(b"something else");
        let outcome = BodyOutcome::default();
        let stream = VerifiedBody::new(
            body_of(&[CHECK_INPUT]),
            expect(ChecksumAlgorithm::Crc32, value),
            None,
            outcome.clone(),
        );
        assert!(drain(stream).await.is_err());
        assert!(matches!(outcome.failure(), Some(BodyFailure::BadDigest(_))));
    }

    #[tokio::test]
    async fn content_md5_is_checked() {
        let good = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(CHECK_INPUT));
        for (md5, ok) in [(good, true), ("AAAAAAAAAAAAAAAAAAAAAA==".to_owned(), false)] {
            let expectations = BodyExpectations {
                content_md5: Some(md5),
                ..BodyExpectations::default()
            };
            let outcome = BodyOutcome::default();
            let stream =
                VerifiedBody::new(body_of(&[CHECK_INPUT]), expectations, None, outcome.clone());
            assert_eq!(drain(stream).await.is_ok(), ok);
        }
    }

    #[tokio::test]
    async fn announced_trailer_that_never_came_is_invalid_request() {
        let expectations = BodyExpectations {
            trailer: Some(ChecksumAlgorithm::Crc64Nvme),
            ..BodyExpectations::default()
        };
        let outcome = BodyOutcome::default();
        let stream =
            VerifiedBody::new(body_of(&[CHECK_INPUT]), expectations, None, outcome.clone());
        assert!(drain(stream).await.is_err());
        assert!(matches!(
            outcome.failure(),
            Some(BodyFailure::InvalidRequest(_))
        ));
    }

    #[tokio::test]
    async fn size_cap_is_enforced() {
        let outcome = BodyOutcome::default();
        let stream = VerifiedBody::new(
            body_of(&[b"12345", b"6789"]),
            BodyExpectations::default(),
            None,
            outcome.clone(),
        )
        .with_bytes_max(8);
        assert!(drain(stream).await.is_err());
        assert_eq!(outcome.failure(), Some(BodyFailure::TooLarge));
    }

    #[test]
    fn expectations_from_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-checksum-crc32", "yZRlqg==".parse().unwrap());
        headers.insert("x-amz-trailer", "x-amz-checksum-crc64nvme".parse().unwrap());
        let expectations = BodyExpectations::from_headers(&headers).unwrap();
        assert_eq!(
            expectations
                .checksums
                .get(&ChecksumAlgorithm::Crc32)
                .map(String::as_str),
            Some("yZRlqg==")
        );
        assert_eq!(expectations.trailer, Some(ChecksumAlgorithm::Crc64Nvme));

        headers.insert("content-md5", "not-base64".parse().unwrap());
        assert!(matches!(
            BodyExpectations::from_headers(&headers),
            Err(BodyFailure::InvalidDigest(_))
        ));
    }
}
