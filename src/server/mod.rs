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
pub mod secrets;
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

/// Makes every file the process creates from now on private (umask 077):
/// the database with its journal and WAL files, the objects, the key
/// files. The commands that write the data directory (`server`,
/// `register-instance`, `rotate-secrets-key`) call it first; files made
/// before (older versions) are fixed by [`make_private`] in [`open_state`].
pub fn private_umask() {
    crate::sys::set_umask(0o077);
}

/// Opens the store and the data directory, as every server command does:
/// the data directory and everything in it is made private (0700 and 0600).
pub async fn open_state(
    data_dir: &std::path::Path,
    database: Option<&str>,
    settings: Settings,
) -> Result<Arc<State>, String> {
    std::fs::create_dir_all(data_dir).map_err(|e| format!("creating {}: {e}", data_dir.display()))?;
    make_private(data_dir).map_err(|e| format!("making {} private: {e}", data_dir.display()))?;
    let (keys, new_key_file) = secrets::Keyring::load(data_dir).map_err(|e| e.to_string())?;
    let url = database.map(str::to_string).unwrap_or_else(|| Store::sqlite_url(data_dir));
    let store = Store::open(&url, Arc::new(keys)).await?;
    secrets::check_known(&store, &store.secrets).await?;
    if let Some((path, text)) = new_key_file {
        secrets::write_key_file(&path, &text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        log::info!("made a new secrets key in {}; keep a copy of it apart from database backups", path.display());
    }
    let resealed = secrets::reseal_all(&store, &store.secrets).await?;
    if resealed != secrets::Resealed::default() {
        log::info!("sealed again with secrets key {}: {resealed:?}", store.secrets.ids()[0]);
    }
    make_private(data_dir).map_err(|e| format!("making {} private: {e}", data_dir.display()))?;
    auth::ensure_admin_credentials(&store, data_dir).await?;
    Ok(Arc::new(State { store, data_dir: data_dir.to_path_buf(), settings }))
}

/// `edgedeploy rotate-secrets-key`: seals every secret in the database
/// again under a new key. With the key file, a new key is added in front
/// of the old ones, every secret is sealed again, then the old keys are
/// dropped from the file; with [`secrets::KEY_ENV`], the secrets are
/// sealed again under its first key (the operator has put the new key
/// first, the old one after it). Run it with the server stopped; see
/// docs/security.md.
pub async fn rotate_secrets_key(data_dir: &std::path::Path, database: Option<&str>) -> Result<String, String> {
    let path = data_dir.join(secrets::KEY_FILE);
    let (keys, finish) = if std::env::var_os(secrets::KEY_ENV).is_some() {
        (secrets::Keyring::load(data_dir).map_err(|e| e.to_string())?.0, None)
    } else {
        let old = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "reading {}: {e} (rotation needs the current key; has a server run on this data directory?)",
                path.display()
            )
        })?;
        let new = secrets::new_key_hex();
        let both = format!("{new}\n{}\n", old.trim());
        let keys = secrets::Keyring::parse(&both, &path.display().to_string()).map_err(|e| e.to_string())?;
        secrets::write_key_file(&path, &both).map_err(|e| format!("writing {}: {e}", path.display()))?;
        (keys, Some(new))
    };
    let url = database.map(str::to_string).unwrap_or_else(|| Store::sqlite_url(data_dir));
    let store = Store::open(&url, Arc::new(keys)).await?;
    secrets::check_known(&store, &store.secrets).await?;
    let done = secrets::reseal_all(&store, &store.secrets).await?;
    let id = store.secrets.ids()[0].clone();
    if let Some(new) = finish {
        secrets::write_key_file(&path, &format!("{new}\n")).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    store.pool.close().await;
    Ok(format!(
        "sealed {} secret access keys and {} server secrets again under secrets key {id}",
        done.credentials, done.server_secrets
    ))
}

/// Makes `dir` and everything under it private to the server's user:
/// directories 0700, files 0600 (data directories of older versions were
/// made under the umask). Links are left alone. `dir` itself must be
/// changed; an entry that cannot be (another user's) is logged.
pub fn make_private(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        let wanted = if meta.is_dir() {
            match std::fs::read_dir(&path)
                .and_then(|entries| entries.map(|e| e.map(|e| e.path())).collect::<Result<Vec<_>, _>>())
            {
                Ok(entries) => pending.extend(entries),
                Err(e) if path != dir => log::warn!("cannot list {}: {e}", path.display()),
                Err(e) => return Err(e),
            }
            0o700
        } else if meta.is_file() {
            0o600
        } else {
            continue;
        };
        if meta.permissions().mode() & 0o7777 != wanted
            && let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wanted))
        {
            if path == dir {
                return Err(e);
            }
            log::warn!("cannot make {} private (mode {wanted:o}): {e}", path.display());
        }
    }
    Ok(())
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
