//! Symbolic links of the revision, checked where they will be installed: a
//! link that stays inside the deployment archive may still lead outside its
//! `files` destination once installed (`app/cfg -> ../conf/x` with `app`
//! and `conf` mapped to different places), and is refused by default.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::InstallError;
use super::plan::{Kind, SourceItem};
use crate::appspec::FileMapping;
use crate::resolve::{self, Tree};

/// Checks every link in `items` (but those `retained`) against its mapping's destination: where it leads once installed, with
/// the other links of this install and those already on disk followed as
/// the kernel would.
pub(super) fn check(
    items: &[SourceItem],
    mappings: &[FileMapping],
    archive: &Path,
    retained: &[PathBuf],
) -> Result<(), InstallError> {
    // What the install puts at each path; a retained path keeps what is on disk.
    let mut planned: HashMap<&Path, &SourceItem> = items.iter().map(|i| (i.dst.as_path(), i)).collect();
    for path in retained {
        planned.remove(path.as_path());
    }
    let mut steps = resolve::DEFAULT_STEPS;
    for item in items {
        let owner = item.mapping;
        if item.kind != Kind::Symlink || !planned.contains_key(item.dst.as_path()) {
            continue;
        }
        let destination = &mappings[owner].destination;
        let leaves = |detail: String| InstallError::LinkLeaves {
            mapping: owner,
            entry: item.src.strip_prefix(archive).unwrap_or(&item.src).to_path_buf(),
            dst: item.dst.clone(),
            destination: destination.clone(),
            detail,
        };
        let target = fs::read_link(&item.src).map_err(|e| leaves(format!("cannot be read ({e})")))?;
        let start = item.dst.parent().and_then(|p| p.strip_prefix(destination).ok()).unwrap_or(Path::new(""));
        let mut link = |rel: &Path| installed_link(&planned, destination, rel);
        let mut tree = Tree { root: Some(destination), link: &mut link, steps: &mut steps };
        if let Err(e) = resolve::resolve(&mut tree, start, &target, true) {
            return Err(leaves(format!("points to {} and {e}", target.display())));
        }
    }
    Ok(())
}

/// The target of the link at `destination/rel` once installed: a planned
/// link's, nothing for a planned file or directory, else what is on disk.
fn installed_link(
    planned: &HashMap<&Path, &SourceItem>,
    destination: &Path,
    rel: &Path,
) -> io::Result<Option<PathBuf>> {
    let path = destination.join(rel);
    match planned.get(path.as_path()) {
        Some(item) if item.kind == Kind::Symlink => fs::read_link(&item.src).map(Some),
        Some(_) => Ok(None),
        None => resolve::disk_link(destination, rel),
    }
}
