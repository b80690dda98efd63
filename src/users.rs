//! Users and groups from /etc/passwd and /etc/group, read directly: a static
//! musl binary has no NSS.
//!
//! The parsing is done by pure functions over the files' text (unit-tested
//! below); the public lookups read the real files, at most [`MAX_FILE_BYTES`]
//! of each. NIS compat lines (`+`, `-`) and malformed lines are skipped.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// The user database.
const PASSWD: &str = "/etc/passwd";
/// The group database.
const GROUP: &str = "/etc/group";
/// Cap on how much of an account file is read.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
}

/// A name that is not in the account files, or an unreadable file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupError {
    /// What was looked up and why it failed.
    pub message: String,
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LookupError {}

/// Looks up a user by name (or numeric id) in /etc/passwd.
///
/// A number is accepted only when some entry has that uid: running a hook
/// as an account that does not exist is refused.
pub fn user(name: &str) -> Result<User, LookupError> {
    let passwd = read_account_file(Path::new(PASSWD))?;
    find_user(&passwd, name).ok_or_else(|| LookupError { message: format!("user '{name}' not found in {PASSWD}") })
}

/// Looks up a group id by name (or numeric id) in /etc/group.
///
/// Any number is accepted as a gid, listed or not (chown accepts them too).
pub fn group_id(name: &str) -> Result<u32, LookupError> {
    let group = read_account_file(Path::new(GROUP))?;
    find_group_id(&group, name).ok_or_else(|| LookupError { message: format!("group '{name}' not found in {GROUP}") })
}

/// The supplementary groups of `user` (as initgroups would set them):
/// its primary group plus every group in /etc/group that lists it.
pub fn groups_of(user: &User) -> Result<Vec<u32>, LookupError> {
    let group = read_account_file(Path::new(GROUP))?;
    Ok(supplementary_groups(&group, user))
}

/// Reads at most [`MAX_FILE_BYTES`] of an account file as text.
fn read_account_file(path: &Path) -> Result<String, LookupError> {
    let fail = |e: std::io::Error| LookupError { message: format!("cannot read {}: {e}", path.display()) };
    let mut bytes = Vec::new();
    File::open(path).and_then(|f| f.take(MAX_FILE_BYTES).read_to_end(&mut bytes)).map_err(fail)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// One /etc/group entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// The meaningful lines of an account file: not blank, not a comment, not
/// an NIS compat entry.
fn entries(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim_end).filter(|l| !l.is_empty() && !l.starts_with(['#', '+', '-']))
}

/// Parses `name:password:uid:gid:gecos:home:shell`.
fn parse_passwd_line(line: &str) -> Option<User> {
    let fields: Vec<&str> = line.split(':').collect();
    let [name, _pw, uid, gid, _gecos, home, shell] = fields.as_slice() else { return None };
    if name.is_empty() {
        return None;
    }
    Some(User {
        name: (*name).to_owned(),
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
        home: (*home).to_owned(),
        shell: (*shell).to_owned(),
    })
}

/// Parses `name:password:gid:member,member,...`.
fn parse_group_line(line: &str) -> Option<Group<'_>> {
    let fields: Vec<&str> = line.split(':').collect();
    let [name, _pw, gid, members] = fields.as_slice() else { return None };
    if name.is_empty() {
        return None;
    }
    let members = members.split(',').map(str::trim).filter(|m| !m.is_empty()).collect();
    Some(Group { name, gid: gid.parse().ok()?, members })
}

/// The user called `name` in `passwd`, or, when `name` is a number and no
/// user has that name, the first user with that uid.
fn find_user(passwd: &str, name: &str) -> Option<User> {
    let users = || entries(passwd).filter_map(parse_passwd_line);
    users().find(|u| u.name == name).or_else(|| {
        let uid: u32 = name.parse().ok()?;
        users().find(|u| u.uid == uid)
    })
}

/// The gid of the group called `name` in `group`, or `name` itself when it
/// is a number.
fn find_group_id(group: &str, name: &str) -> Option<u32> {
    entries(group).filter_map(parse_group_line).find(|g| g.name == name).map(|g| g.gid).or_else(|| name.parse().ok())
}

/// `user`'s primary gid followed by the gids of the groups that list it as
/// a member, without duplicates, in file order.
fn supplementary_groups(group: &str, user: &User) -> Vec<u32> {
    let mut gids = vec![user.gid];
    for g in entries(group).filter_map(parse_group_line) {
        if g.members.contains(&user.name.as_str()) && !gids.contains(&g.gid) {
            gids.push(g.gid);
        }
    }
    gids
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD_TEXT: &str = "\
# comment
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin

broken line without colons
short:x:5:5
baduid:x:abc:5::/:/bin/sh
+nisuser::::::
app:x:1001:1001:App,,,:/home/app:/bin/sh
1002:x:1003:1003::/home/numeric:/bin/sh
other:x:1002:1002::/home/other:/bin/sh
";

    const GROUP_TEXT: &str = "\
root:x:0:
daemon:x:1:
app:x:1001:
audio:x:29:app,other
video:x:44: other , app
wheel:x:10:other
dup:x:1001:app
bad:x:notanumber:app
+:::
";

    #[test]
    fn parses_passwd_entries_and_skips_junk() {
        let names: Vec<String> = entries(PASSWD_TEXT).filter_map(parse_passwd_line).map(|u| u.name).collect();
        assert_eq!(names, ["root", "daemon", "app", "1002", "other"]);
        let app = find_user(PASSWD_TEXT, "app").expect("app");
        assert_eq!(
            app,
            User { name: "app".into(), uid: 1001, gid: 1001, home: "/home/app".into(), shell: "/bin/sh".into() }
        );
    }

    #[test]
    fn finds_users_by_name_then_by_listed_uid() {
        assert_eq!(find_user(PASSWD_TEXT, "root").map(|u| u.uid), Some(0));
        assert_eq!(find_user(PASSWD_TEXT, "0").map(|u| u.name), Some("root".into()));
        // A name that looks like a number wins over the uid it spells.
        assert_eq!(find_user(PASSWD_TEXT, "1002").map(|u| u.uid), Some(1003));
        assert_eq!(find_user(PASSWD_TEXT, "1001").map(|u| u.name), Some("app".into()));
        assert_eq!(find_user(PASSWD_TEXT, "nobody"), None);
        assert_eq!(find_user(PASSWD_TEXT, "4242"), None, "unlisted uid is refused");
        assert_eq!(find_user(PASSWD_TEXT, "nisuser"), None);
        assert_eq!(find_user(PASSWD_TEXT, ""), None);
    }

    #[test]
    fn finds_group_ids_by_name_or_any_number() {
        assert_eq!(find_group_id(GROUP_TEXT, "audio"), Some(29));
        assert_eq!(find_group_id(GROUP_TEXT, "44"), Some(44));
        assert_eq!(find_group_id(GROUP_TEXT, "31337"), Some(31337));
        assert_eq!(find_group_id(GROUP_TEXT, "missing"), None);
        assert_eq!(find_group_id(GROUP_TEXT, "bad"), None);
    }

    #[test]
    fn supplementary_groups_start_with_primary_and_dedup() {
        let app = find_user(PASSWD_TEXT, "app").expect("app");
        assert_eq!(supplementary_groups(GROUP_TEXT, &app), [1001, 29, 44]);
        let other = find_user(PASSWD_TEXT, "other").expect("other");
        assert_eq!(supplementary_groups(GROUP_TEXT, &other), [1002, 29, 44, 10]);
        let root = find_user(PASSWD_TEXT, "root").expect("root");
        assert_eq!(supplementary_groups(GROUP_TEXT, &root), [0]);
    }

    #[test]
    fn errors_name_the_account_and_the_file() {
        let e = user("no-such-user-edgedeploy").expect_err("unknown user");
        assert_eq!(e.to_string(), "user 'no-such-user-edgedeploy' not found in /etc/passwd");
        let e = group_id("no-such-group-edgedeploy").expect_err("unknown group");
        assert_eq!(e.to_string(), "group 'no-such-group-edgedeploy' not found in /etc/group");
        let e = read_account_file(Path::new("/nonexistent/passwd")).expect_err("missing file");
        assert!(e.message.starts_with("cannot read /nonexistent/passwd: "), "{e}");
    }

    #[test]
    fn reads_the_real_files() {
        assert_eq!(user("root").map(|u| u.uid), Ok(0));
        assert_eq!(group_id("0"), Ok(0));
    }
}
