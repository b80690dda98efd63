//! The store: SQL through sqlx's `Any` driver, so that the same schema and
//! queries run on SQLite (the embedded default, `sqlite://DIR/edgedeploy.db`)
//! and PostgreSQL (`postgres://...`).
//!
//! Rules that keep the SQL portable: placeholders are `$1, $2, ...` and
//! appear in increasing order of first use; integers are BIGINT and read as
//! i64 (booleans too, as 0/1); text is TEXT; JSON documents are TEXT;
//! timestamps are epoch milliseconds in BIGINT; no AUTOINCREMENT, no
//! RETURNING of generated keys (ids are made by the server), upserts as
//! `INSERT ... ON CONFLICT ... DO ...` (both engines have it).

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions};

/// The schema, one statement per entry, idempotent.
const SCHEMA: &[&str] = &[
    // Access keys: the admin's and one per registered instance.
    "CREATE TABLE IF NOT EXISTS credentials (
        access_key_id TEXT PRIMARY KEY,
        secret_access_key TEXT NOT NULL,
        kind TEXT NOT NULL,
        instance_name TEXT,
        created_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS applications (
        application_id TEXT PRIMARY KEY,
        application_name TEXT NOT NULL UNIQUE,
        compute_platform TEXT NOT NULL,
        create_time BIGINT NOT NULL,
        doc TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS deployment_configs (
        deployment_config_id TEXT PRIMARY KEY,
        deployment_config_name TEXT NOT NULL UNIQUE,
        compute_platform TEXT NOT NULL,
        min_healthy_type TEXT NOT NULL,
        min_healthy_value BIGINT NOT NULL,
        create_time BIGINT NOT NULL,
        doc TEXT NOT NULL)",
    // doc: the group's settings as the model's DeploymentGroupInfo JSON.
    "CREATE TABLE IF NOT EXISTS deployment_groups (
        deployment_group_id TEXT PRIMARY KEY,
        application_name TEXT NOT NULL,
        deployment_group_name TEXT NOT NULL,
        deployment_config_name TEXT NOT NULL,
        doc TEXT NOT NULL,
        UNIQUE (application_name, deployment_group_name))",
    "CREATE TABLE IF NOT EXISTS instances (
        instance_name TEXT PRIMARY KEY,
        instance_arn TEXT NOT NULL,
        iam_user_arn TEXT,
        iam_session_arn TEXT,
        register_time BIGINT NOT NULL,
        deregister_time BIGINT)",
    "CREATE TABLE IF NOT EXISTS instance_tags (
        instance_name TEXT NOT NULL,
        tag_key TEXT NOT NULL,
        tag_value TEXT NOT NULL,
        PRIMARY KEY (instance_name, tag_key))",
    // revision_key: canonical JSON of the RevisionLocation; doc: GenericRevisionInfo JSON.
    "CREATE TABLE IF NOT EXISTS revisions (
        application_name TEXT NOT NULL,
        revision_key TEXT NOT NULL,
        revision TEXT NOT NULL,
        register_time BIGINT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (application_name, revision_key))",
    // doc: the model's DeploymentInfo JSON (status and overview are columns too).
    "CREATE TABLE IF NOT EXISTS deployments (
        deployment_id TEXT PRIMARY KEY,
        application_name TEXT NOT NULL,
        deployment_group_name TEXT NOT NULL,
        deployment_group_id TEXT NOT NULL,
        status TEXT NOT NULL,
        create_time BIGINT NOT NULL,
        doc TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS deployments_by_group ON deployments (application_name, deployment_group_name, create_time)",
    // One active deployment per group: the row exists while one is active.
    "CREATE TABLE IF NOT EXISTS active_deployments (
        deployment_group_id TEXT PRIMARY KEY,
        deployment_id TEXT NOT NULL)",
    // One row per (deployment, instance); doc: the model's InstanceTarget JSON
    // (lifecycle events with status and diagnostics).
    "CREATE TABLE IF NOT EXISTS deployment_targets (
        deployment_id TEXT NOT NULL,
        instance_name TEXT NOT NULL,
        status TEXT NOT NULL,
        last_updated BIGINT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (deployment_id, instance_name))",
    // One row per lifecycle event per instance, handed out in seq order.
    "CREATE TABLE IF NOT EXISTS host_commands (
        command_id TEXT PRIMARY KEY,
        deployment_id TEXT NOT NULL,
        instance_name TEXT NOT NULL,
        seq BIGINT NOT NULL,
        command_name TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        dispatched_at BIGINT,
        acknowledged_at BIGINT,
        completed_at BIGINT,
        diagnostics TEXT)",
    "CREATE INDEX IF NOT EXISTS host_commands_by_instance ON host_commands (instance_name, status)",
    "CREATE INDEX IF NOT EXISTS host_commands_by_deployment ON host_commands (deployment_id, instance_name, seq)",
    // The bundle store's objects; content in DIR/objects/.
    "CREATE TABLE IF NOT EXISTS objects (
        bucket TEXT NOT NULL,
        object_key TEXT NOT NULL,
        size BIGINT NOT NULL,
        etag TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        file_name TEXT NOT NULL,
        last_modified BIGINT NOT NULL,
        PRIMARY KEY (bucket, object_key))",
    // Trigger notifications (webhooks), one row per event per trigger,
    // written in the transaction of the change that caused the event and
    // delivered by `server::triggers` until a 2xx. lease_until: a replica
    // sending it holds it until then (0: nobody); body: the exact JSON sent.
    "CREATE TABLE IF NOT EXISTS trigger_events (
        event_id TEXT PRIMARY KEY,
        deployment_group_id TEXT NOT NULL,
        deployment_id TEXT NOT NULL,
        trigger_name TEXT NOT NULL,
        target_url TEXT NOT NULL,
        event_type TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        attempts BIGINT NOT NULL,
        next_attempt_at BIGINT NOT NULL,
        lease_until BIGINT NOT NULL,
        delivered_at BIGINT,
        last_error TEXT)",
    "CREATE INDEX IF NOT EXISTS trigger_events_due ON trigger_events (delivered_at, next_attempt_at)",
    // Secrets every replica shares (e.g. the trigger signing key), made once.
    "CREATE TABLE IF NOT EXISTS server_secrets (
        name TEXT PRIMARY KEY,
        secret TEXT NOT NULL,
        created_at BIGINT NOT NULL)",
    // One command per (deployment, instance, event position): CreateDeployment
    // writes them all in one transaction, and nothing may ever add a second.
    "CREATE UNIQUE INDEX IF NOT EXISTS host_commands_once ON host_commands (deployment_id, instance_name, seq)",
];

/// Key of the PostgreSQL advisory lock held while the schema is applied,
/// so that replicas starting together on an empty database do not collide
/// in `CREATE TABLE IF NOT EXISTS` (which is not atomic there).
const SCHEMA_LOCK_KEY: i64 = 0x6564_6765_6470_6c79; // "edgedply"

/// Which database a store URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite:...`: one file, the embedded default.
    Sqlite,
    /// `postgres://...` or `postgresql://...`: shared by server replicas.
    Postgres,
}

impl Backend {
    /// The backend of `url`, or an error naming the schemes understood.
    pub fn of(url: &str) -> Result<Backend, String> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
        match scheme.as_str() {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(format!(
                "database URL {}: unsupported scheme {scheme:?}; use sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DB",
                redact(url)
            )),
        }
    }
}

/// `url` with its password (if any) replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    /// The connection pool; queries are written in the portable subset above.
    pub pool: AnyPool,
    /// The database behind the pool.
    pub backend: Backend,
    /// The keys the secrets in the database are sealed with.
    pub secrets: std::sync::Arc<super::secrets::Keyring>,
}

impl Store {
    /// Opens (creating if needed) the database at `url` and applies the
    /// schema; `secrets` seal and open the secrets in it.
    pub async fn open(url: &str, secrets: std::sync::Arc<super::secrets::Keyring>) -> Result<Store, String> {
        let backend = Backend::of(url)?;
        Self::connect(url, backend, secrets).await.map_err(|e| format!("opening the store {}: {e}", redact(url)))
    }

    async fn connect(
        url: &str,
        backend: Backend,
        secrets: std::sync::Arc<super::secrets::Keyring>,
    ) -> Result<Store, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let mut options = AnyConnectOptions::from_str(url)?;
        options = options.log_statements(log::LevelFilter::Trace);
        let sqlite = backend == Backend::Sqlite;
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 16 })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // WAL: readers do not block the writer; busy_timeout:
                        // concurrent writers wait instead of failing.
                        // secure_delete: what is deleted or overwritten
                        // (e.g. a secret sealed again) is zeroed on disk.
                        for pragma in [
                            "PRAGMA journal_mode=WAL",
                            "PRAGMA busy_timeout=10000",
                            "PRAGMA synchronous=FULL",
                            "PRAGMA secure_delete=ON",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        apply_schema(&pool, backend).await?;
        Ok(Store { pool, backend, secrets })
    }

    /// The SQLite URL of the embedded default in `data_dir`.
    pub fn sqlite_url(data_dir: &std::path::Path) -> String {
        format!("sqlite://{}?mode=rwc", data_dir.join("edgedeploy.db").display())
    }
}

/// Applies [`SCHEMA`]. On PostgreSQL in one transaction that first takes
/// an advisory lock, so that replicas starting at the same moment apply it
/// one after the other (DDL is transactional there: the second one finds
/// every table in place). SQLite serializes writers by itself.
async fn apply_schema(pool: &AnyPool, backend: Backend) -> Result<(), sqlx::Error> {
    match backend {
        Backend::Sqlite => {
            for statement in SCHEMA {
                sqlx::query(statement).execute(pool).await?;
            }
            Ok(())
        }
        Backend::Postgres => {
            let mut tx = pool.begin().await?;
            // Selected as text: the Any driver has no decoder for `void`.
            let _: (String,) = sqlx::query_as("SELECT CAST(pg_advisory_xact_lock($1) AS TEXT)")
                .bind(SCHEMA_LOCK_KEY)
                .fetch_one(&mut *tx)
                .await?;
            for statement in SCHEMA {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            tx.commit().await
        }
    }
}

/// Milliseconds since the epoch, now.
pub fn now_millis() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A timestamp for the wire: epoch seconds, with milliseconds as fraction.
pub fn wire_time(millis: i64) -> serde_json::Value {
    serde_json::json!(millis as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_recognized_by_scheme() {
        assert_eq!(Backend::of("sqlite:///var/lib/edgedeploy/edgedeploy.db?mode=rwc"), Ok(Backend::Sqlite));
        assert_eq!(Backend::of("postgres://u:p@db:5432/edgedeploy"), Ok(Backend::Postgres));
        assert_eq!(Backend::of("PostgreSQL://db/edgedeploy"), Ok(Backend::Postgres));
        let error = Backend::of("mysql://root:secret@db/x").unwrap_err();
        assert!(error.contains("unsupported scheme \"mysql\""), "{error}");
        assert!(!error.contains("secret"), "{error}");
        assert!(Backend::of("/var/lib/edgedeploy.db").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://edgedeploy:s3cr@t@db:5432/x?sslmode=prefer"),
            "postgres://edgedeploy:***@db:5432/x?sslmode=prefer"
        );
        assert_eq!(redact("postgres://edgedeploy@db/x"), "postgres://edgedeploy@db/x");
        assert_eq!(redact("sqlite:///data/edgedeploy.db?mode=rwc"), "sqlite:///data/edgedeploy.db?mode=rwc");
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
    }
}
