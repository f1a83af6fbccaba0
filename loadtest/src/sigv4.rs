//! AWS Signature Version 4 for S3, just enough for the load harness: header auth
//! (`Authorization: AWS4-HMAC-SHA256 ...`) and presigned query auth.
//!
//! Invariant: the canonical URI passed in is already encoded with [`encode_path`], and the
//! request sent on the wire carries exactly that path, so the server rebuilds the same
//! canonical request. Checked against AWS's published examples in the tests below.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// The payload hash S3 accepts when the body is not hashed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Access key, secret key and region of the signer.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

/// The instant a request is signed at, in the two forms SigV4 uses.
#[derive(Clone, Debug)]
pub struct SigningTime {
    /// `YYYYMMDDTHHMMSSZ`, the value of `x-amz-date`.
    pub amz_date: String,
    /// `YYYYMMDD`, the date of the credential scope.
    pub date: String,
}

impl SigningTime {
    pub fn now() -> anyhow::Result<Self> {
        Self::at(OffsetDateTime::now_utc())
    }

    pub fn at(instant: OffsetDateTime) -> anyhow::Result<Self> {
        let format =
            time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
        let amz_date = instant.to_offset(time::UtcOffset::UTC).format(&format)?;
        let date = amz_date[..8].to_string();
        Ok(Self { amz_date, date })
    }
}

/// Returns the value of the `Authorization` header.
///
/// `headers` maps lower-case names to values and must hold every header to sign, including
/// `host`, `x-amz-date` and `x-amz-content-sha256`.
pub fn authorization(
    credentials: &Credentials,
    time: &SigningTime,
    method: &str,
    canonical_uri: &str,
    query: &[(&str, &str)],
    headers: &BTreeMap<String, String>,
    payload_hash: &str,
) -> String {
    let signed_headers = headers
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}:{}\n", value.trim()))
        .collect();
    let canonical_request = format!(
        "{method}\n{canonical_uri}\n{}\n{canonical_headers}\n{signed_headers}\n{payload_hash}",
        canonical_query(query)
    );
    let signature = signature(credentials, time, &canonical_request);
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{},SignedHeaders={signed_headers},Signature={signature}",
        credentials.access_key,
        scope(credentials, time)
    )
}

/// Returns the full query string of a presigned URL that signs only `host`, with an
/// unsigned payload, valid for `expires_seconds`.
pub fn presigned_query(
    credentials: &Credentials,
    time: &SigningTime,
    method: &str,
    host: &str,
    canonical_uri: &str,
    expires_seconds: u64,
) -> String {
    let credential = format!("{}/{}", credentials.access_key, scope(credentials, time));
    let expires = expires_seconds.to_string();
    let query = [
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        ("X-Amz-Credential", credential.as_str()),
        ("X-Amz-Date", time.amz_date.as_str()),
        ("X-Amz-Expires", expires.as_str()),
        ("X-Amz-SignedHeaders", "host"),
    ];
    let canonical_query = canonical_query(&query);
    let canonical_request = format!(
        "{method}\n{canonical_uri}\n{canonical_query}\nhost:{host}\n\nhost\n{UNSIGNED_PAYLOAD}"
    );
    let signature = signature(credentials, time, &canonical_request);
    format!("{canonical_query}&X-Amz-Signature={signature}")
}

/// Encodes an object path for the canonical request and the wire: every byte except the
/// unreserved set and `/` becomes `%XX`.
pub fn encode_path(path: &str) -> String {
    encode(path, true)
}

/// Hex SHA-256 of `bytes`, the form of `x-amz-content-sha256`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn scope(credentials: &Credentials, time: &SigningTime) -> String {
    format!("{}/{}/s3/aws4_request", time.date, credentials.region)
}

fn signature(credentials: &Credentials, time: &SigningTime, canonical_request: &str) -> String {
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{}\n{}",
        time.amz_date,
        scope(credentials, time),
        sha256_hex(canonical_request.as_bytes())
    );
    let secret = format!("AWS4{}", credentials.secret_key);
    let date_key = hmac_sha256(secret.as_bytes(), time.date.as_bytes());
    let region_key = hmac_sha256(&date_key, credentials.region.as_bytes());
    let service_key = hmac_sha256(&region_key, b"s3");
    let signing_key = hmac_sha256(&service_key, b"aws4_request");
    hex::encode(hmac_sha256(&signing_key, string_to_sign.as_bytes()))
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(name, value)| (encode(name, false), encode(value, false)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(text: &str, keep_slash: bool) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        let unreserved = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~');
        if unreserved || (keep_slash && byte == b'/') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's example credentials from the S3 SigV4 documentation.
    fn example_credentials() -> Credentials {
        Credentials {
            access_key: "AKIAIOSFODNN7EXAMPLE".to_string(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_string(),
            region: "us-east-1".to_string(),
        }
    }

    fn example_time() -> SigningTime {
        let instant = time::macros::datetime!(2013-05-24 00:00:00 UTC);
        SigningTime::at(instant).unwrap()
    }

    #[test]
    fn signing_time_formats() {
        let time = example_time();
        assert_eq!(time.amz_date, "20130524T000000Z");
        assert_eq!(time.date, "20130524");
    }

    /// "Example: GET Object" of AWS's header-based SigV4 documentation.
    #[test]
    fn header_auth_matches_aws_get_object_example() {
        let empty_hash = sha256_hex(b"");
        let headers: BTreeMap<String, String> = [
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", empty_hash.as_str()),
            ("x-amz-date", "20130524T000000Z"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
        let value = authorization(
            &example_credentials(),
            &example_time(),
            "GET",
            "/test.txt",
            &[],
            &headers,
            &empty_hash,
        );
        assert_eq!(
            value,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/\
             aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    /// AWS's query-string (presigned URL) documentation example.
    #[test]
    fn presign_matches_aws_example() {
        let query = presigned_query(
            &example_credentials(),
            &example_time(),
            "GET",
            "examplebucket.s3.amazonaws.com",
            "/test.txt",
            86_400,
        );
        assert_eq!(
            query,
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524\
             %2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400\
             &X-Amz-SignedHeaders=host&X-Amz-Signature=\
             aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn path_encoding_keeps_slashes_and_escapes_the_rest() {
        assert_eq!(encode_path("/bucket/a b/c+d~e"), "/bucket/a%20b/c%2Bd~e");
        assert_eq!(canonical_query(&[("b", "x/y"), ("a", "1")]), "a=1&b=x%2Fy");
    }
}
