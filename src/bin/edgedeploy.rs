//! `edgedeploy`: the control plane server and the operator's commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use edgedeploy::server::{self, Options, Settings};

#[derive(FromArgs)]
/// edgedeploy: CodeDeploy-compatible deployments for fleets of small devices.
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Server(ServerArgs),
}

#[derive(FromArgs)]
#[argh(subcommand, name = "server")]
/// run the control plane: control API, command API and bundle store.
struct ServerArgs {
    /// data directory (database, bundles, admin-credentials)
    #[argh(option)]
    data_dir: PathBuf,
    /// address to listen on, e.g. 127.0.0.1:8443
    #[argh(option, default = "SocketAddr::from(([127, 0, 0, 1], 8443))")]
    listen: SocketAddr,
    /// TLS certificate chain (PEM)
    #[argh(option)]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[argh(option)]
    tls_key: Option<PathBuf>,
    /// store URL (default: SQLite in the data directory; postgres://... for PostgreSQL)
    #[argh(option)]
    database: Option<String>,
    /// seconds an instance has to pick up a lifecycle event (default 600)
    #[argh(option, default = "600")]
    pickup_timeout: u64,
    /// seconds a picked-up lifecycle event may take (default 3900)
    #[argh(option, default = "3900")]
    event_timeout: u64,
}

fn main() -> ExitCode {
    edgedeploy::logger::init(log::Level::Info);
    let cli: Cli = argh::from_env();
    let result = match cli.command {
        Command::Server(args) => serve(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServerArgs) -> Result<(), String> {
    let settings = Settings {
        pickup_timeout: Duration::from_secs(args.pickup_timeout),
        event_timeout: Duration::from_secs(args.event_timeout),
        ..Settings::default()
    };
    let options = Options {
        data_dir: args.data_dir,
        listen: args.listen,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        database: args.database,
        settings,
    };
    runtime()?.block_on(server::run(options))
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| format!("starting the runtime: {e}"))
}
