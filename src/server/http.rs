//! The HTTP front: `POST /` with `X-Amz-Target` goes to the control API
//! (`CodeDeploy_20141006.*`) or the command API
//! (`CodeDeployCommandService_v20141006.*`); every other request is the
//! S3-compatible bundle store.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::extract::State as AxumState;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::api::{ApiError, json_response};
use super::auth::{self, SignedRequest};
use super::{State, bundles, commands, control, listen};
use crate::protocol::command::{SIGNING_NAME as COMMAND_SIGNING_NAME, TARGET_PREFIX as COMMAND_PREFIX};
use crate::protocol::sigv4::{self, sha256_hex};

/// Control API target prefix.
pub const CONTROL_PREFIX: &str = "CodeDeploy_20141006";
/// Largest JSON request body read.
const MAX_JSON_BODY: usize = 1 << 20;

/// Reads a JSON request body whose signature is not verified yet: at most
/// [`MAX_JSON_BODY`] bytes, within the body timeout, in one of the
/// pre-authentication slots (waited for up to the header timeout, else 503
/// ThrottlingException).
async fn read_preauth_body(body: Body) -> Result<axum::body::Bytes, ApiError> {
    let limits = listen::limits();
    let _slot = listen::preauth_slot_within(limits.header_timeout)
        .await
        .ok_or_else(|| ApiError::new(503, "ThrottlingException", "Rate exceeded: too many request bodies at once"))?;
    let deadline = limits.body_timeout;
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, MAX_JSON_BODY)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => {
            Err(ApiError::new(413, "SerializationException", format!("request body over {MAX_JSON_BODY} bytes")))
        }
        Err(_) => Err(ApiError::new(408, "RequestTimeout", format!("request body not received within {deadline:?}"))),
    }
}

/// The router.
pub fn router(state: Arc<State>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

async fn handle(AxumState(state): AxumState<Arc<State>>, request: Request<Body>) -> Response {
    let target = request.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).map(str::to_string);
    match target {
        Some(target) if request.method() == "POST" && request.uri().path() == "/" => {
            let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
                || request
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.trim() != "0");
            let (request, body_read) = bundles::TrackedBody::wrap(request);
            json_api(&state, &target, request).await.unwrap_or_else(|e| {
                let mut response = e.into_response();
                // Refused before its body was read (unauthenticated): the
                // body is not read at all, and the connection is closed.
                if has_body && !body_read.load(Ordering::Acquire) {
                    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            })
        }
        _ => bundles::handle(&state, request).await,
    }
}

/// Lowercased headers of a request, as signatures see them. HTTP/2 carries
/// the host in the `:authority` pseudo-header, which hyper puts in the URI;
/// signatures cover it as `host`, so it is added from there when missing.
pub fn header_pairs(request: &Request<Body>) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    if !headers.iter().any(|(n, _)| n == "host")
        && let Some(authority) = request.uri().authority()
    {
        headers.push(("host".to_string(), authority.as_str().to_string()));
    }
    headers
}

/// Decoded query parameters of a request.
pub fn query_pairs(request: &Request<Body>) -> Vec<(String, String)> {
    request.uri().query().map(sigv4::query_pairs).unwrap_or_default()
}

async fn json_api(state: &State, target: &str, request: Request<Body>) -> Result<Response, ApiError> {
    let (prefix, operation) = target.split_once('.').ok_or_else(|| {
        ApiError::client("UnknownOperationException", format!("X-Amz-Target {target:?} is not Prefix.Operation"))
    })?;
    let service = match prefix {
        CONTROL_PREFIX => "codedeploy",
        COMMAND_PREFIX => COMMAND_SIGNING_NAME,
        _ => return Err(ApiError::client("UnknownOperationException", format!("unknown service {prefix:?}"))),
    };
    if request.headers().get_all("x-amz-target").iter().count() > 1 {
        return Err(ApiError::client("SerializationException", "X-Amz-Target is given more than once"));
    }
    let headers = header_pairs(&request);
    let query = query_pairs(&request);
    let path = request.uri().path().to_string();
    // Everything but the payload hash is checked before the body is read.
    let key = auth::check_headers(&state.store, &headers, service, auth::JSON_SIGNED_HEADERS).await?;
    let (parts, body) = request.into_parts();
    let body = read_preauth_body(body).await?;
    let payload_sha256 = sha256_hex(&body);
    let signed = SignedRequest {
        method: "POST",
        path: &path,
        query: &query,
        headers: &headers,
        payload_sha256: &payload_sha256,
        service,
    };
    let identity = key.verify(&signed)?;
    listen::mark_authenticated(&parts.extensions);
    let input: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::client("SerializationException", format!("request body is not JSON: {e}")))?
    };
    if !input.is_object() {
        return Err(ApiError::client("SerializationException", "request body must be a JSON object"));
    }
    let output = match prefix {
        CONTROL_PREFIX => {
            auth::require_admin(&identity)?;
            control::dispatch(state, operation, input).await?
        }
        _ => commands::dispatch(state, &identity, operation, input).await?,
    };
    Ok(json_response(StatusCode::OK, output.to_string()))
}
