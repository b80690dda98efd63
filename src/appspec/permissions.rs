//! The `permissions` section: parsing, and which paths an entry applies to.

use std::path::{Component, Path};

use serde_yaml::Value;

use super::mode::{RadixMode, parse_mode};
use super::paths::absolute_path;
use super::value::{Fields, Result, as_list, as_str, error, id_or_name, index_path, name_or_id, quote, show};
use super::{ObjectType, Permission, SelinuxContext, glob};

const PERMISSION_KEYS: &[&str] = &["object", "pattern", "except", "owner", "group", "mode", "acls", "context", "type"];

/// The pattern that matches everything under `object`.
const EVERYTHING: &str = "**";

/// Parses the `permissions` list (null: no entries).
pub(super) fn parse_permissions(value: Option<&Value>, radix: &[RadixMode]) -> Result<Vec<Permission>> {
    let Some(value) = value else { return Ok(Vec::new()) };
    let list = as_list("permissions", value)?;
    list.iter().enumerate().map(|(i, entry)| parse_permission(&index_path("permissions", i), entry, radix)).collect()
}

fn parse_permission(path: &str, value: &Value, radix: &[RadixMode]) -> Result<Permission> {
    let fields = Fields::new(path, value, PERMISSION_KEYS)?;
    let object_path = fields.path_of("object");
    let object = absolute_path(&object_path, as_str(&object_path, fields.require("object")?)?)?;
    let pattern = match fields.get("pattern") {
        Some(v) => parse_pattern(&fields.path_of("pattern"), v)?,
        None => EVERYTHING.to_string(),
    };
    let except = string_list(&fields.path_of("except"), fields.get("except"), parse_except)?;
    let owner = fields.get("owner").map(|v| id_or_name(&fields.path_of("owner"), v)).transpose()?;
    let group = fields.get("group").map(|v| id_or_name(&fields.path_of("group"), v)).transpose()?;
    let mode = fields.get("mode").map(|v| parse_mode(&fields.path_of("mode"), v, radix)).transpose()?;
    let acls = string_list(&fields.path_of("acls"), fields.get("acls"), parse_acl)?;
    let context = fields.get("context").map(|v| parse_context(&fields.path_of("context"), v)).transpose()?;
    let types = parse_types(&fields.path_of("type"), fields.get("type"))?;
    Ok(Permission { object, pattern, except, owner, group, mode, acls, context, types })
}

/// The first `permissions` entry whose `mode` has the setuid or setgid bit
/// (refused unless the agent allows them, as for archive entries).
pub(super) fn setuid_problem(permissions: &[Permission]) -> Option<String> {
    permissions.iter().enumerate().find_map(|(i, p)| {
        let mode = p.mode.filter(|m| m & 0o6000 != 0)?;
        let bits = match (mode & 0o4000 != 0, mode & 0o2000 != 0) {
            (true, true) => "the setuid and setgid bits",
            (true, false) => "the setuid bit",
            _ => "the setgid bit",
        };
        Some(format!(
            "permissions[{i}].mode: {mode:04o} sets {bits}, which the agent refuses as it does in archive entries \
             (set allow_setuid: true in the agent configuration to allow it)"
        ))
    })
}

/// A list whose items are parsed by `item` (null: empty list).
fn string_list(path: &str, value: Option<&Value>, item: fn(&str, &Value) -> Result<String>) -> Result<Vec<String>> {
    let Some(value) = value else { return Ok(Vec::new()) };
    let list = as_list(path, value)?;
    list.iter().enumerate().map(|(i, v)| item(&index_path(path, i), v)).collect()
}

/// A `pattern` glob: non-empty and relative to `object`.
fn parse_pattern(path: &str, value: &Value) -> Result<String> {
    let glob = parse_except(path, value)?;
    if glob.starts_with('/') {
        return Err(error(path, format!("{} must be relative to object", quote(&glob))));
    }
    Ok(glob)
}

/// An `except` glob: non-empty; a leading `/` makes it absolute (see
/// [`applies_to`]).
fn parse_except(path: &str, value: &Value) -> Result<String> {
    let glob = as_str(path, value)?;
    if glob.is_empty() || glob.contains('\0') {
        return Err(error(path, format!("{} is not a valid pattern", quote(glob))));
    }
    Ok(glob.to_string())
}

/// One setfacl entry: `[d[efault]:][u[ser]|g[roup]|m[ask]|o[ther]:]name:perms`
/// with perms of `rwx-` or one octal digit. Like CodeDeploy, base entries
/// without a name (`u::rw`) are refused: `mode` sets those.
fn parse_acl(path: &str, value: &Value) -> Result<String> {
    let entry = as_str(path, value)?;
    acl_problem(entry).map_or(Ok(entry.to_string()), |why| Err(error(path, format!("{} {why}", quote(entry)))))
}

fn acl_problem(entry: &str) -> Option<&'static str> {
    let mut parts: Vec<&str> = entry.split(':').collect();
    if !(2..=4).contains(&parts.len()) {
        return Some("is not an ACL entry like u:bob:rw or d:g:staff:rx");
    }
    let perms = parts.pop().unwrap_or_default();
    let name = parts.pop().unwrap_or_default();
    let mut default = false;
    if parts.len() == 2 {
        if !matches!(parts[0], "d" | "default") {
            return Some("has an unknown prefix (expected d: or default:)");
        }
        default = true;
    }
    let kind = match parts.last().copied() {
        None => None,
        Some("d" | "default") if !default && parts.len() == 1 => {
            default = true;
            None
        }
        Some(tag) => match acl_kind(tag) {
            Some(kind) => Some(kind),
            None => return Some("has an unknown entry type (expected u, g, m or o)"),
        },
    };
    let (kind, name) = match (kind, acl_kind(name)) {
        (None, Some(k @ ("mask" | "other"))) => (k, ""),
        (None, _) => ("user", name),
        (Some(k), _) => (k, name),
    };
    if matches!(kind, "mask" | "other") && !name.is_empty() {
        return Some("names a mask or other entry (those take no name)");
    }
    if !default && kind != "mask" && name.is_empty() {
        return Some("is a base entry: set it with mode instead");
    }
    let octal = perms.len() == 1 && perms.bytes().all(|b| (b'0'..=b'7').contains(&b));
    if !octal && !perms.chars().all(|c| matches!(c, 'r' | 'w' | 'x' | '-')) {
        return Some("has invalid permissions (expected r, w, x, - or one octal digit)");
    }
    None
}

fn acl_kind(tag: &str) -> Option<&'static str> {
    match tag {
        "u" | "user" => Some("user"),
        "g" | "group" => Some("group"),
        "m" | "mask" => Some("mask"),
        "o" | "other" => Some("other"),
        _ => None,
    }
}

/// `context`: `user` (the documented key; `name` is what CodeDeploy's agent
/// reads, accepted too), `type` (required), `range`.
fn parse_context(path: &str, value: &Value) -> Result<SelinuxContext> {
    if value.get("role").is_some() {
        return Err(error(path, "SELinux roles are not supported (CodeDeploy refuses them too)"));
    }
    let fields = Fields::new(path, value, &["user", "name", "type", "range"])?;
    if fields.get("user").is_some() && fields.get("name").is_some() {
        return Err(error(path, "give the SELinux user as either user or name, not both"));
    }
    let user = match fields.get("user").map(|v| ("user", v)).or(fields.get("name").map(|v| ("name", v))) {
        Some((key, v)) => Some(name_or_id(&fields.path_of(key), v)?),
        None => None,
    };
    let type_ = name_or_id(&fields.path_of("type"), fields.require("type")?)?;
    let range = fields.get("range").map(|v| parse_range(&fields.path_of("range"), v)).transpose()?;
    Ok(SelinuxContext { user, type_, range })
}

/// An MLS/MCS range: `s0`, `s0-s3`, `s0:c1,c4.c9` (categories 0-1023).
fn parse_range(path: &str, value: &Value) -> Result<String> {
    let range = as_str(path, value)?;
    let (levels, categories) = match range.split_once(':') {
        Some((l, c)) => (l, Some(c)),
        None => (range, None),
    };
    let ok = level_range_ok(levels) && categories.is_none_or(|c| c.split(',').all(category_range_ok));
    if ok {
        Ok(range.to_string())
    } else {
        Err(error(path, format!("{} is not an SELinux range like s0-s1:c0.c3", quote(range))))
    }
}

fn level_range_ok(levels: &str) -> bool {
    let numbers: Option<Vec<u32>> = levels.split('-').map(|s| numbered(s, 's')).collect();
    matches!(numbers.as_deref(), Some([_]) | Some([_, _])) && numbers.is_some_and(|n| n.is_sorted())
}

fn category_range_ok(part: &str) -> bool {
    let numbers: Option<Vec<u32>> = part.split('.').map(|s| numbered(s, 'c')).collect();
    let in_bounds = numbers.as_ref().is_some_and(|n| n.iter().all(|c| *c <= 1023));
    in_bounds && matches!(numbers.as_deref(), Some([_]) | Some([_, _])) && numbers.is_some_and(|n| n.is_sorted())
}

/// `s12` with prefix `s` is 12; anything else is `None`.
fn numbered(text: &str, prefix: char) -> Option<u32> {
    let digits = text.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `type`: a non-empty list of `file` / `directory` (null: both).
fn parse_types(path: &str, value: Option<&Value>) -> Result<Vec<ObjectType>> {
    let Some(value) = value else { return Ok(Vec::new()) };
    let list = as_list(path, value)?;
    if list.is_empty() {
        return Err(error(path, "must list file, directory or both (leave it out for both)"));
    }
    let mut types = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let kind = match item.as_str() {
            Some("file") => ObjectType::File,
            Some("directory") => ObjectType::Directory,
            _ => return Err(error(&index_path(path, i), format!("{} is not file or directory", show(item)))),
        };
        if !types.contains(&kind) {
            types.push(kind);
        }
    }
    Ok(types)
}

/// The rule of [`Permission::applies_to`]; see there and `docs/appspec.md`.
pub(super) fn applies_to(permission: &Permission, path: &Path, is_dir: bool) -> bool {
    let Some(full) = normal_parts(path) else { return false };
    let Some(object) = normal_parts(&permission.object) else { return false };
    let Some(below) = full.strip_prefix(object.as_slice()) else { return false };
    let kind = if is_dir { ObjectType::Directory } else { ObjectType::File };
    let wanted = permission.types.is_empty() || permission.types.contains(&kind);
    if below.is_empty() {
        // The object itself: only a file object, and only for an entry that
        // selects nothing narrower (CodeDeploy refuses the other cases).
        return !is_dir && wanted && permission.pattern == EVERYTHING && permission.except.is_empty();
    }
    let relative = below.join("/");
    let absolute = full.join("/");
    wanted
        && (permission.pattern == EVERYTHING || glob::matches(&permission.pattern, &relative))
        && !permission.except.iter().any(|e| match e.strip_prefix('/') {
            Some(from_root) => glob::matches(from_root, &absolute),
            None => glob::matches(e, &relative),
        })
}

/// The components of an absolute path without `.`; `None` for relative
/// paths or paths with `..` (which a pure check cannot resolve).
fn normal_parts(path: &Path) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut components = path.components();
    if components.next() != Some(Component::RootDir) {
        return None;
    }
    for component in components {
        match component {
            Component::Normal(name) => parts.push(name.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(parts)
}

/// Why a permission whose object turns out to be a *file* is invalid, as
/// CodeDeploy checks at install time: it must not narrow with `pattern` or
/// `except`, which only make sense under a directory.
pub(super) fn file_object_problem(permission: &Permission) -> Option<String> {
    let applies_to_files = permission.types.is_empty() || permission.types.contains(&ObjectType::File);
    if !applies_to_files {
        return None;
    }
    let object = permission.object.display();
    if permission.pattern != EVERYTHING {
        return Some(format!(
            "object {object} is a file, so pattern {} cannot apply (only \"**\")",
            quote(&permission.pattern)
        ));
    }
    if !permission.except.is_empty() {
        return Some(format!("object {object} is a file, so except cannot apply"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_entries_follow_setfacl_shapes() {
        for ok in
            ["u:mary:rw", "m::rw", "g:staff:r-x", "d:g:staff:rx", "default:user:bob:7", "bob:rw", "d:u::rwx", "u:bob:"]
        {
            assert_eq!(acl_problem(ok), None, "{ok}");
        }
        for bad in
            ["rw", "u:bob", "x:bob:rw", "u::rw", "o::r", "m:bob:rw", "u:bob:rwz", "u:bob:8", "a:b:c:d:e", "q:u:bob:rw"]
        {
            assert!(acl_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn selinux_ranges_follow_the_mls_shape() {
        let v = |t: &str| Value::String(t.to_string());
        for ok in ["s0", "s0-s3", "s0:c1", "s0-s0:c0.c1023", "s1:c1,c4.c9"] {
            assert!(parse_range("r", &v(ok)).is_ok(), "{ok}");
        }
        for bad in ["", "0", "s", "s3-s1", "s0:c1024", "s0:c5.c1", "s0:", "s0-s1-s2", "s0:x1"] {
            assert!(parse_range("r", &v(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn owners_and_groups_that_chown_would_ignore_are_refused() {
        let yaml = |t: &str| serde_yaml::from_str::<Value>(t).expect("yaml");
        for ok in ["0", "1000", "4294967294", "\"4294967294\"", "bob", "\"007\""] {
            assert!(id_or_name("permissions[0].owner", &yaml(ok)).is_ok(), "{ok}");
        }
        for bad in ["-1", "\"-1\"", "4294967295", "\"4294967295\"", "4294967296", "\"99999999999999999999\"", "-2"] {
            let message = id_or_name("permissions[0].owner", &yaml(bad)).unwrap_err().message;
            assert!(message.starts_with("permissions[0].owner: "), "{message}");
            assert!(message.contains("is not a usable id: -1 (4294967295) means \"leave unchanged\""), "{message}");
        }
    }

    #[test]
    fn setuid_and_setgid_modes_are_found_with_their_entry() {
        let entry = |mode| Permission {
            object: "/srv".into(),
            pattern: EVERYTHING.into(),
            except: vec![],
            owner: None,
            group: None,
            mode,
            acls: vec![],
            context: None,
            types: vec![],
        };
        assert_eq!(setuid_problem(&[entry(Some(0o755)), entry(Some(0o1777)), entry(None)]), None);
        let message = setuid_problem(&[entry(Some(0o644)), entry(Some(0o2775))]).unwrap_or_default();
        assert!(
            message.starts_with("permissions[1].mode: 2775 sets the setgid bit, which the agent refuses"),
            "{message}"
        );
        let message = setuid_problem(&[entry(Some(0o6755))]).unwrap_or_default();
        assert!(message.contains("6755 sets the setuid and setgid bits"), "{message}");
    }

    #[test]
    fn normal_parts_need_absolute_clean_paths() {
        assert_eq!(normal_parts(Path::new("/a/./b/")), Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(normal_parts(Path::new("/")), Some(vec![]));
        assert_eq!(normal_parts(Path::new("a/b")), None);
        assert_eq!(normal_parts(Path::new("/a/../b")), None);
    }
}
