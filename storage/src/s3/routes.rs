//! Non-S3 routes on the S3 port: health checks, the admin API, and whatever later layers
//! plug in (the sharing protocol) through `RouteTable`.
//!
//! Invariant: a route either says so in `check_access` or requires a request signed with the
//! root credentials; s3s has already rejected a wrong signature before any route runs.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use hyper::http::Extensions;
use s3s::route::S3Route;
use s3s::{s3_error, Body, S3Request, S3Response, S3Result};

use crate::node::Node;
use crate::s3::error::to_s3_error;

/// Path of the heal call (`POST ?bucket=B&prefix=P`).
pub const ADMIN_HEAL_PATH: &str = "/minio/admin/v4/heal";
/// Liveness: the process answers.
pub const HEALTH_LIVE_PATH: &str = "/minio/health/live";
/// Readiness: the node is open and serving.
pub const HEALTH_READY_PATH: &str = "/minio/health/ready";

/// Several routes behind the one `S3Route` slot s3s offers; the first that matches wins.
pub struct RouteTable {
    routes: Vec<Box<dyn S3Route>>,
}

/// Which route of the table matched, kept in the request's extensions.
#[derive(Clone, Copy, Debug)]
struct MatchedRoute(usize);

impl RouteTable {
    pub fn new(routes: Vec<Box<dyn S3Route>>) -> RouteTable {
        RouteTable { routes }
    }

    fn matched(&self, extensions: &Extensions) -> S3Result<&dyn S3Route> {
        let index = extensions.get::<MatchedRoute>().map(|m| m.0);
        match index.and_then(|i| self.routes.get(i)) {
            Some(route) => Ok(route.as_ref()),
            None => Err(s3_error!(
                InternalError,
                "route lost between match and call"
            )),
        }
    }
}

#[async_trait::async_trait]
impl S3Route for RouteTable {
    fn is_match(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        extensions: &mut Extensions,
    ) -> bool {
        for (index, route) in self.routes.iter().enumerate() {
            if route.is_match(method, uri, headers, extensions) {
                extensions.insert(MatchedRoute(index));
                return true;
            }
        }
        false
    }

    async fn check_access(&self, req: &mut S3Request<Body>) -> S3Result<()> {
        self.matched(&req.extensions)?.check_access(req).await
    }

    async fn call(&self, req: S3Request<Body>) -> S3Result<S3Response<Body>> {
        self.matched(&req.extensions)?.call(req).await
    }
}

/// `GET /minio/health/live` and `/minio/health/ready`: 200, no authentication.
pub struct HealthRoute;

#[async_trait::async_trait]
impl S3Route for HealthRoute {
    fn is_match(&self, method: &Method, uri: &Uri, _: &HeaderMap, _: &mut Extensions) -> bool {
        (method == Method::GET || method == Method::HEAD)
            && (uri.path() == HEALTH_LIVE_PATH || uri.path() == HEALTH_READY_PATH)
    }

    async fn check_access(&self, _req: &mut S3Request<Body>) -> S3Result<()> {
        Ok(())
    }

    async fn call(&self, _req: S3Request<Body>) -> S3Result<S3Response<Body>> {
        Ok(S3Response::with_status(Body::empty(), StatusCode::OK))
    }
}

/// `POST /minio/admin/v4/heal?bucket=B&prefix=P`, signed with the root credentials; answers
/// the heal report as JSON.
pub struct AdminHealRoute {
    node: Arc<Node>,
    root_access_key: String,
}

impl AdminHealRoute {
    pub fn new(node: Arc<Node>, root_access_key: String) -> AdminHealRoute {
        AdminHealRoute {
            node,
            root_access_key,
        }
    }
}

#[async_trait::async_trait]
impl S3Route for AdminHealRoute {
    fn is_match(&self, method: &Method, uri: &Uri, _: &HeaderMap, _: &mut Extensions) -> bool {
        method == Method::POST && uri.path().trim_end_matches('/') == ADMIN_HEAL_PATH
    }

    async fn check_access(&self, req: &mut S3Request<Body>) -> S3Result<()> {
        require_root(req, &self.root_access_key)
    }

    async fn call(&self, req: S3Request<Body>) -> S3Result<S3Response<Body>> {
        let query = req.uri.query().unwrap_or_default();
        let bucket = query_value(query, "bucket").filter(|b| !b.is_empty());
        let prefix = query_value(query, "prefix").unwrap_or_default();
        let report = self
            .node
            .heal(bucket.as_deref(), &prefix)
            .await
            .map_err(to_s3_error)?;
        let json = serde_json::json!({
            "bucket": bucket,
            "prefix": prefix,
            "objectsScanned": report.objects_scanned,
            "objectsHealed": report.objects_healed,
            "shardsRebuilt": report.shards_rebuilt,
            "objectsFailed": report.objects_failed,
            "bucketsHealed": report.buckets_healed,
            "bucketsFailed": report.buckets_failed,
            "drivesAdopted": report.drives_adopted,
        });
        Ok(json_response(StatusCode::OK, &json))
    }
}

/// Admits only requests signed with the root access key.
pub fn require_root(req: &S3Request<Body>, root_access_key: &str) -> S3Result<()> {
    match &req.credentials {
        Some(credentials) if credentials.access_key == root_access_key => Ok(()),
        Some(_) => Err(s3_error!(
            AccessDenied,
            "Admin calls need the root credentials"
        )),
        None => Err(s3_error!(AccessDenied, "Signature is required")),
    }
}

/// A JSON answer.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> S3Response<Body> {
    let mut response = S3Response::with_status(Body::from(value.to_string()), status);
    response.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The first value of `name` in a query string, percent-decoded (`+` is a space).
pub fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(&text.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        let query = "bucket=analytics&prefix=employees%2F_delta_log+x";
        assert_eq!(query_value(query, "bucket").as_deref(), Some("analytics"));
        assert_eq!(
            query_value(query, "prefix").as_deref(),
            Some("employees/_delta_log x")
        );
        assert_eq!(query_value(query, "missing"), None);
        assert_eq!(query_value("prefix=a%2", "prefix").as_deref(), Some("a%2"));
        assert_eq!(query_value("prefix=%41", "prefix").as_deref(), Some("A"));
    }

    #[test]
    fn health_route_matches_only_health_paths() {
        let mut extensions = Extensions::new();
        let headers = HeaderMap::new();
        let matches = |path: &str, extensions: &mut Extensions| {
            HealthRoute.is_match(&Method::GET, &path.parse().unwrap(), &headers, extensions)
        };
        assert!(matches(HEALTH_LIVE_PATH, &mut extensions));
        assert!(matches(HEALTH_READY_PATH, &mut extensions));
        assert!(!matches("/minio/health/other", &mut extensions));
        assert!(!matches("/bucket/key", &mut extensions));
    }
}
