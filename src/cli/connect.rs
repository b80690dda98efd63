//! How operator commands reach the server: `--data-dir DIR` (the server's
//! own directory: its recorded endpoint and admin credentials), or
//! `--endpoint URL` with credentials from the environment or the AWS shared
//! credentials file, as the AWS CLI finds them. https endpoints are trusted
//! with the system CA bundle, or with the PEM file named by `AWS_CA_BUNDLE`
//! (as the AWS CLI does) for a server whose certificate a private CA signed.
//! Without either flag, `EDGEDEPLOY_DATA_DIR` and `EDGEDEPLOY_ENDPOINT`
//! stand for them.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::client::{CallError, Client, Endpoint, HttpOptions};
use crate::protocol::sigv4::Credentials;
use crate::server::auth::read_shared_credentials;
use crate::server::http::CONTROL_PREFIX;

/// Stands for `--data-dir` when neither flag is given.
pub const DATA_DIR_VARIABLE: &str = "EDGEDEPLOY_DATA_DIR";
/// Stands for `--endpoint` when neither flag is given.
pub const ENDPOINT_VARIABLE: &str = "EDGEDEPLOY_ENDPOINT";

/// A connection to the control API and the bundle store.
#[derive(Debug)]
pub struct Operator {
    client: Client,
}

impl Operator {
    /// Connects with `--data-dir` or `--endpoint` (+ environment credentials).
    pub fn connect(data_dir: Option<&Path>, endpoint: Option<&str>) -> Result<Operator, String> {
        if data_dir.is_none() && endpoint.is_none() {
            let dir = std::env::var_os(DATA_DIR_VARIABLE).filter(|v| !v.is_empty()).map(PathBuf::from);
            let url = std::env::var(ENDPOINT_VARIABLE).ok().filter(|v| !v.is_empty());
            if dir.is_some() || url.is_some() {
                return Self::connect(dir.as_deref(), url.as_deref());
            }
        }
        let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
        let (url, credentials) = match (data_dir, endpoint) {
            (Some(dir), endpoint) => {
                let url = endpoint.map(str::to_string).or_else(|| crate::server::recorded_endpoint(dir)).ok_or_else(
                    || {
                        format!(
                            "{} has no recorded endpoint: start the server there first, or give --endpoint",
                            dir.display()
                        )
                    },
                )?;
                let file = dir.join("admin-credentials");
                let (id, secret) = read_shared_credentials(&file)
                    .ok_or_else(|| format!("cannot read admin credentials from {}", file.display()))?;
                (url, Credentials { access_key_id: id, secret_access_key: secret })
            }
            (None, Some(url)) => (url.to_string(), environment_credentials()?),
            (None, None) => {
                return Err(format!(
                    "say where the server is: --data-dir DIR (the server's data directory) or --endpoint URL, \
                     or set {DATA_DIR_VARIABLE} or {ENDPOINT_VARIABLE}"
                ));
            }
        };
        let options = HttpOptions { ca_bundle: environment_ca_bundle(), ..HttpOptions::default() };
        let client = Client::new(Endpoint { url, region, credentials }, &options)?;
        Ok(Operator { client })
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Calls control API `operation`; errors say what failed.
    pub fn call(&self, operation: &str, input: Value) -> Result<Value, String> {
        self.try_call(operation, input).map_err(|e| self.describe(operation, &e))
    }

    /// Calls control API `operation`; the error as the client classed it.
    pub fn try_call(&self, operation: &str, input: Value) -> Result<Value, CallError> {
        let body = input.to_string();
        self.client.call_raw(CONTROL_PREFIX, "codedeploy", operation, body.as_bytes())
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.client.endpoint().url
    }

    /// An error line for `operation` naming the server, with a hint.
    pub fn describe(&self, operation: &str, error: &CallError) -> String {
        match error {
            CallError::Unreachable(m) if !m.contains("certificate") => format!(
                "cannot reach the server at {} ({operation}: {m}): is `edgedeploy server` running there? \
                 set --endpoint URL or {ENDPOINT_VARIABLE} (or --data-dir DIR) to where it listens",
                self.url()
            ),
            _ => describe(operation, error),
        }
    }
}

/// An error line with a hint at what to do next.
pub fn describe(operation: &str, error: &CallError) -> String {
    let hint = match error {
        CallError::Unreachable(m) if m.contains("certificate") => {
            " (the server's certificate is not trusted: set AWS_CA_BUNDLE to the PEM file of the CA that signed it)"
        }
        CallError::Unreachable(_) => " (is the server running? check --endpoint / --data-dir)",
        CallError::Refused { .. } => " (check the credentials: admin credentials are in DATA_DIR/admin-credentials)",
        _ => "",
    };
    format!("{operation}: {error}{hint}")
}

/// `AWS_CA_BUNDLE`, when set and not empty: the PEM file of CAs to trust.
fn environment_ca_bundle() -> Option<PathBuf> {
    std::env::var_os("AWS_CA_BUNDLE").filter(|v| !v.is_empty()).map(PathBuf::from)
}

const NO_CREDENTIALS: &str = "with --endpoint, give the admin's key: set AWS_SHARED_CREDENTIALS_FILE=DATA_DIR/admin-credentials \
     (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or use --data-dir DATA_DIR on the server's machine";

/// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, else the `[default]` profile of
/// AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials.
fn environment_credentials() -> Result<Credentials, String> {
    if let (Ok(id), Ok(secret)) = (std::env::var("AWS_ACCESS_KEY_ID"), std::env::var("AWS_SECRET_ACCESS_KEY")) {
        return Ok(Credentials { access_key_id: id, secret_access_key: secret });
    }
    let file = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")))
        .ok_or(NO_CREDENTIALS)?;
    let (id, secret) = read_shared_credentials(&file)
        .ok_or_else(|| format!("no [default] credentials in {}: {NO_CREDENTIALS}", file.display()))?;
    Ok(Credentials { access_key_id: id, secret_access_key: secret })
}
