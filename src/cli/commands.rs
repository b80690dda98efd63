//! The operator's daily commands, as `edgedeploy` subcommands: `list`,
//! `get`, `watch`, `stop`, `rollback`, `deregister-instance`,
//! `tag-instance`, `untag-instance`. Each parses its arguments here and
//! calls the module that does the work. All reach the server as
//! `connect` describes (`--data-dir`, `--endpoint`, or their variables).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;

use super::connect::Operator;
use super::deploy::{self, View};
use super::list::{self, Filters, Resource};
use super::{get, instances, rollback};

/// How list and get print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

fn parse_output(text: &str) -> Result<Output, String> {
    match text {
        "table" | "text" => Ok(Output::Table),
        "json" => Ok(Output::Json),
        other => Err(format!("--output {other:?}: say table or json")),
    }
}

#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
/// list a resource: applications, deployment-groups, deployment-configs, deployments, instances, revisions, targets.
pub struct ListArgs {
    /// what to list (see above)
    #[argh(positional)]
    resource: String,
    /// application (needed for deployment-groups and revisions; narrows deployments)
    #[argh(option)]
    application: Option<String>,
    /// deployment group (narrows deployments, with --application)
    #[argh(option)]
    deployment_group: Option<String>,
    /// deployment id (needed for targets)
    #[argh(option)]
    deployment: Option<String>,
    /// only this status (repeatable): deployments, targets; Registered or Deregistered for instances
    #[argh(option)]
    status: Vec<String>,
    /// instances with tag KEY=VALUE, or key KEY (repeatable: any of them)
    #[argh(option)]
    tag: Vec<String>,
    /// table (default) or json (the API's documents)
    #[argh(option, default = "String::from(\"table\")")]
    output: String,
    /// the server's data directory (gives endpoint and admin credentials)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// server URL (credentials from AWS_* variables or the AWS credentials file)
    #[argh(option)]
    endpoint: Option<String>,
}

/// `edgedeploy list`.
pub fn list_command(args: ListArgs, out: &mut dyn Write) -> Result<(), String> {
    let resource = Resource::parse(&args.resource)?;
    let output = parse_output(&args.output)?;
    let op = Operator::connect(args.data_dir.as_deref(), args.endpoint.as_deref())?;
    let filters = Filters {
        application: args.application,
        group: args.deployment_group,
        deployment: args.deployment,
        statuses: args.status,
        tags: args.tag,
    };
    let listing = list::list(&op, resource, &filters)?;
    let text = match output {
        Output::Json => pretty(&serde_json::Value::Array(listing.docs)),
        Output::Table if listing.table.is_empty() => format!("no {}\n", args.resource),
        Output::Table => listing.table.render(),
    };
    out.write_all(text.as_bytes()).map_err(|e| format!("writing the output: {e}"))
}

#[derive(FromArgs)]
#[argh(subcommand, name = "get")]
/// show one item: application NAME, deployment-group NAME, deployment-config NAME, deployment ID, instance NAME, revision s3://BUCKET/KEY, target INSTANCE.
pub struct GetArgs {
    /// what to show (see above)
    #[argh(positional)]
    resource: String,
    /// its name or id
    #[argh(positional)]
    name: String,
    /// application (for deployment-group and revision)
    #[argh(option)]
    application: Option<String>,
    /// deployment id (for target)
    #[argh(option)]
    deployment: Option<String>,
    /// table (default) or json (the Get operation's output)
    #[argh(option, default = "String::from(\"table\")")]
    output: String,
    /// the server's data directory (gives endpoint and admin credentials)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// server URL (credentials from AWS_* variables or the AWS credentials file)
    #[argh(option)]
    endpoint: Option<String>,
}

/// `edgedeploy get`.
pub fn get_command(args: GetArgs, out: &mut dyn Write) -> Result<(), String> {
    let resource = Resource::parse(&args.resource)?;
    let output = parse_output(&args.output)?;
    let op = Operator::connect(args.data_dir.as_deref(), args.endpoint.as_deref())?;
    let filters = Filters { application: args.application, deployment: args.deployment, ..Filters::default() };
    let found = get::get(&op, resource, &args.name, &filters)?;
    let text = match output {
        Output::Json => pretty(&found.raw),
        Output::Table => found.text,
    };
    out.write_all(text.as_bytes()).map_err(|e| format!("writing the output: {e}"))
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

#[derive(FromArgs)]
#[argh(subcommand, name = "watch")]
/// follow a deployment to its end; exit status 0 only if it succeeded.
pub struct WatchArgs {
    /// deployment id
    #[argh(positional)]
    deployment: String,
    /// seconds to wait at most (default 3600)
    #[argh(option, default = "3600")]
    timeout: u64,
    /// one line per change even on a terminal
    #[argh(switch)]
    plain: bool,
    /// the server's data directory (gives endpoint and admin credentials)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// server URL (credentials from AWS_* variables or the AWS credentials file)
    #[argh(option)]
    endpoint: Option<String>,
}

/// `edgedeploy watch`.
pub fn watch_command(args: WatchArgs) -> Result<(), String> {
    let op = Operator::connect(args.data_dir.as_deref(), args.endpoint.as_deref())?;
    let view = if args.plain { View::Plain } else { View::for_stdout() };
    finish(&op, &args.deployment, Duration::from_secs(args.timeout), view)
}

/// Follows `id` on stdout; Ok only when it succeeded.
pub fn finish(op: &Operator, id: &str, timeout: Duration, view: View) -> Result<(), String> {
    let outcome = deploy::follow_with(op, id, timeout, &mut std::io::stdout(), view)?;
    if outcome.status == "Succeeded" {
        println!("deployment {id} succeeded");
        Ok(())
    } else {
        Err(format!(
            "deployment {id} ended {}: see `edgedeploy get deployment {id}` and the instances' logs",
            outcome.status
        ))
    }
}

#[derive(FromArgs)]
#[argh(subcommand, name = "stop")]
/// stop a deployment: instances not started are skipped, those in flight fail.
pub struct StopArgs {
    /// deployment id
    #[argh(positional)]
    deployment: String,
    /// ask the server to roll the instances back to the previous revision (autoRollbackEnabled)
    #[argh(switch)]
    rollback: bool,
    /// the server's data directory (gives endpoint and admin credentials)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// server URL (credentials from AWS_* variables or the AWS credentials file)
    #[argh(option)]
    endpoint: Option<String>,
}

/// `edgedeploy stop`.
pub fn stop_command(args: StopArgs) -> Result<(), String> {
    let op = Operator::connect(args.data_dir.as_deref(), args.endpoint.as_deref())?;
    let id = &args.deployment;
    let stopped = rollback::stop(&op, id, args.rollback)?;
    println!("stopped deployment {id}: {}", stopped.message);
    if !args.rollback {
        return Ok(());
    }
    match (stopped.rollback_id, stopped.rollback_message) {
        (Some(rollback_id), _) => {
            println!("rolling back with deployment {rollback_id}; follow it with `edgedeploy watch {rollback_id}`");
        }
        (None, message) => {
            let why = message.map(|m| format!(": {m}")).unwrap_or_default();
            println!(
                "the server started no rollback deployment{why}\nto redeploy the last good revision: \
                 `edgedeploy rollback --application APPLICATION --deployment-group GROUP`"
            );
        }
    }
    Ok(())
}

#[derive(FromArgs)]
#[argh(subcommand, name = "rollback")]
/// roll a deployment group back: stop its deployment in progress, and redeploy the last good revision before it.
pub struct RollbackArgs {
    /// application name
    #[argh(option)]
    application: String,
    /// deployment group name
    #[argh(option)]
    deployment_group: String,
    /// follow the rollback deployment to its end; exit status 0 only if it succeeded
    #[argh(switch)]
    wait: bool,
    /// seconds to wait at most with --wait (default 3600)
    #[argh(option, default = "3600")]
    timeout: u64,
    /// the server's data directory (gives endpoint and admin credentials)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// server URL (credentials from AWS_* variables or the AWS credentials file)
    #[argh(option)]
    endpoint: Option<String>,
}

/// `edgedeploy rollback`.
pub fn rollback_command(args: RollbackArgs) -> Result<(), String> {
    let op = Operator::connect(args.data_dir.as_deref(), args.endpoint.as_deref())?;
    let done = rollback::rollback(&op, &args.application, &args.deployment_group)?;
    for line in &done.report {
        println!("{line}");
    }
    println!("created deployment {}", done.deployment_id);
    if !args.wait {
        return Ok(());
    }
    finish(&op, &done.deployment_id, Duration::from_secs(args.timeout), View::for_stdout())
}

#[derive(FromArgs)]
#[argh(subcommand, name = "deregister-instance")]
/// remove a device: deregister the instance and delete its access key.
pub struct DeregisterArgs {
    /// instance name
    #[argh(positional)]
    name: String,
    /// the server's data directory (gives endpoint and admin credentials)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// server URL (credentials from AWS_* variables or the AWS credentials file)
    #[argh(option)]
    endpoint: Option<String>,
}

/// `edgedeploy deregister-instance`.
pub fn deregister_command(args: DeregisterArgs) -> Result<(), String> {
    let op = Operator::connect(args.data_dir.as_deref(), args.endpoint.as_deref())?;
    println!("{}", instances::deregister(&op, &args.name)?);
    Ok(())
}

#[derive(FromArgs)]
#[argh(subcommand, name = "tag-instance")]
/// add tags to instances (deployment groups select instances by tag).
pub struct TagArgs {
    /// instance names
    #[argh(positional)]
    names: Vec<String>,
    /// tag KEY=VALUE (repeatable)
    #[argh(option)]
    tag: Vec<String>,
    /// the server's data directory (gives endpoint and admin credentials)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// server URL (credentials from AWS_* variables or the AWS credentials file)
    #[argh(option)]
    endpoint: Option<String>,
}

/// `edgedeploy tag-instance`.
pub fn tag_command(args: TagArgs) -> Result<(), String> {
    if args.names.is_empty() {
        return Err("name the instances: edgedeploy tag-instance NAME... --tag KEY=VALUE".into());
    }
    let op = Operator::connect(args.data_dir.as_deref(), args.endpoint.as_deref())?;
    println!("{}", instances::add_tags(&op, &args.names, &args.tag)?);
    Ok(())
}

#[derive(FromArgs)]
#[argh(subcommand, name = "untag-instance")]
/// remove tags from instances: --tag KEY=VALUE, or --tag KEY for any value.
pub struct UntagArgs {
    /// instance names
    #[argh(positional)]
    names: Vec<String>,
    /// tag KEY=VALUE or KEY (repeatable)
    #[argh(option)]
    tag: Vec<String>,
    /// the server's data directory (gives endpoint and admin credentials)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// server URL (credentials from AWS_* variables or the AWS credentials file)
    #[argh(option)]
    endpoint: Option<String>,
}

/// `edgedeploy untag-instance`.
pub fn untag_command(args: UntagArgs) -> Result<(), String> {
    if args.names.is_empty() {
        return Err("name the instances: edgedeploy untag-instance NAME... --tag KEY[=VALUE]".into());
    }
    let op = Operator::connect(args.data_dir.as_deref(), args.endpoint.as_deref())?;
    println!("{}", instances::remove_tags(&op, &args.names, &args.tag)?);
    Ok(())
}
