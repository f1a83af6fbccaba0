//! File ids: a stable hash of a file's path as the table's log names it (MD5 for the parquet
//! response format, SHA-256 for delta, or as the `fileidhash` header asks).

use bytes::{BufMut, BytesMut};
use md5::{Digest, Md5};

use crate::capabilities::ResponseFormat;
use crate::error::{Result, SharingError};

/// The request header naming the file-id hash, echoed in the answer.
pub const FILE_ID_HASH_HEADER: &str = "fileidhash";

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

    /// The hash a request's `fileidhash` header asks for, if it has one.
    pub fn requested(headers: &http::HeaderMap) -> Result<Option<FileIdHash>> {
        headers
            .get(FILE_ID_HASH_HEADER)
            .map(|value| FileIdHash::parse_header(value.to_str().unwrap_or("")))
            .transpose()
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

    /// Every hash, in a fixed order.
    pub const ALL: [FileIdHash; 2] = [FileIdHash::Md5, FileIdHash::Sha256];

    /// Bytes of a raw digest.
    pub fn digest_len(self) -> usize {
        match self {
            FileIdHash::Md5 => 16,
            FileIdHash::Sha256 => 32,
        }
    }

    /// Writes the raw digest of `path` into `digest` (`digest_len()` bytes).
    pub fn digest_into(self, path: &str, digest: &mut [u8]) {
        match self {
            FileIdHash::Md5 => digest.copy_from_slice(&Md5::digest(path.as_bytes())),
            FileIdHash::Sha256 => digest.copy_from_slice(
                ring::digest::digest(&ring::digest::SHA256, path.as_bytes()).as_ref(),
            ),
        }
    }

    pub fn file_id(self, path: &str) -> String {
        let mut id = BytesMut::new();
        self.write_file_id(path, None, &mut id);
        String::from_utf8_lossy(&id).into_owned()
    }

    /// Appends the id of the file at `path` (lowercase hex) to `out`, from `known_digest`
    /// when it was computed with this hash.
    pub fn write_file_id(
        self,
        path: &str,
        known_digest: Option<(FileIdHash, &[u8])>,
        out: &mut BytesMut,
    ) {
        let mut computed = [0u8; 32];
        let digest = match known_digest {
            Some((hash, digest)) if hash == self => digest,
            _ => {
                let digest = &mut computed[..self.digest_len()];
                self.digest_into(path, digest);
                digest
            }
        };
        let mut digits = [0u8; 64];
        let digits = &mut digits[..digest.len() * 2];
        let _ = hex::encode_to_slice(digest, digits);
        out.put_slice(digits);
    }
}
