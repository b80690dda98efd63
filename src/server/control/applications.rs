//! Applications: control API operations.

use serde_json::Value;

use crate::server::State;
use crate::server::api::OpResult;

use super::not_implemented;

/// `CreateApplication`.
pub async fn create_application(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("CreateApplication"))
}

/// `GetApplication`.
pub async fn get_application(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("GetApplication"))
}

/// `BatchGetApplications`.
pub async fn batch_get_applications(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("BatchGetApplications"))
}

/// `ListApplications`.
pub async fn list_applications(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("ListApplications"))
}

/// `UpdateApplication`.
pub async fn update_application(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("UpdateApplication"))
}

/// `DeleteApplication`.
pub async fn delete_application(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("DeleteApplication"))
}
