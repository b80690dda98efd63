//! Who is calling: every request is SigV4-signed with the admin's key or an
//! instance's key. Refusals carry the exception names AWS uses.

use std::path::Path;

use rand::Rng;
use rand::distr::Alphanumeric;

use super::api::ApiError;
use super::store::{Store, now_millis};
use crate::protocol::sigv4::{Authorization, SigError};

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The operator: every control API operation and the bundle store.
    Admin,
    /// A registered instance: only the command API for itself, and reading bundles.
    Instance(String),
}

/// The parts of a request that its signature covers: the protocol's own
/// signing input (headers with lowercase names).
pub use crate::protocol::sigv4::Request as SignedRequest;

/// The value of header `name` (lowercase) among `headers`.
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// Headers every signature must cover on the JSON APIs: the operation
/// (`x-amz-target`) is chosen by a header, so it must be signed.
pub const JSON_SIGNED_HEADERS: &[&str] = &["host", "x-amz-date", "x-amz-target"];

/// A signature whose headers were checked and whose key is known; what is
/// left is the payload hash, that is, the body. Made by [`check_headers`]
/// before any body is read.
pub struct KeyCheck {
    auth: Authorization,
    amz_date: String,
    secret: String,
    identity: Identity,
}

impl std::fmt::Debug for KeyCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyCheck({}, {:?})", self.auth.access_key_id, self.identity)
    }
}

/// Checks everything of a signature that does not need the body: the
/// Authorization header, X-Amz-Date and the clock skew, that `required`
/// headers are signed, that the key exists. Reads nothing but the store.
pub async fn check_headers(
    store: &Store,
    headers: &[(String, String)],
    service: &str,
    required: &[&str],
) -> Result<KeyCheck, ApiError> {
    let header_value = header(headers, "authorization").ok_or_else(|| {
        ApiError::new(
            403,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token: the request is not signed",
        )
    })?;
    let auth = Authorization::parse(header_value)
        .map_err(|e| ApiError::new(403, "IncompleteSignatureException", e.to_string()))?;
    let amz_date = header(headers, "x-amz-date").ok_or_else(|| {
        ApiError::new(403, "IncompleteSignatureException", "X-Amz-Date is missing; it must be signed")
    })?;
    if let Some(missing) = unsigned(&auth.signed_headers, required) {
        return Err(ApiError::new(
            403,
            "InvalidSignatureException",
            format!(
                "'{missing}' must be a 'SignedHeader' in the AWS Authorization (SignedHeaders={})",
                auth.signed_headers.join(";")
            ),
        ));
    }
    let now = u64::try_from(now_millis() / 1000).unwrap_or_default();
    let at = crate::clock::parse_amz_date(amz_date).ok_or_else(|| {
        ApiError::new(403, "IncompleteSignatureException", format!("X-Amz-Date {amz_date:?} is not YYYYMMDDTHHMMSSZ"))
    })?;
    if at.abs_diff(now) > crate::protocol::sigv4::MAX_SKEW_SECONDS {
        return Err(ApiError::new(403, "InvalidSignatureException", SigError::Skewed { request: at, now }.to_string()));
    }
    if auth.service != service {
        return Err(ApiError::new(
            403,
            "IncompleteSignatureException",
            format!("credential scope service {:?} is not {service:?}", auth.service),
        ));
    }
    let row: Option<(String, String, Option<String>)> =
        sqlx::query_as("SELECT secret_access_key, kind, instance_name FROM credentials WHERE access_key_id = $1")
            .bind(&auth.access_key_id)
            .fetch_optional(&store.pool)
            .await?;
    let Some((secret, kind, instance)) = row else {
        return Err(ApiError::new(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    };
    let secret = store
        .secrets
        .open(&secret, &super::secrets::credential_aad(&auth.access_key_id))
        .map_err(ApiError::internal)?;
    let identity = match (kind.as_str(), instance) {
        ("admin", _) => Identity::Admin,
        ("instance", Some(name)) => Identity::Instance(name),
        _ => return Err(ApiError::internal(format!("credential {} has kind {kind:?}", auth.access_key_id))),
    };
    Ok(KeyCheck { auth, amz_date: amz_date.to_string(), secret, identity })
}

/// The first of `required` that `signed` lacks.
pub fn unsigned<'a>(signed: &[String], required: &[&'a str]) -> Option<&'a str> {
    required.iter().find(|r| !signed.iter().any(|s| s == *r)).copied()
}

impl KeyCheck {
    /// Checks the signature over `req` (its payload hash included).
    pub fn verify(self, req: &SignedRequest<'_>) -> Result<Identity, ApiError> {
        let now = u64::try_from(now_millis() / 1000).unwrap_or_default();
        self.auth.verify(&self.secret, &self.amz_date, req, now).map_err(|e| match e {
            SigError::Malformed(m) => ApiError::new(403, "IncompleteSignatureException", m),
            other => ApiError::new(403, "InvalidSignatureException", other.to_string()),
        })?;
        Ok(self.identity)
    }
}

/// Checks the request's signature and returns the caller.
pub async fn authenticate(store: &Store, req: &SignedRequest<'_>) -> Result<Identity, ApiError> {
    check_headers(store, req.headers, req.service, &["host"]).await?.verify(req)
}

/// Refuses anyone but the admin.
pub fn require_admin(identity: &Identity) -> Result<(), ApiError> {
    match identity {
        Identity::Admin => Ok(()),
        Identity::Instance(name) => Err(ApiError::new(
            403,
            "AccessDeniedException",
            format!("instance {name} is not allowed to call the control API"),
        )),
    }
}

/// A new access key id (`AKIA` + 16) and secret (40 characters).
pub fn new_key_pair() -> (String, String) {
    let mut rng = rand::rng();
    let id: String = (0..16).map(|_| rng.sample(Alphanumeric) as char).collect::<String>().to_ascii_uppercase();
    let secret: String = (0..40).map(|_| rng.sample(Alphanumeric) as char).collect();
    (format!("AKIA{id}"), secret)
}

/// Stores a new key for `instance_name` (or the admin when `None`).
pub async fn create_key(store: &Store, instance_name: Option<&str>) -> Result<(String, String), ApiError> {
    let (id, secret) = new_key_pair();
    let kind = if instance_name.is_some() { "instance" } else { "admin" };
    sqlx::query(
        "INSERT INTO credentials (access_key_id, secret_access_key, kind, instance_name, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(store.secrets.seal(&secret, &super::secrets::credential_aad(&id)))
    .bind(kind)
    .bind(instance_name)
    .bind(now_millis())
    .execute(&store.pool)
    .await?;
    Ok((id, secret))
}

/// Makes sure the admin credentials exist in the store and in
/// `DIR/admin-credentials` (AWS shared-credentials format, mode 0600).
pub async fn ensure_admin_credentials(store: &Store, data_dir: &Path) -> Result<(), String> {
    let path = data_dir.join("admin-credentials");
    if let Some((id, secret)) = read_shared_credentials(&path) {
        let known: Option<(String,)> =
            sqlx::query_as("SELECT access_key_id FROM credentials WHERE access_key_id = $1 AND kind = 'admin'")
                .bind(&id)
                .fetch_optional(&store.pool)
                .await
                .map_err(|e| e.to_string())?;
        if known.is_some() {
            return Ok(());
        }
        sqlx::query("INSERT INTO credentials (access_key_id, secret_access_key, kind, instance_name, created_at) VALUES ($1, $2, 'admin', NULL, $3)")
            .bind(&id)
            .bind(store.secrets.seal(&secret, &super::secrets::credential_aad(&id)))
            .bind(now_millis())
            .execute(&store.pool)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(());
    }
    let (id, secret) = create_key(store, None).await.map_err(|e| e.to_string())?;
    write_shared_credentials(&path, &id, &secret).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Writes `[default]` credentials, mode 0600, durably.
pub fn write_shared_credentials(path: &Path, id: &str, secret: &str) -> std::io::Result<()> {
    let text = format!("[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n");
    crate::journal::write_atomic_with_mode(path, text.as_bytes(), 0o600)
}

/// Reads the `[default]` key from an AWS shared-credentials file.
pub fn read_shared_credentials(path: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut in_default = false;
    let (mut id, mut secret) = (None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_default = line == "[default]";
        } else if in_default && let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => id = Some(v.trim().to_string()),
                "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    Some((id?, secret?))
}
