//! Instance removal and tags: `deregister-instance`, `tag-instance`,
//! `untag-instance` (onboarding is `register-instance`, which works on the
//! store directly: `server::control::onboard`).

use serde_json::{Value, json};

use super::connect::Operator;
use super::table;

/// Deregisters instance `name`; returns what to tell the operator,
/// including what to do on the device.
pub fn deregister(op: &Operator, name: &str) -> Result<String, String> {
    let info = op.call("GetOnPremisesInstance", json!({ "instanceName": name }))?;
    if super::list::registration_status(&info["instanceInfo"]) == "Deregistered" {
        return Ok(format!(
            "instance {name} was already deregistered ({})",
            table::time(&info["instanceInfo"]["deregisterTime"])
        ));
    }
    op.call("DeregisterOnPremisesInstance", json!({ "instanceName": name }))?;
    Ok(format!(
        "deregistered instance {name}: it is in no deployment from now on, and its access key is deleted \
         (its agent gets UnrecognizedClientException).\n\
         On the device: stop the agent (e.g. `/etc/init.d/S50edgedeploy-agent stop`), and delete its \
         configuration (e.g. /etc/edgedeploy/agent.yml: it holds the deleted key).\n\
         The deployed application stays where the AppSpec put it; the agent's deployment root \
         (root_dir, default /opt/edgedeploy-agent/deployment-root) can be removed too.\n\
         To bring the device back: `edgedeploy register-instance --name {name} ...` and copy the new configuration."
    ))
}

/// `KEY=VALUE` as a tag `{Key, Value}`.
pub fn parse_tag(text: &str) -> Result<Value, String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok(json!({ "Key": key, "Value": value })),
        _ => Err(format!("--tag {text:?}: write KEY=VALUE")),
    }
}

/// Adds `tags` (`KEY=VALUE`) to each instance of `names`.
pub fn add_tags(op: &Operator, names: &[String], tags: &[String]) -> Result<String, String> {
    let tags = tags.iter().map(|t| parse_tag(t)).collect::<Result<Vec<_>, _>>()?;
    if tags.is_empty() {
        return Err("say which tags: --tag KEY=VALUE (repeatable)".into());
    }
    op.call("AddTagsToOnPremisesInstances", json!({ "instanceNames": names, "tags": tags }))?;
    Ok(format!("tagged {} with {}", names.join(", "), table::tags(&json!(tags))))
}

/// Removes `tags` from each instance of `names`: `KEY=VALUE` removes that
/// tag, `KEY` alone removes the key whatever its value.
pub fn remove_tags(op: &Operator, names: &[String], tags: &[String]) -> Result<String, String> {
    if tags.is_empty() {
        return Err("say which tags: --tag KEY=VALUE or --tag KEY (repeatable)".into());
    }
    let mut removed = Vec::new();
    for name in names {
        let info = op.call("GetOnPremisesInstance", json!({ "instanceName": name }))?;
        let current = info["instanceInfo"]["tags"].as_array().cloned().unwrap_or_default();
        let chosen = choose_tags(&current, tags)?;
        if chosen.is_empty() {
            continue;
        }
        op.call("RemoveTagsFromOnPremisesInstances", json!({ "instanceNames": [name], "tags": chosen }))?;
        removed.push(format!("{name}: {}", table::tags(&json!(chosen))));
    }
    if removed.is_empty() {
        return Ok(format!("no such tag on {}: nothing removed", names.join(", ")));
    }
    Ok(format!("removed {}", removed.join("; ")))
}

/// The tags of `current` that the `--tag` arguments name.
fn choose_tags(current: &[Value], wanted: &[String]) -> Result<Vec<Value>, String> {
    let mut chosen = Vec::new();
    for w in wanted {
        if w.is_empty() || w.starts_with('=') {
            return Err(format!("--tag {w:?}: write KEY=VALUE or KEY"));
        }
        for tag in current {
            let matches = match w.split_once('=') {
                Some((k, v)) => tag["Key"] == k && tag["Value"].as_str().unwrap_or("") == v,
                None => tag["Key"] == w.as_str(),
            };
            if matches && !chosen.contains(tag) {
                chosen.push(tag.clone());
            }
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_alone_removes_every_value_of_it() {
        let current = vec![json!({"Key": "env", "Value": "prod"}), json!({"Key": "site", "Value": "lyon"})];
        assert_eq!(choose_tags(&current, &["env".into()]).unwrap(), vec![current[0].clone()]);
        assert_eq!(choose_tags(&current, &["site=lyon".into(), "env=dev".into()]).unwrap(), vec![current[1].clone()]);
        assert!(choose_tags(&current, &["=x".into()]).is_err());
        assert!(parse_tag("novalue").is_err());
    }
}
