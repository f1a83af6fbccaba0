//! The `delta-sharing-capabilities` request header and the choice of response format.
//!
//! The header is `key=v1,v2;key2=v3`, compared case-insensitively; entries that are not
//! exactly `k=v` are ignored. The choice follows the reference server: a table using column
//! mapping or deletion vectors the client did not announce is refused ("Unsupported Delta
//! Table Properties") rather than served with wrong rows; a client that announced no reader
//! features reads the table as reader version 1 (nothing else changes what the rows are, so
//! a `timestampNtz` or `v2Checkpoint` table is served in parquet). A single requested format
//! is answered in exactly that format; for several, parquet when the effective reader
//! version is 1, delta otherwise. The parquet format never carries column mapping or
//! deletion vectors, whatever the client announced.

use crate::error::{ErrorKind, Result, SharingError};

pub const CAPABILITIES_HEADER: &str = "delta-sharing-capabilities";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFormat {
    Parquet,
    Delta,
}

impl ResponseFormat {
    pub fn name(self) -> &'static str {
        match self {
            ResponseFormat::Parquet => "parquet",
            ResponseFormat::Delta => "delta",
        }
    }
}

/// What the client announced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Requested formats in order; empty means parquet.
    pub formats: Vec<ResponseFormat>,
    /// Lower-cased reader feature names.
    pub reader_features: Vec<String>,
    pub include_end_stream_action: bool,
    /// `asyncquery=true`: the client polls `.../queries/{id}` when told a query is pending.
    pub async_query: bool,
}

impl Capabilities {
    pub fn parse(header: Option<&str>) -> Capabilities {
        let mut capabilities = Capabilities::default();
        let Some(header) = header else {
            return capabilities;
        };
        for entry in header.to_ascii_lowercase().split(';') {
            let Some((key, values)) = entry.split_once('=') else {
                continue;
            };
            let values = values.split(',').map(str::trim).filter(|v| !v.is_empty());
            match key.trim() {
                "responseformat" => {
                    for value in values {
                        let format = match value {
                            "parquet" => ResponseFormat::Parquet,
                            "delta" => ResponseFormat::Delta,
                            _ => continue,
                        };
                        if !capabilities.formats.contains(&format) {
                            capabilities.formats.push(format);
                        }
                    }
                }
                "readerfeatures" => {
                    capabilities
                        .reader_features
                        .extend(values.map(str::to_string));
                }
                "includeendstreamaction" => {
                    capabilities.include_end_stream_action =
                        values.into_iter().any(|value| value == "true");
                }
                "asyncquery" => {
                    capabilities.async_query = values.into_iter().any(|value| value == "true");
                }
                _ => {}
            }
        }
        capabilities
    }

    pub fn has_reader_feature(&self, feature: &str) -> bool {
        let feature = feature.to_ascii_lowercase();
        self.reader_features.contains(&feature)
    }
}

/// What the table needs from a reader.
#[derive(Clone, Debug, Default)]
pub struct TableNeeds {
    pub min_reader_version: i32,
    /// Reader features of the protocol, as named in the log.
    pub reader_features: Vec<String>,
    pub column_mapping: bool,
    pub deletion_vectors: bool,
}

impl TableNeeds {
    /// What a Delta protocol action (JSON) asks of a reader; `deletion_vectors` is also set
    /// when the reader features name them.
    pub fn from_protocol(
        protocol: &serde_json::Value,
        column_mapping: bool,
        deletion_vectors: bool,
    ) -> TableNeeds {
        let reader_features: Vec<String> = protocol["readerFeatures"]
            .as_array()
            .map(|features| {
                features
                    .iter()
                    .filter_map(|feature| feature.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        TableNeeds {
            min_reader_version: protocol["minReaderVersion"].as_i64().unwrap_or(1) as i32,
            deletion_vectors: deletion_vectors
                || reader_features
                    .iter()
                    .any(|feature| feature == "deletionVectors"),
            reader_features,
            column_mapping,
        }
    }

    /// Nothing the parquet format cannot express: no column mapping, no deletion vectors.
    pub fn parquet_expressible(&self) -> bool {
        !self.column_mapping && !self.deletion_vectors
    }
}

/// Chooses the response format, or refuses with the reference server's wording.
pub fn choose_format(capabilities: &Capabilities, needs: &TableNeeds) -> Result<ResponseFormat> {
    let unsupported = |detail: String| {
        SharingError::new(
            ErrorKind::Unsupported,
            format!("Unsupported Delta Table Properties: {detail}"),
        )
    };
    for (needed, feature) in [
        (needs.column_mapping, "columnMapping"),
        (needs.deletion_vectors, "deletionVectors"),
    ] {
        if needed && !capabilities.has_reader_feature(feature) {
            return Err(unsupported(format!(
                "the table uses {feature}, which the client did not announce in readerfeatures \
                 (responseformat=delta;readerfeatures={feature})"
            )));
        }
    }
    let effective_reader_version = if capabilities.reader_features.is_empty() {
        1
    } else {
        needs.min_reader_version
    };
    let format = match capabilities.formats.as_slice() {
        [] => ResponseFormat::Parquet,
        [single] => *single,
        _ if effective_reader_version <= 1 && needs.parquet_expressible() => {
            ResponseFormat::Parquet
        }
        _ => ResponseFormat::Delta,
    };
    if format == ResponseFormat::Parquet && !needs.parquet_expressible() {
        return Err(unsupported(format!(
            "the table needs reader features [{}], which responseformat=parquet cannot \
             express; ask for responseformat=delta",
            needs.reader_features.join(",")
        )));
    }
    Ok(format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spark_and_python_headers() {
        let spark = Capabilities::parse(Some(
            "responseformat=parquet,delta;readerfeatures=deletionVectors,columnMapping",
        ));
        assert_eq!(
            spark.formats,
            [ResponseFormat::Parquet, ResponseFormat::Delta]
        );
        assert!(spark.has_reader_feature("deletionvectors"));
        assert!(spark.has_reader_feature("columnMapping"));
        let python = Capabilities::parse(Some(
            "responseformat=delta;readerfeatures=deletionvectors,columnmapping,timestampntz",
        ));
        assert_eq!(python.formats, [ResponseFormat::Delta]);
        let odd = Capabilities::parse(Some("garbage;includeendstreamaction=TRUE;x"));
        assert!(odd.include_end_stream_action && odd.formats.is_empty());
    }

    #[test]
    fn chooses_like_the_reference() {
        let plain = TableNeeds {
            min_reader_version: 1,
            ..Default::default()
        };
        let dv = TableNeeds {
            min_reader_version: 3,
            reader_features: vec!["deletionVectors".into()],
            deletion_vectors: true,
            ..Default::default()
        };
        let both = Capabilities::parse(Some(
            "responseformat=delta,parquet;readerfeatures=deletionvectors",
        ));
        assert_eq!(
            choose_format(&both, &plain).unwrap(),
            ResponseFormat::Parquet
        );
        assert_eq!(choose_format(&both, &dv).unwrap(), ResponseFormat::Delta);
        let none = Capabilities::default();
        assert_eq!(
            choose_format(&none, &plain).unwrap(),
            ResponseFormat::Parquet
        );
        let error = choose_format(&none, &dv).unwrap_err();
        assert!(error.message.contains("Unsupported Delta Table Properties"));
        let delta_only = Capabilities::parse(Some("responseformat=delta"));
        assert_eq!(
            choose_format(&delta_only, &plain).unwrap(),
            ResponseFormat::Delta
        );
        assert!(choose_format(&delta_only, &dv).is_err());
        let parquet_with_features = Capabilities::parse(Some(
            "responseformat=parquet;readerfeatures=deletionvectors",
        ));
        assert!(choose_format(&parquet_with_features, &dv).is_err());
    }

    /// Issue 12: a reader-v3 table that needs nothing the parquet format cannot carry
    /// (`timestampNtz`, `v2Checkpoint`) is served to parquet clients, as the reference does.
    #[test]
    fn r12_parquet_serves_reader_v3_tables_without_dv_or_column_mapping() {
        let ntz = TableNeeds {
            min_reader_version: 3,
            reader_features: vec!["timestampNtz".into()],
            ..Default::default()
        };
        for header in [
            None,
            Some("responseformat=parquet"),
            Some("responseformat=parquet,delta"),
        ] {
            let capabilities = Capabilities::parse(header);
            assert_eq!(
                choose_format(&capabilities, &ntz).unwrap(),
                ResponseFormat::Parquet,
                "{header:?}"
            );
        }
        let python = Capabilities::parse(Some(
            "responseformat=delta,parquet;readerfeatures=deletionvectors,columnmapping,\
             timestampntz",
        ));
        assert_eq!(choose_format(&python, &ntz).unwrap(), ResponseFormat::Delta);
        let mapped = TableNeeds {
            column_mapping: true,
            ..ntz.clone()
        };
        let error = choose_format(&Capabilities::default(), &mapped).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Unsupported);
        assert!(error
            .message
            .starts_with("Unsupported Delta Table Properties"));
    }
}
