//! Sending one trigger event: an HTTP POST of the stored body, signed with
//! HMAC-SHA256, with a short timeout; and the retry schedule. Blocking
//! (ureq), run on tokio's blocking pool.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header carrying `sha256=<hex of HMAC-SHA256(key, body)>`.
pub const SIGNATURE_HEADER: &str = "X-Edgedeploy-Signature";
/// Header carrying the event id (also `eventId` in the body).
pub const EVENT_ID_HEADER: &str = "X-Edgedeploy-Event-Id";
/// Header carrying the event type (also `eventType` in the body).
pub const EVENT_TYPE_HEADER: &str = "X-Edgedeploy-Event-Type";
/// Header carrying the attempt number, from 1.
pub const ATTEMPT_HEADER: &str = "X-Edgedeploy-Delivery-Attempt";
/// Longest error text kept per attempt.
const MAX_ERROR_CHARS: usize = 500;

/// `sha256=` and the hex HMAC-SHA256 of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(e) => unreachable!("HMAC takes keys of any length: {e}"),
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!("sha256={}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// The wait before attempt `attempts + 1` after `attempts` failed ones:
/// `base` doubled per failure, at most `max`.
pub fn backoff(attempts: i64, base: Duration, max: Duration) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    base.saturating_mul(1u32 << exponent).min(max)
}

/// One event to send.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `eventId`.
    pub event_id: String,
    /// `eventType`.
    pub event_type: String,
    /// The receiver.
    pub url: String,
    /// The exact bytes to send and sign.
    pub body: String,
    /// This attempt's number, from 1.
    pub attempt: i64,
}

/// Sends `delivery`; Ok on a 2xx answer, else what went wrong. The
/// receiver's addresses must be public unless `allow_private`
/// ([`super::address`]).
pub fn send(delivery: &Delivery, key: &[u8], timeout: Duration, allow_private: bool) -> Result<(), String> {
    let agent = agent(&delivery.url, timeout, allow_private)?;
    let response = agent
        .post(&delivery.url)
        .header("Content-Type", "application/json")
        .header("User-Agent", concat!("edgedeploy/", env!("CARGO_PKG_VERSION")))
        .header(SIGNATURE_HEADER, &signature(key, delivery.body.as_bytes()))
        .header(EVENT_ID_HEADER, &delivery.event_id)
        .header(EVENT_TYPE_HEADER, &delivery.event_type)
        .header(ATTEMPT_HEADER, &delivery.attempt.to_string())
        .send(delivery.body.as_bytes())
        .map_err(|e| clip(&format!("POST {}: {e}", delivery.url)))?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) { Ok(()) } else { Err(format!("POST {}: HTTP {status}", delivery.url)) }
}

/// An agent for one delivery: no redirects, no proxy from the environment
/// (the connection must go to the address checked), the address check in
/// its resolver.
fn agent(url: &str, timeout: Duration, allow_private: bool) -> Result<ureq::Agent, String> {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .proxy(None);
    if url.starts_with("https://") {
        config = crate::client::tls::configure(config, None).map_err(|e| format!("{url}: {e}"))?;
    }
    Ok(ureq::Agent::with_parts(
        config.build(),
        ureq::unversioned::transport::DefaultConnector::new(),
        super::address::Resolver { allow: allow_private },
    ))
}

fn clip(text: &str) -> String {
    text.chars().take(MAX_ERROR_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2.
        let sig = signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n, base, max).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(10_000, base, max), max);
        assert_eq!(backoff(0, base, max), base);
    }
}
