//! On-premises instances and their tags: control API operations.
//!
//! A row of `instances` per instance ever registered (a deregistered one
//! keeps its row, with `deregister_time`, until its name is registered
//! again); tags in `instance_tags`. Deregistering also deletes the
//! instance's access keys (`credentials` rows with its `instance_name`), so
//! its agent is refused from then on.

use serde_json::{Value, json};

use super::tags::{Tag, any_filter_matches, parse_tag_filters, parse_tags, tags_json};
use super::validate::{
    BATCH_LIMIT, INSTANCE_NAME, is_unique_violation, opt_array, opt_enum, opt_str, page_in_memory, page_start,
};
use crate::server::State;
use crate::server::api::{ApiError, OpResult};
use crate::server::store::{now_millis, wire_time};

/// Region in the ARNs of instances registered through the control API.
pub const DEFAULT_REGION: &str = "us-east-1";
/// Account id in the ARNs this server makes.
pub const ACCOUNT_ID: &str = "000000000000";
/// Most tags one instance may carry.
pub const MAX_TAGS_PER_INSTANCE: usize = 50;

/// The ARN of instance `name`: `arn:aws:codedeploy:REGION:000000000000:instance/NAME`.
/// Agents use it as their HostIdentifier.
pub fn instance_arn(region: &str, name: &str) -> String {
    format!("arn:aws:codedeploy:{region}:{ACCOUNT_ID}:instance/{name}")
}

/// The IAM session ARN `edgedeploy register-instance` records for `name`.
pub fn session_arn_for(name: &str) -> String {
    format!("arn:aws:sts::{ACCOUNT_ID}:assumed-role/edgedeploy/{name}")
}

/// An instance as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Instance {
    name: String,
    arn: String,
    iam_user_arn: Option<String>,
    iam_session_arn: Option<String>,
    register_time: i64,
    deregister_time: Option<i64>,
}

type Row = (String, String, Option<String>, Option<String>, i64, Option<i64>);

impl Instance {
    fn from_row((name, arn, iam_user_arn, iam_session_arn, register_time, deregister_time): Row) -> Instance {
        Instance { name, arn, iam_user_arn, iam_session_arn, register_time, deregister_time }
    }

    fn info(&self, tags: &[Tag]) -> Value {
        let mut info = json!({
            "instanceName": self.name,
            "instanceArn": self.arn,
            "registerTime": wire_time(self.register_time),
            "tags": tags_json(tags),
        });
        if let Some(arn) = &self.iam_user_arn {
            info["iamUserArn"] = json!(arn);
        }
        if let Some(arn) = &self.iam_session_arn {
            info["iamSessionArn"] = json!(arn);
        }
        if let Some(time) = self.deregister_time {
            info["deregisterTime"] = wire_time(time);
        }
        info
    }
}

const SELECT_INSTANCE: &str =
    "SELECT instance_name, instance_arn, iam_user_arn, iam_session_arn, register_time, deregister_time FROM instances";

async fn find_instance(state: &State, name: &str) -> Result<Option<Instance>, ApiError> {
    let row: Option<Row> = sqlx::query_as(&format!("{SELECT_INSTANCE} WHERE instance_name = $1"))
        .bind(name)
        .fetch_optional(&state.store.pool)
        .await?;
    Ok(row.map(Instance::from_row))
}

async fn instance_tags(state: &State, name: &str) -> Result<Vec<Tag>, ApiError> {
    Ok(sqlx::query_as("SELECT tag_key, tag_value FROM instance_tags WHERE instance_name = $1 ORDER BY tag_key")
        .bind(name)
        .fetch_all(&state.store.pool)
        .await?)
}

/// Every instance (registered when `registered`, else deregistered, else
/// all) with its tags, sorted by name.
async fn instances_with_tags(state: &State, registered: Option<bool>) -> Result<Vec<(String, Vec<Tag>)>, ApiError> {
    let condition = match registered {
        Some(true) => " WHERE deregister_time IS NULL",
        Some(false) => " WHERE deregister_time IS NOT NULL",
        None => "",
    };
    let names: Vec<(String,)> =
        sqlx::query_as(&format!("SELECT instance_name FROM instances{condition} ORDER BY instance_name"))
            .fetch_all(&state.store.pool)
            .await?;
    let tags: Vec<(String, String, String)> =
        sqlx::query_as("SELECT instance_name, tag_key, tag_value FROM instance_tags ORDER BY instance_name, tag_key")
            .fetch_all(&state.store.pool)
            .await?;
    Ok(names
        .into_iter()
        .map(|(name,)| {
            let own = tags.iter().filter(|(n, _, _)| *n == name).map(|(_, k, v)| (k.clone(), v.clone())).collect();
            (name, own)
        })
        .collect())
}

/// The registered (not deregistered) instances with their tags, sorted by name.
pub async fn registered_with_tags(state: &State) -> Result<Vec<(String, Vec<Tag>)>, ApiError> {
    instances_with_tags(state, Some(true)).await
}

/// The ARN of registered instance `name`, if it is registered.
pub async fn registered_instance_arn(state: &State, name: &str) -> Result<Option<String>, ApiError> {
    Ok(find_instance(state, name).await?.filter(|i| i.deregister_time.is_none()).map(|i| i.arn))
}

fn not_registered(name: &str) -> ApiError {
    ApiError::client("InstanceNotRegisteredException", format!("instance {name:?} is not registered"))
}

fn check_iam_arn(arn: &str, field: &str, service: &str, kind: &str, exception: &str) -> Result<(), ApiError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = parts.len() == 6 && parts[0] == "arn" && parts[2] == service && parts[5].starts_with(kind);
    if ok && arn.len() <= 2048 {
        return Ok(());
    }
    Err(ApiError::client(
        exception,
        format!("{field} {arn:?} is not an ARN of the form arn:aws:{service}::ACCOUNT:{kind}..."),
    ))
}

/// Registers instance `name` with exactly one IAM ARN; its ARN uses
/// `region`. A deregistered instance of that name is replaced (tags and
/// all). Returns the instance ARN.
pub async fn register(
    state: &State,
    name: &str,
    iam_session_arn: Option<&str>,
    iam_user_arn: Option<&str>,
    region: &str,
) -> Result<String, ApiError> {
    INSTANCE_NAME.check(name)?;
    let (column, arn) = match (iam_session_arn, iam_user_arn) {
        (Some(_), Some(_)) => {
            return Err(ApiError::client(
                "MultipleIamArnsProvidedException",
                "give iamSessionArn or iamUserArn, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::client("IamArnRequiredException", "iamSessionArn or iamUserArn is required"));
        }
        (Some(arn), None) => {
            check_iam_arn(arn, "iamSessionArn", "sts", "assumed-role/", "InvalidIamSessionArnException")?;
            ("iam_session_arn", arn)
        }
        (None, Some(arn)) => {
            check_iam_arn(arn, "iamUserArn", "iam", "user/", "InvalidIamUserArnException")?;
            ("iam_user_arn", arn)
        }
    };
    refuse_registered(state, name, column, arn).await?;
    let instance_arn = instance_arn(region, name);
    let mut tx = state.store.pool.begin().await?;
    for statement in
        ["DELETE FROM instance_tags WHERE instance_name = $1", "DELETE FROM instances WHERE instance_name = $1"]
    {
        sqlx::query(statement).bind(name).execute(&mut *tx).await?;
    }
    sqlx::query(&format!(
        "INSERT INTO instances (instance_name, instance_arn, {column}, register_time, deregister_time) VALUES ($1, $2, $3, $4, NULL)"
    ))
    .bind(name)
    .bind(&instance_arn)
    .bind(arn)
    .bind(now_millis())
    .execute(&mut *tx)
    .await
    .map_err(|e| if is_unique_violation(&e) { name_taken(name) } else { e.into() })?;
    tx.commit().await?;
    Ok(instance_arn)
}

fn name_taken(name: &str) -> ApiError {
    ApiError::client("InstanceNameAlreadyRegisteredException", format!("instance {name:?} is already registered"))
}

/// Refuses a name or IAM ARN a registered instance already has.
async fn refuse_registered(state: &State, name: &str, column: &str, arn: &str) -> Result<(), ApiError> {
    if registered_instance_arn(state, name).await?.is_some() {
        return Err(name_taken(name));
    }
    let holder: Option<(String,)> =
        sqlx::query_as(&format!("SELECT instance_name FROM instances WHERE {column} = $1 AND deregister_time IS NULL"))
            .bind(arn)
            .fetch_optional(&state.store.pool)
            .await?;
    match holder {
        Some((holder,)) => {
            let (field, exception) = if column == "iam_user_arn" {
                ("iamUserArn", "IamUserArnAlreadyRegisteredException")
            } else {
                ("iamSessionArn", "IamSessionArnAlreadyRegisteredException")
            };
            Err(ApiError::client(exception, format!("{field} {arn:?} is already registered for instance {holder:?}")))
        }
        None => Ok(()),
    }
}

/// `RegisterOnPremisesInstance`.
pub async fn register_on_premises_instance(state: &State, input: Value) -> OpResult {
    let name = INSTANCE_NAME.required(&input)?;
    let session = opt_str(&input, "iamSessionArn")?.filter(|a| !a.is_empty());
    let user = opt_str(&input, "iamUserArn")?.filter(|a| !a.is_empty());
    register(state, &name, session, user, DEFAULT_REGION).await?;
    Ok(json!({}))
}

/// `DeregisterOnPremisesInstance`: keeps the instance (listed as
/// Deregistered, with its tags) and deletes its access keys. Deregistering
/// an instance that is not registered succeeds.
pub async fn deregister_on_premises_instance(state: &State, input: Value) -> OpResult {
    let name = INSTANCE_NAME.required(&input)?;
    let mut tx = state.store.pool.begin().await?;
    sqlx::query("UPDATE instances SET deregister_time = $1 WHERE instance_name = $2 AND deregister_time IS NULL")
        .bind(now_millis())
        .bind(&name)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM credentials WHERE kind = 'instance' AND instance_name = $1")
        .bind(&name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(json!({}))
}

/// `GetOnPremisesInstance`.
pub async fn get_on_premises_instance(state: &State, input: Value) -> OpResult {
    let name = INSTANCE_NAME.required(&input)?;
    let instance = find_instance(state, &name).await?.ok_or_else(|| not_registered(&name))?;
    let tags = instance_tags(state, &name).await?;
    Ok(json!({ "instanceInfo": instance.info(&tags) }))
}

/// `BatchGetOnPremisesInstances`: the instances that exist.
pub async fn batch_get_on_premises_instances(state: &State, input: Value) -> OpResult {
    let names = INSTANCE_NAME.batch(&input, "instanceNames")?;
    let mut infos = Vec::with_capacity(names.len());
    for name in &names {
        if let Some(instance) = find_instance(state, name).await? {
            infos.push(instance.info(&instance_tags(state, name).await?));
        }
    }
    Ok(json!({ "instanceInfos": infos }))
}

/// `ListOnPremisesInstances`: by registration status and tag filters (an
/// instance matching any filter is listed), names in byte order.
pub async fn list_on_premises_instances(state: &State, input: Value) -> OpResult {
    let statuses = ["Registered", "Deregistered"];
    let status = opt_enum(&input, "registrationStatus", &statuses, "InvalidRegistrationStatusException")?;
    let filters = match opt_array(&input, "tagFilters")? {
        Some(items) => parse_tag_filters(items, "tagFilters", "InvalidTagFilterException")?,
        None => Vec::new(),
    };
    let start = page_start(&input)?;
    let instances = instances_with_tags(state, status.map(|s| s == "Registered")).await?;
    let names: Vec<String> = instances
        .into_iter()
        .filter(|(_, tags)| filters.is_empty() || any_filter_matches(&filters, tags))
        .map(|(name, _)| name)
        .collect();
    let (names, next) = page_in_memory(names, start.as_deref());
    let mut output = json!({ "instanceNames": names });
    if let Some(token) = next {
        output["nextToken"] = json!(token);
    }
    Ok(output)
}

/// `instanceNames` and `tags` of the tag operations, checked: 1 to
/// [`BATCH_LIMIT`] registered instances and at least one tag.
async fn tag_request(state: &State, input: &Value) -> Result<(Vec<String>, Vec<Tag>), ApiError> {
    let count = opt_array(input, "instanceNames")?.map_or(0, Vec::len);
    if count > BATCH_LIMIT {
        return Err(ApiError::client(
            "InstanceLimitExceededException",
            format!("instanceNames has {count} instances; at most {BATCH_LIMIT} are allowed"),
        ));
    }
    let names = INSTANCE_NAME.batch(input, "instanceNames")?;
    if names.is_empty() {
        return Err(ApiError::client("InstanceNameRequiredException", "instanceNames is required"));
    }
    let tags = parse_tags(input, "tags", "InvalidTagException")?.unwrap_or_default();
    if tags.is_empty() {
        return Err(ApiError::client("TagRequiredException", "tags is required"));
    }
    for name in &names {
        registered_instance_arn(state, name).await?.ok_or_else(|| not_registered(name))?;
    }
    Ok((names, tags))
}

/// Adds (or replaces the values of) `tags` on the registered instances `names`.
pub async fn add_tags(state: &State, names: &[String], tags: &[Tag]) -> Result<(), ApiError> {
    for name in names {
        let mut keys: Vec<String> = instance_tags(state, name).await?.into_iter().map(|(k, _)| k).collect();
        keys.extend(tags.iter().map(|(k, _)| k.clone()));
        keys.sort();
        keys.dedup();
        if keys.len() > MAX_TAGS_PER_INSTANCE {
            return Err(ApiError::client(
                "TagLimitExceededException",
                format!(
                    "instance {name:?} would have {} tags; at most {MAX_TAGS_PER_INSTANCE} are allowed",
                    keys.len()
                ),
            ));
        }
    }
    let mut tx = state.store.pool.begin().await?;
    for name in names {
        for (key, value) in tags {
            sqlx::query(
                "INSERT INTO instance_tags (instance_name, tag_key, tag_value) VALUES ($1, $2, $3) ON CONFLICT (instance_name, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
            )
            .bind(name)
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// `AddTagsToOnPremisesInstances`.
pub async fn add_tags_to_on_premises_instances(state: &State, input: Value) -> OpResult {
    let (names, tags) = tag_request(state, &input).await?;
    add_tags(state, &names, &tags).await?;
    Ok(json!({}))
}

/// `RemoveTagsFromOnPremisesInstances`: removes each tag whose key and value match.
pub async fn remove_tags_from_on_premises_instances(state: &State, input: Value) -> OpResult {
    let (names, tags) = tag_request(state, &input).await?;
    let mut tx = state.store.pool.begin().await?;
    for name in &names {
        for (key, value) in &tags {
            sqlx::query("DELETE FROM instance_tags WHERE instance_name = $1 AND tag_key = $2 AND tag_value = $3")
                .bind(name)
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_have_the_aws_shapes() {
        assert_eq!(instance_arn("eu-west-1", "pi-7"), "arn:aws:codedeploy:eu-west-1:000000000000:instance/pi-7");
        let session = session_arn_for("pi-7");
        assert!(check_iam_arn(&session, "iamSessionArn", "sts", "assumed-role/", "X").is_ok());
        assert!(check_iam_arn("arn:aws:iam::1:user/bob", "iamUserArn", "iam", "user/", "X").is_ok());
        assert_eq!(check_iam_arn("bob", "iamUserArn", "iam", "user/", "X").unwrap_err().type_, "X");
        assert!(check_iam_arn("arn:aws:iam::1:user/bob", "iamSessionArn", "sts", "assumed-role/", "X").is_err());
    }
}
