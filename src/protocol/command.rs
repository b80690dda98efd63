//! The command API (agent to service): target prefix
//! `CodeDeployCommandService_v20141006`, signing name `codedeploy-commands`.
//! Shapes follow the reference agent's `CodeDeployCommand.api.json`.

use serde::{Deserialize, Serialize};

/// `X-Amz-Target` prefix of the command API.
pub const TARGET_PREFIX: &str = "CodeDeployCommandService_v20141006";
/// SigV4 signing name of the command API.
pub const SIGNING_NAME: &str = "codedeploy-commands";
/// Envelope format of a deployment specification from this server.
pub const FORMAT_TEXT_JSON: &str = "TEXT/JSON";
/// Envelope format of a deployment specification from AWS (signed).
pub const FORMAT_PKCS7_JSON: &str = "PKCS7/JSON";
/// Envelope format of diagnostics.
pub const FORMAT_JSON: &str = "JSON";
/// Largest diagnostics payload the service accepts.
pub const MAX_PAYLOAD_CHARS: usize = 8192;

/// A format and its payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Envelope {
    /// `TEXT/JSON`, `PKCS7/JSON` or `JSON`.
    pub format: String,
    /// The content.
    pub payload: String,
}

/// Status of a host command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandStatus {
    /// Not yet picked up.
    Pending,
    /// Acknowledged by the agent.
    InProgress,
    /// Completed successfully.
    Succeeded,
    /// Completed with a failure.
    Failed,
}

/// `PollHostCommand` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PollHostCommandInput {
    /// The polling host.
    pub host_identifier: String,
}

/// One lifecycle event to run on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostCommandInstance {
    /// Identifies this command in acknowledgements and completions.
    pub host_command_identifier: String,
    /// The host it is for.
    pub host_identifier: String,
    /// Identifies the deployment on this host (for GetDeploymentSpecification).
    pub deployment_execution_id: String,
    /// The lifecycle event, e.g. `BeforeInstall`.
    pub command_name: String,
    /// Opaque number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<i64>,
}

/// `PollHostCommand` output; no command when nothing is ready.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PollHostCommandOutput {
    /// The command, if one is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_command: Option<HostCommandInstance>,
}

/// `GetDeploymentSpecification` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetDeploymentSpecificationInput {
    /// From the host command.
    pub deployment_execution_id: String,
    /// The asking host.
    pub host_identifier: String,
}

/// The specification envelopes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeploymentSpecificationEnvelopes {
    /// The deployment's generic specification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic_envelope: Option<Envelope>,
    /// Variant id, unused here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant_id: Option<String>,
    /// Variant envelope, unused here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant_envelope: Option<Envelope>,
}

/// `GetDeploymentSpecification` output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetDeploymentSpecificationOutput {
    /// `CodeDeploy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_system: Option<String>,
    /// The specification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_specification: Option<DeploymentSpecificationEnvelopes>,
}

/// `PutHostCommandAcknowledgement` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutHostCommandAcknowledgementInput {
    /// The command.
    pub host_command_identifier: String,
    /// Optional diagnostics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Envelope>,
}

/// `PutHostCommandAcknowledgement` output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutHostCommandAcknowledgementOutput {
    /// The command's status on the service (e.g. Failed when it timed out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_status: Option<CommandStatus>,
}

/// `PutHostCommandComplete` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutHostCommandCompleteInput {
    /// The command.
    pub host_command_identifier: String,
    /// Succeeded or Failed.
    pub command_status: CommandStatus,
    /// The diagnostic, as JSON in a `JSON` envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Envelope>,
}

/// An AWS JSON 1.1 error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Exception name, e.g. `ClientException`.
    #[serde(rename = "__type")]
    pub type_: String,
    /// What went wrong.
    #[serde(default, alias = "Message")]
    pub message: String,
}

impl ErrorBody {
    /// The exception name without a `namespace#` prefix.
    pub fn exception(&self) -> &str {
        self.type_.rsplit('#').next().unwrap_or(&self.type_)
    }
}
