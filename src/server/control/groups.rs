//! Deployment groups (with on-premises tag filters and tag sets): control API operations.

use serde_json::Value;

use crate::server::State;
use crate::server::api::OpResult;

use super::not_implemented;

/// `CreateDeploymentGroup`.
pub async fn create_deployment_group(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("CreateDeploymentGroup"))
}

/// `GetDeploymentGroup`.
pub async fn get_deployment_group(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("GetDeploymentGroup"))
}

/// `BatchGetDeploymentGroups`.
pub async fn batch_get_deployment_groups(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("BatchGetDeploymentGroups"))
}

/// `ListDeploymentGroups`.
pub async fn list_deployment_groups(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("ListDeploymentGroups"))
}

/// `UpdateDeploymentGroup`.
pub async fn update_deployment_group(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("UpdateDeploymentGroup"))
}

/// `DeleteDeploymentGroup`.
pub async fn delete_deployment_group(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("DeleteDeploymentGroup"))
}
