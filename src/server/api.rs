//! AWS JSON 1.1 framing: errors as `{"__type", "message"}` with a 4xx/5xx
//! status, bodies as `application/x-amz-json-1.1`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Content type of every JSON 1.1 request and response.
pub const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// An error as the AWS JSON protocol reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Exception name from the service model, e.g. `ApplicationDoesNotExistException`.
    pub type_: String,
    /// What went wrong, for people.
    pub message: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: u16, type_: &str, message: impl Into<String>) -> Self {
        ApiError { status, type_: type_.to_string(), message: message.into() }
    }

    /// A client error (400) named after the model's exception.
    pub fn client(type_: &str, message: impl Into<String>) -> Self {
        Self::new(400, type_, message)
    }

    /// A failure of the server itself (500). The detail is logged, not sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        log::error!("internal error: {detail}");
        Self::new(500, "InternalFailure", "The server encountered an internal error; see its log.")
    }

    /// A database error.
    pub fn store(e: sqlx::Error) -> Self {
        Self::internal(format!("store: {e}"))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.type_, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::store(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({ "__type": self.type_, "message": self.message }).to_string();
        json_response(status, body)
    }
}

/// A JSON 1.1 response.
pub fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
    response
}

/// The result of one operation: its output document.
pub type OpResult = Result<Value, ApiError>;
