//! The deployment specification: the JSON inside the GenericEnvelope of
//! GetDeploymentSpecification, as CodeDeploy sends it, plus our own added
//! fields (never changed meanings): `Sha256` of an S3 bundle, the `Archive`
//! of a GitHub commit, and the `URL` revision type.

use serde::{Deserialize, Serialize};

/// One deployment, as the agent needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeploymentSpec {
    /// `d-XXXXXXXXX`.
    pub deployment_id: String,
    /// The deployment group's id (folder under the root).
    pub deployment_group_id: String,
    /// The deployment group's name.
    pub deployment_group_name: String,
    /// The application's name.
    pub application_name: String,
    /// `user`, `autoscaling`, `codeDeployRollback`, ...
    #[serde(default = "default_creator")]
    pub deployment_creator: String,
    /// `IN_PLACE`.
    #[serde(default = "default_type")]
    pub deployment_type: String,
    /// AppSpec file name in the revision.
    #[serde(default = "default_appspec", rename = "AppSpecFilename")]
    pub app_spec_filename: String,
    /// The revision.
    pub revision: Revision,
    /// Deployment-level overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_action_overrides: Option<AgentActionOverrides>,
    /// Every lifecycle event the deployment may run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all_possible_lifecycle_events: Vec<String>,
}

fn default_creator() -> String {
    "user".into()
}
fn default_type() -> String {
    "IN_PLACE".into()
}
fn default_appspec() -> String {
    "appspec.yml".into()
}

/// Where the revision is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Revision {
    /// `S3`, `GitHub` or (ours) `URL`.
    pub revision_type: String,
    /// For `S3`.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "S3Revision")]
    pub s3_revision: Option<S3Revision>,
    /// For `GitHub`.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "GitHubRevision")]
    pub github_revision: Option<GitHubRevision>,
    /// For `URL` (ours).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "UrlRevision")]
    pub url_revision: Option<UrlRevision>,
}

/// A bundle in an S3-compatible store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct S3Revision {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// `tar`, `tgz` or `zip`.
    pub bundle_type: String,
    /// Object version, if versioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Expected ETag.
    #[serde(default, rename = "ETag", skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Expected SHA-256 of the bundle, hex (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A commit of a GitHub-style repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GitHubRevision {
    /// Account or organisation.
    #[serde(default)]
    pub account: String,
    /// Repository name.
    pub repository: String,
    /// Commit id.
    pub commit_id: String,
    /// Where this server keeps the commit's archive (ours): an object of its
    /// bundle store, downloaded like an S3 revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<S3Revision>,
}

/// A bundle at an http(s) URL (ours).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UrlRevision {
    /// The URL.
    pub url: String,
    /// Expected SHA-256, hex.
    pub sha256: String,
    /// `tar`, `tgz` or `zip`.
    pub bundle_type: String,
}

/// `AgentActionOverrides`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentActionOverrides {
    /// `AgentOverrides`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_overrides: Option<AgentOverrides>,
}

/// `AgentOverrides`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentOverrides {
    /// `DISALLOW`, `OVERWRITE` or `RETAIN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_exists_behavior: Option<String>,
}

impl DeploymentSpec {
    /// The deployment's file_exists_behavior override, if any.
    pub fn file_exists_behavior(&self) -> Option<&str> {
        self.agent_action_overrides.as_ref()?.agent_overrides.as_ref()?.file_exists_behavior.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_codedeploy_style_specification() {
        let json = r#"{"DeploymentId":"d-ABC","DeploymentGroupId":"g-1","DeploymentGroupName":"Prod",
            "ApplicationName":"shop","Revision":{"RevisionType":"S3","S3Revision":{"Bucket":"b","Key":"k.tgz",
            "BundleType":"tgz","ETag":"\"abc\""}},"AgentActionOverrides":{"AgentOverrides":{"FileExistsBehavior":"RETAIN"}}}"#;
        let spec: DeploymentSpec = serde_json::from_str(json).unwrap();
        assert_eq!(spec.app_spec_filename, "appspec.yml");
        assert_eq!(spec.deployment_creator, "user");
        assert_eq!(spec.file_exists_behavior(), Some("RETAIN"));
        assert_eq!(spec.revision.s3_revision.as_ref().unwrap().etag.as_deref(), Some("\"abc\""));
        let back: DeploymentSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
    }
}
