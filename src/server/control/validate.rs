//! Reading and checking control API inputs, shared by the resource modules:
//! names with their model's exceptions, typed optional fields, batch lists,
//! opaque pagination tokens and new ids. Every error names the field and
//! the value.

use rand::Rng;
use serde_json::Value;

use crate::protocol::sigv4::hex;
use crate::server::api::ApiError;

/// Most names or ids a `BatchGet*` call accepts (the model's
/// BatchLimitExceededException: 100).
pub const BATCH_LIMIT: usize = 100;
/// Items per page of a `List*` call.
pub const PAGE_SIZE: usize = 100;

/// One kind of name: its field, its length limit and the exceptions the
/// model gives for a missing and for a malformed value.
#[derive(Debug, Clone, Copy)]
pub struct NameRule {
    /// Input field, e.g. `applicationName`.
    pub field: &'static str,
    /// Exception when the field is missing or empty.
    pub required: &'static str,
    /// Exception when the value is malformed.
    pub invalid: &'static str,
    /// Largest length in characters.
    pub max: usize,
}

/// `applicationName`.
pub const APPLICATION_NAME: NameRule = NameRule {
    field: "applicationName",
    required: "ApplicationNameRequiredException",
    invalid: "InvalidApplicationNameException",
    max: 100,
};
/// `deploymentGroupName`.
pub const DEPLOYMENT_GROUP_NAME: NameRule = NameRule {
    field: "deploymentGroupName",
    required: "DeploymentGroupNameRequiredException",
    invalid: "InvalidDeploymentGroupNameException",
    max: 100,
};
/// `deploymentConfigName`.
pub const DEPLOYMENT_CONFIG_NAME: NameRule = NameRule {
    field: "deploymentConfigName",
    required: "DeploymentConfigNameRequiredException",
    invalid: "InvalidDeploymentConfigNameException",
    max: 100,
};
/// `instanceName`.
pub const INSTANCE_NAME: NameRule = NameRule {
    field: "instanceName",
    required: "InstanceNameRequiredException",
    invalid: "InvalidInstanceNameException",
    max: 100,
};

impl NameRule {
    /// The same rule for another field (`newApplicationName`, ...).
    pub const fn field(self, field: &'static str) -> NameRule {
        NameRule { field, ..self }
    }

    /// Checks a name: 1 to `max` characters of `[A-Za-z0-9.+=,@_-]`, the
    /// characters AWS documents for CodeDeploy names.
    pub fn check(&self, name: &str) -> Result<(), ApiError> {
        if name.is_empty() {
            return Err(ApiError::client(self.required, format!("{} is required", self.field)));
        }
        let length = name.chars().count();
        if length > self.max {
            return Err(self.invalid_value(name, &format!("it is {length} characters long, over {}", self.max)));
        }
        if let Some(c) = name.chars().find(|c| !is_name_char(*c)) {
            return Err(self.invalid_value(name, &format!("{c:?} is not one of A-Z a-z 0-9 . + = , @ _ -")));
        }
        Ok(())
    }

    /// The name in `input`, required.
    pub fn required(&self, input: &Value) -> Result<String, ApiError> {
        self.optional(input)?.ok_or_else(|| ApiError::client(self.required, format!("{} is required", self.field)))
    }

    /// The name in `input`, if given.
    pub fn optional(&self, input: &Value) -> Result<Option<String>, ApiError> {
        let Some(name) = opt_str(input, self.field)? else { return Ok(None) };
        self.check(name)?;
        Ok(Some(name.to_string()))
    }

    /// A required, non-empty list of names (`list_field`) of at most
    /// [`BATCH_LIMIT`], duplicates removed, order kept.
    pub fn batch(&self, input: &Value, list_field: &str) -> Result<Vec<String>, ApiError> {
        let items = opt_array(input, list_field)?
            .ok_or_else(|| ApiError::client(self.required, format!("{list_field} is required")))?;
        if items.len() > BATCH_LIMIT {
            return Err(ApiError::client(
                "BatchLimitExceededException",
                format!("{list_field} has {} names; at most {BATCH_LIMIT} are allowed", items.len()),
            ));
        }
        let mut names: Vec<String> = Vec::with_capacity(items.len());
        for item in items {
            let name = item.as_str().ok_or_else(|| type_error(list_field, item, "a list of strings"))?;
            self.check(name)?;
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn invalid_value(&self, name: &str, why: &str) -> ApiError {
        ApiError::client(self.invalid, format!("{} {name:?} is invalid: {why}", self.field))
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || ".+=,@_-".contains(c)
}

/// The error for a field of the wrong JSON type.
pub fn type_error(field: &str, value: &Value, expected: &str) -> ApiError {
    ApiError::client("SerializationException", format!("{field}: {value} is not {expected}"))
}

/// An optional string field; `null` counts as absent.
pub fn opt_str<'a>(input: &'a Value, field: &str) -> Result<Option<&'a str>, ApiError> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(type_error(field, other, "a string")),
    }
}

/// An optional list field.
pub fn opt_array<'a>(input: &'a Value, field: &str) -> Result<Option<&'a Vec<Value>>, ApiError> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items)),
        Some(other) => Err(type_error(field, other, "a list")),
    }
}

/// An optional structure field.
pub fn opt_object<'a>(input: &'a Value, field: &str) -> Result<Option<&'a Value>, ApiError> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v)),
        Some(other) => Err(type_error(field, other, "a structure")),
    }
}

/// An optional whole-number field.
pub fn opt_i64(input: &Value, field: &str) -> Result<Option<i64>, ApiError> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| type_error(field, v, "a whole number")),
    }
}

/// An optional field whose value is one of `allowed`; anything else is
/// `exception`.
pub fn opt_enum<'a>(
    input: &'a Value,
    field: &str,
    allowed: &[&str],
    exception: &str,
) -> Result<Option<&'a str>, ApiError> {
    let Some(value) = opt_str(input, field)? else { return Ok(None) };
    if allowed.contains(&value) {
        Ok(Some(value))
    } else {
        Err(ApiError::client(exception, format!("{field} {value:?} is not one of {}", allowed.join(", "))))
    }
}

/// An optional free-text field of at most `max` characters (`exception` when longer).
pub fn opt_text<'a>(input: &'a Value, field: &str, max: usize, exception: &str) -> Result<Option<&'a str>, ApiError> {
    let Some(text) = opt_str(input, field)? else { return Ok(None) };
    let length = text.chars().count();
    if length > max {
        return Err(ApiError::client(exception, format!("{field} is {length} characters long, over {max}")));
    }
    Ok(Some(text))
}

/// The key a `List*` call resumes after, from its `nextToken`.
pub fn page_start(input: &Value) -> Result<Option<String>, ApiError> {
    let Some(token) = opt_str(input, "nextToken")? else { return Ok(None) };
    decode_token(token).map(Some).ok_or_else(|| {
        ApiError::client("InvalidNextTokenException", format!("nextToken {token:?} was not returned by this server"))
    })
}

/// Cuts `sorted` (fetched with at most `PAGE_SIZE + 1` items after the
/// start key) to one page, with the token of the next page if there is one.
pub fn page(mut sorted: Vec<String>) -> (Vec<String>, Option<String>) {
    if sorted.len() <= PAGE_SIZE {
        return (sorted, None);
    }
    sorted.truncate(PAGE_SIZE);
    let token = sorted.last().map(|last| encode_token(last));
    (sorted, token)
}

/// Pages an in-memory sorted list: the items after the token's key.
pub fn page_in_memory(sorted: Vec<String>, start: Option<&str>) -> (Vec<String>, Option<String>) {
    let after: Vec<String> = match start {
        Some(start) => sorted.into_iter().filter(|name| name.as_str() > start).collect(),
        None => sorted,
    };
    page(after.into_iter().take(PAGE_SIZE + 1).collect())
}

const TOKEN_PREFIX: &str = "ed1:";

/// An opaque token for "the items after `key`".
pub fn encode_token(key: &str) -> String {
    hex(format!("{TOKEN_PREFIX}{key}").as_bytes())
}

fn decode_token(token: &str) -> Option<String> {
    if !token.len().is_multiple_of(2) || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..token.len()).step_by(2).map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()?.strip_prefix(TOKEN_PREFIX).map(str::to_string)
}

/// Whether a store error is the violation of a UNIQUE or PRIMARY KEY
/// constraint (a concurrent create of the same name).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.is_unique_violation())
}

/// A new random (version 4) UUID, as AWS's ids look.
pub fn new_uuid() -> String {
    let mut bytes: [u8; 16] = rand::rng().random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h = hex(&bytes);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_checked_for_length_and_characters() {
        assert!(APPLICATION_NAME.check("my-app_1.2+x=y,z@w").is_ok());
        assert_eq!(APPLICATION_NAME.check("").unwrap_err().type_, "ApplicationNameRequiredException");
        let long = "a".repeat(101);
        let err = APPLICATION_NAME.check(&long).unwrap_err();
        assert_eq!(err.type_, "InvalidApplicationNameException");
        assert!(err.message.contains("101 characters"), "{}", err.message);
        let err = DEPLOYMENT_GROUP_NAME.check("a b").unwrap_err();
        assert_eq!(err.type_, "InvalidDeploymentGroupNameException");
        assert!(err.message.contains("deploymentGroupName \"a b\""), "{}", err.message);
    }

    #[test]
    fn a_required_name_that_is_missing_or_of_the_wrong_type_is_refused() {
        assert_eq!(APPLICATION_NAME.required(&json!({})).unwrap_err().type_, "ApplicationNameRequiredException");
        assert_eq!(
            APPLICATION_NAME.required(&json!({"applicationName": 3})).unwrap_err().type_,
            "SerializationException"
        );
        assert_eq!(APPLICATION_NAME.required(&json!({"applicationName": "x"})).unwrap(), "x");
    }

    #[test]
    fn batches_are_limited_and_deduplicated() {
        let names: Vec<String> = (0..101).map(|i| format!("a{i}")).collect();
        let err = APPLICATION_NAME.batch(&json!({ "applicationNames": names }), "applicationNames").unwrap_err();
        assert_eq!(err.type_, "BatchLimitExceededException");
        let ok = APPLICATION_NAME.batch(&json!({"applicationNames": ["b", "a", "b"]}), "applicationNames").unwrap();
        assert_eq!(ok, ["b", "a"]);
    }

    #[test]
    fn tokens_round_trip_and_foreign_tokens_are_refused() {
        let token = encode_token("app-099");
        assert_eq!(page_start(&json!({ "nextToken": token })).unwrap().as_deref(), Some("app-099"));
        for bad in ["zz", "abc", "6869"] {
            let err = page_start(&json!({ "nextToken": bad })).unwrap_err();
            assert_eq!(err.type_, "InvalidNextTokenException", "{bad}");
        }
    }

    #[test]
    fn pages_cut_at_page_size_with_a_token_of_the_last_item() {
        let names: Vec<String> = (0..120).map(|i| format!("n{i:03}")).collect();
        let (first, token) = page_in_memory(names.clone(), None);
        assert_eq!(first.len(), PAGE_SIZE);
        let start = decode_token(&token.unwrap()).unwrap();
        assert_eq!(start, "n099");
        let (second, token) = page_in_memory(names, Some(&start));
        assert_eq!(second.len(), 20);
        assert_eq!(second[0], "n100");
        assert!(token.is_none());
    }

    #[test]
    fn uuids_have_the_v4_shape() {
        let id = new_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_ne!(id, new_uuid());
    }
}
