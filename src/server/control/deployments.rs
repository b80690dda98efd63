//! Deployments: control API operations.

use serde_json::Value;

use crate::server::State;
use crate::server::api::OpResult;

use super::not_implemented;

/// `CreateDeployment`.
pub async fn create_deployment(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("CreateDeployment"))
}

/// `GetDeployment`.
pub async fn get_deployment(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("GetDeployment"))
}

/// `BatchGetDeployments`.
pub async fn batch_get_deployments(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("BatchGetDeployments"))
}

/// `ListDeployments`.
pub async fn list_deployments(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("ListDeployments"))
}

/// `StopDeployment`.
pub async fn stop_deployment(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("StopDeployment"))
}
