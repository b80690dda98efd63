//! How operator commands reach the server: `--data-dir DIR` (the server's
//! own directory: its recorded endpoint and admin credentials), or
//! `--endpoint URL` with credentials from the environment or the AWS shared
//! credentials file, as the AWS CLI finds them. https endpoints are trusted
//! with the system CA bundle, or with the PEM file named by `AWS_CA_BUNDLE`
//! (as the AWS CLI does) for a server whose certificate a private CA signed.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::client::{CallError, Client, Endpoint, HttpOptions};
use crate::protocol::sigv4::Credentials;
use crate::server::auth::read_shared_credentials;
use crate::server::http::CONTROL_PREFIX;

/// A connection to the control API and the bundle store.
#[derive(Debug)]
pub struct Operator {
    client: Client,
}

impl Operator {
    /// Connects with `--data-dir` or `--endpoint` (+ environment credentials).
    pub fn connect(data_dir: Option<&Path>, endpoint: Option<&str>) -> Result<Operator, String> {
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
            (None, None) => return Err("say where the server is: --data-dir DIR or --endpoint URL".into()),
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
        let body = input.to_string();
        self.client
            .call_raw(CONTROL_PREFIX, "codedeploy", operation, body.as_bytes())
            .map_err(|e| describe(operation, &e))
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

/// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, else the `[default]` profile of
/// AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials.
fn environment_credentials() -> Result<Credentials, String> {
    if let (Ok(id), Ok(secret)) = (std::env::var("AWS_ACCESS_KEY_ID"), std::env::var("AWS_SECRET_ACCESS_KEY")) {
        return Ok(Credentials { access_key_id: id, secret_access_key: secret });
    }
    let file = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")))
        .ok_or("no credentials: set AWS_SHARED_CREDENTIALS_FILE or use --data-dir")?;
    let (id, secret) =
        read_shared_credentials(&file).ok_or_else(|| format!("no [default] credentials in {}", file.display()))?;
    Ok(Credentials { access_key_id: id, secret_access_key: secret })
}
