//! Application revisions: control API operations.
//!
//! A row of `revisions` per (application, revision location). The key is
//! the location's identifying fields in a fixed order ([`revision_key`]),
//! `revision` the normalized `RevisionLocation` and `doc` the
//! `GenericRevisionInfo` (times as on the wire). For the Server compute
//! platform: S3 and GitHub locations, and (ours) `URL` locations
//! (`urlLocation {url, sha256, bundleType}`, `docs/revisions.md`).

use serde_json::{Value, json};

use super::applications::require_application;
use super::validate::{
    APPLICATION_NAME, BATCH_LIMIT, PAGE_SIZE, encode_token, opt_array, opt_enum, opt_object, opt_str, opt_text,
    page_start,
};
use crate::server::State;
use crate::server::api::{ApiError, OpResult};
use crate::server::store::{now_millis, wire_time};

/// Longest revision description.
pub const MAX_DESCRIPTION: usize = 100;
const BUNDLE_TYPES: [&str; 5] = ["tar", "tgz", "zip", "YAML", "JSON"];
const CAS_ATTEMPTS: usize = 20;

fn invalid(message: String) -> ApiError {
    ApiError::client("InvalidRevisionException", message)
}

fn required_part(location: &Value, field: &str, parent: &str) -> Result<String, ApiError> {
    match opt_str(location, field)? {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(invalid(format!("revision.{parent}.{field} is required"))),
    }
}

/// A `RevisionLocation`, checked and reduced to the fields that identify
/// it. S3 needs bucket and key (bundleType, version and eTag optional);
/// GitHub needs repository and commitId; URL (ours) needs url, sha256 and
/// bundleType.
pub fn normalize_revision(revision: &Value) -> Result<Value, ApiError> {
    if !revision.is_object() {
        return Err(invalid(format!("revision {revision} is not a RevisionLocation structure")));
    }
    let types = ["S3", "GitHub", "URL", "String", "AppSpecContent"];
    let kind = opt_enum(revision, "revisionType", &types, "InvalidRevisionException")?
        .ok_or_else(|| invalid("revision.revisionType is required: S3, GitHub or URL".into()))?;
    match kind {
        "S3" => {
            let s3 = opt_object(revision, "s3Location")?
                .ok_or_else(|| invalid("revision.s3Location is required for revisionType S3".into()))?;
            let mut location = json!({ "bucket": required_part(s3, "bucket", "s3Location")?, "key": required_part(s3, "key", "s3Location")? });
            if let Some(bundle) = opt_enum(s3, "bundleType", &BUNDLE_TYPES, "InvalidRevisionException")? {
                location["bundleType"] = json!(bundle);
            }
            for field in ["version", "eTag"] {
                if let Some(value) = opt_str(s3, field)?.filter(|v| !v.is_empty()) {
                    location[field] = json!(value);
                }
            }
            Ok(json!({ "revisionType": "S3", "s3Location": location }))
        }
        "GitHub" => {
            let github = opt_object(revision, "gitHubLocation")?
                .ok_or_else(|| invalid("revision.gitHubLocation is required for revisionType GitHub".into()))?;
            let location = json!({
                "repository": required_part(github, "repository", "gitHubLocation")?,
                "commitId": required_part(github, "commitId", "gitHubLocation")?,
            });
            Ok(json!({ "revisionType": "GitHub", "gitHubLocation": location }))
        }
        "URL" => normalize_url_location(revision),
        other => {
            Err(invalid(format!("revisionType {other} is for Lambda and ECS; Server revisions are S3, GitHub or URL")))
        }
    }
}

/// Longest URL of a URL revision.
pub const MAX_URL: usize = 2048;

/// `urlLocation {url, sha256, bundleType}` (ours): an http(s) URL with a
/// host, the bundle's SHA-256 (64 hex digits, kept lowercase), tar|tgz|zip.
fn normalize_url_location(revision: &Value) -> Result<Value, ApiError> {
    let location = opt_object(revision, "urlLocation")?
        .ok_or_else(|| invalid("revision.urlLocation is required for revisionType URL".into()))?;
    let url = required_part(location, "url", "urlLocation")?;
    check_url(&url)?;
    let sha256 = required_part(location, "sha256", "urlLocation")?;
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(format!(
            "revision.urlLocation.sha256 {sha256:?} is not a SHA-256 (64 hexadecimal digits)"
        )));
    }
    let bundle = opt_enum(location, "bundleType", &["tar", "tgz", "zip"], "InvalidRevisionException")?
        .ok_or_else(|| invalid("revision.urlLocation.bundleType is required: tar, tgz or zip".into()))?;
    let location = json!({ "url": url, "sha256": sha256.to_ascii_lowercase(), "bundleType": bundle });
    Ok(json!({ "revisionType": "URL", "urlLocation": location }))
}

fn check_url(url: &str) -> Result<(), ApiError> {
    let bad = |why: &str| invalid(format!("revision.urlLocation.url {url:?}: {why}"));
    if url.len() > MAX_URL {
        return Err(bad(&format!("longer than {MAX_URL} characters")));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains spaces or control characters"));
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| bad("must start with http:// or https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(bad("has no host"));
    }
    Ok(())
}

/// The identity of a normalized location: its fields in a fixed order.
pub fn revision_key(location: &Value) -> String {
    let field = |path: &str| location.pointer(path).and_then(Value::as_str).unwrap_or_default().to_string();
    let parts = match location.get("revisionType").and_then(Value::as_str) {
        Some("GitHub") => {
            vec!["GitHub".to_string(), field("/gitHubLocation/repository"), field("/gitHubLocation/commitId")]
        }
        Some("URL") => vec![
            "URL".to_string(),
            field("/urlLocation/url"),
            field("/urlLocation/sha256"),
            field("/urlLocation/bundleType"),
        ],
        _ => vec![
            "S3".to_string(),
            field("/s3Location/bucket"),
            field("/s3Location/key"),
            field("/s3Location/bundleType"),
            field("/s3Location/version"),
            field("/s3Location/eTag"),
        ],
    };
    json!(parts).to_string()
}

/// The required `revision` of `input`, normalized.
fn input_revision(input: &Value) -> Result<Value, ApiError> {
    let revision = opt_object(input, "revision")?
        .ok_or_else(|| ApiError::client("RevisionRequiredException", "revision is required"))?;
    normalize_revision(revision)
}

async fn find_revision(state: &State, app: &str, key: &str) -> Result<Option<(Value, Value)>, ApiError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT revision, doc FROM revisions WHERE application_name = $1 AND revision_key = $2")
            .bind(app)
            .bind(key)
            .fetch_optional(&state.store.pool)
            .await?;
    row.map(|(revision, doc)| Ok((parse(&revision)?, parse(&doc)?))).transpose()
}

fn parse(text: &str) -> Result<Value, ApiError> {
    serde_json::from_str(text).map_err(|e| ApiError::internal(format!("revisions: bad JSON in the store: {e}")))
}

/// Inserts the revision if it is new (with `doc`); never replaces.
async fn insert_if_new(state: &State, app: &str, location: &Value, doc: &Value) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO revisions (application_name, revision_key, revision, register_time, doc) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (application_name, revision_key) DO NOTHING",
    )
    .bind(app)
    .bind(revision_key(location))
    .bind(location.to_string())
    .bind(now_millis())
    .bind(doc.to_string())
    .execute(&state.store.pool)
    .await?;
    Ok(())
}

/// Changes the document of one revision with `change` (compare-and-swap, retried).
async fn update_revision_doc<F>(state: &State, app: &str, key: &str, mut change: F) -> Result<(), ApiError>
where
    F: FnMut(&mut Value),
{
    for _ in 0..CAS_ATTEMPTS {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT doc FROM revisions WHERE application_name = $1 AND revision_key = $2")
                .bind(app)
                .bind(key)
                .fetch_optional(&state.store.pool)
                .await?;
        let Some((old,)) = row else { return Ok(()) };
        let mut doc = parse(&old)?;
        change(&mut doc);
        let updated =
            sqlx::query("UPDATE revisions SET doc = $1 WHERE application_name = $2 AND revision_key = $3 AND doc = $4")
                .bind(doc.to_string())
                .bind(app)
                .bind(key)
                .bind(&old)
                .execute(&state.store.pool)
                .await?;
        if updated.rows_affected() == 1 {
            return Ok(());
        }
    }
    Err(ApiError::internal(format!("revision {key} of {app}: document kept changing")))
}

fn new_doc(description: Option<&str>, now: i64) -> Value {
    let mut doc = json!({ "deploymentGroups": [], "registerTime": wire_time(now) });
    if let Some(description) = description {
        doc["description"] = json!(description);
    }
    doc
}

/// Registers `revision` of `app` if needed and records that a deployment to
/// group `group_name` uses it now: sets firstUsedTime (once) and
/// lastUsedTime, and makes it the revision listed for that group
/// (`deploymentGroups`), removing the group from the app's other revisions.
/// InvalidRevisionException for a bad location, ApplicationDoesNotExistException.
pub async fn record_revision_use(state: &State, app: &str, revision: &Value, group_name: &str) -> Result<(), ApiError> {
    let location = normalize_revision(revision)?;
    require_application(state, app).await?;
    let key = revision_key(&location);
    let now = now_millis();
    insert_if_new(state, app, &location, &new_doc(None, now)).await?;
    update_revision_doc(state, app, &key, |doc| {
        if doc.get("firstUsedTime").is_none_or(Value::is_null) {
            doc["firstUsedTime"] = wire_time(now);
        }
        doc["lastUsedTime"] = wire_time(now);
        set_group(doc, group_name, true);
    })
    .await?;
    retarget_group(state, app, group_name, None, Some(&key)).await
}

/// Adds or removes `group` in a document's `deploymentGroups`.
fn set_group(doc: &mut Value, group: &str, present: bool) {
    let mut groups: Vec<String> = doc
        .get("deploymentGroups")
        .and_then(Value::as_array)
        .map(|g| g.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    groups.retain(|g| g != group);
    if present {
        groups.push(group.to_string());
        groups.sort();
    }
    doc["deploymentGroups"] = json!(groups);
}

/// In the revisions of `app` (except `keep`) listing group `old`: renames
/// it to `new`, or removes it when `new` is `None`.
pub async fn retarget_group(
    state: &State,
    app: &str,
    old: &str,
    new: Option<&str>,
    keep: Option<&str>,
) -> Result<(), ApiError> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT revision_key, doc FROM revisions WHERE application_name = $1")
            .bind(app)
            .fetch_all(&state.store.pool)
            .await?;
    for (key, doc) in rows {
        let listed = parse(&doc)?
            .get("deploymentGroups")
            .and_then(Value::as_array)
            .is_some_and(|groups| groups.iter().any(|g| g == old));
        if listed && Some(key.as_str()) != keep {
            update_revision_doc(state, app, &key, |doc| {
                set_group(doc, old, false);
                if let Some(new) = new {
                    set_group(doc, new, true);
                }
            })
            .await?;
        }
    }
    Ok(())
}

/// `RegisterApplicationRevision`: registering a known revision again
/// updates its description.
pub async fn register_application_revision(state: &State, input: Value) -> OpResult {
    let app = APPLICATION_NAME.required(&input)?;
    let description = opt_text(&input, "description", MAX_DESCRIPTION, "DescriptionTooLongException")?;
    let location = input_revision(&input)?;
    require_application(state, &app).await?;
    insert_if_new(state, &app, &location, &new_doc(description, now_millis())).await?;
    if let Some(description) = description {
        update_revision_doc(state, &app, &revision_key(&location), |doc| doc["description"] = json!(description))
            .await?;
    }
    Ok(json!({}))
}

fn revision_does_not_exist(app: &str, location: &Value) -> ApiError {
    ApiError::client("RevisionDoesNotExistException", format!("application {app:?} has no revision {location}"))
}

/// `GetApplicationRevision`.
pub async fn get_application_revision(state: &State, input: Value) -> OpResult {
    let app = APPLICATION_NAME.required(&input)?;
    let location = input_revision(&input)?;
    require_application(state, &app).await?;
    let (revision, doc) = find_revision(state, &app, &revision_key(&location))
        .await?
        .ok_or_else(|| revision_does_not_exist(&app, &location))?;
    Ok(json!({ "applicationName": app, "revision": revision, "revisionInfo": doc }))
}

/// `BatchGetApplicationRevisions`: the revisions that exist, and an
/// `errorMessage` naming those that do not.
pub async fn batch_get_application_revisions(state: &State, input: Value) -> OpResult {
    let app = APPLICATION_NAME.required(&input)?;
    let items = opt_array(&input, "revisions")?
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::client("RevisionRequiredException", "revisions is required"))?;
    if items.len() > BATCH_LIMIT {
        return Err(ApiError::client(
            "BatchLimitExceededException",
            format!("revisions has {} revisions; at most {BATCH_LIMIT} are allowed", items.len()),
        ));
    }
    let locations = items.iter().map(normalize_revision).collect::<Result<Vec<_>, _>>()?;
    require_application(state, &app).await?;
    let mut found = Vec::with_capacity(locations.len());
    let mut missing = Vec::new();
    for location in &locations {
        match find_revision(state, &app, &revision_key(location)).await? {
            Some((revision, doc)) => found.push(json!({ "revisionLocation": revision, "genericRevisionInfo": doc })),
            None => missing.push(location.to_string()),
        }
    }
    let mut output = json!({ "applicationName": app, "revisions": found });
    if !missing.is_empty() {
        output["errorMessage"] = json!(format!("revisions that do not exist: {}", missing.join(", ")));
    }
    Ok(output)
}

/// How ListApplicationRevisions selects and orders.
struct ListQuery<'a> {
    sort_by: &'a str,
    descending: bool,
    bucket: Option<&'a str>,
    key_prefix: Option<&'a str>,
    deployed: &'a str,
}

impl ListQuery<'_> {
    fn parse(input: &Value) -> Result<ListQuery<'_>, ApiError> {
        let sorts = ["registerTime", "firstUsedTime", "lastUsedTime"];
        let sort_by = opt_enum(input, "sortBy", &sorts, "InvalidSortByException")?.unwrap_or("registerTime");
        let order = opt_enum(input, "sortOrder", &["ascending", "descending"], "InvalidSortOrderException")?;
        let deployed = ["include", "exclude", "ignore"];
        let deployed =
            opt_enum(input, "deployed", &deployed, "InvalidDeployedStateFilterException")?.unwrap_or("ignore");
        let bucket = opt_str(input, "s3Bucket")?.filter(|b| !b.is_empty());
        let key_prefix = opt_str(input, "s3KeyPrefix")?.filter(|p| !p.is_empty());
        if key_prefix.is_some() && bucket.is_none() {
            return Err(ApiError::client("BucketNameFilterRequiredException", "s3KeyPrefix needs s3Bucket"));
        }
        Ok(ListQuery { sort_by, descending: order == Some("descending"), bucket, key_prefix, deployed })
    }

    fn selects(&self, revision: &Value, doc: &Value) -> bool {
        let s3 = |field: &str| revision.pointer(&format!("/s3Location/{field}")).and_then(Value::as_str);
        let used = doc.get("firstUsedTime").is_some_and(|t| !t.is_null());
        self.bucket.is_none_or(|b| s3("bucket") == Some(b))
            && self.key_prefix.is_none_or(|p| s3("key").is_some_and(|k| k.starts_with(p)))
            && match self.deployed {
                "include" => used,
                "exclude" => !used,
                _ => true,
            }
    }
}

/// `ListApplicationRevisions`: filtered by S3 bucket and key prefix and by
/// use, sorted by a time (never-used revisions last), [`PAGE_SIZE`] per page.
pub async fn list_application_revisions(state: &State, input: Value) -> OpResult {
    let app = APPLICATION_NAME.required(&input)?;
    let query = ListQuery::parse(&input)?;
    let offset = match page_start(&input)? {
        Some(start) => start.parse::<usize>().map_err(|_| {
            ApiError::client("InvalidNextTokenException", "nextToken was not returned by ListApplicationRevisions")
        })?,
        None => 0,
    };
    require_application(state, &app).await?;
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT revision_key, revision, doc FROM revisions WHERE application_name = $1")
            .bind(&app)
            .fetch_all(&state.store.pool)
            .await?;
    let mut selected = Vec::with_capacity(rows.len());
    for (key, revision, doc) in rows {
        let (revision, doc) = (parse(&revision)?, parse(&doc)?);
        if query.selects(&revision, &doc) {
            let time = doc.get(query.sort_by).and_then(Value::as_f64);
            selected.push((time, key, revision));
        }
    }
    selected.sort_by(|a, b| {
        let by_time = match (a.0, b.0) {
            (Some(x), Some(y)) if query.descending => y.total_cmp(&x),
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        by_time.then_with(|| a.1.cmp(&b.1))
    });
    let total = selected.len();
    let page: Vec<Value> = selected.into_iter().skip(offset).take(PAGE_SIZE).map(|(_, _, r)| r).collect();
    let mut output = json!({ "revisions": page });
    if offset + PAGE_SIZE < total {
        output["nextToken"] = json!(encode_token(&(offset + PAGE_SIZE).to_string()));
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_locations_are_reduced_to_their_identity() {
        let location = normalize_revision(&json!({
            "revisionType": "S3",
            "s3Location": {"bucket": "b", "key": "app.tgz", "bundleType": "tgz", "eTag": "", "extra": 1},
        }))
        .unwrap();
        assert_eq!(
            location,
            json!({"revisionType": "S3", "s3Location": {"bucket": "b", "key": "app.tgz", "bundleType": "tgz"}})
        );
        assert_eq!(revision_key(&location), r#"["S3","b","app.tgz","tgz","",""]"#);
    }

    #[test]
    fn bad_locations_are_invalid_revisions() {
        for bad in [
            json!({"revisionType": "S3"}),
            json!({"revisionType": "S3", "s3Location": {"bucket": "b"}}),
            json!({"revisionType": "S3", "s3Location": {"bucket": "b", "key": "k", "bundleType": "rar"}}),
            json!({"revisionType": "GitHub", "gitHubLocation": {"repository": "a/b"}}),
            json!({"revisionType": "AppSpecContent", "appSpecContent": {"content": "x"}}),
            json!({"s3Location": {"bucket": "b", "key": "k"}}),
            json!({"revisionType": "URL"}),
            json!({"revisionType": "URL", "urlLocation": {"url": "ftp://h/a.tgz", "sha256": SHA, "bundleType": "tgz"}}),
            json!({"revisionType": "URL", "urlLocation": {"url": "https:///a.tgz", "sha256": SHA, "bundleType": "tgz"}}),
            json!({"revisionType": "URL", "urlLocation": {"url": "http://h/a b", "sha256": SHA, "bundleType": "tgz"}}),
            json!({"revisionType": "URL", "urlLocation": {"url": "http://h/a", "sha256": "abc", "bundleType": "tgz"}}),
            json!({"revisionType": "URL", "urlLocation": {"url": "http://h/a", "sha256": SHA, "bundleType": "rar"}}),
            json!({"revisionType": "URL", "urlLocation": {"url": "http://h/a", "sha256": SHA}}),
        ] {
            assert_eq!(normalize_revision(&bad).unwrap_err().type_, "InvalidRevisionException", "{bad}");
        }
    }

    const SHA: &str = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";

    #[test]
    fn url_locations_are_checked_and_reduced() {
        let location = normalize_revision(&json!({
            "revisionType": "URL",
            "urlLocation": {"url": "https://cdn.example:8443/app/v1.tgz?x=1", "sha256": SHA, "bundleType": "tgz", "x": 1},
        }))
        .unwrap();
        let sha = SHA.to_ascii_lowercase();
        assert_eq!(
            location,
            json!({"revisionType": "URL", "urlLocation": {"url": "https://cdn.example:8443/app/v1.tgz?x=1", "sha256": sha, "bundleType": "tgz"}})
        );
        assert_eq!(
            revision_key(&location),
            format!(r#"["URL","https://cdn.example:8443/app/v1.tgz?x=1","{sha}","tgz"]"#)
        );
        let err = normalize_revision(
            &json!({"revisionType": "URL", "urlLocation": {"url": "file:///x", "sha256": SHA, "bundleType": "tar"}}),
        )
        .unwrap_err();
        assert!(err.message.contains("must start with http:// or https://"), "{err}");
    }

    #[test]
    fn a_group_is_listed_once_per_revision() {
        let mut doc = new_doc(None, 0);
        set_group(&mut doc, "b", true);
        set_group(&mut doc, "a", true);
        set_group(&mut doc, "b", true);
        assert_eq!(doc["deploymentGroups"], json!(["a", "b"]));
        set_group(&mut doc, "a", false);
        assert_eq!(doc["deploymentGroups"], json!(["b"]));
    }
}

#[cfg(test)]
mod store_tests {
    use super::*;
    use crate::server::control::applications::create_application;
    use crate::server::{Settings, open_state};

    #[tokio::test]
    async fn using_a_revision_registers_it_and_moves_the_group_to_it() {
        let dir = std::env::temp_dir().join(format!("edgedeploy-revisions-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state = open_state(&dir, None, Settings::default()).await.unwrap();
        create_application(&state, json!({"applicationName": "app"})).await.unwrap();
        let v1 = json!({"revisionType": "S3", "s3Location": {"bucket": "b", "key": "v1.tgz", "bundleType": "tgz"}});
        let v2 = json!({"revisionType": "GitHub", "gitHubLocation": {"repository": "me/app", "commitId": "abc"}});
        let info = |revision: &Value| {
            let input = json!({"applicationName": "app", "revision": revision});
            let state = state.clone();
            async move { get_application_revision(&state, input).await.unwrap()["revisionInfo"].clone() }
        };

        record_revision_use(&state, "app", &v1, "prod").await.unwrap();
        record_revision_use(&state, "app", &v1, "dev").await.unwrap();
        let first = info(&v1).await;
        assert_eq!(first["deploymentGroups"], json!(["dev", "prod"]));
        assert!(first["firstUsedTime"].is_number() && first["registerTime"].is_number(), "{first}");

        record_revision_use(&state, "app", &v2, "prod").await.unwrap();
        let v1_after = info(&v1).await;
        assert_eq!(v1_after["deploymentGroups"], json!(["dev"]));
        assert_eq!(v1_after["firstUsedTime"], first["firstUsedTime"]);
        assert_eq!(info(&v2).await["deploymentGroups"], json!(["prod"]));
        let listed =
            list_application_revisions(&state, json!({"applicationName": "app", "deployed": "include"})).await.unwrap();
        assert_eq!(listed["revisions"].as_array().unwrap().len(), 2);

        let bad = json!({"revisionType": "S3", "s3Location": {"bucket": "b"}});
        assert_eq!(
            record_revision_use(&state, "app", &bad, "prod").await.unwrap_err().type_,
            "InvalidRevisionException"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
