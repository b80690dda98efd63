//! Applying the AppSpec's `permissions` to what this install created.
//! Mode and ownership are set on a file before it is renamed into place, so
//! it never appears with the wrong ones; ACLs via setfacl and SELinux
//! contexts via semanage/restorecon, when those tools exist.

use std::fs;
use std::os::unix::fs::{PermissionsExt, lchown};
use std::path::Path;
use std::process::Command;

use crate::appspec::Permission;
use crate::users;

/// Applies every entry of `permissions` that matches `target` to the object
/// at `actual` (the same object, possibly still under its temporary name).
/// Later entries win where they set the same attribute.
pub fn apply(permissions: &[Permission], target: &Path, actual: &Path, is_dir: bool) -> Result<(), String> {
    for permission in permissions.iter().filter(|p| p.applies_to(target, is_dir)) {
        apply_one(permission, target, actual)?;
    }
    Ok(())
}

/// Applies one entry.
fn apply_one(permission: &Permission, target: &Path, actual: &Path) -> Result<(), String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("permissions for {}: {what}: {e}", target.display());
    let is_symlink = fs::symlink_metadata(actual).map(|m| m.file_type().is_symlink()).unwrap_or(false);
    if let Some(mode) = permission.mode.filter(|_| !is_symlink) {
        fs::set_permissions(actual, fs::Permissions::from_mode(mode)).map_err(|e| fail("mode", &e))?;
    }
    let uid = permission.owner.as_deref().map(|o| users::user(o).map(|u| u.uid)).transpose().map_err(|e| fail("owner", &e))?;
    let gid = permission.group.as_deref().map(users::group_id).transpose().map_err(|e| fail("group", &e))?;
    if uid.is_some() || gid.is_some() {
        lchown(actual, uid, gid).map_err(|e| fail("owner/group", &e))?;
        // chown clears setuid/setgid bits: put the mode back.
        if let Some(mode) = permission.mode.filter(|m| m & 0o6000 != 0 && !is_symlink) {
            fs::set_permissions(actual, fs::Permissions::from_mode(mode)).map_err(|e| fail("mode", &e))?;
        }
    }
    for acl in &permission.acls {
        run_tool("setfacl", &["--modify", acl], actual).map_err(|e| fail("acls", &e))?;
    }
    Ok(())
}

/// Applies the SELinux contexts of matching entries to `target`, which is in
/// its final place (contexts are rules on paths, not on inodes).
pub fn apply_context(permissions: &[Permission], target: &Path, is_dir: bool) -> Result<(), String> {
    for permission in permissions.iter().filter(|p| p.applies_to(target, is_dir)) {
        let Some(context) = &permission.context else { continue };
        let mut args = vec!["fcontext", "-a", "-t", context.type_.as_str()];
        if let Some(user) = &context.user {
            args.extend(["-s", user.as_str()]);
        }
        if let Some(range) = &context.range {
            args.extend(["-r", range.as_str()]);
        }
        let fail = |e: String| format!("permissions for {}: context: {e}", target.display());
        run_tool("semanage", &args, target).map_err(fail)?;
        run_tool("restorecon", &[], target).map_err(fail)?;
    }
    Ok(())
}

/// Runs `tool args... path`; a missing tool is a clear error.
fn run_tool(tool: &str, args: &[&str], path: &Path) -> Result<(), String> {
    let output = Command::new(tool).args(args).arg(path).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("{tool} is not installed on this device (it is needed to apply this setting)")
        } else {
            format!("running {tool}: {e}")
        }
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(format!("{tool} failed ({}): {}", output.status, stderr.trim()))
}
