//! Presigned GET URLs for shared files, on the node's own S3 path.
//!
//! URLs are SigV4 query-signed (path-style, the sharing endpoint's host, `X-Amz-Signature` in
//! the query: delta-kernel treats only such URLs as remote). They are signed with the node's
//! sharing credential, which the S3 layer accepts for GET and HEAD of files inside shared
//! tables only. The SigV4 signing key is derived once per UTC day and reused.
//!
//! Signing is the hottest step of a large query, so it uses `sha2`/`hmac`, whose states can be
//! cloned: the string-to-sign's constant head is hashed once per response, not once per URL
//! (ring, used elsewhere, is the oracle in the tests).
//!
//! Invariant: the signature covers the method, host, path and expiry, so a URL works only for
//! the object it names and only until it expires.

use std::sync::Mutex;

use bytes::{BufMut, BytesMut};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// Region every signature names (clients and s3s accept any).
pub const SIGNING_REGION: &str = "us-east-1";
/// Longest lifetime SigV4 allows for a presigned URL.
pub const PRESIGN_SECONDS_MAX: u64 = 7 * 24 * 3600;

/// The credential presigned URLs are signed with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharingCredential {
    pub access_key: String,
    pub secret_key: String,
}

impl SharingCredential {
    /// Derives the node's sharing credential from its catalog secret.
    pub fn derive(node_secret: &[u8]) -> Self {
        let access = hmac_sha256(node_secret, b"lakeshare presign access key");
        let secret = hmac_sha256(node_secret, b"lakeshare presign secret key");
        SharingCredential {
            access_key: format!("LSSHARE{}", hex::encode_upper(&access[..8])),
            secret_key: hex::encode(secret),
        }
    }
}

/// Signs GET URLs for `scheme://host` with a per-day signing key.
pub struct Presigner {
    credential: SharingCredential,
    /// `http` or `https`.
    scheme: String,
    /// `host[:port]` exactly as the URL carries it (the signed `host` header).
    host: String,
    expiry_seconds: u64,
    /// The UTC day (`YYYYMMDD`) and the MAC keyed with its signing key.
    day_key: Mutex<Option<(String, HmacSha256)>>,
}

/// One presigned URL and when it stops working.
pub struct PresignedUrl {
    pub url: String,
    pub expiration_timestamp_ms: i64,
}

impl Presigner {
    pub fn new(credential: SharingCredential, base_url: &str, expiry_seconds: u64) -> Self {
        let (scheme, rest) = base_url.split_once("://").unwrap_or(("http", base_url));
        let host = rest.split('/').next().unwrap_or(rest).to_string();
        Presigner {
            credential,
            scheme: scheme.to_string(),
            host,
            expiry_seconds: expiry_seconds.clamp(1, PRESIGN_SECONDS_MAX),
            day_key: Mutex::new(None),
        }
    }

    pub fn credential(&self) -> &SharingCredential {
        &self.credential
    }

    pub fn expiry_seconds(&self) -> u64 {
        self.expiry_seconds
    }

    /// A GET URL for `bucket/key`, valid from `now` for the configured lifetime.
    pub fn presign_get(&self, bucket: &str, key: &str, now: OffsetDateTime) -> PresignedUrl {
        let mut url = BytesMut::new();
        let expiration_timestamp_ms = self.batch(now).write_get_url(bucket, key, None, &mut url);
        PresignedUrl {
            url: String::from_utf8_lossy(&url).into_owned(),
            expiration_timestamp_ms,
        }
    }

    /// Everything the URLs signed at `now` share, computed once for a whole response. URLs are
    /// signed at the start of the current signing window (see `signing_window_seconds`), so
    /// every response of a window gives a file the same URL and kept signatures are reused.
    pub fn batch(&self, now: OffsetDateTime) -> PresignBatch<'_> {
        let now_seconds = now.unix_timestamp();
        let signed_at = now_seconds - now_seconds.rem_euclid(self.signing_window_seconds());
        let now = OffsetDateTime::from_unix_timestamp(signed_at).unwrap_or(now);
        let date = format!(
            "{:04}{:02}{:02}",
            now.year(),
            u8::from(now.month()),
            now.day()
        );
        let amz_date = format!(
            "{date}T{:02}{:02}{:02}Z",
            now.hour(),
            now.minute(),
            now.second()
        );
        let scope = format!("{date}/{SIGNING_REGION}/s3/aws4_request");
        let mut credential = BytesMut::new();
        uri_encode_into(
            &mut credential,
            &format!("{}/{scope}", self.credential.access_key),
            true,
        );
        let credential = String::from_utf8_lossy(&credential);
        let query = format!(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={credential}&X-Amz-Date={amz_date}\
             &X-Amz-Expires={}&X-Amz-SignedHeaders=host",
            self.expiry_seconds
        );
        let mut string_to_sign_mac = self.day_key(&date);
        string_to_sign_mac.update(format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n").as_bytes());
        PresignBatch {
            presigner: self,
            string_to_sign_mac,
            canonical_request_tail: format!(
                "\n{query}\nhost:{}\n\nhost\nUNSIGNED-PAYLOAD",
                self.host
            ),
            query,
            signed_at,
            expiration_timestamp_ms: (signed_at + self.expiry_seconds as i64) * 1000,
        }
    }

    /// A sixtieth of the URL lifetime, at least a second: a URL lives at least 59/60 of the
    /// configured expiry from the moment it is handed out.
    pub fn signing_window_seconds(&self) -> i64 {
        (self.expiry_seconds as i64 / 60).max(1)
    }

    fn day_key(&self, date: &str) -> HmacSha256 {
        let mut cached = match self.day_key.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match cached.as_ref() {
            Some((day, key)) if day == date => key.clone(),
            _ => {
                let key = signing_key(&self.credential.secret_key, date);
                *cached = Some((date.to_string(), key.clone()));
                key
            }
        }
    }
}

/// Signs many URLs at one instant: per URL, one SHA-256 and one HMAC over short strings.
pub struct PresignBatch<'a> {
    presigner: &'a Presigner,
    /// Keyed with the day's signing key, `AWS4-HMAC-SHA256\n<date>\n<scope>\n` already fed.
    string_to_sign_mac: HmacSha256,
    /// What follows the path in the canonical request: the query, the host, the rest.
    canonical_request_tail: String,
    /// The query string without the signature.
    query: String,
    /// Unix seconds of `X-Amz-Date`.
    signed_at: i64,
    expiration_timestamp_ms: i64,
}

impl PresignBatch<'_> {
    pub fn expiration_timestamp_ms(&self) -> i64 {
        self.expiration_timestamp_ms
    }

    /// Unix seconds of the instant every URL of this batch is signed at.
    pub fn signed_at(&self) -> i64 {
        self.signed_at
    }

    /// The signature of the URL of `bucket/key` (see `write_get_url`).
    pub fn signature(&self, bucket: &str, key: &str) -> [u8; 32] {
        let mut path = BytesMut::with_capacity(bucket.len() + key.len() * 3 + 2);
        write_canonical_path(bucket, key, &mut path);
        self.sign_path(&path)
    }

    /// Appends the presigned GET URL of `bucket/key` to `out`, with `known_signature` when it
    /// was made by `signature` of a batch signed at the same instant; returns its expiry (ms).
    pub fn write_get_url(
        &self,
        bucket: &str,
        key: &str,
        known_signature: Option<&[u8; 32]>,
        out: &mut BytesMut,
    ) -> i64 {
        let presigner = self.presigner;
        out.put_slice(presigner.scheme.as_bytes());
        out.put_slice(b"://");
        out.put_slice(presigner.host.as_bytes());
        let path_start = out.len();
        write_canonical_path(bucket, key, out);
        let signature = match known_signature {
            Some(signature) => *signature,
            None => self.sign_path(&out[path_start..]),
        };
        self.append_query(out, &signature)
    }

    /// Appends the query string with `signature`.
    fn append_query(&self, out: &mut BytesMut, signature: &[u8; 32]) -> i64 {
        out.put_u8(b'?');
        out.put_slice(self.query.as_bytes());
        out.put_slice(b"&X-Amz-Signature=");
        let mut hex_digits = [0u8; 64];
        let _ = hex::encode_to_slice(signature, &mut hex_digits);
        out.put_slice(&hex_digits);
        self.expiration_timestamp_ms
    }

    fn sign_path(&self, canonical_path: &[u8]) -> [u8; 32] {
        let mut canonical_request = Sha256::new();
        canonical_request.update(b"GET\n");
        canonical_request.update(canonical_path);
        canonical_request.update(self.canonical_request_tail.as_bytes());
        let mut digest_hex = [0u8; 64];
        let _ = hex::encode_to_slice(canonical_request.finalize(), &mut digest_hex);
        let mut string_to_sign = self.string_to_sign_mac.clone();
        string_to_sign.update(&digest_hex);
        string_to_sign.finalize().into_bytes().into()
    }
}

/// `/bucket/key`, URI-encoded as SigV4 canonical paths are.
fn write_canonical_path(bucket: &str, key: &str, out: &mut BytesMut) {
    out.put_u8(b'/');
    uri_encode_into(out, bucket, false);
    out.put_u8(b'/');
    uri_encode_into(out, key, false);
}

type HmacSha256 = Hmac<Sha256>;

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The MAC keyed with the SigV4 signing key of `date`.
fn signing_key(secret_key: &str, date: &str) -> HmacSha256 {
    let date_key = hmac_sha256(format!("AWS4{secret_key}").as_bytes(), date.as_bytes());
    let region_key = hmac_sha256(&date_key, SIGNING_REGION.as_bytes());
    let service_key = hmac_sha256(&region_key, b"s3");
    let signing = hmac_sha256(&service_key, b"aws4_request");
    HmacSha256::new_from_slice(&signing).expect("HMAC takes keys of any length")
}

/// SigV4 URI encoding: unreserved characters stay, everything else is `%XX`; `/` stays in
/// paths unless `encode_slash`. One table lookup per byte, written straight into `target`'s
/// spare capacity (a call per run of kept bytes showed in the profile of large queries).
pub fn uri_encode_into(target: &mut BytesMut, text: &str, encode_slash: bool) {
    const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";
    target.reserve(text.len() * 3);
    let spare = target.spare_capacity_mut();
    let mut len = 0;
    for &byte in text.as_bytes() {
        if URI_UNRESERVED[usize::from(byte)] || (byte == b'/' && !encode_slash) {
            spare[len].write(byte);
            len += 1;
        } else {
            spare[len].write(b'%');
            spare[len + 1].write(UPPER_HEX[usize::from(byte >> 4)]);
            spare[len + 2].write(UPPER_HEX[usize::from(byte & 0x0f)]);
            len += 3;
        }
    }
    let written = target.len() + len;
    // SAFETY: the loop initialised the first `len` bytes of the spare capacity.
    unsafe { target.set_len(written) };
}

/// The bytes SigV4 leaves unencoded: ASCII letters and digits, `-`, `_`, `.`, `~`.
const URI_UNRESERVED: [bool; 256] = {
    let mut unreserved = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        unreserved[byte] =
            (byte as u8).is_ascii_alphanumeric() || matches!(byte as u8, b'-' | b'_' | b'.' | b'~');
        byte += 1;
    }
    unreserved
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The presigned-URL example of the AWS S3 SigV4 documentation.
    #[test]
    fn matches_the_aws_documentation_example() {
        let presigner = Presigner::new(
            SharingCredential {
                access_key: "AKIAIOSFODNN7EXAMPLE".into(),
                secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            },
            "https://examplebucket.s3.amazonaws.com",
            86_400,
        );
        let now = time::macros::datetime!(2013-05-24 00:00:00 UTC);
        let batch = presigner.batch(now);
        let mut url = BytesMut::from("https://examplebucket.s3.amazonaws.com/test.txt");
        let signature = batch.sign_path(b"/test.txt");
        let expiration_timestamp_ms = batch.append_query(&mut url, &signature);
        let url = PresignedUrl {
            url: String::from_utf8(url.to_vec()).unwrap(),
            expiration_timestamp_ms,
        };
        assert!(
            url.url.ends_with(
                "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
            ),
            "{}",
            url.url
        );
        assert_eq!(
            url.expiration_timestamp_ms,
            (now.unix_timestamp() + 86_400) * 1000
        );
    }

    /// The signer against ring's HMAC and SHA-256 over the whole SigV4 construction.
    #[test]
    fn signatures_match_ring_as_the_oracle() {
        use ring::{digest, hmac};
        let presigner = Presigner::new(SharingCredential::derive(b"k"), "http://h:9000", 3600);
        let now = time::macros::datetime!(2026-11-28 10:07:31 UTC);
        let batch = presigner.batch(now);
        let step = |key: &[u8], data: &[u8]| {
            hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
                .as_ref()
                .to_vec()
        };
        let secret = format!("AWS4{}", presigner.credential().secret_key);
        let mut key = step(secret.as_bytes(), b"20261128");
        for part in ["us-east-1", "s3", "aws4_request"] {
            key = step(&key, part.as_bytes());
        }
        for path in ["/lake/t/a.parquet", "/lake/t/p%3D1/%C3%A9.parquet", "/b/k"] {
            let canonical = format!(
                "GET\n{path}\n{}\nhost:h:9000\n\nhost\nUNSIGNED-PAYLOAD",
                batch.query
            );
            let request = hex::encode(digest::digest(&digest::SHA256, canonical.as_bytes()));
            let string_to_sign = format!(
                "AWS4-HMAC-SHA256\n20261128T100700Z\n20261128/us-east-1/s3/aws4_request\n{request}"
            );
            assert_eq!(
                batch.sign_path(path.as_bytes()).to_vec(),
                step(&key, string_to_sign.as_bytes())
            );
        }
    }

    #[test]
    fn urls_are_signed_at_the_start_of_a_sixtieth_of_their_lifetime() {
        let presigner = Presigner::new(SharingCredential::derive(b"s"), "http://h:1", 3600);
        assert_eq!(presigner.signing_window_seconds(), 60);
        let start = time::macros::datetime!(2026-11-28 10:07:00 UTC);
        let first = presigner.batch(start + time::Duration::seconds(1));
        let last = presigner.batch(start + time::Duration::seconds(59));
        let next = presigner.batch(start + time::Duration::seconds(60));
        assert_eq!(first.signed_at(), start.unix_timestamp());
        assert_eq!(
            first.expiration_timestamp_ms(),
            (start.unix_timestamp() + 3600) * 1000
        );
        let url = |batch: &PresignBatch<'_>, known: Option<&[u8; 32]>| {
            let mut url = BytesMut::new();
            batch.write_get_url("lake", "t/a b.parquet", known, &mut url);
            url
        };
        assert_eq!(url(&first, None), url(&last, None));
        assert_ne!(url(&first, None), url(&next, None));
        let kept = first.signature("lake", "t/a b.parquet");
        assert_eq!(url(&last, Some(&kept)), url(&first, None));
        let short = Presigner::new(SharingCredential::derive(b"s"), "http://h:1", 30);
        assert_eq!(short.signing_window_seconds(), 1);
    }

    #[test]
    fn encodes_keys_and_keeps_path_slashes() {
        let presigner = Presigner::new(
            SharingCredential::derive(b"secret"),
            "http://127.0.0.1:9000/_delta-sharing/v1",
            3600,
        );
        let url = presigner.presign_get(
            "lake",
            "t/date=2024-01-01/a b%c=d.parquet",
            OffsetDateTime::now_utc(),
        );
        assert!(url
            .url
            .starts_with("http://127.0.0.1:9000/lake/t/date%3D2024-01-01/a%20b%25c%3Dd.parquet?"));
        assert!(url.url.contains("X-Amz-Expires=3600"));
    }

    #[test]
    fn uri_encoding_keeps_unreserved_runs_and_encodes_every_other_byte() {
        let mut encoded = BytesMut::new();
        uri_encode_into(&mut encoded, "a/é b~.parquet€", false);
        assert_eq!(encoded, "a/%C3%A9%20b~.parquet%E2%82%AC");
        encoded.clear();
        uri_encode_into(&mut encoded, "k/ü", true);
        assert_eq!(encoded, "k%2F%C3%BC");
    }

    #[test]
    fn credential_is_stable_per_secret() {
        assert_eq!(
            SharingCredential::derive(b"a"),
            SharingCredential::derive(b"a")
        );
        assert_ne!(
            SharingCredential::derive(b"a"),
            SharingCredential::derive(b"b")
        );
    }
}
