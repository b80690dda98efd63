//! `edgedeploy register-instance`: onboards a device in one step, on the
//! store directly (it works while the server runs). It registers the
//! instance as RegisterOnPremisesInstance and AddTagsToOnPremisesInstances
//! would, creates the instance's own access key, and writes the agent's
//! configuration (YAML, mode 0600) with the endpoint, the instance ARN as
//! HostIdentifier and the key. If a step fails, the earlier ones are undone.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::instances::{add_tags, register, session_arn_for};
use super::tags::{MAX_TAG_KEY, MAX_TAG_VALUE, Tag, check_tag_text};
use super::validate::INSTANCE_NAME;
use crate::server::{self, Settings, State, auth};

/// What to onboard.
#[derive(Debug, Clone)]
pub struct Request {
    /// The server's data directory.
    pub data_dir: PathBuf,
    /// Store URL, when not the SQLite database in `data_dir`.
    pub database: Option<String>,
    /// Instance name.
    pub name: String,
    /// Tags, as `KEY=VALUE`.
    pub tags: Vec<String>,
    /// Where to write the agent configuration (must not exist).
    pub agent_config: PathBuf,
    /// Service URL the agent uses; the server's recorded endpoint when `None`.
    pub endpoint: Option<String>,
    /// Region of the agent's signatures and of the instance ARN.
    pub region: String,
}

/// What was onboarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Onboarded {
    /// Instance name.
    pub name: String,
    /// Instance ARN: the agent's HostIdentifier.
    pub instance_arn: String,
    /// The instance's access key id (its secret is only in the agent configuration).
    pub access_key_id: String,
    /// The agent configuration written.
    pub agent_config: PathBuf,
    /// The endpoint in it.
    pub endpoint: String,
}

impl fmt::Display for Onboarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "registered instance {} ({})", self.name, self.instance_arn)?;
        writeln!(f, "access key {} (instance key: command API and bundle downloads only)", self.access_key_id)?;
        write!(
            f,
            "agent configuration {} for endpoint {}; set root_dir in it if the default does not suit",
            self.agent_config.display(),
            self.endpoint
        )
    }
}

/// The agent configuration keys written (see docs/configuration.md).
#[derive(Debug, Serialize)]
struct AgentConfig<'a> {
    deploy_control_endpoint: &'a str,
    s3_endpoint_override: &'a str,
    host_identifier: &'a str,
    aws_access_key_id: &'a str,
    aws_secret_access_key: &'a str,
    region: &'a str,
}

/// A `--tag KEY=VALUE` argument (the value may be empty).
pub fn parse_tag_arg(arg: &str) -> Result<Tag, String> {
    let (key, value) = arg.split_once('=').ok_or_else(|| format!("--tag {arg:?} is not KEY=VALUE"))?;
    if key.is_empty() || key.chars().count() > MAX_TAG_KEY {
        return Err(format!("--tag {arg:?}: the key must be 1 to {MAX_TAG_KEY} characters"));
    }
    if value.chars().count() > MAX_TAG_VALUE {
        return Err(format!("--tag {arg:?}: the value is longer than {MAX_TAG_VALUE} characters"));
    }
    check_tag_text("Key", key)
        .and_then(|()| check_tag_text("Value", value))
        .map_err(|e| format!("--tag {arg:?}: {e}"))?;
    Ok((key.to_string(), value.to_string()))
}

/// Onboards `request.name`; see the module documentation.
pub async fn run(request: Request) -> Result<Onboarded, String> {
    INSTANCE_NAME.check(&request.name).map_err(|e| format!("--name: {}", e.message))?;
    let tags = request.tags.iter().map(|t| parse_tag_arg(t)).collect::<Result<Vec<_>, _>>()?;
    let endpoint = request.endpoint.clone().or_else(|| server::recorded_endpoint(&request.data_dir)).ok_or_else(|| {
        format!(
            "no endpoint: give --endpoint URL (the address devices reach the server at); {} has no recorded endpoint",
            request.data_dir.display()
        )
    })?;
    if request.agent_config.exists() {
        return Err(format!(
            "{} already exists; remove it or choose another --agent-config",
            request.agent_config.display()
        ));
    }
    let state = server::open_state(&request.data_dir, request.database.as_deref(), Settings::default()).await?;
    let instance_arn = register(&state, &request.name, Some(&session_arn_for(&request.name)), None, &request.region)
        .await
        .map_err(|e| match e.type_.as_str() {
            "InstanceNameAlreadyRegisteredException" => format!(
                "instance {:?} is already registered; deregister it first (aws deploy deregister-on-premises-instance) to register it again",
                request.name
            ),
            _ => format!("registering {:?}: {e}", request.name),
        })?;
    match finish(&state, &request, &tags, &instance_arn, &endpoint).await {
        Ok(access_key_id) => Ok(Onboarded {
            name: request.name,
            instance_arn,
            access_key_id,
            agent_config: request.agent_config,
            endpoint,
        }),
        Err(e) => {
            undo(&state, &request.name).await;
            Err(e)
        }
    }
}

/// Tags, key and agent configuration of a just-registered instance.
async fn finish(state: &State, request: &Request, tags: &[Tag], arn: &str, endpoint: &str) -> Result<String, String> {
    if !tags.is_empty() {
        add_tags(state, std::slice::from_ref(&request.name), tags).await.map_err(|e| format!("tagging: {e}"))?;
    }
    let (id, secret) = auth::create_key(&state.store, Some(&request.name))
        .await
        .map_err(|e| format!("creating the access key: {e}"))?;
    let config = AgentConfig {
        deploy_control_endpoint: endpoint,
        s3_endpoint_override: endpoint,
        host_identifier: arn,
        aws_access_key_id: &id,
        aws_secret_access_key: &secret,
        region: &request.region,
    };
    let yaml = serde_yaml::to_string(&config).map_err(|e| format!("encoding the agent configuration: {e}"))?;
    let text = format!(
        "# edgedeploy agent configuration for instance {}, written by `edgedeploy register-instance`.\n# Keep it secret (mode 0600). Add root_dir: and other keys as needed.\n{yaml}",
        request.name
    );
    write_private(&request.agent_config, text.as_bytes())
        .map_err(|e| format!("writing {}: {e}", request.agent_config.display()))?;
    Ok(id)
}

/// Removes a half-onboarded instance: its row, tags and keys.
async fn undo(state: &State, name: &str) {
    for statement in [
        "DELETE FROM credentials WHERE kind = 'instance' AND instance_name = $1",
        "DELETE FROM instance_tags WHERE instance_name = $1",
        "DELETE FROM instances WHERE instance_name = $1",
    ] {
        if let Err(e) = sqlx::query(statement).bind(name).execute(&state.store.pool).await {
            log::error!("undoing the registration of {name}: {e}");
        }
    }
}

/// Writes a new file readable by its owner only, durably, never replacing
/// an existing one: temp file (0600), fsync, link into place, fsync the directory.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = crate::journal::temp_path(path);
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::hard_link(&tmp, path)?;
        crate::journal::fsync_dir(crate::journal::parent_of(path))
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_arguments_split_at_the_first_equals_sign() {
        assert_eq!(parse_tag_arg("env=prod").unwrap(), ("env".into(), "prod".into()));
        assert_eq!(parse_tag_arg("expr=a=b").unwrap(), ("expr".into(), "a=b".into()));
        assert_eq!(parse_tag_arg("canary=").unwrap(), ("canary".into(), String::new()));
        assert!(parse_tag_arg("=x").is_err());
        assert!(parse_tag_arg("novalue").is_err());
    }

    #[test]
    fn private_files_are_0600_and_never_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("edgedeploy-onboard-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.yml");
        write_private(&path, b"a: 1\n").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(write_private(&path, b"a: 2\n").is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a: 1\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
