//! In-process checks of the assembled service: routes, route-level authentication, and the
//! reserved `_` bucket names, on a real node over temporary drives.

use std::sync::Arc;

use http::{Method, Request, StatusCode, Uri};
use hyper::http::Extensions;
use lakeshare_engine::io::ThreadPoolIo;
use s3s::route::S3Route;
use s3s::service::S3Service;
use s3s::{Body, S3Request, S3Response, S3Result};

use crate::node::{Node, StorageConfig};
use crate::s3::{build_service, RootCredentials};

/// A stand-in for the sharing routes: `/_delta-sharing/...`, no S3 signature needed.
struct SharingStandIn;

#[async_trait::async_trait]
impl S3Route for SharingStandIn {
    fn is_match(&self, _: &Method, uri: &Uri, _: &http::HeaderMap, _: &mut Extensions) -> bool {
        uri.path().starts_with("/_delta-sharing/")
    }

    async fn check_access(&self, _req: &mut S3Request<Body>) -> S3Result<()> {
        Ok(())
    }

    async fn call(&self, _req: S3Request<Body>) -> S3Result<S3Response<Body>> {
        Ok(S3Response::with_status(
            Body::from("shares".to_owned()),
            StatusCode::OK,
        ))
    }
}

async fn service(drives: &tempfile::TempDir) -> S3Service {
    let io = std::sync::Arc::new(ThreadPoolIo);
    let config = StorageConfig::new(vec![drives.path().join("d1")]);
    let node: Arc<Node> = Node::open(config, io).await.unwrap();
    let credentials = RootCredentials {
        access_key: "rootuser".into(),
        secret_key: "rootpassword".into(),
    };
    build_service(
        node,
        credentials,
        None,
        Vec::new(),
        vec![Box::new(SharingStandIn)],
    )
}

async fn status_and_body(service: &S3Service, method: Method, uri: &str) -> (u16, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "127.0.0.1");
    let response = service
        .call(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let bytes = body.store_all_limited(1 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn routes_and_their_authentication() {
    let drives = tempfile::tempdir().unwrap();
    let service = service(&drives).await;

    let (status, _) = status_and_body(&service, Method::GET, "/minio/health/live").await;
    assert_eq!(status, 200);
    let (status, _) = status_and_body(&service, Method::GET, "/minio/health/ready").await;
    assert_eq!(status, 200);

    let (status, body) =
        status_and_body(&service, Method::POST, "/minio/admin/v4/heal?bucket=b").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("AccessDenied"), "{body}");

    let (status, body) = status_and_body(&service, Method::GET, "/_delta-sharing/shares").await;
    assert_eq!((status, body.as_str()), (200, "shares"));

    let (status, body) = status_and_body(&service, Method::GET, "/_reserved/key").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("InvalidBucketName"), "{body}");

    let (status, body) = status_and_body(&service, Method::GET, "/").await;
    assert_eq!(status, 403, "{body}");
}
