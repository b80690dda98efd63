//! S3's error answers: an XML document with the code, the message, the
//! resource and the request id, and the status S3 uses for that code. HEAD
//! answers carry the status only.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use super::xml;
use crate::server::api::ApiError;

/// An error as S3 reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error {
    /// HTTP status.
    pub status: u16,
    /// S3 error code, e.g. `NoSuchKey`.
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// Extra elements of the error document (e.g. `Key`, `UploadId`).
    pub extra: Vec<(&'static str, String)>,
    /// Extra response headers (e.g. `Content-Range` of a 416).
    pub headers: Vec<(&'static str, String)>,
}

impl S3Error {
    /// An error with any status and code.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        S3Error { status, code, message: message.into(), extra: Vec::new(), headers: Vec::new() }
    }

    /// Adds an element to the error document.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra.push((name, value.into()));
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// 403 AccessDenied.
    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new(403, "AccessDenied", message)
    }

    /// 400 InvalidArgument.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidArgument", message)
    }

    /// 400 InvalidRequest.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidRequest", message)
    }

    /// 404 NoSuchKey.
    pub fn no_such_key(key: &str) -> Self {
        Self::new(404, "NoSuchKey", "The specified key does not exist.").with("Key", key)
    }

    /// 404 NoSuchUpload.
    pub fn no_such_upload(upload_id: &str) -> Self {
        Self::new(
            404,
            "NoSuchUpload",
            "The specified multipart upload does not exist. The upload ID may be invalid, \
             or the upload may have been aborted or completed.",
        )
        .with("UploadId", upload_id)
    }

    /// 400 EntityTooLarge.
    pub fn too_large(limit: u64) -> Self {
        Self::new(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
            .with("MaxSizeAllowed", limit.to_string())
    }

    /// 412 PreconditionFailed.
    pub fn precondition(condition: &str) -> Self {
        Self::new(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
            .with("Condition", condition)
    }

    /// 501 NotImplemented.
    pub fn not_implemented(what: &str) -> Self {
        Self::new(501, "NotImplemented", format!("{what} is not implemented by this bundle store"))
    }

    /// 500 InternalError; the detail is logged, not sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        log::error!("bundle store: {detail}");
        Self::new(500, "InternalError", "We encountered an internal error. Please try again.")
    }

    /// An I/O failure while `doing` something with the store's files.
    pub fn io(doing: &str, e: std::io::Error) -> Self {
        Self::internal(format!("{doing}: {e}"))
    }

    /// Maps a refusal of [`crate::server::auth::authenticate`] (JSON-style
    /// exception names) to S3's code and status.
    pub fn from_auth(e: ApiError) -> Self {
        match e.type_.as_str() {
            "MissingAuthenticationTokenException" => {
                Self::access_denied("Anonymous access is forbidden: sign the request with SigV4 (service s3)")
            }
            "UnrecognizedClientException" => Self::new(
                403,
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
            ),
            "InvalidSignatureException" if e.message.starts_with("Signature expired") => {
                Self::new(403, "RequestTimeTooSkewed", e.message)
            }
            "InvalidSignatureException" => Self::new(403, "SignatureDoesNotMatch", e.message),
            "IncompleteSignatureException" => Self::new(400, "AuthorizationHeaderMalformed", e.message),
            "AccessDeniedException" => Self::access_denied(e.message),
            _ if e.status >= 500 => {
                Self::new(500, "InternalError", "We encountered an internal error. Please try again.")
            }
            _ => Self::access_denied(e.message),
        }
    }

    /// The answer: XML document (none for HEAD), status, `x-amz-request-id`.
    pub fn into_response(self, resource: &str, request_id: &str, head: bool) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut doc = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>");
        xml::element(&mut doc, "Code", self.code);
        xml::element(&mut doc, "Message", &self.message);
        for (name, value) in &self.extra {
            xml::element(&mut doc, name, value);
        }
        xml::element(&mut doc, "Resource", resource);
        xml::element(&mut doc, "RequestId", request_id);
        doc.push_str("</Error>");
        let body = if head { Body::empty() } else { Body::from(doc) };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        if !head {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        }
        for (name, value) in &self.headers {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(*name, value);
            }
        }
        response
    }
}

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for S3Error {}

impl From<sqlx::Error> for S3Error {
    fn from(e: sqlx::Error) -> Self {
        Self::internal(format!("store: {e}"))
    }
}
