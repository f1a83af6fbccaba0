//! Opaque, tamper-evident tokens (`seal`/`open`), the page tokens of the list routes, and
//! the checks every query page token (snapshot or version range) gets with the reference
//! server's wording (`check_query_page`, `query_page_expiry_ms`, `parameters_digest`).
//!
//! A token is `base64url(json) "." base64url(hmac)`, keyed with the node secret. A page token names
//! what it pages (kind, share id, schema) and the last item returned, never the page size,
//! so a client may change `maxResults` between pages. A token whose MAC fails, that does not
//! decode, or that belongs to another listing is refused with 400.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SharingError};

/// Bytes of the truncated MAC.
const MAC_BYTES: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PagePosition {
    /// What is paged: "shares", "schemas", "tables" or "all-tables".
    #[serde(rename = "k")]
    pub kind: String,
    /// Share id ("" for the share list).
    #[serde(rename = "s")]
    pub share_id: String,
    /// Schema name key ("" unless listing one schema's tables).
    #[serde(rename = "c")]
    pub schema_key: String,
    /// Sort key of the last item returned.
    #[serde(rename = "a")]
    pub after: String,
}

/// How long a query page token can be used (the reference server's TTL: 3 days).
pub const QUERY_PAGE_SECONDS: i64 = 3 * 24 * 3600;

/// The expiry (ms since the epoch) of a query page token made now.
pub fn query_page_expiry_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp() + QUERY_PAGE_SECONDS) * 1000
}

/// A digest of the request parameters a query page token pins (every page must repeat them).
pub fn parameters_digest(parameters: &serde_json::Value) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, parameters.to_string().as_bytes());
    hex::encode(&digest.as_ref()[..16])
}

/// A page token whose position can no longer be served (the reference's wording).
pub fn page_token_expired() -> SharingError {
    SharingError::invalid("The page token has expired")
}

/// What a query page token pinned, checked against the request it came with: the same
/// table, not expired, the same parameters.
pub fn check_query_page(
    pinned_table_id: &str,
    expires_ms: i64,
    pinned_parameters: &str,
    table_id: &str,
    parameters: &str,
) -> Result<()> {
    if pinned_table_id != table_id {
        return Err(SharingError::invalid(
            "The table specified in the page token does not match the table being queried",
        ));
    }
    if expires_ms <= time::OffsetDateTime::now_utc().unix_timestamp() * 1000 {
        return Err(page_token_expired());
    }
    if pinned_parameters != parameters {
        return Err(SharingError::invalid(
            "Query parameter mismatch detected for the next page query",
        ));
    }
    Ok(())
}

/// Seals `value` into a token only the holder of `secret` can have made.
pub fn seal<T: Serialize>(secret: &[u8], value: &T) -> String {
    let payload = serde_json::to_vec(value).unwrap_or_default();
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, &payload);
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(&tag.as_ref()[..MAC_BYTES])
    )
}

/// Opens a token made by `seal` with the same secret; `None` when forged, truncated or
/// not a `T`.
pub fn open<T: for<'de> Deserialize<'de>>(secret: &[u8], token: &str) -> Option<T> {
    let (payload, tag) = token.split_once('.')?;
    let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let full = hmac::sign(&key, &payload);
    let authentic = tag.len() == MAC_BYTES
        && bool::from(subtle::ConstantTimeEq::ct_eq(
            &full.as_ref()[..MAC_BYTES],
            &tag[..],
        ));
    if !authentic {
        return None;
    }
    serde_json::from_slice(&payload).ok()
}

pub fn encode_page_token(secret: &[u8], position: &PagePosition) -> String {
    seal(secret, position)
}

/// Decodes a token and checks that it belongs to `expected` (kind, share, schema).
pub fn decode_page_token(secret: &[u8], token: &str, expected: &PagePosition) -> Result<String> {
    let invalid = || SharingError::invalid("invalid 'nextPageToken'");
    let position: PagePosition = open(secret, token).ok_or_else(invalid)?;
    if position.kind != expected.kind
        || position.share_id != expected.share_id
        || position.schema_key != expected.schema_key
    {
        return Err(invalid());
    }
    Ok(position.after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(kind: &str, share: &str, after: &str) -> PagePosition {
        PagePosition {
            kind: kind.into(),
            share_id: share.into(),
            schema_key: String::new(),
            after: after.into(),
        }
    }

    #[test]
    fn round_trip() {
        let token = encode_page_token(b"k", &position("all-tables", "s1", "x\u{0}y"));
        let after = decode_page_token(b"k", &token, &position("all-tables", "s1", "")).unwrap();
        assert_eq!(after, "x\u{0}y");
    }

    #[test]
    fn refuses_forged_truncated_and_foreign_tokens() {
        let token = encode_page_token(b"k", &position("tables", "s1", "a"));
        let expected = position("tables", "s1", "");
        assert!(decode_page_token(b"other-key", &token, &expected).is_err());
        assert!(decode_page_token(b"k", &token[..token.len() - 3], &expected).is_err());
        assert!(decode_page_token(b"k", "garbage", &expected).is_err());
        let forged = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"k":"tables","s":"s1","c":"","a":"z"}"#),
            token.split_once('.').unwrap().1
        );
        assert!(decode_page_token(b"k", &forged, &expected).is_err());
        assert!(decode_page_token(b"k", &token, &position("tables", "s2", "")).is_err());
        assert!(decode_page_token(b"k", &token, &position("schemas", "s1", "")).is_err());
    }
}
