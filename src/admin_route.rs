//! The sharing admin API (`lakeshare_protocol::AdminApi`) as a custom route of the S3 port:
//! s3s verifies the SigV4 signature, this route requires it to be the root's.

use std::sync::Arc;

use http::{Method, StatusCode};
use lakeshare_protocol::admin::{is_admin_path, ADMIN_BODY_BYTES_MAX};
use lakeshare_protocol::{AdminApi, ErrorKind};
use lakeshare_storage::s3::routes;
use serde_json::json;

/// The admin API as a route on the S3 port: s3s checks the SigV4 signature, this route
/// requires it to be the root's.
pub struct AdminRoute {
    api: Arc<AdminApi>,
    root_access_key: String,
}

impl AdminRoute {
    pub fn new(api: Arc<AdminApi>, root_access_key: String) -> Self {
        AdminRoute {
            api,
            root_access_key,
        }
    }
}

#[async_trait::async_trait]
impl s3s::route::S3Route for AdminRoute {
    fn is_match(
        &self,
        _method: &Method,
        uri: &http::Uri,
        _headers: &http::HeaderMap,
        _extensions: &mut http::Extensions,
    ) -> bool {
        is_admin_path(uri.path())
    }

    async fn check_access(&self, request: &mut s3s::S3Request<s3s::Body>) -> s3s::S3Result<()> {
        routes::require_root(request, &self.root_access_key)
    }

    async fn call(
        &self,
        mut request: s3s::S3Request<s3s::Body>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::Body>> {
        let body = match request.input.store_all_limited(ADMIN_BODY_BYTES_MAX).await {
            Ok(body) => body,
            Err(_) => {
                let value = json!({
                    "errorCode": ErrorKind::TooLarge.code(),
                    "message": format!("request body is larger than {ADMIN_BODY_BYTES_MAX} bytes"),
                });
                return Ok(routes::json_response(StatusCode::PAYLOAD_TOO_LARGE, &value));
            }
        };
        let (status, answer) = self
            .api
            .handle(&request.method, request.uri.path(), &body)
            .await;
        let answer = if status == StatusCode::NO_CONTENT {
            s3s::Body::empty()
        } else {
            s3s::Body::from(answer)
        };
        let mut response = s3s::S3Response::with_status(answer, status);
        response.headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }
}
