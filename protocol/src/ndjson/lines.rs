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

use std::cell::RefCell;

use bytes::{BufMut, BytesMut};
use serde_json::{json, Map, Value};
use time::OffsetDateTime;
use url::Url;

use crate::capabilities::ResponseFormat;
use crate::error::{ErrorKind, Result, SharingError};
use crate::files::{DeletionVectorRef, FileIdHash, FileRow, UrlSigner};
use crate::presign::{PresignBatch, Presigner};
use crate::tables::{table_url, TableSize, TableSnapshot};

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

/// Adds `size` and `numFiles` to a `metadata_line`, in either format.
pub fn set_table_size(line: &mut Value, size: Option<TableSize>) {
    if let Some(size) = size {
        line["metaData"]["size"] = json!(size.files_bytes);
        line["metaData"]["numFiles"] = json!(size.files);
    }
}

/// Everything a file line needs besides the file.
pub struct FileLineContext<'a> {
    pub format: ResponseFormat,
    pub table: &'a TableSnapshot,
    pub id_hash: FileIdHash,
    /// Set on version and timestamp queries (the file's snapshot version).
    pub version: Option<u64>,
    urls: FileUrlSigner<'a>,
    /// Reused per line: the object key of the file.
    key_scratch: RefCell<String>,
}

/// Signs the URLs of one table's files at one instant. Shared by the threads of a response
/// (the kept-values stage of a cold query signs while the line writer writes).
pub struct FileUrlSigner<'a> {
    table: &'a TableSnapshot,
    presign: PresignBatch<'a>,
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
            id_hash,
            version,
            urls: FileUrlSigner {
                table,
                presign: presigner.batch(OffsetDateTime::now_utc()),
                table_root: table_url(&table.bucket, &table.location)?,
            },
            key_scratch: RefCell::new(String::new()),
        })
    }

    /// Appends the snapshot `file` line of `file` and a newline to `out`, written directly
    /// (no JSON tree per file); returns the line's URL expiry (ms).
    pub fn write_file_line(&self, file: &FileRow<'_>, out: &mut BytesMut) -> Result<i64> {
        let deletion_vector = match (&file.deletion_vector, self.format) {
            (None, _) => None,
            (Some(_), ResponseFormat::Parquet) => {
                return Err(SharingError::new(
                    ErrorKind::Unsupported,
                    "Deletion Vector property disabled: a file has a deletion vector and \
                     the response format is parquet",
                ))
            }
            (Some(dv), ResponseFormat::Delta) => Some(self.deletion_vector(dv)?),
        };
        let mut key = self.key_scratch.borrow_mut();
        key.clear();
        self.urls.object_key_into(file.path, &mut key)?;
        let known_signature = file
            .url_signature
            .filter(|(signed_at, _)| *signed_at == self.urls.presign.signed_at())
            .map(|(_, signature)| signature);
        let mut expiration = self.urls.presign.expiration_timestamp_ms();
        if let Some((_, Some(dv_expiry))) = &deletion_vector {
            expiration = expiration.min(*dv_expiry);
        }
        match self.format {
            ResponseFormat::Parquet => {
                out.put_slice(b"{\"file\":{\"url\":\"");
                self.urls
                    .presign
                    .write_get_url(&self.table.bucket, &key, known_signature, out);
                out.put_slice(b"\",\"id\":\"");
                self.id_hash.write_file_id(file.path, file.id_digest, out);
                out.put_slice(b"\",\"partitionValues\":");
                write_partition_values(&file.partition_values, out);
                put_number_field(out, b",\"size\":", file.size);
                if let Some(stats) = file.stats {
                    out.put_slice(b",\"stats\":");
                    write_json_string(stats, out);
                }
                put_number_field(out, b",\"expirationTimestamp\":", expiration);
                if let Some(version) = self.version {
                    put_number_field(out, b",\"version\":", version);
                }
                out.put_slice(b"}}\n");
            }
            ResponseFormat::Delta => {
                out.put_slice(b"{\"file\":{\"id\":\"");
                self.id_hash.write_file_id(file.path, file.id_digest, out);
                out.put_u8(b'"');
                put_number_field(out, b",\"expirationTimestamp\":", expiration);
                if let Some(version) = self.version {
                    put_number_field(out, b",\"version\":", version);
                }
                out.put_slice(b",\"deltaSingleAction\":{\"add\":{\"path\":\"");
                self.urls
                    .presign
                    .write_get_url(&self.table.bucket, &key, known_signature, out);
                out.put_slice(b"\",\"partitionValues\":");
                write_partition_values(&file.partition_values, out);
                put_number_field(out, b",\"size\":", file.size);
                put_number_field(out, b",\"modificationTime\":", file.modification_time);
                out.put_slice(b",\"dataChange\":true");
                if let Some(stats) = file.stats {
                    out.put_slice(b",\"stats\":");
                    write_json_string(stats, out);
                }
                if let Some((descriptor, _)) = &deletion_vector {
                    out.put_slice(b",\"deletionVector\":");
                    let _ = serde_json::to_writer(out.writer(), descriptor);
                }
                if let Some(base_row_id) = file.base_row_id {
                    put_number_field(out, b",\"baseRowId\":", base_row_id);
                }
                if let Some(version) = file.default_row_commit_version {
                    put_number_field(out, b",\"defaultRowCommitVersion\":", version);
                }
                out.put_slice(b"}}}}\n");
            }
        }
        Ok(expiration)
    }

    pub(crate) fn presign_file(&self, path: &str) -> Result<crate::presign::PresignedUrl> {
        self.urls.presign_file(path)
    }

    /// What signs this response's file URLs (for the values a cached list keeps).
    pub fn url_signer(&self) -> &dyn UrlSigner {
        &self.urls
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
            .absolute_path(&self.urls.table_root)
            .map_err(|error| SharingError::internal(format!("deletion vector path: {error}")))?
            .ok_or_else(|| SharingError::internal("deletion vector without a path"))?;
        let url = self.presign_file(absolute.as_str())?;
        descriptor["storageType"] = json!("p");
        descriptor["pathOrInlineDv"] = json!(url.url);
        Ok((descriptor, Some(url.expiration_timestamp_ms)))
    }
}

/// For a plain relative log path (no scheme, no leading `/`, no empty, `.` or `..` segment),
/// whether it holds percent escapes; None for any other path. One pass over the bytes.
fn read_relative_path(path: &str) -> Option<bool> {
    let plain_segment = |segment: &[u8]| !matches!(segment, b"" | b"." | b"..");
    let bytes = path.as_bytes();
    let mut escaped = false;
    let mut segment_start = 0;
    for (position, &byte) in bytes.iter().enumerate() {
        match byte {
            b':' => return None,
            b'%' => escaped = true,
            b'/' => {
                if !plain_segment(&bytes[segment_start..position]) {
                    return None;
                }
                segment_start = position + 1;
            }
            _ => {}
        }
    }
    plain_segment(&bytes[segment_start..]).then_some(escaped)
}

impl FileUrlSigner<'_> {
    pub(crate) fn presign_file(&self, path: &str) -> Result<crate::presign::PresignedUrl> {
        let mut key = String::new();
        self.object_key_into(path, &mut key)?;
        let mut url = BytesMut::new();
        let expiration_timestamp_ms =
            self.presign
                .write_get_url(&self.table.bucket, &key, None, &mut url);
        Ok(crate::presign::PresignedUrl {
            url: String::from_utf8_lossy(&url).into_owned(),
            expiration_timestamp_ms,
        })
    }

    /// Appends the object key of a path from the log (relative to the table root and
    /// URL-encoded, or absolute in the table's bucket) to `key`.
    fn object_key_into(&self, path: &str, key: &mut String) -> Result<()> {
        if let Some(escaped) = read_relative_path(path) {
            key.push_str(&self.table.location);
            if escaped {
                let decoded = percent_encoding::percent_decode_str(path)
                    .decode_utf8()
                    .map_err(|error| {
                        SharingError::internal(format!("file path {path:?}: {error}"))
                    })?;
                key.push_str(&decoded);
            } else {
                key.push_str(path);
            }
            return Ok(());
        }
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
        let decoded = percent_encoding::percent_decode_str(url.path().trim_start_matches('/'))
            .decode_utf8()
            .map_err(|error| SharingError::internal(format!("file path {path:?}: {error}")))?;
        key.push_str(&decoded);
        Ok(())
    }
}

impl UrlSigner for FileUrlSigner<'_> {
    fn signed_at(&self) -> i64 {
        self.presign.signed_at()
    }

    fn url_signature(&self, file: &FileRow<'_>) -> Result<[u8; 32]> {
        let mut key = String::new();
        self.object_key_into(file.path, &mut key)?;
        Ok(self.presign.signature(&self.table.bucket, &key))
    }
}

fn put_number_field(out: &mut BytesMut, name: &[u8], value: impl itoa::Integer) {
    out.put_slice(name);
    out.put_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Appends `text` as a JSON string literal, escaped exactly as serde_json escapes it, one
/// table lookup per byte straight into `out`'s spare capacity: stats strings are mostly short
/// runs between quotes, which made a writer call per run the hot spot of a warm query.
fn write_json_string(text: &str, out: &mut BytesMut) {
    out.reserve(text.len() * 6 + 2);
    let spare = out.spare_capacity_mut();
    let mut len = 0;
    let mut put = |byte: u8| {
        spare[len].write(byte);
        len += 1;
    };
    put(b'"');
    for &byte in text.as_bytes() {
        match JSON_ESCAPES[usize::from(byte)] {
            0 => put(byte),
            b'u' => {
                let mut escaped = *b"\\u0000";
                let _ = hex::encode_to_slice([byte], &mut escaped[4..]);
                escaped.into_iter().for_each(&mut put);
            }
            escape => {
                put(b'\\');
                put(escape);
            }
        }
    }
    put(b'"');
    let written = out.len() + len;
    // SAFETY: `put` initialised the first `len` bytes of the spare capacity.
    unsafe { out.set_len(written) };
}

/// Per byte: 0 when it stands as is, else the letter after its backslash (`u` for `\u00XX`).
const JSON_ESCAPES: [u8; 256] = {
    let mut escapes = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        escapes[byte] = b'u';
        byte += 1;
    }
    escapes[0x08] = b'b';
    escapes[0x09] = b't';
    escapes[0x0a] = b'n';
    escapes[0x0c] = b'f';
    escapes[0x0d] = b'r';
    escapes[b'"' as usize] = b'"';
    escapes[b'\\' as usize] = b'\\';
    escapes
};

fn write_partition_values(values: &[(&str, Option<&str>)], out: &mut BytesMut) {
    out.put_u8(b'{');
    for (position, (key, value)) in values.iter().enumerate() {
        if position > 0 {
            out.put_u8(b',');
        }
        write_json_string(key, out);
        out.put_u8(b':');
        match value {
            Some(value) => write_json_string(value, out),
            None => out.put_slice(b"null"),
        }
    }
    out.put_u8(b'}');
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
    fn partition_values_are_a_json_object() {
        let mut out = BytesMut::new();
        write_partition_values(&[("a", Some("x\"")), ("b", None)], &mut out);
        assert_eq!(
            serde_json::from_slice::<Value>(&out).unwrap(),
            json!({"a": "x\"", "b": null})
        );
    }

    #[test]
    fn json_strings_are_escaped_as_serde_json_escapes_them() {
        let mut every_ascii: String = (0u8..0x80).map(char::from).collect();
        every_ascii.push_str("é€😀\u{7f}");
        let long = "{\"numRecords\":3,\"minValues\":{\"a\\\\b\":\"x\ny\"}}".repeat(40);
        for text in ["", "plain", every_ascii.as_str(), long.as_str()] {
            let mut out = BytesMut::new();
            write_json_string(text, &mut out);
            assert_eq!(
                std::str::from_utf8(&out).unwrap(),
                serde_json::to_string(text).unwrap()
            );
        }
    }

    #[test]
    fn kept_id_digests_give_the_computed_ids() {
        for hash in FileIdHash::ALL {
            let mut digest = vec![0u8; hash.digest_len()];
            hash.digest_into("a/b.parquet", &mut digest);
            let mut from_digest = BytesMut::new();
            hash.write_file_id("ignored", Some((hash, &digest)), &mut from_digest);
            assert_eq!(from_digest, hash.file_id("a/b.parquet").as_bytes());
        }
        let mut other_hash = BytesMut::new();
        FileIdHash::Md5.write_file_id("a", Some((FileIdHash::Sha256, &[0u8; 32])), &mut other_hash);
        assert_eq!(other_hash, FileIdHash::Md5.file_id("a").as_bytes());
    }

    #[test]
    fn relative_log_paths_are_read_in_one_pass() {
        assert_eq!(read_relative_path("p=1/a.parquet"), Some(false));
        assert_eq!(read_relative_path("p=a%20b/a.parquet"), Some(true));
        for other in [
            "", "/a", "a//b", "a/./b", "../a", "a/..", "a/", "s3://b/k", "a:b",
        ] {
            assert_eq!(read_relative_path(other), None, "{other}");
        }
    }

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
