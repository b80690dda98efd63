//! The parts of SigV4 that only S3 has: chunk signatures of
//! `STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]` bodies, and presigned URLs
//! (`X-Amz-Signature` in the query).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::error::S3Error;
use crate::protocol::sigv4::{self, ALGORITHM, sha256_hex};
use crate::server::auth::Identity;
use crate::server::store::Store;

type HmacSha256 = Hmac<Sha256>;

/// Longest validity of a presigned URL S3 accepts (7 days).
pub const MAX_PRESIGNED_EXPIRY_SECONDS: u64 = 7 * 24 * 3600;

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: new_from_slice cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The SigV4 signing key of `secret` for `date` (YYYYMMDD), `region`, `service`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

/// The signature of one chunk of an aws-chunked body: `previous` is the
/// signature of the chunk before (the seed is the request's signature).
pub fn chunk_signature(key: &[u8], amz_date: &str, scope: &str, previous: &str, data: &[u8]) -> String {
    chunk_signature_of_hash(key, amz_date, scope, previous, &sha256_hex(data))
}

fn chunk_signature_of_hash(key: &[u8], amz_date: &str, scope: &str, previous: &str, data_sha256: &str) -> String {
    let to_sign = format!("{ALGORITHM}-PAYLOAD\n{amz_date}\n{scope}\n{previous}\n{}\n{data_sha256}", sha256_hex(b""));
    sigv4::hex(&hmac(key, to_sign.as_bytes()))
}

/// The signature of the trailing headers (`name:value\n` each) of an
/// aws-chunked body, chained to the last chunk's signature.
pub fn trailer_signature(key: &[u8], amz_date: &str, scope: &str, previous: &str, trailer: &[u8]) -> String {
    let to_sign = format!("{ALGORITHM}-TRAILER\n{amz_date}\n{scope}\n{previous}\n{}", sha256_hex(trailer));
    sigv4::hex(&hmac(key, to_sign.as_bytes()))
}

/// Verifies the chain of chunk signatures of one request.
#[derive(Clone)]
pub struct ChunkSigner {
    key: Vec<u8>,
    amz_date: String,
    scope: String,
    previous: String,
}

impl std::fmt::Debug for ChunkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkSigner({})", self.scope)
    }
}

impl ChunkSigner {
    /// A verifier seeded with the request's own signature.
    pub fn new(secret: &str, amz_date: &str, auth: &sigv4::Authorization) -> ChunkSigner {
        ChunkSigner {
            key: signing_key(secret, &auth.date, &auth.region, &auth.service),
            amz_date: amz_date.to_string(),
            scope: format!("{}/{}/{}/aws4_request", auth.date, auth.region, auth.service),
            previous: auth.signature.clone(),
        }
    }

    /// Checks the signature of the next chunk, whose data hashes to `data_sha256` (hex).
    pub fn verify_chunk(&mut self, data_sha256: &str, signature: &str) -> bool {
        let expected = chunk_signature_of_hash(&self.key, &self.amz_date, &self.scope, &self.previous, data_sha256);
        let ok = constant_time_eq(expected.as_bytes(), signature.to_ascii_lowercase().as_bytes());
        self.previous = expected;
        ok
    }

    /// Checks the signature of the trailing headers.
    pub fn verify_trailer(&mut self, trailer: &[u8], signature: &str) -> bool {
        let expected = trailer_signature(&self.key, &self.amz_date, &self.scope, &self.previous, trailer);
        let ok = constant_time_eq(expected.as_bytes(), signature.to_ascii_lowercase().as_bytes());
        self.previous = expected;
        ok
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A credential row: secret and who it belongs to.
pub struct Credential {
    /// The secret access key.
    pub secret: String,
    /// Who signs with it.
    pub identity: Identity,
}

/// Looks an access key up in the `credentials` table.
pub async fn credential(store: &Store, access_key_id: &str) -> Result<Option<Credential>, S3Error> {
    let row: Option<(String, String, Option<String>)> =
        sqlx::query_as("SELECT secret_access_key, kind, instance_name FROM credentials WHERE access_key_id = $1")
            .bind(access_key_id)
            .fetch_optional(&store.pool)
            .await?;
    let Some((secret, kind, instance)) = row else { return Ok(None) };
    let secret = store
        .secrets
        .open(&secret, &crate::server::secrets::credential_aad(access_key_id))
        .map_err(|e| S3Error::internal(e.to_string()))?;
    let identity = match (kind.as_str(), instance) {
        ("admin", _) => Identity::Admin,
        ("instance", Some(name)) => Identity::Instance(name),
        _ => return Err(S3Error::internal(format!("credential {access_key_id} has kind {kind:?}"))),
    };
    Ok(Some(Credential { secret, identity }))
}

fn invalid_access_key() -> S3Error {
    S3Error::new(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
}

/// Verifies a presigned URL (query-string authentication).
pub async fn presigned(
    store: &Store,
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    now: u64,
) -> Result<Identity, S3Error> {
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let missing = |name: &str| {
        S3Error::new(400, "AuthorizationQueryParametersError", format!("Query-string authentication requires {name}"))
    };
    if param("X-Amz-Algorithm") != Some(ALGORITHM) {
        return Err(S3Error::new(
            400,
            "AuthorizationQueryParametersError",
            "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"",
        ));
    }
    let scope = param("X-Amz-Credential").ok_or_else(|| missing("X-Amz-Credential"))?;
    let amz_date = param("X-Amz-Date").ok_or_else(|| missing("X-Amz-Date"))?;
    let expires = param("X-Amz-Expires").ok_or_else(|| missing("X-Amz-Expires"))?;
    let signed = param("X-Amz-SignedHeaders").ok_or_else(|| missing("X-Amz-SignedHeaders"))?;
    let signature = param("X-Amz-Signature").ok_or_else(|| missing("X-Amz-Signature"))?;
    let fields: Vec<&str> = scope.split('/').collect();
    let [key_id, date, region, service, "aws4_request"] = fields.as_slice() else {
        return Err(S3Error::new(
            400,
            "AuthorizationQueryParametersError",
            "X-Amz-Credential is not key/date/region/service/aws4_request",
        ));
    };
    if *service != "s3" || !amz_date.starts_with(date) {
        return Err(S3Error::new(
            400,
            "AuthorizationQueryParametersError",
            "X-Amz-Credential scope does not match X-Amz-Date and service s3",
        ));
    }
    let expires: u64 =
        expires.parse().ok().filter(|e| (1..=MAX_PRESIGNED_EXPIRY_SECONDS).contains(e)).ok_or_else(|| {
            S3Error::new(
                400,
                "AuthorizationQueryParametersError",
                format!("X-Amz-Expires must be 1..={MAX_PRESIGNED_EXPIRY_SECONDS} seconds"),
            )
        })?;
    let at = crate::clock::parse_amz_date(amz_date)
        .ok_or_else(|| S3Error::new(400, "AuthorizationQueryParametersError", "X-Amz-Date is not YYYYMMDDTHHMMSSZ"))?;
    if at > now + sigv4::MAX_SKEW_SECONDS {
        return Err(S3Error::access_denied("Request is not valid yet"));
    }
    if now > at + expires {
        return Err(S3Error::access_denied("Request has expired").with("Expires", crate::clock::amz_date(at + expires)));
    }
    let Some(found) = credential(store, key_id).await? else { return Err(invalid_access_key()) };
    let signed_headers: Vec<String> = signed.split(';').map(str::to_ascii_lowercase).collect();
    if !signed_headers.iter().any(|h| h == "host") {
        return Err(S3Error::new(400, "AuthorizationQueryParametersError", "the host header must be signed"));
    }
    let unsigned_query: Vec<(String, String)> = query.iter().filter(|(k, _)| k != "X-Amz-Signature").cloned().collect();
    let payload = headers
        .iter()
        .find(|(n, _)| n == "x-amz-content-sha256")
        .map(|(_, v)| v.as_str())
        .unwrap_or(sigv4::UNSIGNED_PAYLOAD);
    let request =
        sigv4::Request { method, path, query: &unsigned_query, headers, payload_sha256: payload, service: "s3" };
    let expected = sigv4::signature(&found.secret, amz_date, region, &request, &signed_headers);
    if !constant_time_eq(expected.as_bytes(), signature.to_ascii_lowercase().as_bytes()) {
        return Err(S3Error::new(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        ));
    }
    Ok(found.identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published example of a chunked upload (S3 documentation,
    /// "Signature calculations for the Authorization header: transferring
    /// payload in multiple chunks").
    #[test]
    fn matches_the_aws_chunked_upload_example() {
        let key = signing_key("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "20130524", "us-east-1", "s3");
        let scope = "20130524/us-east-1/s3/aws4_request";
        let seed = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
        let first = chunk_signature(&key, "20130524T000000Z", scope, seed, &[b'a'; 65536]);
        assert_eq!(first, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648");
        let second = chunk_signature(&key, "20130524T000000Z", scope, &first, &[b'a'; 1024]);
        assert_eq!(second, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497");
        let last = chunk_signature(&key, "20130524T000000Z", scope, &second, b"");
        assert_eq!(last, "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9");
    }
}
