//! NDJSON lines of the sharing responses, in both formats:
//!
//! - parquet: `{"protocol":{"minReaderVersion":1}}`, `{"metaData":{...}}`, then
//!   `{"file":{"url","id","partitionValues","size","stats","expirationTimestamp"}}`;
//! - delta: `{"protocol":{"deltaProtocol":...}}`, `{"metaData":{"deltaMetadata":...}}`, then
//!   `{"file":{"id","expirationTimestamp","deltaSingleAction":{"add":{...}}}}` with the
//!   presigned URL as `path` and deletion vectors stored in files rewritten to presigned
//!   `p` descriptors.
//!
//! File ids are stable: a hash of the file's path as the log names it (MD5 for parquet,
//! SHA-256 for delta, or as the `fileidhash` header asks).

use md5::{Digest, Md5};
use serde_json::{json, Map, Value};
use time::OffsetDateTime;
use url::Url;

use crate::capabilities::ResponseFormat;
use crate::delta::files::{DeletionVectorRef, FileRow};
use crate::delta::{table_url, TableSnapshot};
use crate::error::{ErrorKind, Result, SharingError};
use crate::presign::Presigner;

/// How file ids are hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileIdHash {
    Md5,
    Sha256,
}

impl FileIdHash {
    pub fn default_for(format: ResponseFormat) -> FileIdHash {
        match format {
            ResponseFormat::Parquet => FileIdHash::Md5,
            ResponseFormat::Delta => FileIdHash::Sha256,
        }
    }

    /// The `fileidhash` header: `parquet` or `delta`, case-insensitive.
    pub fn parse_header(value: &str) -> Result<FileIdHash> {
        match value.trim().to_ascii_lowercase().as_str() {
            "parquet" => Ok(FileIdHash::Md5),
            "delta" => Ok(FileIdHash::Sha256),
            _ => Err(SharingError::invalid(format!(
                "Unsupported fileidhash: '{value}'"
            ))),
        }
    }

    pub fn header_value(self) -> &'static str {
        match self {
            FileIdHash::Md5 => "parquet",
            FileIdHash::Sha256 => "delta",
        }
    }

    pub fn file_id(self, path: &str) -> String {
        match self {
            FileIdHash::Md5 => hex::encode(Md5::digest(path.as_bytes())),
            FileIdHash::Sha256 => {
                hex::encode(ring::digest::digest(&ring::digest::SHA256, path.as_bytes()).as_ref())
            }
        }
    }
}

/// Line 1.
pub fn protocol_line(format: ResponseFormat, table: &TableSnapshot) -> Value {
    match format {
        ResponseFormat::Parquet => json!({"protocol": {"minReaderVersion": 1}}),
        ResponseFormat::Delta => json!({"protocol": {"deltaProtocol": table.protocol}}),
    }
}

/// Line 2. `version` is set on streaming and change-feed responses.
pub fn metadata_line(
    format: ResponseFormat,
    table: &TableSnapshot,
    history_shared: bool,
    version: Option<u64>,
) -> Value {
    let source = &table.metadata;
    let mut line = match format {
        ResponseFormat::Parquet => {
            let mut metadata = Map::new();
            metadata.insert("id".into(), source["id"].clone());
            for optional in ["name", "description"] {
                if source[optional].is_string() {
                    metadata.insert(optional.into(), source[optional].clone());
                }
            }
            metadata.insert("format".into(), json!({"provider": "parquet"}));
            metadata.insert("schemaString".into(), source["schemaString"].clone());
            metadata.insert(
                "partitionColumns".into(),
                source["partitionColumns"].clone(),
            );
            let mut configuration = Map::new();
            if history_shared && source["configuration"]["delta.enableChangeDataFeed"] == "true" {
                configuration.insert("enableChangeDataFeed".into(), json!("true"));
            }
            metadata.insert("configuration".into(), Value::Object(configuration));
            json!({"metaData": Value::Object(metadata)})
        }
        ResponseFormat::Delta => {
            let mut metadata = source.clone();
            if let Value::Object(fields) = &mut metadata {
                fields.retain(|_, value| !value.is_null());
                let format = fields
                    .entry("format")
                    .or_insert_with(|| json!({"provider": "parquet"}));
                if format.get("options").is_none_or(Value::is_null) {
                    format["options"] = json!({});
                }
                fields.entry("configuration").or_insert_with(|| json!({}));
            }
            json!({"metaData": {"deltaMetadata": metadata}})
        }
    };
    if let Some(version) = version {
        line["metaData"]["version"] = json!(version);
    }
    line
}

/// Everything a file line needs besides the file.
pub struct FileLineContext<'a> {
    pub format: ResponseFormat,
    pub table: &'a TableSnapshot,
    pub presigner: &'a Presigner,
    pub id_hash: FileIdHash,
    pub now: OffsetDateTime,
    /// Set on version and timestamp queries (the file's snapshot version).
    pub version: Option<u64>,
    table_root: Url,
}

impl<'a> FileLineContext<'a> {
    pub fn new(
        format: ResponseFormat,
        table: &'a TableSnapshot,
        presigner: &'a Presigner,
        id_hash: FileIdHash,
        version: Option<u64>,
    ) -> Result<Self> {
        Ok(FileLineContext {
            format,
            table,
            presigner,
            id_hash,
            now: OffsetDateTime::now_utc(),
            version,
            table_root: table_url(&table.bucket, &table.location)?,
        })
    }

    /// A snapshot `file` line; also returns its URL expiry (ms).
    pub fn file_line(&self, file: &FileRow<'_>) -> Result<(Value, i64)> {
        let url = self.presign_file(file.path)?;
        let id = self.id_hash.file_id(file.path);
        let partition_values: Map<String, Value> = file
            .partition_values
            .iter()
            .map(|(key, value)| (key.to_string(), value.map_or(Value::Null, |v| json!(v))))
            .collect();
        let mut expiration = url.expiration_timestamp_ms;
        let line = match self.format {
            ResponseFormat::Parquet => {
                if file.deletion_vector.is_some() {
                    return Err(SharingError::new(
                        ErrorKind::Unsupported,
                        "Deletion Vector property disabled: a file has a deletion vector and \
                         the response format is parquet",
                    ));
                }
                let mut fields = Map::new();
                fields.insert("url".into(), json!(url.url));
                fields.insert("id".into(), json!(id));
                fields.insert("partitionValues".into(), Value::Object(partition_values));
                fields.insert("size".into(), json!(file.size));
                if let Some(stats) = file.stats {
                    fields.insert("stats".into(), json!(stats));
                }
                fields.insert("expirationTimestamp".into(), json!(expiration));
                if let Some(version) = self.version {
                    fields.insert("version".into(), json!(version));
                }
                json!({ "file": Value::Object(fields) })
            }
            ResponseFormat::Delta => {
                let mut add = Map::new();
                add.insert("path".into(), json!(url.url));
                add.insert("partitionValues".into(), Value::Object(partition_values));
                add.insert("size".into(), json!(file.size));
                add.insert("modificationTime".into(), json!(file.modification_time));
                add.insert("dataChange".into(), json!(true));
                if let Some(stats) = file.stats {
                    add.insert("stats".into(), json!(stats));
                }
                if let Some(dv) = &file.deletion_vector {
                    let (descriptor, dv_expiry) = self.deletion_vector(dv)?;
                    if let Some(dv_expiry) = dv_expiry {
                        expiration = expiration.min(dv_expiry);
                    }
                    add.insert("deletionVector".into(), descriptor);
                }
                if let Some(base_row_id) = file.base_row_id {
                    add.insert("baseRowId".into(), json!(base_row_id));
                }
                if let Some(version) = file.default_row_commit_version {
                    add.insert("defaultRowCommitVersion".into(), json!(version));
                }
                let mut fields = Map::new();
                fields.insert("id".into(), json!(id));
                fields.insert("expirationTimestamp".into(), json!(expiration));
                if let Some(version) = self.version {
                    fields.insert("version".into(), json!(version));
                }
                fields.insert(
                    "deltaSingleAction".into(),
                    json!({ "add": Value::Object(add) }),
                );
                json!({ "file": Value::Object(fields) })
            }
        };
        Ok((line, expiration))
    }

    pub(crate) fn presign_file(&self, path: &str) -> Result<crate::presign::PresignedUrl> {
        let key = self.object_key(path)?;
        Ok(self
            .presigner
            .presign_get(&self.table.bucket, &key, self.now))
    }

    /// The object key of a path from the log (relative to the table root, or absolute in
    /// the table's bucket).
    fn object_key(&self, path: &str) -> Result<String> {
        let url = match Url::parse(path) {
            Ok(absolute) => absolute,
            Err(_) => self
                .table_root
                .join(path)
                .map_err(|error| SharingError::internal(format!("file path {path:?}: {error}")))?,
        };
        if url.host_str() != Some(self.table.bucket.as_str()) {
            return Err(SharingError::new(
                ErrorKind::Unsupported,
                format!("file {path:?} lies outside the table's bucket and cannot be shared"),
            ));
        }
        let key = percent_encoding::percent_decode_str(url.path().trim_start_matches('/'))
            .decode_utf8()
            .map_err(|error| SharingError::internal(format!("file path {path:?}: {error}")))?;
        Ok(key.into_owned())
    }

    /// A deletion vector for the delta format: inline ones pass through, stored ones become a
    /// presigned absolute (`p`) descriptor.
    pub(crate) fn deletion_vector(
        &self,
        dv: &DeletionVectorRef<'_>,
    ) -> Result<(Value, Option<i64>)> {
        let mut descriptor = json!({
            "storageType": dv.storage_type,
            "pathOrInlineDv": dv.path_or_inline_dv,
            "sizeInBytes": dv.size_in_bytes,
            "cardinality": dv.cardinality,
        });
        if let Some(offset) = dv.offset {
            descriptor["offset"] = json!(offset);
        }
        if dv.storage_type == "i" {
            return Ok((descriptor, None));
        }
        let parsed = delta_kernel::actions::deletion_vector::DeletionVectorDescriptor::try_new(
            dv.storage_type
                .parse()
                .map_err(|error| SharingError::internal(format!("deletion vector: {error}")))?,
            dv.path_or_inline_dv,
            dv.offset,
            dv.size_in_bytes,
            dv.cardinality,
        )
        .map_err(|error| SharingError::internal(format!("deletion vector: {error}")))?;
        let absolute = parsed
            .absolute_path(&self.table_root)
            .map_err(|error| SharingError::internal(format!("deletion vector path: {error}")))?
            .ok_or_else(|| SharingError::internal("deletion vector without a path"))?;
        let url = self.presign_file(absolute.as_str())?;
        descriptor["storageType"] = json!("p");
        descriptor["pathOrInlineDv"] = json!(url.url);
        Ok((descriptor, Some(url.expiration_timestamp_ms)))
    }
}

/// `{"endStreamAction":{...}}`.
pub fn end_stream_line(
    next_page_token: Option<&str>,
    refresh_token: Option<&str>,
    min_url_expiration_ms: Option<i64>,
) -> Value {
    let mut fields = Map::new();
    if let Some(token) = refresh_token {
        fields.insert("refreshToken".into(), json!(token));
    }
    if let Some(token) = next_page_token {
        fields.insert("nextPageToken".into(), json!(token));
    }
    if let Some(expiry) = min_url_expiration_ms {
        fields.insert("minUrlExpirationTimestamp".into(), json!(expiry));
    }
    json!({ "endStreamAction": Value::Object(fields) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_ids_follow_the_reference_hashes() {
        assert_eq!(FileIdHash::Md5.file_id("a").len(), 32);
        assert_eq!(FileIdHash::Sha256.file_id("a").len(), 64);
        assert_eq!(
            FileIdHash::parse_header(" Delta ").unwrap(),
            FileIdHash::Sha256
        );
        assert!(FileIdHash::parse_header(" ").is_err());
        assert!(FileIdHash::parse_header("sha1")
            .unwrap_err()
            .message
            .contains("fileidhash"));
    }
}
