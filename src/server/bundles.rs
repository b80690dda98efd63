//! The bundle store: an S3-compatible, path-style object API
//! (`PUT/GET/HEAD /bucket/key`), SigV4 signing name `s3`.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};

use super::State;

/// Serves one object request.
pub async fn handle(_state: &State, _request: Request<Body>) -> Response {
    (StatusCode::NOT_IMPLEMENTED, "the bundle store is not implemented yet").into_response()
}
