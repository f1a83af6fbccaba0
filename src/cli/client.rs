//! The admin client shared by `lakeshare admin ...` and `lakeshare table share ...`: one
//! SigV4-signed HTTP/1.1 request to a node, its status and body back.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;

use crate::sigv4::{self, CanonicalParts, SigningKey};

/// Region the client signs for (the node accepts any).
const SIGNING_REGION: &str = "us-east-1";

/// `http://host:port` with an optional trailing slash.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `host:port` as sent in `Host`.
    pub authority: String,
}

impl Endpoint {
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("endpoint {text:?}: not a URL ({e})"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "endpoint {text:?}: this client speaks plain HTTP only; \
                     use the node's http:// address"
                ))
            }
            _ => return Err(format!("endpoint {text:?}: expected http://HOST:PORT")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("endpoint {text:?}: missing host"))?
            .to_string();
        let authority = if authority.contains(':') {
            authority
        } else {
            format!("{authority}:80")
        };
        Ok(Endpoint { authority })
    }
}

/// A node and the credentials to call it with.
#[derive(Clone, Debug)]
pub struct AdminClient {
    pub endpoint: Endpoint,
    pub access_key: String,
    pub secret_key: String,
}

impl AdminClient {
    /// Sends one signed request; `path` is already URI-encoded.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        body: Bytes,
    ) -> Result<(http::StatusCode, Bytes), String> {
        let key = SigningKey {
            access_key: &self.access_key,
            secret_key: &self.secret_key,
            region: SIGNING_REGION,
            service: "s3",
        };
        let amz_date = sigv4::amz_date(time::OffsetDateTime::now_utc());
        let payload_sha256 = sigv4::sha256_hex(&body);
        let headers = vec![
            ("host".to_owned(), self.endpoint.authority.clone()),
            ("x-amz-content-sha256".to_owned(), payload_sha256.clone()),
            ("x-amz-date".to_owned(), amz_date.clone()),
        ];
        let parts = CanonicalParts {
            method,
            path,
            query,
            headers: &headers,
            payload_sha256: &payload_sha256,
        };
        let authorization = sigv4::authorization(&key, &parts, &amz_date);
        let target = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", sigv4::canonical_query(query))
        };
        let mut builder = http::Request::builder().method(method).uri(target);
        for (name, value) in &headers {
            builder = builder.header(name, value);
        }
        let request = builder
            .header("authorization", authorization)
            .header("content-length", body.len().to_string())
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|e| format!("building the request: {e}"))?;
        let authority = &self.endpoint.authority;
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connecting to {authority}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {authority}: {e}"))?;
        tokio::spawn(connection);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("sending the request: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:9000/").unwrap().authority,
            "127.0.0.1:9000"
        );
        assert_eq!(Endpoint::parse("http://node").unwrap().authority, "node:80");
        assert!(Endpoint::parse("https://node:9000").is_err());
        assert!(Endpoint::parse("ftp://node").is_err());
    }
}
