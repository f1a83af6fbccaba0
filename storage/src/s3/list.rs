//! Listing helpers: opaque continuation tokens, the `after` bound handed to the node, and
//! `encoding-type=url` key encoding.
//!
//! Invariant: a continuation token is the base64 of the last key or common prefix of the
//! previous page, nothing more, so a page costs the same whatever its position.

use base64::Engine;

use crate::error::StorageError;

/// Default and largest `max-keys` (S3's).
pub const LIST_KEYS_MAX: usize = 1000;

/// Opaque token for the page after `last`.
pub fn encode_continuation(last: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last.as_bytes())
}

/// The key a continuation token stands for.
pub fn decode_continuation(token: &str) -> Result<String, StorageError> {
    let invalid =
        || StorageError::InvalidArgument("The continuation token provided is incorrect".into());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| invalid())?;
    String::from_utf8(bytes).map_err(|_| invalid())
}

/// The exclusive lower bound for the node. When the previous page ended on a common prefix
/// (`last` ends with the delimiter), every key under that prefix is skipped too, by
/// bounding just above the prefix's whole key range.
pub fn after_bound(last: &str, delimiter: Option<&str>) -> String {
    match delimiter {
        Some(delimiter) if !delimiter.is_empty() && last.ends_with(delimiter) => {
            format!("{last}{}", char::MAX)
        }
        _ => last.to_owned(),
    }
}

/// `max-keys` as S3 reads it: absent → default, negative → error, above the cap → cap.
pub fn max_keys(requested: Option<i32>) -> Result<usize, StorageError> {
    match requested {
        None => Ok(LIST_KEYS_MAX),
        Some(n) if n < 0 => Err(StorageError::InvalidArgument(
            "max-keys cannot be negative".into(),
        )),
        Some(n) => Ok((n as usize).min(LIST_KEYS_MAX)),
    }
}

/// URL-encodes a key for `encoding-type=url` (RFC 3986 unreserved characters and `/` stay).
pub fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_round_trips_any_key() {
        for key in ["a", "dir/sub/key.parquet", "ünï cödé/ + & = ?", ""] {
            assert_eq!(decode_continuation(&encode_continuation(key)).unwrap(), key);
        }
        assert!(decode_continuation("!!!").is_err());
    }

    #[test]
    fn after_bound_skips_a_common_prefix() {
        assert_eq!(after_bound("a/b", Some("/")), "a/b");
        let bound = after_bound("a/", Some("/"));
        assert!(bound.as_str() > "a/zzzz/deep/key");
        assert!(bound.as_str() < "a0");
        assert_eq!(after_bound("a/", None), "a/");
    }

    #[test]
    fn max_keys_defaults_and_caps() {
        assert_eq!(max_keys(None).unwrap(), 1000);
        assert_eq!(max_keys(Some(5000)).unwrap(), 1000);
        assert_eq!(max_keys(Some(0)).unwrap(), 0);
        assert!(max_keys(Some(-1)).is_err());
    }

    #[test]
    fn url_encoding_keeps_slashes_and_unreserved() {
        assert_eq!(url_encode("a b/c+d&é"), "a%20b/c%2Bd%26%C3%A9");
        assert_eq!(url_encode("plain-key_1.~"), "plain-key_1.~");
    }
}
