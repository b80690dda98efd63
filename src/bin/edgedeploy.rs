//! `edgedeploy`: the control plane server and the operator's commands.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use edgedeploy::cli::commands::{
    self, DeregisterArgs, GetArgs, ListArgs, RollbackArgs, StopArgs, TagArgs, UntagArgs, WatchArgs,
};
use edgedeploy::cli::connect::Operator;
use edgedeploy::cli::{demo, deploy, push};
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
    Push(PushArgs),
    Deploy(DeployArgs),
    Demo(DemoArgs),
    RegisterInstance(RegisterInstanceArgs),
    DeregisterInstance(DeregisterArgs),
    TagInstance(TagArgs),
    UntagInstance(UntagArgs),
    List(ListArgs),
    Get(GetArgs),
    Watch(WatchArgs),
    Stop(StopArgs),
    Rollback(RollbackArgs),
    RotateSecretsKey(RotateSecretsKeyArgs),
}

#[derive(FromArgs)]
#[argh(subcommand, name = "rotate-secrets-key")]
/// seal every secret in the database again under a new key (server stopped; see docs/security.md).
struct RotateSecretsKeyArgs {
    /// data directory (its secrets-key file, and the SQLite database by default)
    #[argh(option)]
    data_dir: PathBuf,
    /// store URL (default: SQLite in the data directory)
    #[argh(option)]
    database: Option<String>,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "demo")]
/// run the whole system on this machine: a server, a few devices, one deployment.
struct DemoArgs {
    /// number of local devices (agents) (default 4)
    #[argh(option, default = "4")]
    devices: usize,
    /// deployment configuration (default CodeDeployDefault.HalfAtATime)
    #[argh(option, default = "String::from(\"CodeDeployDefault.HalfAtATime\")")]
    deployment_config: String,
    /// the app to deploy (default examples/fleet-app)
    #[argh(option, default = "PathBuf::from(\"examples/fleet-app\")")]
    source: PathBuf,
    /// working directory (default: a new one under the temp dir)
    #[argh(option)]
    work_dir: Option<PathBuf>,
    /// leave the server, agents and app running at the end
    #[argh(switch)]
    keep: bool,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "push")]
/// bundle a directory, upload it to the bundle store, register it as a revision.
struct PushArgs {
    /// application name
    #[argh(option)]
    application: String,
    /// directory holding appspec.yml
    #[argh(option)]
    source: PathBuf,
    /// bucket in the bundle store (default edgedeploy-bundles)
    #[argh(option, default = "String::from(push::DEFAULT_BUCKET)")]
    bucket: String,
    /// object key (default APPLICATION/<sha256 prefix>.tgz)
    #[argh(option)]
    key: Option<String>,
    /// revision description
    #[argh(option)]
    description: Option<String>,
    /// the server's data directory (gives endpoint and admin credentials)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// server URL (credentials from AWS_* variables or the AWS credentials file)
    #[argh(option)]
    endpoint: Option<String>,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "deploy")]
/// create a deployment (of the newest revision unless --bucket/--key), optionally follow it.
struct DeployArgs {
    /// application name
    #[argh(option)]
    application: String,
    /// deployment group name
    #[argh(option)]
    deployment_group: String,
    /// bucket of the revision's bundle
    #[argh(option)]
    bucket: Option<String>,
    /// key of the revision's bundle
    #[argh(option)]
    key: Option<String>,
    /// bundle type: tar, tgz or zip (default tgz)
    #[argh(option, default = "String::from(\"tgz\")")]
    bundle_type: String,
    /// deployment configuration (default: the group's)
    #[argh(option)]
    deployment_config: Option<String>,
    /// DISALLOW, OVERWRITE or RETAIN
    #[argh(option)]
    file_exists_behavior: Option<String>,
    /// description
    #[argh(option)]
    description: Option<String>,
    /// follow the deployment to its end; exit status 0 only if it succeeded
    #[argh(switch)]
    wait: bool,
    /// seconds to wait at most with --wait (default 3600)
    #[argh(option, default = "3600")]
    timeout: u64,
    /// with --wait: one line per change even on a terminal
    #[argh(switch)]
    plain: bool,
    /// the server's data directory (gives endpoint and admin credentials)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// server URL (credentials from AWS_* variables or the AWS credentials file)
    #[argh(option)]
    endpoint: Option<String>,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "register-instance")]
/// register a device: instance, tags, its own access key, and its agent configuration file.
struct RegisterInstanceArgs {
    /// the server's data directory
    #[argh(option)]
    data_dir: PathBuf,
    /// store URL, when not the SQLite database in the data directory
    #[argh(option)]
    database: Option<String>,
    /// instance name
    #[argh(option)]
    name: String,
    /// tag KEY=VALUE (repeatable)
    #[argh(option)]
    tag: Vec<String>,
    /// agent configuration file to write (mode 0600; must not exist)
    #[argh(option)]
    agent_config: PathBuf,
    /// URL devices reach the server at (default: the one the server recorded)
    #[argh(option)]
    endpoint: Option<String>,
    /// region for signatures and the instance ARN (default us-east-1)
    #[argh(option, default = "String::from(\"us-east-1\")")]
    region: String,
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
    /// seconds one trigger (webhook) delivery attempt may take (default 5)
    #[argh(option, default = "5")]
    trigger_timeout: u64,
    /// longest wait in seconds between trigger delivery attempts (default 300)
    #[argh(option, default = "300")]
    trigger_retry_max: u64,
    /// send webhooks to loopback, link-local and private addresses too (default: refused)
    #[argh(switch)]
    allow_private_webhooks: bool,
    /// a git repository for GitHub revisions, NAME=PATH_OR_URL (NAME as in
    /// gitHubLocation.repository, e.g. acme/shop); repeatable
    #[argh(option)]
    git_repository: Vec<String>,
    /// a directory of git repositories: repository owner/repo is DIR/owner/repo.git
    #[argh(option)]
    git_root: Option<PathBuf>,
    /// connections open at once; at the cap, idle and unauthenticated ones are closed first (default 1024)
    #[argh(option, default = "1024")]
    max_connections: usize,
    /// seconds for a TLS handshake and for request headers (default 10)
    #[argh(option, default = "10")]
    header_timeout: u64,
    /// seconds a connection without a request in flight stays open (default 60)
    #[argh(option, default = "60")]
    idle_timeout: u64,
    /// seconds to receive a whole body read before authentication, or a small document (default 30)
    #[argh(option, default = "30")]
    body_timeout: u64,
    /// request bodies read before authentication at once (default 16)
    #[argh(option, default = "16")]
    preauth_bodies: usize,
    /// serve HTTP/1.1 only (no HTTP/2, neither prior knowledge nor ALPN)
    #[argh(switch)]
    no_http2: bool,
}

fn main() -> ExitCode {
    edgedeploy::logger::init(log::Level::Info);
    let cli: Cli = argh::from_env();
    let result = match cli.command {
        Command::Server(args) => {
            server::private_umask();
            serve(args)
        }
        Command::Push(args) => push_command(args),
        Command::Deploy(args) => deploy_command(args),
        Command::RegisterInstance(args) => {
            server::private_umask();
            register_instance_command(args)
        }
        Command::DeregisterInstance(args) => commands::deregister_command(args),
        Command::TagInstance(args) => commands::tag_command(args),
        Command::UntagInstance(args) => commands::untag_command(args),
        Command::List(args) => commands::list_command(args, &mut std::io::stdout()),
        Command::Get(args) => commands::get_command(args, &mut std::io::stdout()),
        Command::Watch(args) => commands::watch_command(args),
        Command::Stop(args) => commands::stop_command(args),
        Command::Rollback(args) => commands::rollback_command(args),
        Command::RotateSecretsKey(args) => runtime().and_then(|rt| {
            server::private_umask();
            rt.block_on(server::rotate_secrets_key(&args.data_dir, args.database.as_deref())).map(|m| println!("{m}"))
        }),
        Command::Demo(args) => demo::run(
            &demo::DemoOptions {
                devices: args.devices,
                deployment_config: args.deployment_config,
                source: args.source,
                work_dir: args.work_dir,
                keep: args.keep,
            },
            &mut std::io::stdout(),
        ),
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
    let limits = server::listen::Limits {
        max_connections: args.max_connections.max(1),
        header_timeout: Duration::from_secs(args.header_timeout.max(1)),
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        body_timeout: Duration::from_secs(args.body_timeout.max(1)),
        preauth_bodies: args.preauth_bodies.max(1),
        http2: !args.no_http2,
        ..server::listen::Limits::default()
    };
    let _ = server::listen::configure(limits);
    let settings = Settings {
        pickup_timeout: Duration::from_secs(args.pickup_timeout),
        event_timeout: Duration::from_secs(args.event_timeout),
        triggers: server::triggers::DeliverySettings {
            timeout: Duration::from_secs(args.trigger_timeout.max(1)),
            retry_max: Duration::from_secs(args.trigger_retry_max.max(1)),
            allow_private: args.allow_private_webhooks,
            ..server::triggers::DeliverySettings::default()
        },
        git: server::git::Sources::from_flags(&args.git_repository, args.git_root.as_deref())?,
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

fn push_command(args: PushArgs) -> Result<(), String> {
    let op = Operator::connect(args.data_dir.as_deref(), args.endpoint.as_deref())?;
    let pushed = push::push(
        &op,
        &args.application,
        &args.source,
        &args.bucket,
        args.key.as_deref(),
        args.description.as_deref(),
    )?;
    println!(
        "pushed {} revision s3://{}/{} ({} bytes, sha256 {}, etag {})",
        args.application, pushed.bucket, pushed.key, pushed.size, pushed.sha256, pushed.etag
    );
    Ok(())
}

fn deploy_command(args: DeployArgs) -> Result<(), String> {
    let op = Operator::connect(args.data_dir.as_deref(), args.endpoint.as_deref())?;
    let revision = match (&args.bucket, &args.key) {
        (Some(bucket), Some(key)) => Some(serde_json::json!({
            "revisionType": "S3",
            "s3Location": { "bucket": bucket, "key": key, "bundleType": args.bundle_type }
        })),
        (None, None) => None,
        _ => return Err("--bucket and --key go together".into()),
    };
    let request = deploy::Request {
        application: args.application,
        group: args.deployment_group,
        revision,
        config: args.deployment_config,
        file_exists_behavior: args.file_exists_behavior,
        description: args.description,
    };
    let id = deploy::create(&op, &request)?;
    println!("created deployment {id}");
    if !args.wait {
        return Ok(());
    }
    let view = if args.plain { deploy::View::Plain } else { deploy::View::for_stdout() };
    commands::finish(&op, &id, Duration::from_secs(args.timeout), view)
}

fn register_instance_command(args: RegisterInstanceArgs) -> Result<(), String> {
    let request = server::control::onboard::Request {
        data_dir: args.data_dir,
        database: args.database,
        name: args.name,
        tags: args.tag,
        agent_config: args.agent_config,
        endpoint: args.endpoint,
        region: args.region,
    };
    println!("{}", runtime()?.block_on(server::control::onboard::run(request))?);
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| format!("starting the runtime: {e}"))
}
