//! AWS Signature Version 4: signing requests (agent) and verifying them
//! (server), for any transport: the caller gives the method, the decoded
//! path and query, the headers and the payload hash.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// The signing algorithm name.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Payload hash value S3 accepts for unsigned bodies.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// Largest clock difference accepted between signer and verifier (AWS: 15 minutes).
pub const MAX_SKEW_SECONDS: u64 = 15 * 60;

/// An access key.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Access key id (public).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, <secret>)", self.access_key_id)
    }
}

/// What a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// Decoded path, e.g. `/bucket/my key`.
    pub path: &'a str,
    /// Decoded query parameters, in any order.
    pub query: &'a [(String, String)],
    /// Headers (any case); only the signed ones are used.
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body, or [`UNSIGNED_PAYLOAD`].
    pub payload_sha256: &'a str,
    /// Service name (`codedeploy`, `codedeploy-commands`, `s3`); S3 paths
    /// are encoded once in the canonical request, others twice.
    pub service: &'a str,
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigError {
    /// The Authorization header or X-Amz-Date is missing or malformed.
    Malformed(String),
    /// X-Amz-Date is further than [`MAX_SKEW_SECONDS`] from the verifier's clock.
    Skewed {
        /// The request's time.
        request: u64,
        /// The verifier's time.
        now: u64,
    },
    /// The signature does not match.
    Mismatch,
}

impl fmt::Display for SigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigError::Malformed(m) => write!(f, "malformed signature: {m}"),
            SigError::Skewed { request, now } => write!(
                f,
                "Signature expired: request time {} is more than 15 minutes from server time {}",
                crate::clock::amz_date(*request),
                crate::clock::amz_date(*now)
            ),
            SigError::Mismatch => f.write_str(
                "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method.",
            ),
        }
    }
}

impl std::error::Error for SigError {}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// RFC 3986 encoding as SigV4 wants it: unreserved characters kept, `/`
/// kept when `keep_slash`, everything else `%XX` with uppercase hex.
pub fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The decoded `name=value` pairs of a raw query string, as a signature
/// sees them; a pair whose escapes are malformed is kept as written.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k).unwrap_or_else(|| k.to_string()), percent_decode(v).unwrap_or_else(|| v.to_string()))
        })
        .collect()
}

/// Decodes `%XX` escapes (and nothing else); `None` for a bad escape or
/// bytes that are not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Two hex digits: `from_str_radix` alone also takes `+1`.
            let hex = text.get(i + 1..i + 3).filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The canonical request (exposed for tests and debugging).
pub fn canonical_request(req: &Request, signed_headers: &[String]) -> String {
    let path = if req.path.is_empty() { "/" } else { req.path };
    let mut uri = uri_encode(path, true);
    if req.service != "s3" {
        uri = uri_encode(&uri, true);
    }
    let mut query: Vec<(String, String)> =
        req.query.iter().map(|(k, v)| (uri_encode(k, false), uri_encode(v, false))).collect();
    query.sort();
    let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    format!(
        "{}\n{uri}\n{}\n{headers}\n{}\n{}",
        req.method,
        query.join("&"),
        signed_headers.join(";"),
        req.payload_sha256
    )
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    // HMAC accepts keys of any length, so new_from_slice cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The signature of `req` at `amz_date` for the scope `region`/`req.service`.
pub fn signature(secret: &str, amz_date: &str, region: &str, req: &Request, signed_headers: &[String]) -> String {
    let date = amz_date.get(..8).unwrap_or_default();
    let scope = format!("{date}/{region}/{}/aws4_request", req.service);
    let to_sign =
        format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", sha256_hex(canonical_request(req, signed_headers).as_bytes()));
    let key = ["aws4_request"]
        .iter()
        .fold(hmac(&hmac(&hmac(format!("AWS4{secret}").as_bytes(), date), region), req.service), |k, part| {
            hmac(&k, part)
        });
    hex(&hmac(&key, &to_sign))
}

/// The `Authorization` header value signing `req` at `amz_date`, covering
/// every header in `req.headers`.
pub fn authorization(creds: &Credentials, amz_date: &str, region: &str, req: &Request) -> String {
    let mut names: Vec<String> = req.headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    let sig = signature(&creds.secret_access_key, amz_date, region, req, &names);
    let date = amz_date.get(..8).unwrap_or_default();
    format!(
        "{ALGORITHM} Credential={}/{date}/{region}/{}/aws4_request, SignedHeaders={}, Signature={sig}",
        creds.access_key_id,
        req.service,
        names.join(";")
    )
}

/// A parsed `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// Access key id that signed.
    pub access_key_id: String,
    /// Scope date (YYYYMMDD).
    pub date: String,
    /// Scope region.
    pub region: String,
    /// Scope service.
    pub service: String,
    /// Signed header names, lowercase, sorted.
    pub signed_headers: Vec<String>,
    /// Hex signature.
    pub signature: String,
}

impl Authorization {
    /// Parses the header value.
    pub fn parse(value: &str) -> Result<Self, SigError> {
        let bad = |m: &str| SigError::Malformed(m.to_string());
        let rest = value.strip_prefix(ALGORITHM).ok_or_else(|| bad("expected AWS4-HMAC-SHA256"))?;
        let (mut credential, mut signed, mut sig) = (None, None, None);
        for part in rest.split(',').map(str::trim) {
            match part.split_once('=') {
                Some(("Credential", v)) => credential = Some(v),
                Some(("SignedHeaders", v)) => signed = Some(v),
                Some(("Signature", v)) => sig = Some(v),
                _ => return Err(bad(&format!("unexpected part {part:?}"))),
            }
        }
        let credential = credential.ok_or_else(|| bad("no Credential"))?;
        let fields: Vec<&str> = credential.split('/').collect();
        let [key, date, region, service, "aws4_request"] = fields.as_slice() else {
            return Err(bad("Credential is not key/date/region/service/aws4_request"));
        };
        let signature = sig.ok_or_else(|| bad("no Signature"))?;
        if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("Signature is not 64 hex digits"));
        }
        let signed_headers: Vec<String> =
            signed.ok_or_else(|| bad("no SignedHeaders"))?.split(';').map(str::to_ascii_lowercase).collect();
        if !signed_headers.iter().any(|h| h == "host") {
            return Err(bad("the host header must be signed"));
        }
        Ok(Authorization {
            access_key_id: key.to_string(),
            date: date.to_string(),
            region: region.to_string(),
            service: service.to_string(),
            signed_headers,
            signature: signature.to_ascii_lowercase(),
        })
    }

    /// Checks this signature over `req` made at `amz_date`, with `secret`,
    /// at time `now` (seconds since the epoch).
    pub fn verify(&self, secret: &str, amz_date: &str, req: &Request, now: u64) -> Result<(), SigError> {
        let request_time = crate::clock::parse_amz_date(amz_date)
            .ok_or_else(|| SigError::Malformed(format!("X-Amz-Date {amz_date:?} is not YYYYMMDDTHHMMSSZ")))?;
        if request_time.abs_diff(now) > MAX_SKEW_SECONDS {
            return Err(SigError::Skewed { request: request_time, now });
        }
        if !amz_date.starts_with(&self.date) {
            return Err(SigError::Malformed("credential scope date differs from X-Amz-Date".into()));
        }
        if req.service != self.service {
            return Err(SigError::Malformed(format!(
                "credential scope service {:?} is not {:?}",
                self.service, req.service
            )));
        }
        let expected = signature(secret, amz_date, &self.region, req, &self.signed_headers);
        if constant_time_eq(expected.as_bytes(), self.signature.as_bytes()) { Ok(()) } else { Err(SigError::Mismatch) }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    /// AWS's published example: IAM ListUsers signed at 20150830T123600Z.
    #[test]
    fn matches_the_aws_documentation_example() {
        let query =
            vec![("Action".to_string(), "ListUsers".to_string()), ("Version".to_string(), "2010-05-08".to_string())];
        let headers = headers(&[
            ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
            ("Host", "iam.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ]);
        let req = Request {
            method: "GET",
            path: "/",
            query: &query,
            headers: &headers,
            payload_sha256: &sha256_hex(b""),
            service: "iam",
        };
        let names: Vec<String> = vec!["content-type".into(), "host".into(), "x-amz-date".into()];
        assert_eq!(
            sha256_hex(canonical_request(&req, &names).as_bytes()),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        };
        let auth = authorization(&creds, "20150830T123600Z", "us-east-1", &req);
        assert!(auth.ends_with("Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"), "{auth}");
        let parsed = Authorization::parse(&auth).unwrap();
        let now = crate::clock::parse_amz_date("20150830T124000Z").unwrap();
        assert_eq!(parsed.verify(&creds.secret_access_key, "20150830T123600Z", &req, now), Ok(()));
        assert_eq!(parsed.verify("wrong", "20150830T123600Z", &req, now), Err(SigError::Mismatch));
        let late = now + MAX_SKEW_SECONDS + 300;
        assert!(matches!(
            parsed.verify(&creds.secret_access_key, "20150830T123600Z", &req, late),
            Err(SigError::Skewed { .. })
        ));
        let tampered = Request { method: "POST", ..req };
        assert_eq!(
            parsed.verify(&creds.secret_access_key, "20150830T123600Z", &tampered, now),
            Err(SigError::Mismatch)
        );
    }

    #[test]
    fn s3_paths_are_encoded_once_others_twice() {
        let h = headers(&[("host", "h")]);
        let s3 = Request {
            method: "GET",
            path: "/b/a b",
            query: &[],
            headers: &h,
            payload_sha256: UNSIGNED_PAYLOAD,
            service: "s3",
        };
        assert!(canonical_request(&s3, &["host".into()]).contains("\n/b/a%20b\n"));
        let other = Request { service: "codedeploy", ..s3 };
        assert!(canonical_request(&other, &["host".into()]).contains("\n/b/a%2520b\n"));
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "",
            "AWS4-HMAC-SHA256 Credential=a/b/c",
            "Basic abc",
            "AWS4-HMAC-SHA256 Credential=k/20150830/r/s/aws4_request, SignedHeaders=x-amz-date, Signature=00",
        ] {
            assert!(matches!(Authorization::parse(bad), Err(SigError::Malformed(_))), "{bad}");
        }
        assert_eq!(percent_decode("a%20b%2F"), Some("a b/".into()));
        assert_eq!(percent_decode("%zz"), None);
    }

    /// Found by the sigv4 fuzz target: `%+c` decoded to the byte 0x0c,
    /// since `u8::from_str_radix` takes a leading `+`.
    #[test]
    fn percent_escape_with_a_sign_is_refused() {
        for bad in ["%+c1", "a%+0", "%+f", "%-1"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
        assert_eq!(percent_decode("%0c%7E"), Some("\u{c}~".into()));
    }
}
