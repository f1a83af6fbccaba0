//! The delta-sharing admin API, following the wire contract of minio/madmin-go's
//! delta-sharing commands so MinIO's own client could drive this node:
//!
//! | route (under `/minio/admin/v4/delta-sharing/`) | does |
//! |---|---|
//! | `POST shares`, `GET shares` | create, list |
//! | `GET`, `PUT`, `DELETE shares/{share}` | read, replace description/schemas, remove (with its tokens) |
//! | `POST`, `GET shares/{share}/tokens` | create a token (its secret shown once), list tokens |
//! | `DELETE tokens/{tokenId}` | revoke, effective immediately |
//! | `GET tokens/{tokenId}/profile` | refused: secrets are kept only as hashes |
//!
//! Requests arrive already SigV4-verified as root (the caller checks); bodies are plain JSON.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::catalog::{share_not_found, Catalog, CatalogSnapshot, ShareRequest, TokenRecord};
use crate::error::{ErrorKind, Result, SharingError};
use crate::routes::SharingConfig;

pub const ADMIN_PREFIX: &str = "/minio/admin/v4/delta-sharing/";
/// Largest admin request body.
pub const ADMIN_BODY_BYTES_MAX: usize = 1 << 20;

pub struct AdminApi {
    catalog: Arc<Catalog>,
    config: SharingConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRequest {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

/// Whether a path belongs to the delta-sharing admin API (v3 or v4).
pub fn is_admin_path(path: &str) -> bool {
    admin_rest(path).is_some()
}

fn admin_rest(path: &str) -> Option<&str> {
    path.strip_prefix(ADMIN_PREFIX)
        .or_else(|| path.strip_prefix("/minio/admin/v3/delta-sharing/"))
}

impl AdminApi {
    pub fn new(catalog: Arc<Catalog>, config: SharingConfig) -> Self {
        AdminApi { catalog, config }
    }

    /// Answers one admin request with a status and a one-line JSON body.
    pub async fn handle(&self, method: &Method, path: &str, body: &[u8]) -> (StatusCode, Bytes) {
        match self.route(method, path, body).await {
            Ok((status, value)) => (status, Bytes::from(value.to_string())),
            Err(error) => {
                let message = if error.kind == ErrorKind::Internal {
                    tracing::error!(message = %error.message, "admin internal error");
                    String::new()
                } else {
                    error.message
                };
                let value = json!({"errorCode": error.kind.code(), "message": message});
                (error.kind.status(), Bytes::from(value.to_string()))
            }
        }
    }

    async fn route(&self, method: &Method, path: &str, body: &[u8]) -> Result<(StatusCode, Value)> {
        if body.len() > ADMIN_BODY_BYTES_MAX {
            return Err(SharingError::new(
                ErrorKind::TooLarge,
                format!("request body is larger than {ADMIN_BODY_BYTES_MAX} bytes"),
            ));
        }
        let rest = admin_rest(path).unwrap_or("");
        let segments: Vec<String> = rest
            .split('/')
            .filter(|segment| !segment.is_empty())
            .map(|segment| percent_decode_str(segment).decode_utf8_lossy().into_owned())
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let ok = |value| Ok((StatusCode::OK, value));
        match (method, segments.as_slice()) {
            (&Method::POST, ["shares"]) => {
                let request: ShareRequest = parse_body(body)?;
                let share = self.catalog.create_share(request).await?;
                ok(json!({ "share": share }))
            }
            (&Method::GET, ["shares"]) => ok(json!({ "shares": self.catalog.snapshot().shares() })),
            (&Method::GET, ["shares", name]) => {
                let snapshot = self.catalog.snapshot();
                let share = snapshot.share(name).ok_or_else(|| share_not_found(name))?;
                ok(json!({ "share": share }))
            }
            (&Method::PUT, ["shares", name]) => {
                let request: ShareRequest = parse_body(body)?;
                let share = self.catalog.update_share(name, request).await?;
                ok(json!({ "share": share }))
            }
            (&Method::DELETE, ["shares", name]) => {
                self.catalog.delete_share(name).await?;
                Ok((StatusCode::NO_CONTENT, Value::Null))
            }
            (&Method::POST, ["shares", name, "tokens"]) => {
                let request: TokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
                    TokenRequest::default()
                } else {
                    parse_body(body)?
                };
                let expires_at = match request.expires_at.as_deref().filter(|t| !t.is_empty()) {
                    Some(text) => Some(OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
                        SharingError::invalid(format!("expiresAt {text:?} is not an RFC 3339 time"))
                    })?),
                    None => None,
                };
                let token = self
                    .catalog
                    .create_token(name, request.description, expires_at)
                    .await?;
                let snapshot = self.catalog.snapshot();
                let mut value = token_json(&snapshot, &token.record);
                value["token"] = Value::String(token.secret.clone());
                value["profile"] = self.profile(&token.secret, token.record.expires_at);
                ok(value)
            }
            (&Method::GET, ["shares", name, "tokens"]) => {
                let snapshot = self.catalog.snapshot();
                let share = snapshot.share(name).ok_or_else(|| share_not_found(name))?;
                let tokens: Vec<Value> = snapshot
                    .tokens_of(&share.id)
                    .map(|token| token_json(&snapshot, token))
                    .collect();
                ok(json!({ "tokens": tokens }))
            }
            (&Method::DELETE, ["tokens", token_id]) => {
                self.catalog.delete_token(token_id).await?;
                Ok((StatusCode::NO_CONTENT, Value::Null))
            }
            (&Method::GET, ["tokens", token_id, "profile"]) => {
                let snapshot = self.catalog.snapshot();
                if !snapshot
                    .document
                    .tokens
                    .iter()
                    .any(|t| t.token_id == *token_id)
                {
                    return Err(SharingError::not_found(format!(
                        "token '{token_id}' not found"
                    )));
                }
                Err(SharingError::new(
                    ErrorKind::Unsupported,
                    "this node keeps only a hash of each token secret, so a profile can be shown \
                     only when the token is created; create a new token to issue a new profile",
                ))
            }
            _ => Err(SharingError::not_found(format!(
                "no admin route {method} {path}"
            ))),
        }
    }

    /// A Delta Sharing profile (version 1, bearer token).
    pub fn profile(&self, secret: &str, expires_at: Option<OffsetDateTime>) -> Value {
        let mut profile = json!({
            "shareCredentialsVersion": 1,
            "endpoint": self.config.profile_endpoint(),
            "bearerToken": secret,
        });
        if let Some(expires) = expires_at {
            profile["expirationTime"] = Value::String(rfc3339(expires));
        }
        profile
    }
}

fn token_json(snapshot: &CatalogSnapshot, token: &TokenRecord) -> Value {
    let share_name = snapshot
        .share_by_id(&token.share_id)
        .map(|share| share.name.clone())
        .unwrap_or_default();
    let mut value = json!({
        "tokenId": token.token_id,
        "shareId": token.share_id,
        "shareName": share_name,
        "createdAt": rfc3339(token.created_at),
        "expiresAt": token.expires_at.map(rfc3339),
    });
    if let Some(description) = &token.description {
        value["description"] = Value::String(description.clone());
    }
    value
}

fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&Rfc3339).unwrap_or_default()
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|error| SharingError::malformed(format!("request body is not valid: {error}")))
}
