//! On-premises instances and their tags: control API operations.

use serde_json::Value;

use crate::server::State;
use crate::server::api::OpResult;

use super::not_implemented;

/// `RegisterOnPremisesInstance`.
pub async fn register_on_premises_instance(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("RegisterOnPremisesInstance"))
}

/// `DeregisterOnPremisesInstance`.
pub async fn deregister_on_premises_instance(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("DeregisterOnPremisesInstance"))
}

/// `GetOnPremisesInstance`.
pub async fn get_on_premises_instance(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("GetOnPremisesInstance"))
}

/// `BatchGetOnPremisesInstances`.
pub async fn batch_get_on_premises_instances(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("BatchGetOnPremisesInstances"))
}

/// `ListOnPremisesInstances`.
pub async fn list_on_premises_instances(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("ListOnPremisesInstances"))
}

/// `AddTagsToOnPremisesInstances`.
pub async fn add_tags_to_on_premises_instances(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("AddTagsToOnPremisesInstances"))
}

/// `RemoveTagsFromOnPremisesInstances`.
pub async fn remove_tags_from_on_premises_instances(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("RemoveTagsFromOnPremisesInstances"))
}
