//! Applying the AppSpec's `permissions` to what this install created.
//! Everything that can be refused is checked by [`Resolved::new`] before the
//! install writes anything. Mode and ownership are then set on a file before
//! it is renamed into place, so it never appears with the wrong ones; ACLs
//! via setfacl and SELinux contexts via semanage/restorecon.

use std::fs;
use std::fs::File;
use std::os::unix::fs::{PermissionsExt, fchown};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::appspec::Permission;
use crate::users;

/// What one `permissions` entry sets on an object.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// New owner, if any.
    pub uid: Option<u32>,
    /// New group, if any.
    pub gid: Option<u32>,
    /// New mode, if any (never applied to a symbolic link).
    pub mode: Option<u32>,
    /// ACL entries for setfacl, if any.
    pub acls: &'a [String],
}

/// The permissions entries with owners and groups resolved to ids.
#[derive(Debug)]
pub struct Resolved<'a> {
    entries: &'a [Permission],
    /// (uid, gid) per entry, parallel to `entries`.
    ids: Vec<(Option<u32>, Option<u32>)>,
}

impl<'a> Resolved<'a> {
    /// Checks `entries` against the objects this install will own
    /// (`(path, is_dir)`): no object matched by two entries (CodeDeploy
    /// refuses that too), owners and groups known, a file `object` not
    /// narrowed by pattern/except, and setfacl / semanage / restorecon
    /// installed when an entry that is used needs them.
    pub fn new<'p>(entries: &'a [Permission], owned: impl Iterator<Item = (&'p Path, bool)>) -> Result<Self, String> {
        let mut used = vec![false; entries.len()];
        for (path, is_dir) in owned {
            let mut matching = entries.iter().enumerate().filter(|(_, p)| p.applies_to(path, is_dir));
            if let Some((first, _)) = matching.next() {
                if let Some((second, _)) = matching.next() {
                    return Err(format!(
                        "The deployment failed because the permissions setting for {} is specified more than once \
                         in the application specification file (permissions[{first}] and permissions[{second}])",
                        path.display()
                    ));
                }
                used[first] = true;
                if !is_dir && entries[first].object == path {
                    entries[first].check_file_object().map_err(|e| e.to_string())?;
                }
            }
        }
        let mut ids = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            ids.push(if used[index] { resolve(index, entry)? } else { (None, None) });
        }
        Ok(Resolved { entries, ids })
    }

    /// What the entry matching `target` sets on it: owner, group, mode
    /// and ACLs. The caller applies them to the object it holds open (so
    /// nothing is changed through a link).
    pub fn settings(&self, target: &Path, is_dir: bool) -> Option<Settings<'_>> {
        let index = self.entries.iter().position(|p| p.applies_to(target, is_dir))?;
        let entry = &self.entries[index];
        let (uid, gid) = self.ids[index];
        Some(Settings { uid, gid, mode: entry.mode, acls: &entry.acls })
    }

    /// Applies `settings` to `file` (open on the object named `target`):
    /// owner and group first (chown clears setuid/setgid bits), then the
    /// mode, then ACLs, all on the open object: setfacl is handed
    /// `/proc/self/fd/N`, never a path someone could swap for a link.
    pub fn apply(target: &Path, settings: &Settings<'_>, file: &File) -> Result<(), String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("permissions for {}: {what}: {e}", target.display());
        if settings.uid.is_some() || settings.gid.is_some() {
            fchown(file, settings.uid, settings.gid).map_err(|e| fail("owner/group", &e))?;
        }
        if let Some(mode) = settings.mode {
            file.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| fail("mode", &e))?;
        }
        for acl in settings.acls {
            run_tool_on(file, "setfacl", &["--modify", acl]).map_err(|e| fail("acls", &e))?;
        }
        Ok(())
    }

    /// True when some entry sets an SELinux context.
    pub fn has_context(&self) -> bool {
        self.entries.iter().any(|p| p.context.is_some())
    }

    /// Applies the SELinux context of the entry matching `target`, which is in
    /// its final place (contexts are rules on paths, not on inodes).
    pub fn apply_context(&self, target: &Path, is_dir: bool) -> Result<(), String> {
        let Some(entry) = self.entries.iter().find(|p| p.applies_to(target, is_dir)) else { return Ok(()) };
        let Some(context) = &entry.context else { return Ok(()) };
        let mut args = vec!["fcontext", "-a", "-t", context.type_.as_str()];
        if let Some(user) = &context.user {
            args.extend(["-s", user.as_str()]);
        }
        if let Some(range) = &context.range {
            args.extend(["-r", range.as_str()]);
        }
        let fail = |e: String| format!("permissions for {}: context: {e}", target.display());
        run_tool("semanage", &args, target).map_err(fail)?;
        run_tool("restorecon", &[], target).map_err(fail)
    }
}

/// Resolves the owner and group of entry `index`, and checks its tools exist.
fn resolve(index: usize, entry: &Permission) -> Result<(Option<u32>, Option<u32>), String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("permissions[{index}].{what}: {e}");
    let uid =
        entry.owner.as_deref().map(|o| users::user(o).map(|u| u.uid)).transpose().map_err(|e| fail("owner", &e))?;
    let gid = entry.group.as_deref().map(users::group_id).transpose().map_err(|e| fail("group", &e))?;
    // chown(2) reads (uid_t)-1 as "leave unchanged": a user or group with
    // that id in /etc/passwd or /etc/group would silently change nothing.
    let unchanged = |what: &str, id: Option<u32>, name: Option<&str>| match id {
        Some(u32::MAX) => Err(fail(
            what,
            &format!("{:?} has id 4294967295, which chown(2) takes as \"leave unchanged\"", name.unwrap_or_default()),
        )),
        _ => Ok(()),
    };
    unchanged("owner", uid, entry.owner.as_deref())?;
    unchanged("group", gid, entry.group.as_deref())?;
    if !entry.acls.is_empty() {
        require_tool("setfacl").map_err(|e| fail("acls", &e))?;
    }
    if entry.context.is_some() {
        require_tool("semanage").and_then(|()| require_tool("restorecon")).map_err(|e| fail("context", &e))?;
    }
    Ok((uid, gid))
}

/// Finds `tool` on PATH, or says it is missing.
fn require_tool(tool: &str) -> Result<(), String> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    if std::env::split_paths(&path).map(|dir: PathBuf| dir.join(tool)).any(|p| p.is_file()) {
        Ok(())
    } else {
        Err(format!("{tool} is not installed on this device (it is needed to apply this setting)"))
    }
}

/// Runs `tool args... /proc/self/fd/N` on the open `file`.
fn run_tool_on(file: &File, tool: &str, args: &[&str]) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let mut cmd = Command::new(tool);
    cmd.args(args).arg(format!("/proc/self/fd/{fd}"));
    crate::sys::inherit_fd(&mut cmd, fd);
    finish_tool(tool, cmd.output())
}

/// Runs `tool args... path`.
fn run_tool(tool: &str, args: &[&str], path: &Path) -> Result<(), String> {
    finish_tool(tool, Command::new(tool).args(args).arg(path).output())
}

/// The outcome of a tool's run: `Ok` on success, else its status and stderr.
fn finish_tool(tool: &str, output: std::io::Result<std::process::Output>) -> Result<(), String> {
    let output = output.map_err(|e| format!("running {tool}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(format!("{tool} failed ({}): {}", output.status, stderr.trim()))
}
