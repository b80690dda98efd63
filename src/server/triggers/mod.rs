//! Trigger notifications: a deployment group's `triggerConfigurations`
//! whose `triggerTargetArn` is an http(s) URL are webhooks. Events are
//! stored (`trigger_events`) in the transaction of the change that caused
//! them ([`message`]); this loop delivers them, signed ([`deliver`]), until
//! the receiver answers 2xx, retrying with capped exponential backoff.
//! Several replicas on one database each run the loop: an event is
//! claimed with a conditional UPDATE that sets a lease, so two replicas
//! never send it at the same moment; a replica that dies mid-send leaves a
//! lease that expires and the event is sent again. The contract is
//! at-least-once with a stable `eventId`. See `docs/triggers.md`.

pub mod address;
pub mod deliver;
pub mod message;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::State;
use super::store::{Store, now_millis};
use deliver::Delivery;

/// Name of the signing key in `server_secrets`.
const KEY_NAME: &str = "trigger-signing-key";
/// The copy of the signing key for the operator, in the data directory.
pub const KEY_FILE: &str = "trigger-signing-key";
/// Events claimed per pass.
const BATCH: i64 = 16;

/// Delivery timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    /// Connect + send + answer of one attempt.
    pub timeout: Duration,
    /// The wait after the first failed attempt; doubled after each failure.
    pub retry_base: Duration,
    /// The longest wait between attempts.
    pub retry_max: Duration,
    /// Send webhooks to loopback, link-local and private addresses too
    /// (`--allow-private-webhooks`; see [`address`]).
    pub allow_private: bool,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            timeout: Duration::from_secs(5),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            allow_private: false,
        }
    }
}

impl DeliverySettings {
    /// How long a claimed event is left to its replica: longer than an attempt can take.
    fn lease(&self) -> Duration {
        self.timeout.saturating_mul(2) + Duration::from_secs(5)
    }
}

/// The signing key every replica shares: made once in the store by the
/// first server to start, copied to `DATA_DIR/trigger-signing-key`
/// (mode 0600) for the operator to give to receivers.
pub async fn ensure_signing_key(store: &Store, data_dir: &Path) -> Result<String, String> {
    let bytes: [u8; 32] = rand::rng().random();
    let fresh: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    sqlx::query(
        "INSERT INTO server_secrets (name, secret, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
    )
    .bind(KEY_NAME)
    .bind(store.secrets.seal(&fresh, &super::secrets::server_secret_aad(KEY_NAME)))
    .bind(now_millis())
    .execute(&store.pool)
    .await
    .map_err(|e| format!("storing the trigger signing key: {e}"))?;
    let (sealed,): (String,) = sqlx::query_as("SELECT secret FROM server_secrets WHERE name = $1")
        .bind(KEY_NAME)
        .fetch_one(&store.pool)
        .await
        .map_err(|e| format!("reading the trigger signing key: {e}"))?;
    let key = store.secrets.open(&sealed, &super::secrets::server_secret_aad(KEY_NAME)).map_err(|e| e.to_string())?;
    let path = data_dir.join(KEY_FILE);
    if std::fs::read_to_string(&path).ok().map(|k| k.trim().to_string()).as_deref() != Some(key.as_str()) {
        write_key_file(&path, &key).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(key)
}

fn write_key_file(path: &Path, key: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = crate::journal::temp_path(path);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    std::io::Write::write_all(&mut file, format!("{key}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    crate::journal::fsync_dir(crate::journal::parent_of(path))
}

/// Delivers due events until the task is aborted.
pub async fn run(state: Arc<State>, key: String) {
    let key = Arc::new(key.into_bytes());
    loop {
        match pass(&state, &key).await {
            Ok(0) => tokio::time::sleep(state.settings.tick).await,
            Ok(_) => {}
            Err(e) => {
                log::warn!("triggers: {e}");
                tokio::time::sleep(state.settings.tick).await;
            }
        }
    }
}

type DueRow = (String, String, String, String, i64);

/// Claims and sends the events that are due; returns how many were sent.
async fn pass(state: &State, key: &Arc<Vec<u8>>) -> Result<usize, sqlx::Error> {
    let settings = &state.settings.triggers;
    let now = now_millis();
    let due: Vec<DueRow> = sqlx::query_as(
        "SELECT event_id, event_type, target_url, body, attempts FROM trigger_events \
         WHERE delivered_at IS NULL AND next_attempt_at <= $1 AND lease_until <= $1 \
         ORDER BY created_at, event_id LIMIT $2",
    )
    .bind(now)
    .bind(BATCH)
    .fetch_all(&state.store.pool)
    .await?;
    let lease = i64::try_from(settings.lease().as_millis()).unwrap_or(i64::MAX);
    let mut sending = tokio::task::JoinSet::new();
    for (event_id, event_type, url, body, attempts) in due {
        let claimed = sqlx::query(
            "UPDATE trigger_events SET lease_until = $1, attempts = attempts + 1 \
             WHERE event_id = $2 AND delivered_at IS NULL AND lease_until <= $3 AND next_attempt_at <= $3",
        )
        .bind(now.saturating_add(lease))
        .bind(&event_id)
        .bind(now)
        .execute(&state.store.pool)
        .await?
        .rows_affected();
        if claimed == 0 {
            continue;
        }
        let delivery = Delivery { event_id, event_type, url, body, attempt: attempts + 1 };
        let (key, timeout, allow_private) = (key.clone(), settings.timeout, settings.allow_private);
        sending.spawn_blocking(move || {
            let result = deliver::send(&delivery, &key, timeout, allow_private);
            (delivery, result)
        });
    }
    let mut sent = 0;
    while let Some(joined) = sending.join_next().await {
        let Ok((delivery, result)) = joined else { continue };
        sent += 1;
        record(state, &delivery, result).await?;
    }
    Ok(sent)
}

/// Writes down the outcome of one attempt.
async fn record(state: &State, delivery: &Delivery, result: Result<(), String>) -> Result<(), sqlx::Error> {
    let now = now_millis();
    match result {
        Ok(()) => {
            sqlx::query(
                "UPDATE trigger_events SET delivered_at = $1, lease_until = 0, last_error = NULL WHERE event_id = $2",
            )
            .bind(now)
            .bind(&delivery.event_id)
            .execute(&state.store.pool)
            .await?;
            log::info!("trigger event {} ({}) delivered to {}", delivery.event_id, delivery.event_type, delivery.url);
        }
        Err(error) => {
            let settings = &state.settings.triggers;
            let wait = deliver::backoff(delivery.attempt, settings.retry_base, settings.retry_max);
            let next = now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
            sqlx::query(
                "UPDATE trigger_events SET next_attempt_at = $1, lease_until = 0, last_error = $2 \
                 WHERE event_id = $3 AND delivered_at IS NULL",
            )
            .bind(next)
            .bind(&error)
            .bind(&delivery.event_id)
            .execute(&state.store.pool)
            .await?;
            log::warn!(
                "trigger event {} attempt {} failed ({error}); next attempt in {} ms",
                delivery.event_id,
                delivery.attempt,
                wait.as_millis()
            );
        }
    }
    Ok(())
}
