//! Presigned GET URLs for shared files, on the node's own S3 path.
//!
//! URLs are SigV4 query-signed (path-style, the sharing endpoint's host, `X-Amz-Signature` in
//! the query: delta-kernel treats only such URLs as remote). They are signed with the node's
//! sharing credential, which the S3 layer accepts for GET and HEAD of files inside shared
//! tables only. The SigV4 signing key is derived once per UTC day and reused.
//!
//! Invariant: the signature covers the method, host, path and expiry, so a URL works only for
//! the object it names and only until it expires.

use std::cell::RefCell;
use std::sync::Mutex;

use ring::hmac;
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
        let key = hmac::Key::new(hmac::HMAC_SHA256, node_secret);
        let access = hmac::sign(&key, b"lakeshare presign access key");
        let secret = hmac::sign(&key, b"lakeshare presign secret key");
        SharingCredential {
            access_key: format!("LSSHARE{}", hex::encode_upper(&access.as_ref()[..8])),
            secret_key: hex::encode(secret.as_ref()),
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
    day_key: Mutex<Option<(String, hmac::Key)>>,
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
        let mut url = String::new();
        let expiration_timestamp_ms = self.batch(now).write_get_url(bucket, key, &mut url);
        PresignedUrl {
            url,
            expiration_timestamp_ms,
        }
    }

    /// Everything the URLs signed at `now` share, computed once for a whole response.
    pub fn batch(&self, now: OffsetDateTime) -> PresignBatch<'_> {
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
        let mut credential = String::new();
        uri_encode_into(
            &mut credential,
            &format!("{}/{scope}", self.credential.access_key),
            true,
        );
        let query = format!(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={credential}&X-Amz-Date={amz_date}\
             &X-Amz-Expires={}&X-Amz-SignedHeaders=host",
            self.expiry_seconds
        );
        PresignBatch {
            presigner: self,
            signing_key: self.day_key(&date),
            string_to_sign_head: format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n"),
            query,
            expiration_timestamp_ms: (now.unix_timestamp() + self.expiry_seconds as i64) * 1000,
            canonical_request: RefCell::new(String::new()),
        }
    }

    fn day_key(&self, date: &str) -> hmac::Key {
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
    signing_key: hmac::Key,
    /// `AWS4-HMAC-SHA256\n<date>\n<scope>\n`.
    string_to_sign_head: String,
    /// The query string without the signature.
    query: String,
    expiration_timestamp_ms: i64,
    canonical_request: RefCell<String>,
}

impl PresignBatch<'_> {
    pub fn expiration_timestamp_ms(&self) -> i64 {
        self.expiration_timestamp_ms
    }

    /// Appends the presigned GET URL of `bucket/key` to `out`; returns its expiry (ms).
    pub fn write_get_url(&self, bucket: &str, key: &str, out: &mut String) -> i64 {
        let presigner = self.presigner;
        out.push_str(&presigner.scheme);
        out.push_str("://");
        out.push_str(&presigner.host);
        let path_start = out.len();
        out.push('/');
        uri_encode_into(out, bucket, false);
        out.push('/');
        uri_encode_into(out, key, false);
        self.append_query(out, path_start)
    }

    /// Appends the query with the signature of the canonical path `out[path_start..]`.
    fn append_query(&self, out: &mut String, path_start: usize) -> i64 {
        let signature = self.sign_path(&out[path_start..]);
        out.push('?');
        out.push_str(&self.query);
        out.push_str("&X-Amz-Signature=");
        let mut hex_digits = [0u8; 64];
        for (pair, byte) in hex_digits.chunks_exact_mut(2).zip(signature.as_ref()) {
            pair[0] = HEX_DIGITS[usize::from(byte >> 4)];
            pair[1] = HEX_DIGITS[usize::from(byte & 0x0f)];
        }
        out.push_str(std::str::from_utf8(&hex_digits).unwrap_or_default());
        self.expiration_timestamp_ms
    }

    fn sign_path(&self, canonical_path: &str) -> hmac::Tag {
        let mut canonical_request = self.canonical_request.borrow_mut();
        canonical_request.clear();
        canonical_request.push_str("GET\n");
        canonical_request.push_str(canonical_path);
        canonical_request.push('\n');
        canonical_request.push_str(&self.query);
        canonical_request.push_str("\nhost:");
        canonical_request.push_str(&self.presigner.host);
        canonical_request.push_str("\n\nhost\nUNSIGNED-PAYLOAD");
        let request_digest =
            ring::digest::digest(&ring::digest::SHA256, canonical_request.as_bytes());
        let mut context = hmac::Context::with_key(&self.signing_key);
        context.update(self.string_to_sign_head.as_bytes());
        let mut digest_hex = [0u8; 64];
        for (pair, byte) in digest_hex.chunks_exact_mut(2).zip(request_digest.as_ref()) {
            pair[0] = HEX_DIGITS[usize::from(byte >> 4)];
            pair[1] = HEX_DIGITS[usize::from(byte & 0x0f)];
        }
        context.update(&digest_hex);
        context.sign()
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn signing_key(secret_key: &str, date: &str) -> hmac::Key {
    let step = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
    };
    let date_key = step(format!("AWS4{secret_key}").as_bytes(), date);
    let region_key = step(date_key.as_ref(), SIGNING_REGION);
    let service_key = step(region_key.as_ref(), "s3");
    let signing = step(service_key.as_ref(), "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, signing.as_ref())
}

/// SigV4 URI encoding: unreserved characters stay, everything else is `%XX`; `/` stays in
/// paths unless `encode_slash`. Runs of characters that stay are copied at once.
pub fn uri_encode_into(target: &mut String, text: &str, encode_slash: bool) {
    const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = text.as_bytes();
    let mut run_start = 0;
    for (position, &byte) in bytes.iter().enumerate() {
        let keep = byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_' | b'.' | b'~')
            || (byte == b'/' && !encode_slash);
        if keep {
            continue;
        }
        if position > run_start {
            target.push_str(&text[run_start..position]);
        }
        target.push('%');
        target.push(char::from(UPPER_HEX[usize::from(byte >> 4)]));
        target.push(char::from(UPPER_HEX[usize::from(byte & 0x0f)]));
        run_start = position + 1;
    }
    target.push_str(&text[run_start..]);
}

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
        let mut url = String::from("https://examplebucket.s3.amazonaws.com/test.txt");
        let expiration_timestamp_ms =
            batch.append_query(&mut url, "https://examplebucket.s3.amazonaws.com".len());
        let url = PresignedUrl {
            url,
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
        let mut encoded = String::new();
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
