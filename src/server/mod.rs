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
pub mod listen;
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
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(shutdown_on_signal(stop));
    let tls = match (&options.tls_cert, &options.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key, listen::limits().http2)?),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", options.listen))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", options.listen);
    crate::journal::write_atomic(&options.data_dir.join("endpoint"), format!("{url}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    log::info!("edgedeploy server listening on {url} (data {})", options.data_dir.display());
    listen::serve(listener, tls, app, stopped).await;
    orchestrator.abort();
    notifier.abort();
    Ok(())
}

/// A TLS acceptor for the PEM certificate chain `cert` and key `key`;
/// ALPN offers h2 when `http2`.
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
    http2: bool,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("reading the TLS certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("reading the TLS key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, private))
        .map_err(|e| format!("TLS certificate {} / key {}: {e}", cert.display(), key.display()))?;
    config.alpn_protocols = if http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn shutdown_on_signal(stop: tokio::sync::watch::Sender<bool>) {
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
    let _ = stop.send(true);
}
