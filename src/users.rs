//! Users and groups from /etc/passwd and /etc/group, read directly: a static
//! musl binary has no NSS. INTERFACE (owned by the hooks work).

use std::fmt;

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
pub fn user(_name: &str) -> Result<User, LookupError> {
    todo!("hooks work")
}

/// Looks up a group id by name (or numeric id) in /etc/group.
pub fn group_id(_name: &str) -> Result<u32, LookupError> {
    todo!("hooks work")
}

/// The supplementary groups of `user` (as initgroups would set them):
/// its primary group plus every group in /etc/group that lists it.
pub fn groups_of(_user: &User) -> Result<Vec<u32>, LookupError> {
    todo!("hooks work")
}
