//! Who the agent is to the service: HostIdentifier, access key, region.
//! From the agent configuration, or from CodeDeploy's on-premises file
//! (`codedeploy.onpremises.yml`: `aws_access_key_id`,
//! `aws_secret_access_key`, `iam_user_arn` or `iam_session_arn`, `region`).
//! Keys in the agent configuration win over the file.

use std::path::Path;

use serde_yaml::Value;

use crate::config::Config;
use crate::protocol::sigv4::Credentials;

/// Region signed into requests when neither file names one.
pub const DEFAULT_REGION: &str = "us-east-1";
/// Largest on-premises file read.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The agent's identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// HostIdentifier sent with PollHostCommand.
    pub host_identifier: String,
    /// The access key requests are signed with.
    pub credentials: Credentials,
    /// Region in the signatures.
    pub region: String,
}

/// The keys of a `codedeploy.onpremises.yml` that matter here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnPremises {
    /// `aws_access_key_id`.
    pub access_key_id: Option<String>,
    /// `aws_secret_access_key`.
    pub secret_access_key: Option<String>,
    /// `iam_user_arn`: CodeDeploy's HostIdentifier of an IAM-user instance.
    pub iam_user_arn: Option<String>,
    /// `iam_session_arn`: temporary credentials (not supported).
    pub iam_session_arn: Option<String>,
    /// `region`.
    pub region: Option<String>,
}

/// Parses an on-premises file's text (keys with or without a leading colon).
pub fn parse_on_premises(text: &str) -> Result<OnPremises, String> {
    // The same bounds as the AppSpec and the agent configuration (depth, aliases, size).
    let value: Value = crate::appspec::yaml::parse(text).map_err(|e| e.to_string())?;
    let mapping = match value {
        Value::Mapping(m) => m,
        Value::Null => Default::default(),
        _ => return Err("expected a mapping of keys".into()),
    };
    let mut file = OnPremises::default();
    for (key, value) in &mapping {
        let Some(key) = key.as_str() else { continue };
        let text = match value {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Null => None,
            Value::String(_) => None,
            _ => return Err(format!("{key}: expected a string")),
        };
        match key.strip_prefix(':').unwrap_or(key) {
            "aws_access_key_id" => file.access_key_id = text,
            "aws_secret_access_key" => file.secret_access_key = text,
            "iam_user_arn" => file.iam_user_arn = text,
            "iam_session_arn" => file.iam_session_arn = text,
            "region" => file.region = text,
            _ => {}
        }
    }
    Ok(file)
}

/// Resolves the identity from `config` and its on-premises file.
pub fn resolve(config: &Config) -> Result<Identity, String> {
    let file = match &config.on_premises_config_file {
        Some(path) => read_on_premises(path)?,
        None => OnPremises::default(),
    };
    combine(config, &file)
}

fn read_on_premises(path: &Path) -> Result<OnPremises, String> {
    let err = |m: String| format!("on_premises_config_file {}: {m}", path.display());
    let size = std::fs::metadata(path).map_err(|e| err(e.to_string()))?.len();
    if size > MAX_FILE_BYTES {
        return Err(err(format!("{size} bytes; the limit is {MAX_FILE_BYTES}")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse_on_premises(&text).map_err(err)
}

/// Combines the configuration (which wins) and the on-premises file.
pub fn combine(config: &Config, file: &OnPremises) -> Result<Identity, String> {
    let access_key_id = config.aws_access_key_id.clone().or_else(|| file.access_key_id.clone());
    let secret_access_key = config.aws_secret_access_key.clone().or_else(|| file.secret_access_key.clone());
    let (access_key_id, secret_access_key) = match (access_key_id, secret_access_key) {
        (Some(id), Some(secret)) => (id, secret),
        _ if file.iam_session_arn.is_some() => {
            return Err("on_premises_config_file names iam_session_arn: temporary session credentials are not \
                        supported by this agent; register the instance with an IAM user's access key \
                        (aws_access_key_id, aws_secret_access_key)"
                .into());
        }
        (Some(_), None) => return Err("aws_secret_access_key is not set (aws_access_key_id is)".into()),
        (None, Some(_)) => return Err("aws_access_key_id is not set (aws_secret_access_key is)".into()),
        (None, None) => {
            return Err("no credentials: set aws_access_key_id and aws_secret_access_key, \
                        or on_premises_config_file"
                .into());
        }
    };
    let host_identifier = config.host_identifier.clone().or_else(|| file.iam_user_arn.clone()).ok_or(
        "host_identifier is not set: the daemon needs this device's HostIdentifier \
         (or an iam_user_arn in on_premises_config_file)",
    )?;
    let region = config.region.clone().or_else(|| file.region.clone()).unwrap_or_else(|| DEFAULT_REGION.into());
    Ok(Identity { host_identifier, credentials: Credentials { access_key_id, secret_access_key }, region })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "---\nregion: eu-west-1\naws_access_key_id: AKFILE\naws_secret_access_key: sfile\n\
                        iam_user_arn: arn:aws:iam::1:user/dev-1\n";

    #[test]
    fn on_premises_file_supplies_everything() {
        let file = parse_on_premises(FILE).unwrap();
        let id = combine(&Config::default(), &file).unwrap();
        assert_eq!(id.host_identifier, "arn:aws:iam::1:user/dev-1");
        assert_eq!(id.credentials.access_key_id, "AKFILE");
        assert_eq!(id.region, "eu-west-1");
    }

    #[test]
    fn configuration_wins_over_the_file() {
        let file = parse_on_premises(FILE).unwrap();
        let config = Config {
            host_identifier: Some("dev-1".into()),
            aws_access_key_id: Some("AKCONF".into()),
            aws_secret_access_key: Some("sconf".into()),
            region: Some("local".into()),
            ..Config::default()
        };
        let id = combine(&config, &file).unwrap();
        assert_eq!(
            (id.host_identifier.as_str(), id.credentials.access_key_id.as_str(), id.region.as_str()),
            ("dev-1", "AKCONF", "local")
        );
    }

    #[test]
    fn missing_pieces_are_named() {
        let config = Config {
            aws_access_key_id: Some("AK".into()),
            aws_secret_access_key: Some("s".into()),
            ..Config::default()
        };
        let err = combine(&config, &OnPremises::default()).unwrap_err();
        assert!(err.starts_with("host_identifier is not set"), "{err}");
        let err = combine(&Config::default(), &OnPremises::default()).unwrap_err();
        assert!(err.contains("aws_access_key_id"), "{err}");
        let session = parse_on_premises(":iam_session_arn: arn:aws:sts::1:assumed-role/r/s\n").unwrap();
        let err = combine(&Config::default(), &session).unwrap_err();
        assert!(err.contains("iam_session_arn"), "{err}");
        assert_eq!(
            combine(&Config { host_identifier: Some("h".into()), ..config }, &OnPremises::default()).unwrap().region,
            DEFAULT_REGION
        );
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(parse_on_premises("- a list\n").is_err());
        assert!(parse_on_premises("region: [1]\n").is_err());
        assert_eq!(parse_on_premises("").unwrap(), OnPremises::default());
    }
}
