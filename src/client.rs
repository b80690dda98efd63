//! A blocking HTTP client for the service: AWS JSON 1.1 calls and S3 object
//! requests, SigV4-signed, over one ureq agent (no async runtime, no
//! threads). Used by the agent daemon and by the operator's commands.

use std::io::Read;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::clock;
use crate::logger::untrusted;
use crate::protocol::command::ErrorBody;
use crate::protocol::sigv4::{self, Credentials};

/// Largest JSON response read into memory.
const MAX_JSON_RESPONSE: u64 = 4 << 20;

/// Where the service is and who we are.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Base URL, `http(s)://host[:port]`, no path.
    pub url: String,
    /// Region used in signatures.
    pub region: String,
    /// The access key.
    pub credentials: Credentials,
}

/// Transport settings.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// HTTP proxy, e.g. `http://proxy:3128`.
    pub proxy: Option<String>,
    /// PEM file of trusted CAs for https (default: the system bundle).
    pub ca_bundle: Option<std::path::PathBuf>,
    /// Deadline of each whole request; 60 s when unset.
    pub timeout: Option<Duration>,
    /// Deadlines of the phases of each request, apart from `timeout`.
    pub phases: Phases,
}

/// Deadlines of the phases of one request, each apart from the overall
/// deadline of the request (docs/configuration.md, `http_*_timeout_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phases {
    /// Connecting: name resolution, TCP, proxy CONNECT and TLS handshake.
    pub connect: Duration,
    /// From the request sent to its complete response headers: a server
    /// that accepts and never answers is given up after this.
    pub response: Duration,
    /// Longest wait for the next byte of any read (headers or body), and for
    /// any write to go through: a transfer that stops moving.
    pub stall: Duration,
}

impl Default for Phases {
    fn default() -> Self {
        Phases { connect: Duration::from_secs(10), response: Duration::from_secs(30), stall: Duration::from_secs(60) }
    }
}

/// The agent's network deadlines, as configured (`Config::network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// Phase deadlines of every request.
    pub phases: Phases,
    /// Overall deadline of one command API call, its JSON answer included.
    pub call: Duration,
    /// Overall deadline of one bundle download request (an interrupted
    /// download resumes with the next request).
    pub download: Duration,
}

impl Default for Network {
    fn default() -> Self {
        Network { phases: Phases::default(), call: Duration::from_secs(60), download: Duration::from_secs(3600) }
    }
}

impl Network {
    /// Options of the command API's client: `proxy`, `ca_bundle`, the call deadline.
    pub fn for_calls(&self, proxy: Option<String>, ca_bundle: Option<std::path::PathBuf>) -> HttpOptions {
        HttpOptions { proxy, ca_bundle, timeout: Some(self.call), phases: self.phases }
    }

    /// Options of a bundle download's client (store or URL): the download deadline.
    pub fn for_downloads(&self) -> HttpOptions {
        HttpOptions { timeout: Some(self.download), phases: self.phases, ..HttpOptions::default() }
    }
}

/// How a call failed, by the class a log line or a retry policy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No HTTP answer: connection refused, DNS, TLS, timeout.
    Unreachable(String),
    /// The service refused our credentials or signature (403 and the
    /// signature/token exceptions).
    Refused {
        /// Exception name.
        type_: String,
        /// Its message.
        message: String,
    },
    /// Too many requests (429 / ThrottlingException).
    Throttled(String),
    /// Any other error the service answered with.
    Service {
        /// HTTP status.
        status: u16,
        /// Exception name.
        type_: String,
        /// Its message.
        message: String,
    },
    /// The answer was not what the protocol says.
    BadResponse(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(m) => write!(f, "service unreachable: {m}"),
            CallError::Refused { type_, message } => write!(f, "credentials refused: {type_}: {message}"),
            CallError::Throttled(m) => write!(f, "throttled: {m}"),
            CallError::Service { status, type_, message } => write!(f, "{type_} (HTTP {status}): {message}"),
            CallError::BadResponse(m) => write!(f, "bad response: {m}"),
        }
    }
}

impl std::error::Error for CallError {}

impl CallError {
    /// The exception name, when the service gave one.
    pub fn exception(&self) -> Option<&str> {
        match self {
            CallError::Refused { type_, .. } | CallError::Service { type_, .. } => Some(type_),
            _ => None,
        }
    }
}

/// A signed client for one endpoint.
#[derive(Debug)]
pub struct Client {
    agent: ureq::Agent,
    endpoint: Endpoint,
    host: String,
}

impl Client {
    /// A client for `endpoint`.
    pub fn new(endpoint: Endpoint, options: &HttpOptions) -> Result<Client, String> {
        let host = host_of(&endpoint.url)?;
        let agent = build_agent(options, endpoint.url.starts_with("https://"), 0)?;
        Ok(Client { agent, endpoint, host })
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The longest wait for the next byte of a read (see [`Phases::stall`]).
    pub fn stall_timeout(&self) -> Option<Duration> {
        self.agent.config().timeout_per_read()
    }

    /// Calls `prefix.operation` with `input`, signed for `signing_name`.
    pub fn call<I: Serialize, O: DeserializeOwned>(
        &self,
        prefix: &str,
        signing_name: &str,
        operation: &str,
        input: &I,
    ) -> Result<O, CallError> {
        let body = serde_json::to_vec(input).map_err(|e| CallError::BadResponse(format!("encoding input: {e}")))?;
        let value = self.call_raw(prefix, signing_name, operation, &body)?;
        serde_json::from_value(value)
            .map_err(|e| CallError::BadResponse(format!("{operation} output: {}", untrusted(&e.to_string()))))
    }

    /// Calls `prefix.operation` with a JSON body; returns the output document.
    pub fn call_raw(&self, prefix: &str, signing_name: &str, operation: &str, body: &[u8]) -> Result<Value, CallError> {
        let (status, bytes) = self.exchange(prefix, signing_name, operation, body)?;
        let bytes = bytes.map_err(CallError::BadResponse)?;
        if (200..300).contains(&status) {
            return parse_output(operation, &bytes);
        }
        Err(classify(status, &bytes))
    }

    /// Calls `prefix.operation`, whose output is not needed, with `input`:
    /// any 2xx answer is the service's acknowledgement. Returns `None` for
    /// an empty or JSON body, else a note on the body (not JSON, or cut
    /// short after the status) for the log. See docs/agent.md, "Outbox".
    pub fn call_acknowledged<I: Serialize>(
        &self,
        prefix: &str,
        signing_name: &str,
        operation: &str,
        input: &I,
    ) -> Result<Option<String>, CallError> {
        let body = serde_json::to_vec(input).map_err(|e| CallError::BadResponse(format!("encoding input: {e}")))?;
        let (status, bytes) = self.exchange(prefix, signing_name, operation, &body)?;
        match (status, bytes) {
            (200..=299, Ok(bytes)) => Ok(parse_output(operation, &bytes).err().map(|e| e.to_string())),
            (200..=299, Err(e)) => Ok(Some(e)),
            (_, Ok(bytes)) => Err(classify(status, &bytes)),
            (_, Err(e)) => Err(CallError::BadResponse(e)),
        }
    }

    /// Sends one signed call; returns the status and the body (at most
    /// [`MAX_JSON_RESPONSE`] bytes), or why the body could not be read.
    fn exchange(
        &self,
        prefix: &str,
        signing_name: &str,
        operation: &str,
        body: &[u8],
    ) -> Result<(u16, Result<Vec<u8>, String>), CallError> {
        let target = format!("{prefix}.{operation}");
        let headers = vec![
            ("content-type".to_string(), "application/x-amz-json-1.1".to_string()),
            ("x-amz-target".to_string(), target),
        ];
        let signed = self.sign("POST", "/", &[], headers, &sigv4::sha256_hex(body), signing_name);
        let mut request = self.agent.post(format!("{}/", self.endpoint.url));
        for (name, value) in &signed {
            if name != "host" {
                request = request.header(name.as_str(), value.as_str());
            }
        }
        let mut response = request.send(body).map_err(|e| CallError::Unreachable(untrusted(&e.to_string())))?;
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_JSON_RESPONSE)
            .read_to_vec()
            .map_err(|e| format!("reading the {operation} response: {}", untrusted(&e.to_string())));
        Ok((status, bytes))
    }

    /// Signs a request: returns every header to send (host included) with
    /// `x-amz-date` and `authorization` added.
    pub fn sign(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        mut headers: Vec<(String, String)>,
        payload_sha256: &str,
        service: &str,
    ) -> Vec<(String, String)> {
        let amz_date = clock::amz_date(clock::now_epoch().0);
        headers.push(("host".to_string(), self.host.clone()));
        headers.push(("x-amz-date".to_string(), amz_date.clone()));
        if service == "s3" {
            headers.push(("x-amz-content-sha256".to_string(), payload_sha256.to_string()));
        }
        let request = sigv4::Request { method, path, query, headers: &headers, payload_sha256, service };
        let authorization =
            sigv4::authorization(&self.endpoint.credentials, &amz_date, &self.endpoint.region, &request);
        headers.push(("authorization".to_string(), authorization));
        headers
    }

    /// Starts a signed S3 request on `path` (decoded, `/bucket/key`) with
    /// `extra` headers signed too (e.g. Range, If-Range). The caller sends it.
    pub fn s3_request(
        &self,
        method: &str,
        path: &str,
        extra: Vec<(String, String)>,
        payload_sha256: &str,
    ) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let signed = self.sign(method, path, &[], extra, payload_sha256, "s3");
        let url = format!("{}{}", self.endpoint.url, sigv4::uri_encode(path, true));
        let mut request = match method {
            "HEAD" => self.agent.head(url),
            "DELETE" => self.agent.delete(url),
            _ => self.agent.get(url),
        };
        for (name, value) in &signed {
            if name != "host" {
                request = request.header(name.as_str(), value.as_str());
            }
        }
        request
    }

    /// PUTs `body` (of `len` bytes, whose SHA-256 is `sha256`) at `path`.
    pub fn s3_put(&self, path: &str, body: impl Read, len: u64, sha256: &str) -> Result<String, CallError> {
        let extra = vec![("content-length".to_string(), len.to_string())];
        let signed = self.sign("PUT", path, &[], extra, sha256, "s3");
        let url = format!("{}{}", self.endpoint.url, sigv4::uri_encode(path, true));
        let mut request = self.agent.put(url);
        for (name, value) in &signed {
            if name != "host" {
                request = request.header(name.as_str(), value.as_str());
            }
        }
        let mut body = body;
        let mut response = request
            .send(ureq::SendBody::from_reader(&mut body))
            .map_err(|e| CallError::Unreachable(untrusted(&e.to_string())))?;
        let status = response.status().as_u16();
        let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let bytes = response.body_mut().with_config().limit(MAX_JSON_RESPONSE).read_to_vec().unwrap_or_default();
        if (200..300).contains(&status) { Ok(etag) } else { Err(classify(status, &bytes)) }
    }
}

/// The output document of a 2xx answer: `{}` for an empty body.
fn parse_output(operation: &str, bytes: &[u8]) -> Result<Value, CallError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        CallError::BadResponse(format!("{operation}: the answer is not JSON: {}", untrusted(&e.to_string())))
    })
}

/// Redirects a plain download follows (a mirror or CDN may redirect).
const WEB_REDIRECTS: u32 = 5;

/// A plain HTTP agent for downloads from `url` (URL revisions): the same
/// proxy, CA bundle and deadline as the service's client, no signing,
/// up to 5 redirects.
pub fn web_agent(url: &str, options: &HttpOptions) -> Result<ureq::Agent, String> {
    let https = url.starts_with("https://");
    if !https && !url.starts_with("http://") {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    }
    build_agent(options, https, WEB_REDIRECTS)
}

/// One ureq agent: statuses as answers (not errors), the overall and phase
/// deadlines, the proxy, TLS with the CA bundle when `https`.
fn build_agent(options: &HttpOptions, https: bool, max_redirects: u32) -> Result<ureq::Agent, String> {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(options.timeout.unwrap_or(Duration::from_secs(60))))
        .timeout_connect(Some(options.phases.connect))
        .timeout_recv_response(Some(options.phases.response))
        .timeout_per_read(Some(options.phases.stall))
        .timeout_per_write(Some(options.phases.stall))
        .max_redirects(max_redirects);
    if let Some(proxy) = &options.proxy {
        let proxy = ureq::Proxy::new(proxy).map_err(|e| format!("proxy_uri {proxy:?}: {e}"))?;
        config = config.proxy(Some(proxy));
    }
    if https {
        config = tls::configure(config, options.ca_bundle.as_deref())?;
    }
    Ok(config.build().into())
}

/// Maps an error answer to its class. JSON bodies carry `__type`; S3's XML
/// bodies carry `<Code>`. The exception name and message come from the
/// server: they are [`untrusted`] (escaped and capped) here, once.
pub fn classify(status: u16, body: &[u8]) -> CallError {
    let (type_, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => (e.exception().to_string(), e.message),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let code = xml_field(&text, "Code").unwrap_or_else(|| format!("HTTP{status}"));
            (code, xml_field(&text, "Message").unwrap_or_else(|| text.chars().take(200).collect()))
        }
    };
    let (type_, message) = (untrusted(&type_), untrusted(&message));
    const REFUSALS: &[&str] = &[
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
        "AccessDeniedException",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "AccessDenied",
        "RequestTimeTooSkewed",
    ];
    if status == 429 || type_.contains("Throttl") || type_ == "SlowDown" {
        CallError::Throttled(format!("{type_}: {message}"))
    } else if status == 403 || REFUSALS.contains(&type_.as_str()) {
        CallError::Refused { type_, message }
    } else {
        CallError::Service { status, type_, message }
    }
}

fn xml_field(text: &str, tag: &str) -> Option<String> {
    let start = text.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = text[start..].find(&format!("</{tag}>"))? + start;
    Some(text[start..end].to_string())
}

/// `host[:port]` of `http(s)://host[:port]`.
fn host_of(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("endpoint {url:?} must start with http:// or https://"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || rest.len() > host.len() + 1 {
        return Err(format!("endpoint {url:?} must be scheme://host[:port] without a path"));
    }
    Ok(host.to_string())
}

#[cfg(feature = "tls")]
pub(crate) mod tls {
    use std::path::Path;
    use std::sync::Arc;

    use ureq::config::ConfigBuilder;
    use ureq::tls::{PemItem, RootCerts, TlsConfig, TlsProvider};
    use ureq::typestate::AgentScope;

    /// System CA bundles, Debian/Alpine first, then Red Hat's.
    const SYSTEM_BUNDLES: &[&str] = &["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"];

    /// Sets rustls (ring) up, trusting `ca_bundle` or the system's bundle.
    pub fn configure(
        config: ConfigBuilder<AgentScope>,
        ca_bundle: Option<&Path>,
    ) -> Result<ConfigBuilder<AgentScope>, String> {
        Ok(config.tls_config(roots(ca_bundle)?))
    }

    fn roots(ca_bundle: Option<&Path>) -> Result<TlsConfig, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let path = match ca_bundle {
            Some(path) => path,
            None => SYSTEM_BUNDLES
                .iter()
                .map(Path::new)
                .find(|p| p.exists())
                .ok_or("https needs trusted CAs: set ca_bundle (no system CA bundle found)")?,
        };
        let pem = std::fs::read(path).map_err(|e| format!("ca_bundle {}: {e}", path.display()))?;
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            if let PemItem::Certificate(cert) = item.map_err(|e| format!("ca_bundle {}: {e}", path.display()))? {
                certs.push(cert);
            }
        }
        if certs.is_empty() {
            return Err(format!("ca_bundle {} holds no certificate", path.display()));
        }
        Ok(TlsConfig::builder().provider(TlsProvider::Rustls).root_certs(RootCerts::Specific(Arc::new(certs))).build())
    }
}

#[cfg(not(feature = "tls"))]
pub(crate) mod tls {
    use ureq::config::ConfigBuilder;
    use ureq::typestate::AgentScope;

    /// This build has no TLS.
    pub fn configure(
        _config: ConfigBuilder<AgentScope>,
        _ca_bundle: Option<&std::path::Path>,
    ) -> Result<ConfigBuilder<AgentScope>, String> {
        Err("this agent was built without TLS (feature `tls`): use an http:// endpoint".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_host_is_checked() {
        assert_eq!(host_of("http://127.0.0.1:8443").unwrap(), "127.0.0.1:8443");
        assert!(host_of("127.0.0.1:8443").is_err());
        assert!(host_of("http://h/path").is_err());
    }

    #[test]
    fn errors_are_classified() {
        let refused = classify(403, br#"{"__type":"UnrecognizedClientException","message":"bad"}"#);
        assert!(matches!(refused, CallError::Refused { .. }));
        assert!(matches!(
            classify(400, br#"{"__type":"ThrottlingException","message":"slow"}"#),
            CallError::Throttled(_)
        ));
        let s3 = classify(404, b"<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>");
        assert_eq!(s3, CallError::Service { status: 404, type_: "NoSuchKey".into(), message: "gone".into() });
    }

    #[test]
    fn server_strings_in_errors_are_escaped_and_capped() {
        let forged = format!(r#"{{"__type":"Bad\nException","message":"x\ninfo: forged{}"}}"#, "y".repeat(100_000));
        let CallError::Service { type_, message, .. } = classify(400, forged.as_bytes()) else { panic!("class") };
        assert_eq!(type_, "Bad\\nException");
        assert!(message.starts_with("x\\ninfo: forged") && message.len() < 400, "{message}");
        let text = classify(500, b"plain\r\n\x1b[31mtext").to_string();
        assert!(!text.contains('\n') && !text.contains('\r') && !text.contains('\x1b'), "{text:?}");
    }

    #[test]
    fn a_2xx_output_is_json_or_empty() {
        assert_eq!(parse_output("Op", b" \n").unwrap(), Value::Object(Default::default()));
        assert_eq!(parse_output("Op", br#"{"a":1}"#).unwrap()["a"], 1);
        let e = parse_output("Op", b"<html>\n</html>").unwrap_err().to_string();
        assert!(e.contains("Op: the answer is not JSON") && !e.contains('\n'), "{e}");
    }
}
