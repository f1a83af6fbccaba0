//! Errors of the sharing and admin APIs, and their one mapping to the wire:
//! `{"errorCode": "...", "message": "..."}` with the reference server's codes and statuses.
//! Internal errors are logged and sent with an empty message.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use thiserror::Error;

use crate::body::{full_body, ResponseBody};

/// The error kinds a client can see. Code names never change once shipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400 `INVALID_PARAMETER_VALUE`: a parameter is out of range or a token is bad.
    InvalidParameter,
    /// 400 `MALFORMED_REQUEST`: the body does not parse.
    MalformedRequest,
    /// 400 `UNSUPPORTED_OPERATION`: the table needs what the client cannot read.
    Unsupported,
    /// 401 `UNAUTHENTICATED`: missing, unknown, expired or revoked token.
    Unauthenticated,
    /// 403 `PERMISSION_DENIED`.
    PermissionDenied,
    /// 404 `RESOURCE_DOES_NOT_EXIST`: unknown or not granted.
    NotFound,
    /// 409 `RESOURCE_ALREADY_EXISTS`.
    AlreadyExists,
    /// 413 `REQUEST_TOO_LARGE`.
    TooLarge,
    /// 500 `INTERNAL_ERROR`: the message is logged, never sent.
    Internal,
    /// 500 `INTERNAL_ERROR` with its message: one table's own files are broken (its
    /// metadata or a commit does not parse, a manifest is missing); the message names the
    /// table and the file.
    TableUnreadable,
    /// 503 `TEMPORARILY_UNAVAILABLE`: storage quorum lost; clients retry.
    Unavailable,
}

impl ErrorKind {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::InvalidParameter | ErrorKind::MalformedRequest | ErrorKind::Unsupported => {
                StatusCode::BAD_REQUEST
            }
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::AlreadyExists => StatusCode::CONFLICT,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Internal | ErrorKind::TableUnreadable => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidParameter => "INVALID_PARAMETER_VALUE",
            ErrorKind::MalformedRequest => "MALFORMED_REQUEST",
            ErrorKind::Unsupported => "UNSUPPORTED_OPERATION",
            ErrorKind::Unauthenticated => "UNAUTHENTICATED",
            ErrorKind::PermissionDenied => "PERMISSION_DENIED",
            ErrorKind::NotFound => "RESOURCE_DOES_NOT_EXIST",
            ErrorKind::AlreadyExists => "RESOURCE_ALREADY_EXISTS",
            ErrorKind::TooLarge => "REQUEST_TOO_LARGE",
            ErrorKind::Internal | ErrorKind::TableUnreadable => "INTERNAL_ERROR",
            ErrorKind::Unavailable => "TEMPORARILY_UNAVAILABLE",
        }
    }
}

#[derive(Debug, Error)]
#[error("{kind:?}: {message}")]
pub struct SharingError {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T, E = SharingError> = std::result::Result<T, E>;

impl SharingError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        SharingError {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParameter, message)
    }
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::MalformedRequest, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// The error as an HTTP response. `head` leaves the body out (HEAD requests).
    pub fn into_response(self, head: bool) -> Response<ResponseBody> {
        let message = if self.kind == ErrorKind::Internal {
            tracing::error!(message = %self.message, "internal error");
            String::new()
        } else {
            self.message
        };
        let body = if head {
            Bytes::new()
        } else {
            let json = serde_json::json!({"errorCode": self.kind.code(), "message": message});
            Bytes::from(json.to_string())
        };
        let mut response = Response::new(full_body(body));
        *response.status_mut() = self.kind.status();
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        response
    }
}
