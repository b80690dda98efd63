//! The command API for agents (`CodeDeployCommandService_v20141006.*`).

use serde_json::Value;

use super::State;
use super::api::{ApiError, OpResult};
use super::auth::Identity;

/// Runs command API `operation` for `identity`.
pub async fn dispatch(_state: &State, _identity: &Identity, operation: &str, _input: Value) -> OpResult {
    Err(ApiError::client("UnknownOperationException", format!("operation {operation:?} is not implemented yet")))
}
