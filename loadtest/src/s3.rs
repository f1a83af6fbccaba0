//! S3 requests the harness sends: bucket creation, signed PUT and GET, presigned GET URLs,
//! all path-style against one endpoint and signed with [`crate::sigv4`].
//!
//! Invariant: the path signed is byte for byte the path sent (both come from
//! [`sigv4::encode_path`]), and bodies are never hashed (`UNSIGNED-PAYLOAD`), so signing
//! costs the same whatever the object size.

use std::collections::BTreeMap;

use anyhow::Context;
use bytes::Bytes;
use http::{Method, Uri};

use crate::runner::{plan_request, PlannedRequest};
use crate::sigv4::{self, Credentials, SigningTime, UNSIGNED_PAYLOAD};

/// Lifetime of the presigned URLs a run uses: longer than any bounded run.
const PRESIGN_EXPIRES_SECONDS: u64 = 24 * 3600;

/// A path-style S3 endpoint with credentials.
#[derive(Clone, Debug)]
pub struct S3Endpoint {
    /// `http://host:port`, without a trailing slash.
    base_url: String,
    /// `host:port` as sent in `Host` and signed.
    host: String,
    credentials: Credentials,
}

impl S3Endpoint {
    pub fn new(endpoint: &str, credentials: Credentials) -> anyhow::Result<Self> {
        let base_url = endpoint.trim_end_matches('/').to_string();
        let uri: Uri = base_url
            .parse()
            .with_context(|| format!("bad endpoint {endpoint:?}"))?;
        anyhow::ensure!(
            uri.path().is_empty() || uri.path() == "/",
            "endpoint {endpoint:?} must not have a path"
        );
        let host = uri
            .authority()
            .with_context(|| format!("endpoint {endpoint:?} has no host"))?
            .to_string();
        Ok(Self {
            base_url,
            host,
            credentials,
        })
    }

    /// `PUT /bucket`, header-signed.
    pub fn create_bucket(&self, bucket: &str) -> anyhow::Result<PlannedRequest> {
        self.signed(Method::PUT, &format!("/{bucket}"), Bytes::new())
    }

    /// `PUT /bucket/key` with `body`, header-signed with an unsigned payload.
    pub fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
    ) -> anyhow::Result<PlannedRequest> {
        self.signed(Method::PUT, &format!("/{bucket}/{key}"), body)
    }

    /// `GET /bucket/key`, header-signed now.
    pub fn get_object(&self, bucket: &str, key: &str) -> anyhow::Result<PlannedRequest> {
        self.signed(Method::GET, &format!("/{bucket}/{key}"), Bytes::new())
    }

    /// A presigned `GET` URL for `bucket/key`.
    pub fn presigned_get_url(&self, bucket: &str, key: &str) -> anyhow::Result<String> {
        let path = sigv4::encode_path(&format!("/{bucket}/{key}"));
        let query = sigv4::presigned_query(
            &self.credentials,
            &SigningTime::now()?,
            "GET",
            &self.host,
            &path,
            PRESIGN_EXPIRES_SECONDS,
        );
        Ok(format!("{}{path}?{query}", self.base_url))
    }

    fn signed(
        &self,
        method: Method,
        raw_path: &str,
        body: Bytes,
    ) -> anyhow::Result<PlannedRequest> {
        let path = sigv4::encode_path(raw_path);
        let time = SigningTime::now()?;
        let mut signed_headers = BTreeMap::from([
            ("host".to_string(), self.host.clone()),
            (
                "x-amz-content-sha256".to_string(),
                UNSIGNED_PAYLOAD.to_string(),
            ),
            ("x-amz-date".to_string(), time.amz_date.clone()),
        ]);
        let authorization = sigv4::authorization(
            &self.credentials,
            &time,
            method.as_str(),
            &path,
            &[],
            &signed_headers,
            UNSIGNED_PAYLOAD,
        );
        // `plan_request` sets Host itself, from the same URL.
        signed_headers.remove("host");
        let mut headers: Vec<(String, String)> = signed_headers.into_iter().collect();
        headers.push(("authorization".to_string(), authorization));
        plan_request(method, &format!("{}{path}", self.base_url), &headers, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> S3Endpoint {
        let credentials = Credentials {
            access_key: "minioadmin".to_string(),
            secret_key: "minioadmin".to_string(),
            region: "us-east-1".to_string(),
        };
        S3Endpoint::new("http://127.0.0.1:9000/", credentials).unwrap()
    }

    #[test]
    fn signed_put_carries_auth_headers_and_the_encoded_path() {
        let planned = endpoint()
            .put_object("b", "dir/a b", Bytes::from_static(b"xyz"))
            .unwrap();
        let headers = planned.request.headers();
        assert_eq!(planned.request.uri(), "/b/dir/a%20b");
        assert_eq!(headers["host"], "127.0.0.1:9000");
        assert_eq!(headers["x-amz-content-sha256"], "UNSIGNED-PAYLOAD");
        assert_eq!(headers["content-length"], "3");
        let authorization = headers["authorization"].to_str().unwrap();
        assert!(authorization.starts_with("AWS4-HMAC-SHA256 Credential=minioadmin/"));
        assert!(authorization.contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date,"));
    }

    #[test]
    fn presigned_url_targets_the_endpoint() {
        let url = endpoint().presigned_get_url("b", "obj-1").unwrap();
        assert!(url.starts_with("http://127.0.0.1:9000/b/obj-1?X-Amz-Algorithm=AWS4-HMAC-SHA256"));
        assert!(url.contains("&X-Amz-Signature="));
        assert!(S3Endpoint::new("http://h:1/base", endpoint().credentials).is_err());
    }
}
