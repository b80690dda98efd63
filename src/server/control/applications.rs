//! Applications: control API operations.
//!
//! A row of `applications` per application; its `doc` keeps what the
//! columns do not (`{"tags": [...]}`). Renaming an application renames it
//! everywhere it is referenced; deleting it deletes its deployment groups
//! and revisions.

use serde_json::{Value, json};
use sqlx::AnyConnection;

use super::tags::{parse_tags, tags_json};
use super::validate::{APPLICATION_NAME, PAGE_SIZE, is_unique_violation, new_uuid, opt_enum, page, page_start};
use crate::server::State;
use crate::server::api::{ApiError, OpResult};
use crate::server::store::{now_millis, wire_time};

/// The only compute platform this server deploys to.
pub const SERVER_PLATFORM: &str = "Server";
const COMPUTE_PLATFORMS: [&str; 3] = ["Server", "Lambda", "ECS"];

/// An application as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// `applicationId`.
    pub id: String,
    /// `applicationName`.
    pub name: String,
    /// `computePlatform` (always `Server` here).
    pub compute_platform: String,
    /// Creation time, epoch milliseconds.
    pub create_time: i64,
}

impl Application {
    /// The model's `ApplicationInfo`.
    pub fn info(&self) -> Value {
        json!({
            "applicationId": self.id,
            "applicationName": self.name,
            "createTime": wire_time(self.create_time),
            "linkedToGitHub": false,
            "computePlatform": self.compute_platform,
        })
    }
}

type Row = (String, String, String, i64);

fn from_row((id, name, compute_platform, create_time): Row) -> Application {
    Application { id, name, compute_platform, create_time }
}

/// The application `name`, if it exists.
pub async fn find_application(state: &State, name: &str) -> Result<Option<Application>, ApiError> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT application_id, application_name, compute_platform, create_time FROM applications WHERE application_name = $1",
    )
    .bind(name)
    .fetch_optional(&state.store.pool)
    .await?;
    Ok(row.map(from_row))
}

/// The application `name`, or ApplicationDoesNotExistException.
pub async fn require_application(state: &State, name: &str) -> Result<Application, ApiError> {
    find_application(state, name).await?.ok_or_else(|| does_not_exist(name))
}

fn does_not_exist(name: &str) -> ApiError {
    ApiError::client("ApplicationDoesNotExistException", format!("application {name:?} does not exist"))
}

fn already_exists(name: &str) -> ApiError {
    ApiError::client("ApplicationAlreadyExistsException", format!("application {name:?} already exists"))
}

/// `CreateApplication`.
pub async fn create_application(state: &State, input: Value) -> OpResult {
    let name = APPLICATION_NAME.required(&input)?;
    let platform = opt_enum(&input, "computePlatform", &COMPUTE_PLATFORMS, "InvalidComputePlatformException")?
        .unwrap_or(SERVER_PLATFORM);
    if platform != SERVER_PLATFORM {
        return Err(ApiError::client(
            "InvalidComputePlatformException",
            format!(
                "computePlatform {platform:?} is not supported: this server deploys to on-premises instances (Server) only"
            ),
        ));
    }
    let tags = parse_tags(&input, "tags", "InvalidTagsToAddException")?.unwrap_or_default();
    if find_application(state, &name).await?.is_some() {
        return Err(already_exists(&name));
    }
    let id = new_uuid();
    let doc = json!({ "tags": tags_json(&tags) });
    sqlx::query(
        "INSERT INTO applications (application_id, application_name, compute_platform, create_time, doc) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(&name)
    .bind(platform)
    .bind(now_millis())
    .bind(doc.to_string())
    .execute(&state.store.pool)
    .await
    .map_err(|e| if is_unique_violation(&e) { already_exists(&name) } else { e.into() })?;
    Ok(json!({ "applicationId": id }))
}

/// `GetApplication`.
pub async fn get_application(state: &State, input: Value) -> OpResult {
    let name = APPLICATION_NAME.required(&input)?;
    let application = require_application(state, &name).await?;
    Ok(json!({ "application": application.info() }))
}

/// `BatchGetApplications`: every name must exist.
pub async fn batch_get_applications(state: &State, input: Value) -> OpResult {
    let names = APPLICATION_NAME.batch(&input, "applicationNames")?;
    let mut infos = Vec::with_capacity(names.len());
    for name in &names {
        infos.push(require_application(state, name).await?.info());
    }
    Ok(json!({ "applicationsInfo": infos }))
}

/// `ListApplications`: names in byte order, [`PAGE_SIZE`] per page.
pub async fn list_applications(state: &State, input: Value) -> OpResult {
    let after = page_start(&input)?.unwrap_or_default();
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT application_name FROM applications WHERE application_name > $1 ORDER BY application_name LIMIT $2",
    )
    .bind(&after)
    .bind(PAGE_SIZE as i64 + 1)
    .fetch_all(&state.store.pool)
    .await?;
    let (names, next) = page(rows.into_iter().map(|(n,)| n).collect());
    let mut output = json!({ "applications": names });
    if let Some(token) = next {
        output["nextToken"] = json!(token);
    }
    Ok(output)
}

/// `UpdateApplication`: renames the application, its deployment groups,
/// revisions and deployments follow.
pub async fn update_application(state: &State, input: Value) -> OpResult {
    let old = APPLICATION_NAME.required(&input)?;
    let new = APPLICATION_NAME.field("newApplicationName").required(&input)?;
    require_application(state, &old).await?;
    if new == old {
        return Ok(json!({}));
    }
    if find_application(state, &new).await?.is_some() {
        return Err(already_exists(&new));
    }
    let mut tx = state.store.pool.begin().await?;
    rename(&mut tx, &old, &new)
        .await
        .map_err(|e| if is_unique_violation(&e) { already_exists(&new) } else { e.into() })?;
    tx.commit().await?;
    Ok(json!({}))
}

async fn rename(conn: &mut AnyConnection, old: &str, new: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE applications SET application_name = $1 WHERE application_name = $2")
        .bind(new)
        .bind(old)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE revisions SET application_name = $1 WHERE application_name = $2")
        .bind(new)
        .bind(old)
        .execute(&mut *conn)
        .await?;
    for table in ["deployment_groups", "deployments"] {
        rename_in_docs(conn, table, old, new).await?;
    }
    Ok(())
}

/// Renames the application in `table`'s column and in each row's
/// `doc.applicationName`. `table` is one of ours, never input.
async fn rename_in_docs(conn: &mut AnyConnection, table: &str, old: &str, new: &str) -> Result<(), sqlx::Error> {
    let key = if table == "deployments" { "deployment_id" } else { "deployment_group_id" };
    let rows: Vec<(String, String)> =
        sqlx::query_as(&format!("SELECT {key}, doc FROM {table} WHERE application_name = $1"))
            .bind(old)
            .fetch_all(&mut *conn)
            .await?;
    for (id, doc) in rows {
        let doc = match serde_json::from_str::<Value>(&doc) {
            Ok(mut v) if v.is_object() => {
                v["applicationName"] = json!(new);
                v.to_string()
            }
            _ => doc,
        };
        sqlx::query(&format!("UPDATE {table} SET application_name = $1, doc = $2 WHERE {key} = $3"))
            .bind(new)
            .bind(doc)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// `DeleteApplication`: also deletes its deployment groups and revisions.
/// Deleting an application that does not exist succeeds, as on AWS.
pub async fn delete_application(state: &State, input: Value) -> OpResult {
    let name = APPLICATION_NAME.required(&input)?;
    let mut tx = state.store.pool.begin().await?;
    for statement in [
        "DELETE FROM deployment_groups WHERE application_name = $1",
        "DELETE FROM revisions WHERE application_name = $1",
        "DELETE FROM applications WHERE application_name = $1",
    ] {
        sqlx::query(statement).bind(&name).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(json!({}))
}
