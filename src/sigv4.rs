//! A small AWS Signature Version 4 signer for the admin client (`lakeshare admin ...`).
//!
//! Invariant: the canonical request is built exactly as the server side (s3s) rebuilds it:
//! lower-case sorted signed headers with trimmed values, the query sorted by encoded name
//! then value, every byte outside RFC 3986's unreserved set percent-encoded.

use ring::{digest, hmac};
use time::OffsetDateTime;

/// Hex SHA-256 of an empty payload.
#[cfg(test)]
const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Who signs, where.
#[derive(Clone, Debug)]
pub struct SigningKey<'a> {
    pub access_key: &'a str,
    pub secret_key: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// The parts of a request that the signature covers.
#[derive(Clone, Debug)]
pub struct CanonicalParts<'a> {
    pub method: &'a str,
    /// The path, already URI-encoded as sent on the wire.
    pub path: &'a str,
    /// Query pairs, not encoded.
    pub query: &'a [(String, String)],
    /// Headers to sign (must include `host` and `x-amz-date`), any case.
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body (or `UNSIGNED-PAYLOAD`).
    pub payload_sha256: &'a str,
}

/// `YYYYMMDDTHHMMSSZ`, the `x-amz-date` format.
pub fn amz_date(time: OffsetDateTime) -> String {
    let time = time.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    )
}

/// The `Authorization` header value for `parts` signed at `amz_date` (`x-amz-date`).
pub fn authorization(key: &SigningKey<'_>, parts: &CanonicalParts<'_>, amz_date: &str) -> String {
    let (signed_headers, signature) = signature(key, parts, amz_date);
    let scope = credential_scope(key, amz_date);
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, \
         Signature={signature}",
        key.access_key
    )
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

/// Percent-encodes everything outside RFC 3986's unreserved set (`/` too).
pub fn uri_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The encoded query string in canonical order (also what the client should send).
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k), uri_encode(v)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn signature(key: &SigningKey<'_>, parts: &CanonicalParts<'_>, amz_date: &str) -> (String, String) {
    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
            (name.to_ascii_lowercase(), value)
        })
        .collect();
    headers.sort();
    let canonical_headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect();
    let signed_headers = headers
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>();
    let signed_headers = signed_headers.join(";");
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        parts.method,
        parts.path,
        canonical_query(parts.query),
        parts.payload_sha256
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{}\n{}",
        credential_scope(key, amz_date),
        sha256_hex(canonical_request.as_bytes())
    );
    let date = &amz_date[..amz_date.len().min(8)];
    let secret = format!("AWS4{}", key.secret_key);
    let date_key = hmac_sign(secret.as_bytes(), date.as_bytes());
    let region_key = hmac_sign(&date_key, key.region.as_bytes());
    let service_key = hmac_sign(&region_key, key.service.as_bytes());
    let signing_key = hmac_sign(&service_key, b"aws4_request");
    let signature = hex::encode(hmac_sign(&signing_key, string_to_sign.as_bytes()));
    (signed_headers, signature)
}

fn credential_scope(key: &SigningKey<'_>, amz_date: &str) -> String {
    let date = &amz_date[..amz_date.len().min(8)];
    format!("{date}/{}/{}/aws4_request", key.region, key.service)
}

fn hmac_sign(key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, data).as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// AWS's published S3 example: "GET Object" with a Range header
    /// (Amazon S3 API reference, "Signature Calculations for the Authorization Header").
    #[test]
    fn matches_aws_s3_get_object_example() {
        let key = SigningKey {
            access_key: "AKIAIOSFODNN7EXAMPLE",
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            service: "s3",
        };
        let headers = pairs(&[
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_PAYLOAD_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ]);
        let parts = CanonicalParts {
            method: "GET",
            path: "/test.txt",
            query: &[],
            headers: &headers,
            payload_sha256: EMPTY_PAYLOAD_SHA256,
        };
        let header = authorization(&key, &parts, "20130524T000000Z");
        assert_eq!(
            header,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    /// AWS's published SigV4 test request (IAM ListUsers, General Reference).
    #[test]
    fn matches_aws_iam_list_users_example() {
        let key = SigningKey {
            access_key: "AKIDEXAMPLE",
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            service: "iam",
        };
        let headers = pairs(&[
            (
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
            ("Host", "iam.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ]);
        let query = pairs(&[("Version", "2010-05-08"), ("Action", "ListUsers")]);
        let parts = CanonicalParts {
            method: "GET",
            path: "/",
            query: &query,
            headers: &headers,
            payload_sha256: EMPTY_PAYLOAD_SHA256,
        };
        let header = authorization(&key, &parts, "20150830T123600Z");
        assert!(
            header.ends_with(
                "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
            ),
            "{header}"
        );
    }

    #[test]
    fn query_is_encoded_and_sorted() {
        let query = pairs(&[("prefix", "a b/c"), ("bucket", "x")]);
        assert_eq!(canonical_query(&query), "bucket=x&prefix=a%20b%2Fc");
    }

    #[test]
    fn amz_date_format() {
        let time = time::macros::datetime!(2013-05-24 00:00:00 UTC);
        assert_eq!(amz_date(time), "20130524T000000Z");
    }
}
