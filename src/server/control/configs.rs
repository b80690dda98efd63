//! Deployment configurations (with the predefined CodeDeployDefault.*): control API operations.

use serde_json::Value;

use crate::server::State;
use crate::server::api::OpResult;

use super::not_implemented;

/// `CreateDeploymentConfig`.
pub async fn create_deployment_config(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("CreateDeploymentConfig"))
}

/// `GetDeploymentConfig`.
pub async fn get_deployment_config(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("GetDeploymentConfig"))
}

/// `ListDeploymentConfigs`.
pub async fn list_deployment_configs(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("ListDeploymentConfigs"))
}

/// `DeleteDeploymentConfig`.
pub async fn delete_deployment_config(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("DeleteDeploymentConfig"))
}
