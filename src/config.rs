//! Agent configuration: YAML, CodeDeploy's `codedeployagent.yml` keys where
//! they mean something here (with or without the leading colon), plus our own.
//! Unknown keys are reported once and ignored; invalid values are errors that
//! name the key and the value. Reference: `docs/configuration.md`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::Value;

use crate::client::Network;
use crate::hooks::Supervision;
use crate::unpack::Policy;

/// Default deployment root, after CodeDeploy's `/opt/codedeploy-agent/deployment-root`.
pub const DEFAULT_ROOT_DIR: &str = "/opt/edgedeploy-agent/deployment-root";
/// Default directory of the agent's own log.
pub const DEFAULT_LOG_DIR: &str = "/var/log/edgedeploy-agent";
/// Default `max_bundle_bytes`: 1 GiB.
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 1 << 30;
/// Largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The agent's configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Deployment root (`root_dir`).
    pub root_dir: PathBuf,
    /// Directory of the agent's own log (`log_dir`).
    pub log_dir: PathBuf,
    /// Deployment archives kept per deployment group (`max_revisions`), at least 1.
    pub max_revisions: usize,
    /// Seconds between polls (`wait_between_runs`).
    pub wait_between_runs: Duration,
    /// HTTP proxy (`proxy_uri`).
    pub proxy_uri: Option<String>,
    /// Command API endpoint (`deploy_control_endpoint`).
    pub deploy_control_endpoint: Option<String>,
    /// Bundle store endpoint (`s3_endpoint_override`).
    pub s3_endpoint_override: Option<String>,
    /// This device's HostIdentifier (`host_identifier`).
    pub host_identifier: Option<String>,
    /// Access key id (`aws_access_key_id`).
    pub aws_access_key_id: Option<String>,
    /// Secret access key (`aws_secret_access_key`).
    pub aws_secret_access_key: Option<String>,
    /// CodeDeploy on-premises credentials file (`on_premises_config_file`).
    pub on_premises_config_file: Option<PathBuf>,
    /// Region used in request signatures (`region`).
    pub region: Option<String>,
    /// PEM bundle of trusted CAs for https (`ca_bundle`).
    pub ca_bundle: Option<PathBuf>,
    /// Largest bundle the daemon downloads, in bytes; 0: no limit (`max_bundle_bytes`).
    pub max_bundle_bytes: u64,
    /// Largest total the Install event writes, in bytes; 0: no limit (`max_install_bytes`).
    pub max_install_bytes: u64,
    /// Bundle safety rules and limits.
    pub unpack: Policy,
    /// Hook supervision settings.
    pub hooks: Supervision,
    /// Deadlines of the daemon's requests (`http_*_timeout_seconds`, `download_timeout_seconds`).
    pub network: Network,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root_dir: PathBuf::from(DEFAULT_ROOT_DIR),
            log_dir: PathBuf::from(DEFAULT_LOG_DIR),
            max_revisions: 5,
            wait_between_runs: Duration::from_secs(30),
            proxy_uri: None,
            deploy_control_endpoint: None,
            s3_endpoint_override: None,
            host_identifier: None,
            aws_access_key_id: None,
            aws_secret_access_key: None,
            on_premises_config_file: None,
            region: None,
            ca_bundle: None,
            max_bundle_bytes: DEFAULT_MAX_BUNDLE_BYTES,
            max_install_bytes: DEFAULT_MAX_BUNDLE_BYTES,
            unpack: Policy::default(),
            hooks: Supervision::default(),
            network: Network::default(),
        }
    }
}

/// Keys of CodeDeploy's agent configuration that mean nothing here; they are
/// accepted silently so an existing `codedeployagent.yml` loads.
const CODEDEPLOY_KEYS_IGNORED: &[&str] = &[
    "log_aws_wire",
    "program_name",
    "pid_dir",
    "verbose",
    "kill_agent_max_wait_time_seconds",
    "enable_auth_policy",
    "disable_imds_v1",
    "ongoing_deployment_tracking",
    "enable_deployments_log",
];

/// An invalid or unreadable configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// What is wrong: the file, the key and the value.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A loaded configuration and the unknown keys it contained.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Keys that were not recognised (to be logged once by the caller).
    pub unknown_keys: Vec<String>,
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let err = |m: String| ConfigError { message: format!("{}: {m}", path.display()) };
        let size = std::fs::metadata(path).map_err(|e| err(e.to_string()))?.len();
        if size > MAX_CONFIG_BYTES {
            return Err(err(format!("file is {size} bytes; the limit is {MAX_CONFIG_BYTES}")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Self::parse(&text).map_err(|e| err(e.message))
    }

    /// Validates configuration text. The YAML is read within the AppSpec's
    /// bounds (nesting, aliases, duplicate keys refused at their line).
    pub fn parse(text: &str) -> Result<Loaded, ConfigError> {
        let value = crate::appspec::yaml::parse(text).map_err(|e| ConfigError { message: e.to_string() })?;
        let mapping = match value {
            Value::Mapping(m) => m,
            Value::Null => Default::default(),
            other => {
                return Err(ConfigError { message: format!("expected a mapping of keys, found {}", kind(&other)) });
            }
        };
        let mut config = Config::default();
        let mut unknown_keys = Vec::new();
        for (key, value) in &mapping {
            let Some(key) = key.as_str() else {
                return Err(ConfigError { message: format!("key {} is not a string", render(key)) });
            };
            let name = key.strip_prefix(':').unwrap_or(key);
            let known = config.set(name, value).map_err(|e| with_line(e, text, key))?;
            if !known && !CODEDEPLOY_KEYS_IGNORED.contains(&name) {
                unknown_keys.push(key.to_string());
            }
        }
        Ok(Loaded { config, unknown_keys })
    }

    /// Applies one key; `Ok(false)` when the key is not known.
    fn set(&mut self, key: &str, v: &Value) -> Result<bool, ConfigError> {
        match key {
            "root_dir" => self.root_dir = absolute_path(key, v)?,
            "log_dir" => self.log_dir = absolute_path(key, v)?,
            "max_revisions" => self.max_revisions = at_least(key, v, 1)? as usize,
            "wait_between_runs" => self.wait_between_runs = Duration::from_secs(at_least(key, v, 1)?),
            "proxy_uri" => self.proxy_uri = optional_string(key, v)?,
            "deploy_control_endpoint" => self.deploy_control_endpoint = optional_string(key, v)?,
            "s3_endpoint_override" => self.s3_endpoint_override = optional_string(key, v)?,
            "host_identifier" => self.host_identifier = optional_string(key, v)?,
            "aws_access_key_id" => self.aws_access_key_id = optional_string(key, v)?,
            "aws_secret_access_key" => self.aws_secret_access_key = optional_string(key, v)?,
            "region" => self.region = optional_string(key, v)?,
            "on_premises_config_file" => self.on_premises_config_file = optional_string(key, v)?.map(PathBuf::from),
            "ca_bundle" => self.ca_bundle = optional_string(key, v)?.map(PathBuf::from),
            "max_bundle_bytes" => self.max_bundle_bytes = at_least(key, v, 0)?,
            "max_install_bytes" => self.max_install_bytes = at_least(key, v, 0)?,
            "max_unpacked_bytes" => self.unpack.max_bytes = at_least(key, v, 0)?,
            "max_unpacked_entries" => self.unpack.max_entries = at_least(key, v, 0)?,
            "max_compression_ratio" => self.unpack.max_ratio = at_least(key, v, 0)?,
            "allow_absolute_paths" => self.unpack.allow_absolute_paths = boolean(key, v)?,
            "allow_parent_components" => self.unpack.allow_parent_components = boolean(key, v)?,
            "allow_external_symlinks" => self.unpack.allow_external_symlinks = boolean(key, v)?,
            "allow_special_files" => self.unpack.allow_special_files = boolean(key, v)?,
            "allow_setuid" => self.unpack.allow_setuid = boolean(key, v)?,
            "hook_kill_grace_seconds" => self.hooks.kill_grace = Duration::from_secs(at_least(key, v, 0)?),
            "hook_output_grace_seconds" => self.hooks.output_grace = Duration::from_secs(at_least(key, v, 0)?),
            "script_log_max_bytes" => self.hooks.max_log_bytes = at_least(key, v, 4096)?,
            "http_connect_timeout_seconds" => self.network.phases.connect = seconds(key, v)?,
            "http_response_timeout_seconds" => self.network.phases.response = seconds(key, v)?,
            "http_stall_timeout_seconds" => self.network.phases.stall = seconds(key, v)?,
            "http_call_timeout_seconds" => self.network.call = seconds(key, v)?,
            "download_timeout_seconds" => self.network.download = seconds(key, v)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// A deadline: whole seconds, from 1 to a week.
fn seconds(key: &str, v: &Value) -> Result<Duration, ConfigError> {
    const WEEK: u64 = 7 * 86400;
    match at_least(key, v, 1)? {
        n if n <= WEEK => Ok(Duration::from_secs(n)),
        _ => Err(invalid(key, v, &format!("a whole number of seconds from 1 to {WEEK}"))),
    }
}

/// The error with the line of `key` (as written) appended.
fn with_line(e: ConfigError, text: &str, key: &str) -> ConfigError {
    match crate::appspec::yaml::line_of_path(text, &[crate::appspec::yaml::Step::Key(key.to_string())]) {
        Some(line) => ConfigError { message: format!("{} (line {line})", e.message) },
        None => e,
    }
}

fn invalid(key: &str, v: &Value, expected: &str) -> ConfigError {
    ConfigError { message: format!("{key}: {} is not {expected}", render(v)) }
}

fn render(v: &Value) -> String {
    serde_yaml::to_string(v).map(|s| s.trim_end().to_string()).unwrap_or_else(|_| format!("{v:?}"))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn optional_string(key: &str, v: &Value) -> Result<Option<String>, ConfigError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(invalid(key, v, "a string")),
    }
}

fn absolute_path(key: &str, v: &Value) -> Result<PathBuf, ConfigError> {
    match v.as_str() {
        Some(s) if s.starts_with('/') => Ok(PathBuf::from(s)),
        _ => Err(invalid(key, v, "an absolute path")),
    }
}

fn at_least(key: &str, v: &Value, min: u64) -> Result<u64, ConfigError> {
    let number = match v {
        Value::Number(n) => n.as_u64(),
        // Digits only: `str::parse` would also take a sign ("+3").
        Value::String(s) => {
            Some(s.trim()).filter(|d| d.bytes().all(|b| b.is_ascii_digit())).and_then(|d| d.parse().ok())
        }
        _ => None,
    };
    match number {
        Some(n) if n >= min => Ok(n),
        _ => Err(invalid(key, v, &format!("a whole number of at least {min}"))),
    }
}

fn boolean(key: &str, v: &Value) -> Result<bool, ConfigError> {
    match v {
        Value::Bool(b) => Ok(*b),
        _ => Err(invalid(key, v, "true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_codedeploy_keys_with_and_without_colon() {
        let loaded = Config::parse(":root_dir: /data/root\nmax_revisions: 2\n:log_aws_wire: false\n").unwrap();
        assert_eq!(loaded.config.root_dir, PathBuf::from("/data/root"));
        assert_eq!(loaded.config.max_revisions, 2);
        assert!(loaded.unknown_keys.is_empty());
    }

    #[test]
    fn reports_unknown_keys_without_failing() {
        let loaded = Config::parse("root_dir: /r\nfrobnicate: 1\n").unwrap();
        assert_eq!(loaded.unknown_keys, vec!["frobnicate".to_string()]);
    }

    #[test]
    fn invalid_values_name_key_and_value() {
        let err = Config::parse("max_revisions: 0\n").unwrap_err();
        assert_eq!(err.message, "max_revisions: 0 is not a whole number of at least 1 (line 1)");
        let err = Config::parse("log_dir: /l\n\n:root_dir: relative/dir\n").unwrap_err();
        assert_eq!(err.message, "root_dir: relative/dir is not an absolute path (line 3)");
        let err = Config::parse("allow_setuid: yes please\n").unwrap_err();
        assert!(err.message.starts_with("allow_setuid: "), "{}", err.message);
    }

    /// The leniency the sigv4 fuzz target found in percent_decode and
    /// parse_amz_date: `u64::from_str` takes a leading `+`, so "+3" passed.
    #[test]
    fn numbers_in_strings_are_digits_only() {
        assert_eq!(Config::parse("max_revisions: \"3\"\n").unwrap().config.max_revisions, 3);
        for bad in ["\"+3\"", "\"-3\"", "\"3 4\"", "\"\""] {
            let err = Config::parse(&format!("max_revisions: {bad}\n")).unwrap_err();
            assert!(err.message.starts_with("max_revisions: "), "{bad}: {}", err.message);
        }
    }

    #[test]
    fn unpack_switches_and_limits_reach_the_policy() {
        let text = "max_unpacked_bytes: 10\nmax_compression_ratio: 0\nallow_external_symlinks: true\n";
        let config = Config::parse(text).unwrap().config;
        assert_eq!(config.unpack.max_bytes, 10);
        assert_eq!(config.unpack.max_ratio, 0);
        assert!(config.unpack.allow_external_symlinks);
        assert!(!config.unpack.allow_setuid);
    }

    #[test]
    fn network_deadlines_have_defaults_and_refuse_zero() {
        let network = Config::default().network;
        assert_eq!(network.phases.connect, Duration::from_secs(10));
        assert_eq!(network.phases.response, Duration::from_secs(30));
        assert_eq!(network.phases.stall, Duration::from_secs(60));
        assert_eq!((network.call, network.download), (Duration::from_secs(60), Duration::from_secs(3600)));
        let text = "http_connect_timeout_seconds: 2\nhttp_response_timeout_seconds: 3\n\
                    http_stall_timeout_seconds: 4\nhttp_call_timeout_seconds: 5\ndownload_timeout_seconds: 6\n";
        let network = Config::parse(text).unwrap().config.network;
        let secs = |d: Duration| d.as_secs();
        assert_eq!(
            [network.phases.connect, network.phases.response, network.phases.stall, network.call, network.download]
                .map(secs),
            [2, 3, 4, 5, 6]
        );
        let e = Config::parse("http_stall_timeout_seconds: 0\n").unwrap_err();
        assert!(e.message.starts_with("http_stall_timeout_seconds: 0"), "{e}");
    }

    #[test]
    fn max_bundle_bytes_has_a_default_and_zero_means_no_limit() {
        assert_eq!(Config::default().max_bundle_bytes, 1 << 30);
        assert_eq!(Config::parse("max_bundle_bytes: 0\n").unwrap().config.max_bundle_bytes, 0);
        assert_eq!(Config::parse(":max_bundle_bytes: \"4096\"\n").unwrap().config.max_bundle_bytes, 4096);
        assert!(Config::parse("max_bundle_bytes: -1\n").is_err());
    }

    #[test]
    fn yaml_errors_name_the_line_duplicates_included() {
        let err = Config::parse("root_dir: /a\nmax_revisions: 2\nroot_dir: /b\n").unwrap_err();
        assert_eq!(err.message, "invalid YAML at line 3, column 1: duplicate key \"root_dir\"");
        let err = Config::parse("root_dir: [/a\nlog_dir: /b\n").unwrap_err();
        assert!(err.message.starts_with("invalid YAML at line 2, column "), "{}", err.message);
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n";
        let err = Config::parse(bomb).unwrap_err();
        assert!(err.message.starts_with("invalid YAML at line "), "{}", err.message);
        let deep = format!("root_dir: {}{}\n", "[".repeat(40), "]".repeat(40));
        assert!(Config::parse(&deep).unwrap_err().message.contains("nested more than 32 levels"));
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(Config::parse("").unwrap().config, Config::default());
    }
}
