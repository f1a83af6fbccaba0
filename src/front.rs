//! The one service on the port. Delta Sharing routes (`/_delta-sharing/...`, bearer tokens)
//! go to the protocol layer before s3s sees them; browser-form uploads (`POST /BUCKET`,
//! `multipart/form-data`) go to the streaming form handler, which checks the signed policy
//! before reading the file; everything else (S3, the admin API, health) goes to the S3
//! service, which checks SigV4 first.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::service::Service;
use lakeshare_protocol::routes::is_sharing_path;
use lakeshare_protocol::SharingService;
use lakeshare_storage::s3::form::FormUploads;
use s3s::service::S3Service;

pub type FrontBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Clone)]
pub struct FrontService {
    s3: S3Service,
    /// Browser-form uploads; `None` on a sharing node over a remote store.
    forms: Option<FormUploads>,
    sharing: Arc<SharingService>,
}

impl FrontService {
    pub fn new(s3: S3Service, forms: Option<FormUploads>, sharing: Arc<SharingService>) -> Self {
        FrontService { s3, forms, sharing }
    }
}

impl Service<Request<Incoming>> for FrontService {
    type Response = Response<FrontBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        if is_sharing_path(request.uri().path()) {
            let sharing = self.sharing.clone();
            Box::pin(async move {
                let response = sharing.handle(request).await;
                Ok(response.map(|body| body.map_err(Into::into).boxed()))
            })
        } else if let (Some(forms), true) = (&self.forms, FormUploads::is_form_upload(&request)) {
            let forms = forms.clone();
            Box::pin(async move {
                let response = forms.handle(request).await;
                Ok(response.map(|body| body.map_err(Into::into).boxed()))
            })
        } else if is_presigned_head(&request) {
            let s3 = self.s3.clone();
            Box::pin(async move { Ok(presigned_head(&s3, request).await) })
        } else {
            let s3 = self.s3.clone();
            Box::pin(async move {
                match hyper::service::Service::call(&s3, request).await {
                    Ok(response) => Ok(response.map(|body| body.map_err(Into::into).boxed())),
                    Err(error) => Ok(s3_failed(error)),
                }
            })
        }
    }
}

/// A HEAD on a presigned URL. Sharing answers' URLs sign GET and clients (fsspec) ask HEAD
/// for the size first: it is answered as the GET it is signed for (hyper sends a HEAD answer's
/// headers only). A URL signed for HEAD itself (boto3's `generate_presigned_url("head_object")`)
/// fails that signature check and is then checked, and answered, as the HEAD it is.
async fn presigned_head(s3: &S3Service, request: Request<Incoming>) -> Response<FrontBody> {
    let (parts, _empty) = request.into_parts();
    let rebuilt = |method: http::Method| {
        let mut request = Request::new(s3s::Body::empty());
        *request.method_mut() = method;
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        request
    };
    let mut as_get = rebuilt(http::Method::GET);
    as_get.extensions_mut().insert(PresignedHead);
    let answered = match s3.call(as_get).await {
        Ok(response) if response.status() == http::StatusCode::FORBIDDEN => {
            s3.call(rebuilt(http::Method::HEAD)).await
        }
        other => other,
    };
    match answered {
        Ok(response) => response.map(|body| body.map_err(Into::into).boxed()),
        Err(error) => s3_failed(error),
    }
}

/// s3s could not answer at all (not an S3 error, which it answers itself): a bare 500.
fn s3_failed(error: s3s::HttpError) -> Response<FrontBody> {
    tracing::error!(?error, "s3 service failed");
    let mut response = Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    response
}

/// Marks a presigned HEAD answered as its GET: an operation that fetches the body from
/// elsewhere (a remote store) asks for the headers only.
#[derive(Clone, Copy, Debug)]
pub struct PresignedHead;

/// A HEAD carrying a query signature (SigV4 or SigV2 presigned URL).
fn is_presigned_head(request: &Request<Incoming>) -> bool {
    request.method() == http::Method::HEAD
        && request.uri().query().is_some_and(|query| {
            query
                .split('&')
                .any(|pair| pair.starts_with("X-Amz-Signature=") || pair.starts_with("Signature="))
        })
}
