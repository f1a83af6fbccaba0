//! Browser-form uploads: `POST /BUCKET` with a `multipart/form-data` body (S3's POST Object,
//! what `generate_presigned_post` and HTML forms send). Handled here, before s3s, because
//! s3s reads the whole file part into memory before it looks at the signature.
//!
//! Invariants:
//! - Nothing of the file part is read before the form fields ahead of it were authenticated:
//!   the SigV4 signature of the policy, the policy's expiry and every condition but the
//!   length. An unsigned or badly signed form is refused at the file part's first byte.
//! - The file part streams into the erasure writer: memory per request is one form field
//!   (at most `FIELD_BYTES_MAX`) plus the writer's buffers, whatever the file's size.
//! - A file outside the policy's `content-length-range` (or over `FILE_BYTES_MAX`) ends the
//!   upload with an error before anything is committed.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use s3s::post_policy::{PostPolicy, PostPolicyCondition};
use s3s::{S3Error, S3ErrorCode};
use sha1::Sha1;
use sha2::Sha256;

use crate::node::Node;
use crate::object::{ByteStream, PutOptions};
use crate::s3::error::{to_s3_error, wire_error};
use crate::s3::list::url_encode;
use crate::s3::RootCredentials;

/// Largest form field other than the file (S3 allows 20 KB for all of them together).
const FIELD_BYTES_MAX: u64 = 64 * 1024;
/// Largest sum of the form fields other than the file.
const FIELDS_BYTES_MAX: usize = 256 * 1024;
/// Largest file of a form upload: S3's single-PUT limit.
const FILE_BYTES_MAX: u64 = 5 * 1024 * 1024 * 1024;
/// Fields that never need a policy condition.
const UNCONDITIONED_FIELDS: [&str; 5] = [
    "policy",
    "x-amz-signature",
    "signature",
    "awsaccesskeyid",
    "file",
];

/// The form-upload handler of a node.
#[derive(Clone)]
pub struct FormUploads {
    node: Arc<Node>,
    credentials: RootCredentials,
}

/// The form fields before the file, names lower-cased, in order.
struct Fields(Vec<(String, String)>);

impl Fields {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }

    fn require(&self, name: &str) -> Result<&str, S3Error> {
        self.get(name).ok_or_else(|| {
            invalid_argument(format!("Bucket POST must contain a field named '{name}'."))
        })
    }
}

/// Why the file part ended the upload.
#[derive(Clone, Debug)]
enum FileError {
    TooLarge { max: u64 },
    TooSmall { min: u64, size: u64 },
    Read(String),
}

impl FormUploads {
    pub fn new(node: Arc<Node>, credentials: RootCredentials) -> FormUploads {
        FormUploads { node, credentials }
    }

    /// A path-style `POST /BUCKET` (no sub-resource) with a form body.
    pub fn is_form_upload<B>(request: &Request<B>) -> bool {
        let path = request.uri().path();
        let bucket = path.trim_start_matches('/').trim_end_matches('/');
        request.method() == Method::POST
            && request.uri().query().is_none_or(str::is_empty)
            && !bucket.is_empty()
            && !bucket.contains('/')
            && request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| {
                    value
                        .trim_start()
                        .to_ascii_lowercase()
                        .starts_with("multipart/form-data")
                })
    }

    /// Answers one form upload: S3's status, headers and XML error shape.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<s3s::Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let host = request
            .headers()
            .get(http::header::HOST)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("localhost")
            .to_owned();
        let bucket = request.uri().path().trim_matches('/').to_owned();
        match self.upload(request, &bucket, &host).await {
            Ok(response) => response,
            Err(error) => error_response(error),
        }
    }

    async fn upload<B>(
        &self,
        request: Request<B>,
        bucket: &str,
        host: &str,
    ) -> Result<Response<s3s::Body>, S3Error>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        if bucket.starts_with('_') || !s3s::path::check_bucket_name(bucket) {
            return Err(wire_error(
                S3ErrorCode::InvalidBucketName,
                400,
                "The specified bucket is not valid.",
            ));
        }
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let boundary = multer::parse_boundary(content_type)
            .map_err(|error| malformed(format!("the form's boundary: {error}")))?;
        let body = request
            .into_body()
            .into_data_stream()
            .map(|chunk| chunk.map_err(|error| io::Error::other(error.to_string())));
        let limits = multer::SizeLimit::new()
            .per_field(FIELD_BYTES_MAX)
            .for_field("file", FILE_BYTES_MAX);
        let mut form = multer::Multipart::with_constraints(
            body,
            boundary,
            multer::Constraints::new().size_limit(limits),
        );

        let mut fields = Vec::new();
        let mut fields_bytes = 0;
        let file = loop {
            let Some(field) = form.next_field().await.map_err(form_error)? else {
                return Err(invalid_argument(
                    "POST requires exactly one file upload per request.",
                ));
            };
            let name = field.name().unwrap_or_default().to_ascii_lowercase();
            if name == "file" {
                break field;
            }
            let value = field.text().await.map_err(form_error)?;
            fields_bytes += name.len() + value.len();
            if fields_bytes > FIELDS_BYTES_MAX {
                return Err(malformed(format!(
                    "the form fields before the file exceed {FIELDS_BYTES_MAX} bytes"
                )));
            }
            fields.push((name, value));
        };
        let fields = Fields(fields);
        let policy = self.authenticate(&fields)?;
        let (min_size, max_size) = check_policy(&policy, &fields, bucket)?;

        let file_name = file.file_name().unwrap_or_default().to_owned();
        let key = fields.require("key")?.replace("${filename}", &file_name);
        let options = PutOptions {
            content_type: fields.get("content-type").map(str::to_owned),
            user_metadata: fields
                .0
                .iter()
                .filter_map(|(name, value)| {
                    name.strip_prefix("x-amz-meta-")
                        .map(|name| (name.to_owned(), value.clone()))
                })
                .collect::<BTreeMap<_, _>>(),
            ..PutOptions::default()
        };
        let failure = Arc::new(Mutex::new(None));
        let body = bounded_file(file, min_size, max_size, Arc::clone(&failure));
        let result = self.node.put_object(bucket, &key, body, options).await;
        let info = match result {
            Ok(info) => info,
            Err(error) => {
                let failure = failure.lock().unwrap_or_else(|p| p.into_inner()).clone();
                return Err(match failure {
                    Some(failure) => file_error(failure),
                    None => to_s3_error(error),
                });
            }
        };
        let etag = format!("\"{}\"", info.etag);
        let location = format!("http://{host}/{bucket}/{}", url_encode(&key));
        success(&fields, bucket, &key, &etag, &location)
    }

    /// Checks the form's signature of its policy (SigV4, or SigV2 as older clients send it)
    /// with the root key; the policy.
    fn authenticate(&self, fields: &Fields) -> Result<PostPolicy, S3Error> {
        let policy_text = if let Some(signature) = fields.get("x-amz-signature") {
            self.check_v4(fields, signature)?
        } else if let Some(signature) = fields.get("signature") {
            self.check_v2(fields, signature)?
        } else {
            return Err(wire_error(
                S3ErrorCode::AccessDenied,
                403,
                "Anonymous POST uploads are not allowed: the form needs a signed policy.",
            ));
        };
        let policy = PostPolicy::from_base64(policy_text).map_err(|error| {
            wire_error(
                S3ErrorCode::InvalidPolicyDocument,
                400,
                format!("The policy is not valid: {error}"),
            )
        })?;
        let expires: time::OffsetDateTime = policy.expiration.clone().into();
        if time::OffsetDateTime::now_utc() >= expires {
            return Err(wire_error(
                S3ErrorCode::AccessDenied,
                403,
                "Invalid according to Policy: Policy expired.",
            ));
        }
        Ok(policy)
    }

    /// SigV4: HMAC-SHA256 of the base64 policy under the derived key; the policy text.
    fn check_v4<'f>(&self, fields: &'f Fields, signature: &str) -> Result<&'f str, S3Error> {
        let policy_text = fields.require("policy")?;
        let algorithm = fields.require("x-amz-algorithm")?;
        if algorithm != "AWS4-HMAC-SHA256" {
            return Err(invalid_argument(format!(
                "x-amz-algorithm {algorithm} is not supported: use AWS4-HMAC-SHA256."
            )));
        }
        let credential = fields.require("x-amz-credential")?;
        let amz_date = fields.require("x-amz-date")?;
        let scope: Vec<&str> = credential.split('/').collect();
        let [access_key, date, region, service, "aws4_request"] = scope[..] else {
            return Err(invalid_argument(format!(
                "x-amz-credential {credential:?} is not ACCESS_KEY/DATE/REGION/SERVICE/aws4_request."
            )));
        };
        if !amz_date.starts_with(date) || amz_date.len() != 16 {
            return Err(invalid_argument(
                "x-amz-date does not match the date of x-amz-credential.",
            ));
        }
        self.check_access_key(access_key)?;
        let expected = policy_signature_v4(
            &self.credentials.secret_key,
            date,
            region,
            service,
            policy_text,
        );
        let given = hex::decode(signature).unwrap_or_default();
        check_signature(&expected, &given)?;
        Ok(policy_text)
    }

    /// SigV2: base64 HMAC-SHA1 of the base64 policy under the secret; the policy text.
    fn check_v2<'f>(&self, fields: &'f Fields, signature: &str) -> Result<&'f str, S3Error> {
        let policy_text = fields.require("policy")?;
        self.check_access_key(fields.require("awsaccesskeyid")?)?;
        let mut mac = Hmac::<Sha1>::new_from_slice(self.credentials.secret_key.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(policy_text.as_bytes());
        let expected = mac.finalize().into_bytes().to_vec();
        let given = base64::engine::general_purpose::STANDARD
            .decode(signature)
            .unwrap_or_default();
        check_signature(&expected, &given)?;
        Ok(policy_text)
    }

    fn check_access_key(&self, access_key: &str) -> Result<(), S3Error> {
        if access_key == self.credentials.access_key {
            return Ok(());
        }
        Err(wire_error(
            S3ErrorCode::InvalidAccessKeyId,
            403,
            "The Access Key Id you provided does not exist in our records.",
        ))
    }
}

fn check_signature(expected: &[u8], given: &[u8]) -> Result<(), S3Error> {
    if verify(expected, given) {
        return Ok(());
    }
    Err(wire_error(
        S3ErrorCode::SignatureDoesNotMatch,
        403,
        "The request signature we calculated does not match the signature you provided.",
    ))
}

/// Checks every condition but the length against the fields, and that every field is
/// covered by a condition; the allowed file size range.
fn check_policy(policy: &PostPolicy, fields: &Fields, bucket: &str) -> Result<(u64, u64), S3Error> {
    let value_of = |field: &str| match field {
        "bucket" => Some(bucket),
        other => fields.get(other),
    };
    let mut range = (0, FILE_BYTES_MAX);
    let mut conditioned = Vec::new();
    for condition in &policy.conditions {
        match condition {
            PostPolicyCondition::Eq { field, value } => {
                if value_of(field) != Some(value.as_str()) {
                    return Err(policy_failed(format!(
                        "[\"eq\", \"${field}\", \"{value}\"]"
                    )));
                }
                conditioned.push(field.as_str());
            }
            PostPolicyCondition::StartsWith { field, prefix } => {
                if !value_of(field).is_some_and(|value| value.starts_with(prefix.as_str())) {
                    return Err(policy_failed(format!(
                        "[\"starts-with\", \"${field}\", \"{prefix}\"]"
                    )));
                }
                conditioned.push(field.as_str());
            }
            PostPolicyCondition::ContentLengthRange { min, max } => {
                range = (*min, (*max).min(FILE_BYTES_MAX));
            }
        }
    }
    for (name, _) in &fields.0 {
        let free = UNCONDITIONED_FIELDS.contains(&name.as_str()) || name.starts_with("x-ignore-");
        if !free && !conditioned.contains(&name.as_str()) {
            return Err(wire_error(
                S3ErrorCode::AccessDenied,
                403,
                format!("Invalid according to Policy: Extra input fields: {name}"),
            ));
        }
    }
    Ok(range)
}

/// The file part as the writer's body, ended with an error outside `min..=max` bytes.
fn bounded_file(
    file: multer::Field<'static>,
    min: u64,
    max: u64,
    failure: Arc<Mutex<Option<FileError>>>,
) -> ByteStream {
    struct State {
        file: multer::Field<'static>,
        size: u64,
        done: bool,
        failure: Arc<Mutex<Option<FileError>>>,
    }
    let fail = |state: &State, error: FileError| {
        let message = format!("{error:?}");
        *state.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        io::Error::new(io::ErrorKind::InvalidData, message)
    };
    let state = State {
        file,
        size: 0,
        done: false,
        failure,
    };
    let stream = futures::stream::unfold(state, move |mut state| async move {
        if state.done {
            return None;
        }
        let item = match state.file.next().await {
            Some(Ok(chunk)) => {
                state.size += chunk.len() as u64;
                if state.size > max {
                    state.done = true;
                    Err(fail(&state, FileError::TooLarge { max }))
                } else {
                    Ok(chunk)
                }
            }
            Some(Err(error)) => {
                state.done = true;
                let error = match error {
                    multer::Error::FieldSizeExceeded { .. } => FileError::TooLarge { max },
                    other => FileError::Read(other.to_string()),
                };
                Err(fail(&state, error))
            }
            None if state.size < min => {
                state.done = true;
                let size = state.size;
                Err(fail(&state, FileError::TooSmall { min, size }))
            }
            None => return None,
        };
        Some((item, state))
    });
    Box::pin(stream) as ByteStream
}

/// S3's answer to a stored form upload: a redirect, or `success_action_status` (204 when
/// absent or unknown; 201 with a `PostResponse` document).
fn success(
    fields: &Fields,
    bucket: &str,
    key: &str,
    etag: &str,
    location: &str,
) -> Result<Response<s3s::Body>, S3Error> {
    let redirect = fields
        .get("success_action_redirect")
        .or_else(|| fields.get("redirect"))
        .filter(|url| url.starts_with("http://") || url.starts_with("https://"));
    let (status, body, target) = if let Some(url) = redirect {
        let separator = if url.contains('?') { '&' } else { '?' };
        let target = format!(
            "{url}{separator}bucket={}&key={}&etag={}",
            url_encode(bucket),
            url_encode(key),
            url_encode(etag)
        );
        (StatusCode::SEE_OTHER, String::new(), target)
    } else {
        match fields.get("success_action_status") {
            Some("200") => (StatusCode::OK, String::new(), location.to_owned()),
            Some("201") => (
                StatusCode::CREATED,
                post_response_xml(location, bucket, key, etag)?,
                location.to_owned(),
            ),
            _ => (StatusCode::NO_CONTENT, String::new(), location.to_owned()),
        }
    };
    let mut response = Response::new(s3s::Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    let header = |value: &str| {
        HeaderValue::from_str(value).map_err(|_| invalid_argument("a header value is not valid"))
    };
    headers.insert(http::header::ETAG, header(etag)?);
    headers.insert(http::header::LOCATION, header(&target)?);
    if status == StatusCode::CREATED {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml"),
        );
    }
    Ok(response)
}

/// The SigV4 signature of a form policy: HMAC-SHA256 of the base64 policy under the
/// key derived from the secret, date, region and service.
fn policy_signature_v4(
    secret: &str,
    date: &str,
    region: &str,
    service: &str,
    policy: &str,
) -> Vec<u8> {
    let mut key = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    hmac_sha256(&key, policy.as_bytes())
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Constant-time comparison of two signatures.
fn verify(expected: &[u8], given: &[u8]) -> bool {
    expected.len() == given.len()
        && expected
            .iter()
            .zip(given)
            .fold(0u8, |acc, (left, right)| acc | (left ^ right))
            == 0
}

/// The `PostResponse` document of a 201 answer, written by s3s's XML serializer.
fn post_response_xml(
    location: &str,
    bucket: &str,
    key: &str,
    etag: &str,
) -> Result<String, S3Error> {
    use s3s::xml::Serialize as _;
    let document = s3s::dto::PostResponse {
        location,
        bucket,
        key,
        etag,
    };
    let mut out = Vec::new();
    let mut serializer = s3s::xml::Serializer::new(&mut out);
    serializer
        .decl()
        .and_then(|()| document.serialize(&mut serializer))
        .map_err(S3Error::internal_error)?;
    String::from_utf8(out).map_err(S3Error::internal_error)
}

fn invalid_argument(message: impl Into<String>) -> S3Error {
    wire_error(S3ErrorCode::InvalidArgument, 400, message)
}

fn malformed(message: impl Into<String>) -> S3Error {
    wire_error(S3ErrorCode::MalformedPOSTRequest, 400, message)
}

fn policy_failed(condition: String) -> S3Error {
    wire_error(
        S3ErrorCode::AccessDenied,
        403,
        format!("Invalid according to Policy: Policy Condition failed: {condition}"),
    )
}

fn form_error(error: multer::Error) -> S3Error {
    match error {
        multer::Error::FieldSizeExceeded { field_name, .. } => malformed(format!(
            "form field {} is longer than {FIELD_BYTES_MAX} bytes",
            field_name.unwrap_or_default()
        )),
        other => malformed(format!(
            "The body of your POST request is not well-formed multipart/form-data: {other}"
        )),
    }
}

fn file_error(error: FileError) -> S3Error {
    match error {
        FileError::TooLarge { max } => wire_error(
            S3ErrorCode::EntityTooLarge,
            400,
            format!("Your proposed upload exceeds the maximum allowed size of {max} bytes."),
        ),
        FileError::TooSmall { min, size } => wire_error(
            S3ErrorCode::EntityTooSmall,
            400,
            format!(
                "Your proposed upload of {size} bytes is smaller than the minimum allowed size of {min} bytes."
            ),
        ),
        FileError::Read(detail) => wire_error(
            S3ErrorCode::IncompleteBody,
            400,
            format!("The file part of the form could not be read: {detail}"),
        ),
    }
}

fn error_response(error: S3Error) -> Response<s3s::Body> {
    match error.to_http_response() {
        Ok(response) => response,
        Err(_) => {
            let mut response = Response::new(s3s::Body::empty());
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}
