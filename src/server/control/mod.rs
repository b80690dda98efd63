//! The CodeDeploy control API (`CodeDeploy_20141006.*`): names, shapes and
//! exception names follow botocore's `codedeploy` 2014-10-06 model. One
//! module per resource; each operation takes the input document and returns
//! the output document.

pub mod applications;
pub mod configs;
pub mod deployments;
mod group_settings;
pub mod groups;
pub mod instances;
pub mod onboard;
pub mod revisions;
pub mod tags;
pub mod targets;
pub mod validate;

use serde_json::Value;

use super::State;
use super::api::{ApiError, OpResult};

/// Runs control API `operation` with `input`.
pub async fn dispatch(state: &State, operation: &str, input: Value) -> OpResult {
    match operation {
        "CreateApplication" => applications::create_application(state, input).await,
        "GetApplication" => applications::get_application(state, input).await,
        "BatchGetApplications" => applications::batch_get_applications(state, input).await,
        "ListApplications" => applications::list_applications(state, input).await,
        "UpdateApplication" => applications::update_application(state, input).await,
        "DeleteApplication" => applications::delete_application(state, input).await,
        "CreateDeploymentGroup" => groups::create_deployment_group(state, input).await,
        "GetDeploymentGroup" => groups::get_deployment_group(state, input).await,
        "BatchGetDeploymentGroups" => groups::batch_get_deployment_groups(state, input).await,
        "ListDeploymentGroups" => groups::list_deployment_groups(state, input).await,
        "UpdateDeploymentGroup" => groups::update_deployment_group(state, input).await,
        "DeleteDeploymentGroup" => groups::delete_deployment_group(state, input).await,
        "CreateDeploymentConfig" => configs::create_deployment_config(state, input).await,
        "GetDeploymentConfig" => configs::get_deployment_config(state, input).await,
        "ListDeploymentConfigs" => configs::list_deployment_configs(state, input).await,
        "DeleteDeploymentConfig" => configs::delete_deployment_config(state, input).await,
        "RegisterOnPremisesInstance" => instances::register_on_premises_instance(state, input).await,
        "DeregisterOnPremisesInstance" => instances::deregister_on_premises_instance(state, input).await,
        "GetOnPremisesInstance" => instances::get_on_premises_instance(state, input).await,
        "BatchGetOnPremisesInstances" => instances::batch_get_on_premises_instances(state, input).await,
        "ListOnPremisesInstances" => instances::list_on_premises_instances(state, input).await,
        "AddTagsToOnPremisesInstances" => instances::add_tags_to_on_premises_instances(state, input).await,
        "RemoveTagsFromOnPremisesInstances" => instances::remove_tags_from_on_premises_instances(state, input).await,
        "RegisterApplicationRevision" => revisions::register_application_revision(state, input).await,
        "GetApplicationRevision" => revisions::get_application_revision(state, input).await,
        "BatchGetApplicationRevisions" => revisions::batch_get_application_revisions(state, input).await,
        "ListApplicationRevisions" => revisions::list_application_revisions(state, input).await,
        "CreateDeployment" => deployments::create_deployment(state, input).await,
        "GetDeployment" => deployments::get_deployment(state, input).await,
        "BatchGetDeployments" => deployments::batch_get_deployments(state, input).await,
        "ListDeployments" => deployments::list_deployments(state, input).await,
        "StopDeployment" => deployments::stop_deployment(state, input).await,
        "ListDeploymentTargets" => targets::list_deployment_targets(state, input).await,
        "GetDeploymentTarget" => targets::get_deployment_target(state, input).await,
        "BatchGetDeploymentTargets" => targets::batch_get_deployment_targets(state, input).await,
        "ListDeploymentInstances" => targets::list_deployment_instances(state, input).await,
        "GetDeploymentInstance" => targets::get_deployment_instance(state, input).await,
        "BatchGetDeploymentInstances" => targets::batch_get_deployment_instances(state, input).await,
        _ => Err(ApiError::client(
            "UnknownOperationException",
            format!("operation {operation:?} is not supported by this server"),
        )),
    }
}

/// The error of an operation this server does not provide yet.
pub fn not_implemented(operation: &str) -> ApiError {
    ApiError::new(501, "UnsupportedActionForDeploymentTypeException", format!("{operation} is not implemented yet"))
}
