//! Application revisions: control API operations.

use serde_json::Value;

use crate::server::State;
use crate::server::api::OpResult;

use super::not_implemented;

/// `RegisterApplicationRevision`.
pub async fn register_application_revision(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("RegisterApplicationRevision"))
}

/// `GetApplicationRevision`.
pub async fn get_application_revision(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("GetApplicationRevision"))
}

/// `BatchGetApplicationRevisions`.
pub async fn batch_get_application_revisions(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("BatchGetApplicationRevisions"))
}

/// `ListApplicationRevisions`.
pub async fn list_application_revisions(_state: &State, _input: Value) -> OpResult {
    Err(not_implemented("ListApplicationRevisions"))
}
