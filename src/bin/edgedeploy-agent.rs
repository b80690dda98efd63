//! `edgedeploy-agent`: the device side of edgedeploy. Thin: parse the
//! command line, load the configuration, call the library, map the outcome
//! to an exit status.
#![forbid(unsafe_code)]

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use argh::FromArgs;
use edgedeploy::config::{Config, Loaded};
use edgedeploy::local::{self, Failure};
use edgedeploy::state::{Pointer, Root};
use edgedeploy::unpack::BundleType;

/// Configuration read when `-c` is not given and the file exists.
const DEFAULT_CONFIG: &str = "/etc/edgedeploy/agent.yml";

/// Exit status when a deployment ran and failed.
const EXIT_FAILED: u8 = 1;
/// Exit status for bad options or configuration (nothing was deployed).
const EXIT_USAGE: u8 = 2;

#[derive(FromArgs)]
/// edgedeploy-agent: deploys application revisions to this device, CodeDeploy style.
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Run(RunArgs),
    DeployLocal(DeployLocalArgs),
    Status(StatusArgs),
}

#[derive(FromArgs)]
#[argh(subcommand, name = "run")]
/// run the agent daemon in the foreground: poll the service, deploy, report.
struct RunArgs {
    /// agent configuration file (YAML)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "deploy-local")]
/// deploy a local bundle without a server, like AWS's codedeploy-local.
struct DeployLocalArgs {
    /// bundle location: a directory or a tar/tgz/zip file (default: current directory)
    #[argh(option, short = 'l')]
    bundle_location: Option<PathBuf>,
    /// bundle type: tar, tgz, zip or directory (default: directory)
    #[argh(option, short = 't', long = "type", default = "String::from(\"directory\")")]
    bundle_type: String,
    /// what to do with files that already exist: DISALLOW, OVERWRITE or RETAIN (AppSpec wins; default DISALLOW)
    #[argh(option, short = 'b')]
    file_exists_behavior: Option<String>,
    /// deployment group id: folder under root_dir (default: default-local-deployment-group)
    #[argh(option, short = 'g', default = "String::from(local::DEFAULT_GROUP_ID)")]
    deployment_group: String,
    /// deployment group name for DEPLOYMENT_GROUP_NAME (default: LocalFleet)
    #[argh(option, short = 'd', default = "String::from(local::DEFAULT_GROUP_NAME)")]
    deployment_group_name: String,
    /// application name for APPLICATION_NAME (default: the bundle location)
    #[argh(option, short = 'a')]
    application_name: Option<String>,
    /// comma-separated lifecycle events to run, in order (DownloadBundle and Install are added first unless listed)
    #[argh(option, short = 'e')]
    events: Option<String>,
    /// agent configuration file (YAML): root_dir, max_revisions, limits, ...
    #[argh(option, short = 'c')]
    agent_configuration_file: Option<PathBuf>,
    /// name of the AppSpec file in the revision (default: appspec.yml, falling back to appspec.yaml)
    #[argh(option, short = 'A', default = "String::from(\"appspec.yml\")")]
    appspec_filename: String,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "status")]
/// show the current or last deployment of each deployment group, from disk.
struct StatusArgs {
    /// agent configuration file (YAML)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("edgedeploy-agent {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    edgedeploy::logger::init(log::Level::Info);
    let cli = match parse_command_line() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::DeployLocal(args) => deploy_local(args),
        Command::Status(args) => status(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => ExitCode::from(code),
    }
}

fn run(args: RunArgs) -> Result<(), u8> {
    let config = load_config(args.config.as_deref())?;
    edgedeploy::agent::run(&config).map_err(|message| {
        eprintln!("error: {message}");
        EXIT_USAGE
    })
}

fn deploy_local(args: DeployLocalArgs) -> Result<(), u8> {
    let config = load_config(args.agent_configuration_file.as_deref())?;
    let usage = |message: String| {
        eprintln!("error: {message}");
        EXIT_USAGE
    };
    let bundle_type = BundleType::from_name(&args.bundle_type)
        .ok_or_else(|| usage(format!("--type {:?}: expected tar, tgz, zip or directory", args.bundle_type)))?;
    let file_exists_behavior = args
        .file_exists_behavior
        .as_deref()
        .map(|b| {
            local::parse_behavior(b)
                .ok_or_else(|| usage(format!("--file-exists-behavior {b:?}: expected DISALLOW, OVERWRITE or RETAIN")))
        })
        .transpose()?;
    let options = local::Options {
        bundle_location: args.bundle_location.unwrap_or_else(|| PathBuf::from(".")),
        bundle_type,
        file_exists_behavior,
        group_id: args.deployment_group,
        group_name: args.deployment_group_name,
        application_name: args.application_name,
        events: args.events.map(|e| e.split(',').map(str::to_string).collect()),
        appspec_filename: args.appspec_filename,
    };
    match local::deploy(&config, &options, &mut io::stdout()) {
        Ok(_) => Ok(()),
        Err(Failure::Setup(message)) => Err(usage(message)),
        Err(failure @ Failure::Event { .. }) => {
            eprintln!("error: {failure}");
            if let Failure::Event { diagnostic, .. } = &failure
                && !diagnostic.log.is_empty()
            {
                eprintln!("--- last output of the script ---");
                let _ = io::stderr().write_all(diagnostic.log.as_bytes());
                if !diagnostic.log.ends_with('\n') {
                    eprintln!();
                }
            }
            Err(EXIT_FAILED)
        }
    }
}

fn status(args: StatusArgs) -> Result<(), u8> {
    let config = load_config(args.config.as_deref())?;
    let root = Root::new(&config.root_dir);
    let fail = |e: io::Error| {
        eprintln!("error: {e}");
        EXIT_FAILED
    };
    let groups = root.groups().map_err(fail)?;
    if groups.is_empty() {
        println!("no deployments recorded under {}", root.dir().display());
    }
    for group in groups {
        let Some(s) = root.read_status(&group).map_err(fail)? else { continue };
        let last = root.read_pointer(&group, Pointer::LastSuccessful).map_err(fail)?;
        println!("{group}");
        println!("  deployment       {} ({})", s.deployment_id, s.application);
        println!("  status           {:?}{}", s.phase, s.event.map(|e| format!(" at {e}")).unwrap_or_default());
        println!("  started          {}", edgedeploy::clock::format_utc(s.started));
        if let Some(finished) = s.finished {
            println!("  finished         {}", edgedeploy::clock::format_utc(finished));
        }
        if !s.message.is_empty() {
            println!("  message          {}", s.message);
        }
        let last = last.map(|p| p.display().to_string()).unwrap_or_else(|| "none".into());
        println!("  last successful  {last}");
    }
    Ok(())
}

/// Parses the command line; `--help` exits 0, a usage error exits 2 (argh
/// itself would exit 1, which the contract reserves for failed deployments).
fn parse_command_line() -> Result<Cli, ExitCode> {
    let args: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (command, rest) = strs.split_first().map(|(c, r)| (*c, r)).unwrap_or(("edgedeploy-agent", &[]));
    let command = Path::new(command).file_name().and_then(|n| n.to_str()).unwrap_or("edgedeploy-agent");
    Cli::from_args(&[command], rest).map_err(|early| match early.status {
        Ok(()) => {
            println!("{}", early.output);
            ExitCode::SUCCESS
        }
        Err(()) => {
            eprintln!("error: {}", early.output.trim());
            eprintln!("Run {command} --help for more information.");
            ExitCode::from(EXIT_USAGE)
        }
    })
}

/// Loads `explicit`, or the default file when it exists, or the defaults.
fn load_config(explicit: Option<&Path>) -> Result<Config, u8> {
    let path = match explicit {
        Some(path) => path,
        None if Path::new(DEFAULT_CONFIG).exists() => Path::new(DEFAULT_CONFIG),
        None => return Ok(Config::default()),
    };
    match Config::load(path) {
        Ok(Loaded { config, unknown_keys }) => {
            for key in unknown_keys {
                log::warn!("{}: unknown key {key:?} ignored", path.display());
            }
            Ok(config)
        }
        Err(e) => {
            eprintln!("error: configuration {e}");
            Err(EXIT_USAGE)
        }
    }
}
