//! The control plane (feature `server`): `edgedeploy server`. One process
//! serves the CodeDeploy control API, the command API for agents and the
//! S3-compatible bundle store, over a store chosen by URL (SQLite in the
//! data directory by default). See `docs/server.md`.

pub mod api;
pub mod auth;
pub mod bundles;
pub mod commands;
pub mod control;
pub mod git;
pub mod http;
pub mod orchestrator;
pub mod store;
pub mod triggers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use store::Store;

/// How the server is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// Data directory: database (SQLite default), bundles, admin credentials.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// TLS certificate chain (PEM), with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Store URL; `sqlite://DIR/edgedeploy.db` when absent.
    pub database: Option<String>,
    /// Timing rules of the orchestrator.
    pub settings: Settings,
}

/// Timing rules of the orchestrator, and where git revisions come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// A lifecycle event not picked up by its instance within this fails the instance.
    pub pickup_timeout: Duration,
    /// A lifecycle event not completed within this (after pickup) fails the instance.
    pub event_timeout: Duration,
    /// How often the orchestrator looks at active deployments.
    pub tick: Duration,
    /// Trigger (webhook) delivery timing.
    pub triggers: triggers::DeliverySettings,
    /// The git repositories GitHub revisions are resolved from (`docs/revisions.md`).
    pub git: git::Sources,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            pickup_timeout: Duration::from_secs(600),
            event_timeout: Duration::from_secs(3900),
            tick: Duration::from_millis(500),
            triggers: triggers::DeliverySettings::default(),
            git: git::Sources::default(),
        }
    }
}

/// Shared by every request and the orchestrator.
#[derive(Debug)]
pub struct State {
    /// The store.
    pub store: Store,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Orchestrator timing.
    pub settings: Settings,
}

/// Opens the store and the data directory, as every server command does.
pub async fn open_state(
    data_dir: &std::path::Path,
    database: Option<&str>,
    settings: Settings,
) -> Result<Arc<State>, String> {
    std::fs::create_dir_all(data_dir).map_err(|e| format!("creating {}: {e}", data_dir.display()))?;
    let url = database.map(str::to_string).unwrap_or_else(|| Store::sqlite_url(data_dir));
    let store = Store::open(&url).await?;
    auth::ensure_admin_credentials(&store, data_dir).await?;
    Ok(Arc::new(State { store, data_dir: data_dir.to_path_buf(), settings }))
}

/// The URL a server on `data_dir` last listened on (`DIR/endpoint`).
pub fn recorded_endpoint(data_dir: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join("endpoint")).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(options: Options) -> Result<(), String> {
    let state = open_state(&options.data_dir, options.database.as_deref(), options.settings.clone()).await?;
    // Only the serving process recovers the bundle store: other commands on
    // the same data directory (register-instance) must not touch uploads.
    let recovered = bundles::recover(&state).await?;
    log::info!("bundle store: {recovered:?}");
    let app = http::router(state.clone());
    let orchestrator = tokio::spawn(orchestrator::run(state.clone()));
    let signing_key = triggers::ensure_signing_key(&state.store, &options.data_dir).await?;
    let notifier = tokio::spawn(triggers::run(state.clone(), signing_key));
    let handle = axum_server::Handle::new();
    tokio::spawn(shutdown_on_signal(handle.clone()));
    let scheme = if options.tls_cert.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", options.listen);
    crate::journal::write_atomic(&options.data_dir.join("endpoint"), format!("{url}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    log::info!("edgedeploy server listening on {url} (data {})", options.data_dir.display());
    let served = match (&options.tls_cert, &options.tls_key) {
        (Some(cert), Some(key)) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|e| format!("loading TLS certificate {} / key {}: {e}", cert.display(), key.display()))?;
            axum_server::bind_rustls(options.listen, tls).handle(handle).serve(app.into_make_service()).await
        }
        (None, None) => axum_server::bind(options.listen).handle(handle).serve(app.into_make_service()).await,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    orchestrator.abort();
    notifier.abort();
    served.map_err(|e| format!("serving on {}: {e}", options.listen))
}

async fn shutdown_on_signal(handle: axum_server::Handle) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot watch SIGTERM: {e}");
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    log::info!("shutting down");
    handle.graceful_shutdown(Some(Duration::from_secs(5)));
}
