//! Deployment targets (instances of a deployment): control API operations.

use serde_json::Value;

use crate::server::State;
use crate::server::api::OpResult;

use super::not_implemented;

/// `ListDeploymentTargets`.
pub async fn list_deployment_targets(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("ListDeploymentTargets"))
}

/// `GetDeploymentTarget`.
pub async fn get_deployment_target(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("GetDeploymentTarget"))
}

/// `BatchGetDeploymentTargets`.
pub async fn batch_get_deployment_targets(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("BatchGetDeploymentTargets"))
}

/// `ListDeploymentInstances`.
pub async fn list_deployment_instances(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("ListDeploymentInstances"))
}

/// `GetDeploymentInstance`.
pub async fn get_deployment_instance(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("GetDeploymentInstance"))
}

/// `BatchGetDeploymentInstances`.
pub async fn batch_get_deployment_instances(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("BatchGetDeploymentInstances"))
}
