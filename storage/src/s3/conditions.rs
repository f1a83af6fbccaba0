//! HTTP preconditions (`If-Match`, `If-None-Match`, `If-Modified-Since`,
//! `If-Unmodified-Since`) and byte ranges, decided against an object's metadata.
//!
//! Invariant: the order of evaluation is RFC 9110 §13.2.2's, which S3 follows: If-Match,
//! then If-Unmodified-Since (only without If-Match), then If-None-Match, then
//! If-Modified-Since (only without If-None-Match). Times compare at whole seconds, the
//! precision of HTTP dates.

use s3s::dto::{ETagCondition, GetObjectInput, HeadObjectInput, Range, Timestamp};
use s3s::{S3Error, S3ErrorCode, S3Result};
use time::OffsetDateTime;

use crate::error::StorageError;
use crate::node::ByteRange;
use crate::s3::error::{to_s3_error, wire_error};

/// The conditional headers of a read.
#[derive(Clone, Debug, Default)]
pub struct ReadConditions {
    pub if_match: Option<ETagCondition>,
    pub if_none_match: Option<ETagCondition>,
    pub if_modified_since: Option<Timestamp>,
    pub if_unmodified_since: Option<Timestamp>,
}

/// What the conditions decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Proceed,
    /// 304
    NotModified,
    /// 412
    PreconditionFailed,
}

impl ReadConditions {
    /// The conditional headers of a GET.
    pub fn of_get(input: &GetObjectInput) -> ReadConditions {
        ReadConditions {
            if_match: input.if_match.clone(),
            if_none_match: input.if_none_match.clone(),
            if_modified_since: input.if_modified_since.clone(),
            if_unmodified_since: input.if_unmodified_since.clone(),
        }
    }

    /// The conditional headers of a HEAD.
    pub fn of_head(input: &HeadObjectInput) -> ReadConditions {
        ReadConditions {
            if_match: input.if_match.clone(),
            if_none_match: input.if_none_match.clone(),
            if_modified_since: input.if_modified_since.clone(),
            if_unmodified_since: input.if_unmodified_since.clone(),
        }
    }

    /// `decide` as the S3 answer of a read: `Ok` to proceed, else 304 or 412.
    pub fn check(&self, etag: &str, modified: OffsetDateTime) -> S3Result<()> {
        match self.decide(etag, modified) {
            Decision::Proceed => Ok(()),
            Decision::NotModified => Err(wire_error(S3ErrorCode::NotModified, 304, "Not Modified")),
            Decision::PreconditionFailed => Err(to_s3_error(StorageError::PreconditionFailed)),
        }
    }

    /// Decides for an object with `etag` (unquoted) last modified at `modified`.
    pub fn decide(&self, etag: &str, modified: OffsetDateTime) -> Decision {
        let modified_seconds = modified.unix_timestamp();
        match &self.if_match {
            Some(condition) => {
                if !etag_matches(condition, etag) {
                    return Decision::PreconditionFailed;
                }
            }
            None => {
                if let Some(since) = &self.if_unmodified_since {
                    if modified_seconds > seconds(since) {
                        return Decision::PreconditionFailed;
                    }
                }
            }
        }
        match &self.if_none_match {
            Some(condition) => {
                if etag_matches(condition, etag) {
                    return Decision::NotModified;
                }
            }
            None => {
                if let Some(since) = &self.if_modified_since {
                    if modified_seconds <= seconds(since) {
                        return Decision::NotModified;
                    }
                }
            }
        }
        Decision::Proceed
    }
}

/// Whether `condition` holds for an object with `etag` (unquoted).
pub fn etag_matches(condition: &ETagCondition, etag: &str) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(wanted) => wanted.value().trim_matches('"') == etag,
    }
}

/// Resolves a parsed `Range` against an object of `size` bytes; `None` when it cannot be
/// satisfied (416).
pub fn resolve_range(range: &Range, size: u64) -> Option<ByteRange> {
    let resolved = range.check(size).ok()?;
    if resolved.is_empty() {
        return None;
    }
    Some(ByteRange {
        first: resolved.start,
        last: resolved.end - 1,
    })
}

/// 416: the range lies outside the object.
pub fn invalid_range() -> S3Error {
    wire_error(
        S3ErrorCode::InvalidRange,
        416,
        "The requested range is not satisfiable",
    )
}

/// `Content-Range` for a served range.
pub fn content_range(range: ByteRange, size: u64) -> String {
    format!("bytes {}-{}/{}", range.first, range.last, size)
}

fn seconds(timestamp: &Timestamp) -> i64 {
    OffsetDateTime::from(timestamp.clone()).unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::dto::ETag;
    use time::macros::datetime;

    fn tag(value: &str) -> ETagCondition {
        ETagCondition::ETag(ETag::Strong(value.to_owned()))
    }

    const MODIFIED: OffsetDateTime = datetime!(2026-01-01 12:00:00.5 UTC);

    #[test]
    fn ranges_resolve_like_s3() {
        let parse = |s: &str| Range::parse(s).unwrap();
        let range = |first, last| Some(ByteRange { first, last });
        assert_eq!(resolve_range(&parse("bytes=0-9"), 100), range(0, 9));
        assert_eq!(resolve_range(&parse("bytes=90-200"), 100), range(90, 99));
        assert_eq!(resolve_range(&parse("bytes=10-"), 100), range(10, 99));
        assert_eq!(resolve_range(&parse("bytes=-10"), 100), range(90, 99));
        assert_eq!(resolve_range(&parse("bytes=-200"), 100), range(0, 99));
        assert_eq!(resolve_range(&parse("bytes=100-"), 100), None);
        assert_eq!(resolve_range(&parse("bytes=0-0"), 0), None);
        assert_eq!(resolve_range(&parse("bytes=-0"), 100), None);
        assert!(Range::parse("bytes=5-1").is_err());
        assert_eq!(
            content_range(
                ByteRange {
                    first: 90,
                    last: 99
                },
                100
            ),
            "bytes 90-99/100"
        );
    }

    #[test]
    fn if_match_and_if_none_match() {
        let decide = |c: ReadConditions| c.decide("abc", MODIFIED);
        let base = ReadConditions::default();
        assert_eq!(decide(base.clone()), Decision::Proceed);
        let c = ReadConditions {
            if_match: Some(tag("abc")),
            ..base.clone()
        };
        assert_eq!(decide(c), Decision::Proceed);
        let c = ReadConditions {
            if_match: Some(tag("zzz")),
            ..base.clone()
        };
        assert_eq!(decide(c), Decision::PreconditionFailed);
        let c = ReadConditions {
            if_none_match: Some(tag("abc")),
            ..base.clone()
        };
        assert_eq!(decide(c), Decision::NotModified);
        let c = ReadConditions {
            if_none_match: Some(ETagCondition::Any),
            ..base.clone()
        };
        assert_eq!(decide(c), Decision::NotModified);
        let c = ReadConditions {
            if_none_match: Some(tag("zzz")),
            ..base
        };
        assert_eq!(decide(c), Decision::Proceed);
    }

    #[test]
    fn dates_compare_at_whole_seconds_and_yield_to_etags() {
        let at = |t: OffsetDateTime| Some(Timestamp::from(t));
        let same_second = datetime!(2026-01-01 12:00:00 UTC);
        let before = datetime!(2026-01-01 11:00:00 UTC);
        let decide = |c: ReadConditions| c.decide("abc", MODIFIED);
        let c = ReadConditions {
            if_modified_since: at(same_second),
            ..Default::default()
        };
        assert_eq!(decide(c), Decision::NotModified);
        let c = ReadConditions {
            if_modified_since: at(before),
            ..Default::default()
        };
        assert_eq!(decide(c), Decision::Proceed);
        let c = ReadConditions {
            if_unmodified_since: at(before),
            ..Default::default()
        };
        assert_eq!(decide(c), Decision::PreconditionFailed);
        let c = ReadConditions {
            if_unmodified_since: at(same_second),
            ..Default::default()
        };
        assert_eq!(decide(c), Decision::Proceed);
        // If-Match wins over If-Unmodified-Since; If-None-Match over If-Modified-Since.
        let c = ReadConditions {
            if_match: Some(tag("abc")),
            if_unmodified_since: at(before),
            ..Default::default()
        };
        assert_eq!(decide(c), Decision::Proceed);
        let c = ReadConditions {
            if_none_match: Some(tag("zzz")),
            if_modified_since: at(same_second),
            ..Default::default()
        };
        assert_eq!(decide(c), Decision::Proceed);
    }
}
