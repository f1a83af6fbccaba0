//! The parameters of table requests: the body of `POST .../query` (parsed leniently, as the
//! reference server does), the checks of their combinations with the reference wording, the
//! capabilities header, and timestamps.

use http::HeaderMap;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::capabilities::{Capabilities, CAPABILITIES_HEADER};
use crate::error::{Result, SharingError};
use crate::tables::VersionSelector;

/// The body of `POST .../query`, parsed leniently like the reference server (numbers may be
/// strings; unknown fields are ignored).
#[derive(Clone, Debug, Default)]
pub struct QueryRequest {
    pub predicate_hints: Vec<String>,
    pub json_predicate_hints: Option<String>,
    pub limit_hint: Option<i64>,
    pub version: Option<i64>,
    pub timestamp: Option<String>,
    pub starting_version: Option<i64>,
    pub ending_version: Option<i64>,
    pub max_files: Option<i64>,
    pub page_token: Option<String>,
    pub include_refresh_token: bool,
    pub refresh_token: Option<String>,
    pub include_historical_protocol: bool,
    pub idempotency_key: Option<String>,
}

impl QueryRequest {
    pub fn parse(body: &[u8]) -> Result<QueryRequest> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(SharingError::malformed(
                "No content to map due to end-of-input",
            ));
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|error| SharingError::malformed(format!("invalid request json: {error}")))?;
        let Value::Object(fields) = value else {
            return Err(SharingError::malformed(
                "the request body must be a JSON object",
            ));
        };
        let mut request = QueryRequest::default();
        for (name, value) in &fields {
            if value.is_null() {
                continue;
            }
            match name.as_str() {
                "predicateHints" => {
                    let Value::Array(items) = value else {
                        return Err(SharingError::malformed(
                            "Expected an array for repeated field predicateHints",
                        ));
                    };
                    request.predicate_hints = items
                        .iter()
                        .map(|item| item.as_str().map(str::to_string).unwrap_or_default())
                        .collect();
                }
                "jsonPredicateHints" => {
                    request.json_predicate_hints = Some(string_field(name, value)?)
                }
                "limitHint" => request.limit_hint = Some(parse_long(value)?),
                "version" => request.version = Some(parse_long(value)?),
                "timestamp" => request.timestamp = Some(string_field(name, value)?),
                "startingVersion" => request.starting_version = Some(parse_long(value)?),
                "endingVersion" => request.ending_version = Some(parse_long(value)?),
                "maxFiles" => request.max_files = Some(parse_long(value)?),
                "pageToken" => request.page_token = Some(string_field(name, value)?),
                "includeRefreshToken" => request.include_refresh_token = parse_bool(name, value)?,
                "includeHistoricalProtocol" => {
                    request.include_historical_protocol = parse_bool(name, value)?
                }
                "refreshToken" => request.refresh_token = Some(string_field(name, value)?),
                "idempotencyKey" | "idempotency_key" => {
                    request.idempotency_key = Some(string_field(name, value)?)
                }
                _ => {}
            }
        }
        Ok(request)
    }

    /// A digest of the body parameters every page of a query must repeat: the reference
    /// server's set (everything but `maxFiles`, `pageToken` and the refresh and idempotency
    /// fields). The capabilities header is not part of it: the Spark connector asks for
    /// `includeendstreamaction` on later pages only.
    pub(crate) fn parameters_checksum(&self) -> String {
        crate::page_token::parameters_digest(&serde_json::json!([
            self.predicate_hints,
            self.json_predicate_hints,
            self.limit_hint,
            self.version,
            self.timestamp,
            self.starting_version,
            self.ending_version,
            self.include_historical_protocol,
        ]))
    }

    /// The snapshot asked for, after the reference server's parameter checks; a request for
    /// a version, a timestamp or a range calls `require_history` before its timestamp is
    /// parsed (a table without shared history refuses even a malformed timestamp so).
    pub fn selector(
        &self,
        require_history: impl FnOnce() -> Result<()>,
    ) -> Result<VersionSelector> {
        let given = [
            self.version.is_some(),
            self.timestamp.is_some(),
            self.starting_version.is_some(),
        ];
        if given.iter().filter(|given| **given).count() > 1 {
            return Err(SharingError::invalid(
                "Please only provide one of: version,timestamp,startingVersion",
            ));
        }
        let specific_version = given.iter().any(|given| *given);
        for (asked, field) in [
            (self.include_refresh_token, "includeRefreshToken"),
            (self.refresh_token.is_some(), "refreshToken"),
        ] {
            if asked && specific_version {
                return Err(SharingError::invalid(format!(
                    "{field} cannot be used when querying a specific version."
                )));
            }
            if asked && self.page_token.is_some() {
                return Err(SharingError::invalid(format!(
                    "{field} must be used in the first page request."
                )));
            }
        }
        if let Some(max_files) = self.max_files {
            page_size(max_files)?;
        }
        if let Some(version) = self.version {
            if version < 0 {
                return Err(SharingError::invalid("table version cannot be negative"));
            }
        }
        if specific_version {
            require_history()?;
        }
        if let Some(version) = self.version {
            return Ok(VersionSelector::Version(version as u64));
        }
        if let Some(version) = self.starting_version {
            if version < 0 {
                return Err(SharingError::invalid("startingVersion cannot be negative"));
            }
            if let Some(end) = self.ending_version {
                if version > end {
                    return Err(SharingError::invalid(format!(
                        "startingVersion({version}) must be smaller than or equal to \
                         endingVersion({end})"
                    )));
                }
            }
        }
        if let Some(text) = &self.timestamp {
            return Ok(VersionSelector::AsOfTimestamp(parse_timestamp(
                text,
                "timestamp",
            )?));
        }
        Ok(VersionSelector::Latest)
    }
}

/// A `maxFiles` page size, checked with the reference server's wording.
pub fn page_size(max_files: i64) -> Result<u64> {
    if max_files <= 0 {
        return Err(SharingError::invalid("maxFiles must be positive"));
    }
    if max_files > i64::from(i32::MAX) {
        return Err(SharingError::invalid(format!(
            "Not an int32 value: {max_files}"
        )));
    }
    Ok(max_files as u64)
}

pub fn capabilities(headers: &HeaderMap) -> Capabilities {
    Capabilities::parse(
        headers
            .get(CAPABILITIES_HEADER)
            .and_then(|value| value.to_str().ok()),
    )
}

/// ISO-8601 with an offset (`2022-01-01T00:00:00Z`), or the legacy `yyyy-mm-dd hh:mm:ss[.f]`
/// taken as UTC; milliseconds since the epoch.
pub fn parse_timestamp(text: &str, parameter: &str) -> Result<i64> {
    let trimmed = text.trim();
    let parsed = OffsetDateTime::parse(trimmed, &Rfc3339).or_else(|_| {
        let legacy = time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]]"
        );
        time::PrimitiveDateTime::parse(trimmed, legacy).map(|time| time.assume_utc())
    });
    match parsed {
        Ok(time) => Ok((time.unix_timestamp_nanos() / 1_000_000) as i64),
        Err(_) => Err(SharingError::invalid(format!(
            "Invalid {parameter}: {text}"
        ))),
    }
}

pub(crate) fn parse_long(value: &Value) -> Result<i64> {
    match value {
        Value::Number(number) => number
            .as_i64()
            .ok_or_else(|| SharingError::invalid(format!("Not a numeric value: {number}"))),
        Value::String(text) => text
            .trim()
            .parse()
            .map_err(|_| SharingError::invalid(format!("Not a numeric value: {text}"))),
        other => Err(SharingError::malformed(format!(
            "Not a numeric value: {other}"
        ))),
    }
}

fn parse_bool(name: &str, value: &Value) -> Result<bool> {
    match value {
        Value::Bool(flag) => Ok(*flag),
        Value::String(text) if text.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(text) if text.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(SharingError::malformed(format!(
            "Expected a boolean for {name} but got {other}"
        ))),
    }
}

fn string_field(name: &str, value: &Value) -> Result<String> {
    match value {
        Value::String(text) => Ok(text.clone()),
        other => Err(SharingError::malformed(format!(
            "Expected a string for {name} but got {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_bodies_parse_leniently() {
        let request =
            QueryRequest::parse(br#"{"version":"3","limitHint":5,"idempotency_key":"k"}"#).unwrap();
        assert_eq!(request.version, Some(3));
        assert_eq!(
            request.selector(|| Ok(())).unwrap(),
            VersionSelector::Version(3)
        );
        assert!(QueryRequest::parse(b"")
            .unwrap_err()
            .message
            .contains("end-of-input"));
        assert!(QueryRequest::parse(br#"{"version":"x3"}"#)
            .unwrap_err()
            .message
            .contains("Not a numeric value: x3"));
        assert!(QueryRequest::parse(br#"{"predicateHints":"a"}"#).is_err());
        assert_eq!(
            QueryRequest::parse(b"{}")
                .unwrap()
                .selector(|| Ok(()))
                .unwrap(),
            VersionSelector::Latest
        );
    }

    #[test]
    fn conflicting_parameters_use_the_reference_wording() {
        let both =
            QueryRequest::parse(br#"{"version":1,"timestamp":"2024-01-01T00:00:00Z"}"#).unwrap();
        assert!(both
            .selector(|| Ok(()))
            .unwrap_err()
            .message
            .contains("Please only provide one of"));
        let negative = QueryRequest::parse(br#"{"version":-1}"#).unwrap();
        assert!(negative
            .selector(|| Ok(()))
            .unwrap_err()
            .message
            .contains("cannot be negative"));
        let refresh = QueryRequest::parse(br#"{"version":1,"includeRefreshToken":true}"#).unwrap();
        assert!(refresh.selector(|| Ok(())).is_err());
        let zero = QueryRequest::parse(br#"{"maxFiles":0}"#).unwrap();
        assert!(zero
            .selector(|| Ok(()))
            .unwrap_err()
            .message
            .contains("maxFiles must be positive"));
    }

    /// Issue 12: the Spark connector's later pages repeat the body without the refresh
    /// fields (and add `includeendstreamaction` to the header, which the digest never sees).
    #[test]
    fn r12_page_checksum_covers_the_body_parameters() {
        let first = QueryRequest::parse(
            br#"{"predicateHints":[],"limitHint":9,"maxFiles":5,"includeRefreshToken":true}"#,
        )
        .unwrap();
        let next = QueryRequest::parse(
            br#"{"predicateHints":[],"limitHint":9,"maxFiles":7,"pageToken":"t"}"#,
        )
        .unwrap();
        assert_eq!(first.parameters_checksum(), next.parameters_checksum());
        for changed in [
            &br#"{"limitHint":8,"pageToken":"t"}"#[..],
            br#"{"predicateHints":["a = 1"],"limitHint":9,"pageToken":"t"}"#,
            br#"{"limitHint":9,"jsonPredicateHints":"{}","pageToken":"t"}"#,
            br#"{"limitHint":9,"version":3,"pageToken":"t"}"#,
            br#"{"limitHint":9,"timestamp":"2024-01-01T00:00:00Z","pageToken":"t"}"#,
        ] {
            let changed = QueryRequest::parse(changed).unwrap();
            assert_ne!(first.parameters_checksum(), changed.parameters_checksum());
        }
    }

    /// Issue 12: the reference server's words for refresh tokens where they cannot be used,
    /// and history sharing checked before a timestamp is parsed.
    #[test]
    fn r12_refresh_and_history_errors_use_the_reference_wording() {
        let message = |body: &[u8]| {
            QueryRequest::parse(body)
                .unwrap()
                .selector(|| Err(SharingError::invalid("no history")))
                .unwrap_err()
                .message
        };
        assert_eq!(
            message(br#"{"startingVersion":1,"refreshToken":"r"}"#),
            "refreshToken cannot be used when querying a specific version."
        );
        assert_eq!(
            message(br#"{"pageToken":"p","refreshToken":"r"}"#),
            "refreshToken must be used in the first page request."
        );
        assert_eq!(
            message(br#"{"version":1,"includeRefreshToken":true}"#),
            "includeRefreshToken cannot be used when querying a specific version."
        );
        assert_eq!(
            message(br#"{"pageToken":"p","includeRefreshToken":true}"#),
            "includeRefreshToken must be used in the first page request."
        );
        assert_eq!(message(br#"{"timestamp":"abc"}"#), "no history");
        assert_eq!(message(br#"{"startingVersion":0}"#), "no history");
        let invalid = QueryRequest::parse(br#"{"timestamp":"abc"}"#)
            .unwrap()
            .selector(|| Ok(()))
            .unwrap_err();
        assert!(invalid.message.contains("Invalid timestamp"));
    }

    #[test]
    fn timestamps_accept_iso_and_legacy_forms() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:01Z", "t").unwrap(), 1000);
        assert_eq!(
            parse_timestamp("1970-01-01T00:00:01-08:00", "t").unwrap(),
            28_801_000
        );
        assert_eq!(parse_timestamp("1970-01-01 00:00:01.5", "t").unwrap(), 1500);
        assert!(parse_timestamp("yesterday", "startingTimestamp")
            .unwrap_err()
            .message
            .contains("Invalid startingTimestamp"));
    }
}
