//! The S3 API: `s3s` does the wire (SigV4/SigV2, presigned URLs, aws-chunked bodies, XML);
//! this module maps each operation onto `Node` (`ops`), verifies body checksums while they
//! stream (`checksum`), decides preconditions and ranges (`conditions`), pages listings
//! (`list`), maps storage errors to S3 errors in one place (`error`), and carries the
//! non-S3 routes that share the port (`routes`).
//!
//! Invariants: every request is authenticated by s3s before it reaches an operation or a
//! route (routes may opt out, e.g. health); bucket names beginning with `_` never reach an
//! S3 operation: they are reserved for routes such as `/_delta-sharing/...`.

pub mod checksum;
pub mod conditions;
pub mod error;
pub mod form;
pub mod host;
pub mod list;
mod ops;
pub mod routes;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey, SimpleAuth};
use s3s::config::{S3Config, StaticConfigProvider};
use s3s::path::S3Path;
use s3s::route::S3Route;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::validation::NameValidation;
use s3s::{s3_error, S3ErrorCode, S3Result};

use crate::node::Node;
use crate::s3::error::wire_error;
use crate::s3::routes::{AdminHealRoute, HealthRoute, RouteTable};

/// Largest XML request body (CompleteMultipartUpload, DeleteObjects, ...). 10,000 parts or
/// 1,000 keys of 1,024 bytes each fit well below it.
pub const XML_BODY_BYTES_MAX: usize = 8 * 1024 * 1024;

/// The root access key pair: the only identity of a single-tenant node.
#[derive(Clone)]
pub struct RootCredentials {
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for RootCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootCredentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

/// Decides whether `(bucket, key)` may be read.
pub type ObjectFilter = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// A second identity allowed only to read (GET/HEAD) objects that `allows(bucket, key)`
/// admits: the credential presigned sharing URLs are signed with.
#[derive(Clone)]
pub struct ReadOnlyCredential {
    pub access_key: String,
    pub secret_key: String,
    pub allows: ObjectFilter,
}

/// The S3 operations over a node.
pub struct LakeshareS3 {
    node: Arc<Node>,
}

impl LakeshareS3 {
    pub fn new(node: Arc<Node>) -> LakeshareS3 {
        LakeshareS3 { node }
    }
}

/// Builds the hyper service for the whole port: S3, health, admin, and `extra_routes`
/// (matched in order, after health and admin). With `domains`, `Host: BUCKET.DOMAIN` requests
/// are virtual-host-style (`host::DomainHost`); without, every request is path-style. `S3Service` is cheap to clone and is a
/// `hyper::service::Service<http::Request<hyper::body::Incoming>>`.
pub fn build_service(
    node: Arc<Node>,
    credentials: RootCredentials,
    reader: Option<ReadOnlyCredential>,
    domains: Vec<String>,
    extra_routes: Vec<Box<dyn S3Route>>,
) -> S3Service {
    let mut builder = S3ServiceBuilder::new(LakeshareS3::new(Arc::clone(&node)));
    if !domains.is_empty() {
        builder.set_host(host::DomainHost::new(domains));
    }
    let mut routes: Vec<Box<dyn S3Route>> = vec![
        Box::new(HealthRoute),
        Box::new(AdminHealRoute::new(node, credentials.access_key.clone())),
    ];
    routes.extend(extra_routes);
    configure(&mut builder, credentials, reader, routes);
    builder.build()
}

/// The S3 port of a node that stores nothing itself (a sharing node over a remote store):
/// `objects` answers the operations it implements (the others are s3s's `NotImplemented`),
/// authenticated as on a storage node: the root credentials, or `reader`'s for the GET/HEAD
/// of objects it allows; the health routes and `extra_routes` (the admin API) share the port.
pub fn build_gateway_service(
    objects: impl s3s::S3,
    credentials: RootCredentials,
    reader: Option<ReadOnlyCredential>,
    extra_routes: Vec<Box<dyn S3Route>>,
) -> S3Service {
    let mut builder = S3ServiceBuilder::new(objects);
    let mut routes: Vec<Box<dyn S3Route>> = vec![Box::new(HealthRoute)];
    routes.extend(extra_routes);
    configure(&mut builder, credentials, reader, routes);
    builder.build()
}

/// Authentication, access, name rules, limits and routes, the same on every kind of node.
fn configure(
    builder: &mut S3ServiceBuilder,
    credentials: RootCredentials,
    reader: Option<ReadOnlyCredential>,
    routes: Vec<Box<dyn S3Route>>,
) {
    let mut auth = SimpleAuth::from_single(credentials.access_key, credentials.secret_key);
    if let Some(reader) = &reader {
        auth.register(
            reader.access_key.clone(),
            SecretKey::from(reader.secret_key.clone()),
        );
    }
    builder.set_auth(RootAuth(auth));
    builder.set_access(ReservedBucketAccess { reader });
    builder.set_validation(RouteAwareNameValidation);
    let mut config = S3Config::default();
    config.xml_max_body_size = XML_BODY_BYTES_MAX;
    builder.set_config(Arc::new(StaticConfigProvider::new(Arc::new(config))));
    builder.set_route(RouteTable::new(routes));
}

/// The root key pair; an unknown access key is `InvalidAccessKeyId` (403), as S3 says it.
struct RootAuth(SimpleAuth);

#[async_trait::async_trait]
impl S3Auth for RootAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.lookup(access_key) {
            Some(secret) => Ok(secret.clone()),
            None => Err(wire_error(
                S3ErrorCode::InvalidAccessKeyId,
                403,
                "The Access Key Id you provided does not exist in our records.",
            )),
        }
    }
}

/// Admits signed requests only, refuses S3 operations on `_`-prefixed (route) names, and
/// keeps the read-only credential to GET/HEAD of the objects it may read.
struct ReservedBucketAccess {
    reader: Option<ReadOnlyCredential>,
}

#[async_trait::async_trait]
impl S3Access for ReservedBucketAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        if let S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } = cx.s3_path() {
            if is_reserved_bucket(bucket) {
                return Err(s3_error!(
                    InvalidBucketName,
                    "Bucket names beginning with '_' are reserved"
                ));
            }
        }
        let Some(credentials) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        };
        let Some(reader) = &self.reader else {
            return Ok(());
        };
        if credentials.access_key != reader.access_key {
            return Ok(());
        }
        let readable = matches!(cx.s3_op().name(), "GetObject" | "HeadObject")
            && matches!(cx.s3_path(), S3Path::Object { bucket, key } if (reader.allows)(bucket, key));
        if readable {
            Ok(())
        } else {
            Err(s3_error!(
                AccessDenied,
                "This URL does not grant access to that object"
            ))
        }
    }
}

/// AWS bucket-name rules, except that `_`-prefixed names pass so that the path
/// `/_delta-sharing/...` can reach its route; `ReservedBucketAccess` keeps them from S3.
struct RouteAwareNameValidation;

impl NameValidation for RouteAwareNameValidation {
    fn validate_bucket_name(&self, name: &str) -> bool {
        is_reserved_bucket(name) || s3s::path::check_bucket_name(name)
    }
}

fn is_reserved_bucket(name: &str) -> bool {
    name.starts_with('_')
}
