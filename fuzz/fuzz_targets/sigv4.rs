//! The server's SigV4 check of a request's headers (`server::auth`): the
//! input is a request written as lines, turned into the signing input the
//! way the server does (lowercased header names, percent-decoded path and
//! query), then `Authorization::parse` and `verify` with a known secret.
//!
//! Lines: Authorization value, X-Amz-Date, method, path, query string, then
//! `name: value` headers. Besides not crashing, a request that the agent's
//! own signer signs must verify (the two sides agree on every request with
//! token header names), and the decoders accept only well-formed escapes
//! and dates.
#![no_main]

use edgedeploy::clock;
use edgedeploy::protocol::sigv4::{self, Authorization, Credentials, Request, percent_decode, query_pairs};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let authorization = lines.next().unwrap_or_default().to_string();
    let amz_date = lines.next().unwrap_or_default().to_string();
    let method = lines.next().unwrap_or_default().to_string();
    let raw_path = lines.next().unwrap_or_default();
    let path = percent_decode(raw_path).unwrap_or_else(|| raw_path.to_string());
    let query = query_pairs(lines.next().unwrap_or_default());
    let mut headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    headers.push(("authorization".into(), authorization.clone()));
    headers.push(("x-amz-date".into(), amz_date.clone()));
    let service = if data.len().is_multiple_of(2) { "codedeploy-commands" } else { "s3" };
    let payload = sigv4::sha256_hex(data);
    let req =
        Request { method: &method, path: &path, query: &query, headers: &headers, payload_sha256: &payload, service };

    // Decoders accept only what they document.
    if percent_decode(raw_path).is_some() {
        assert!(well_escaped(raw_path), "percent_decode accepted the bad escape in {raw_path:?}");
    }
    let at = clock::parse_amz_date(&amz_date);
    if at.is_some() {
        assert!(is_amz_date(&amz_date), "parse_amz_date accepted {amz_date:?}, not YYYYMMDDTHHMMSSZ");
    }

    // What server::auth::authenticate does once it has found the key.
    if let Ok(auth) = Authorization::parse(&authorization) {
        let now = at.unwrap_or(1_440_938_160);
        let _ = auth.verify(SECRET, &amz_date, &req, now);
        let _ = sigv4::canonical_request(&req, &auth.signed_headers);
    }

    // The agent's signer and the server's verifier agree.
    let Some(at) = at else { return };
    let signable: Vec<(String, String)> =
        headers.iter().filter(|(n, _)| is_token(n) && n != "authorization").cloned().collect();
    let mut signable = signable;
    if !signable.iter().any(|(n, _)| n == "host") {
        signable.push(("host".into(), "127.0.0.1:8443".into()));
    }
    let signed = Request { headers: &signable, ..req };
    let creds = Credentials { access_key_id: "AKIDEXAMPLE".into(), secret_access_key: SECRET.into() };
    let header = sigv4::authorization(&creds, &amz_date, "us-east-1", &signed);
    let parsed = Authorization::parse(&header).unwrap_or_else(|e| panic!("own Authorization {header:?}: {e}"));
    assert_eq!(parsed.verify(SECRET, &amz_date, &signed, at), Ok(()), "own signature refused: {header:?}");
});

/// Every `%` followed by two hexadecimal digits.
fn well_escaped(text: &str) -> bool {
    let b = text.as_bytes();
    (0..b.len())
        .filter(|&i| b[i] == b'%')
        .all(|i| b.len() > i + 2 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit())
}

/// Eight digits, `T`, six digits, `Z`.
fn is_amz_date(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 16 && b[8] == b'T' && b[15] == b'Z' && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// An HTTP header name (RFC 9110 token), as the HTTP stack lets through.
fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
