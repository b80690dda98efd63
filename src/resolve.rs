//! Where a path leads inside a tree when its symbolic links are followed as
//! the kernel would, refusing any step that leaves the tree. A pure walk:
//! the caller says what is a link (from the disk, from a plan, or both), so
//! the same rule serves the unpacked revision (AppSpec, hook scripts, the
//! tree left by the single-top-directory strip) and installed links.
//!
//! Checking a link's target lexically is not enough: with `d -> .`, the
//! target `d/../x` looks like it stays inside but leads to the parent of the
//! tree. So every component that is a link is replaced by its target before
//! the next `..` is applied.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Most links followed in one resolution, as Linux's own limit.
pub const MAX_HOPS: u32 = 40;

/// A budget of path components walked, shared by the resolutions of one
/// tree so that many deep, chained links cannot make the work explode.
pub const DEFAULT_STEPS: u64 = 4 << 20;

/// The budget of resolutions on disk (one lstat per step, whose own cost
/// grows with the path's depth): far more than real AppSpecs need (a few
/// steps per source), small enough that deep link chains named by many
/// mappings stop in a fraction of a second.
pub const DISK_STEPS: u64 = 1 << 16;

/// Why a path does not resolve inside the tree.
#[derive(Debug)]
pub enum Escape {
    /// It climbs above the tree's root (`..`), or a link on the way is absolute
    /// and outside the tree; `via` is the link that leads out, if one does.
    Leaves {
        /// The link (relative to the root) whose target leaves, if any.
        via: Option<PathBuf>,
    },
    /// More than [`MAX_HOPS`] links on the way.
    TooDeep,
    /// The step budget ran out.
    TooMuchWork,
    /// Asking what a path is failed.
    Io(io::Error),
}

impl std::fmt::Display for Escape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Escape::Leaves { via: Some(link) } => write!(f, "leads outside through the link {}", link.display()),
            Escape::Leaves { via: None } => f.write_str("leads outside (\"..\" above the root)"),
            Escape::TooDeep => write!(f, "goes through more than {MAX_HOPS} symbolic links"),
            Escape::TooMuchWork => f.write_str("too many or too deep symbolic links to check"),
            Escape::Io(e) => write!(f, "cannot be checked: {e}"),
        }
    }
}

/// The tree being resolved in: its absolute location (absolute link targets
/// under it stay inside; `None`: every absolute target leaves) and what is a
/// link in it.
pub struct Tree<'a> {
    /// Where the tree is, for absolute link targets.
    pub root: Option<&'a Path>,
    /// The target of the link at `rel` (relative to the root), or `None`
    /// when `rel` is not a link (or does not exist).
    pub link: &'a mut dyn FnMut(&Path) -> io::Result<Option<PathBuf>>,
    /// Components left to walk (see [`DEFAULT_STEPS`]).
    pub steps: &'a mut u64,
}

/// Resolves `path` relative to `start` (both relative to the root) and
/// returns where it leads, relative to the root, with no link left in it
/// (the final component is followed only with `follow_final`).
pub fn resolve(tree: &mut Tree<'_>, start: &Path, path: &Path, follow_final: bool) -> Result<PathBuf, Escape> {
    let path = inside_target(tree.root, path).ok_or(Escape::Leaves { via: None })?;
    // Where the walk is, kept up to date by push and pop (not rebuilt per step).
    let mut here = PathBuf::new();
    let mut queue: VecDeque<Part> = start.components().chain(path.components()).map(Part::from).collect();
    let mut via: Option<PathBuf> = None;
    let mut hops = 0;
    while let Some(part) = queue.pop_front() {
        if *tree.steps == 0 {
            return Err(Escape::TooMuchWork);
        }
        *tree.steps -= 1;
        let name = match part {
            Part::Cur => continue,
            Part::Root => {
                here.clear();
                continue;
            }
            Part::Parent if here.pop() => continue,
            Part::Parent => return Err(Escape::Leaves { via }),
            Part::Name(name) => name,
        };
        here.push(name);
        if queue.is_empty() && !follow_final {
            break;
        }
        let Some(target) = (tree.link)(&here).map_err(Escape::Io)? else { continue };
        hops += 1;
        if hops > MAX_HOPS {
            return Err(Escape::TooDeep);
        }
        let link = here.clone();
        here.pop();
        let target = inside_target(tree.root, &target).ok_or_else(|| Escape::Leaves { via: Some(link.clone()) })?;
        // The target is walked before what followed the link.
        for part in target.components().rev() {
            queue.push_front(Part::from(part));
        }
        via = Some(link);
    }
    Ok(here)
}

/// A link target as a path to walk from the link's directory: relative
/// targets as they are, absolute ones as `/`-rooted in the tree when they
/// lie under its location; `None` when an absolute target is outside.
fn inside_target(root: Option<&Path>, target: &Path) -> Option<PathBuf> {
    if target.is_relative() {
        return Some(target.to_path_buf());
    }
    let rest = target.strip_prefix(root?).ok()?;
    Some(Path::new("/").join(rest))
}

/// A path component that owns its name.
#[derive(Debug)]
enum Part {
    Root,
    Cur,
    Parent,
    Name(OsString),
}

impl From<Component<'_>> for Part {
    fn from(part: Component<'_>) -> Self {
        match part {
            Component::RootDir | Component::Prefix(_) => Part::Root,
            Component::CurDir => Part::Cur,
            Component::ParentDir => Part::Parent,
            Component::Normal(name) => Part::Name(name.to_os_string()),
        }
    }
}

/// The link target at `root/rel` on disk, without following anything: the
/// components of `rel` are known not to be links (they come from
/// [`resolve`]'s stack), so the path is walked as it is.
pub fn disk_link(root: &Path, rel: &Path) -> io::Result<Option<PathBuf>> {
    // One readlink per step: EINVAL says "not a link".
    match std::fs::read_link(root.join(rel)) {
        Ok(target) => Ok(Some(target)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidInput
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Resolves `rel` inside the directory `root` on disk (links followed only
/// while they stay inside; the final one too with `follow_final`).
pub fn inside(root: &Path, rel: &Path, follow_final: bool) -> Result<PathBuf, Escape> {
    let mut steps = DISK_STEPS;
    inside_with(root, rel, follow_final, &mut steps)
}

/// [`inside`] with a step budget shared with other resolutions.
pub fn inside_with(root: &Path, rel: &Path, follow_final: bool, steps: &mut u64) -> Result<PathBuf, Escape> {
    let mut link = |p: &Path| disk_link(root, p);
    let mut tree = Tree { root: None, link: &mut link, steps };
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    resolve(&mut tree, Path::new(""), rel, follow_final)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(links: &[(&str, &str)], root: Option<&str>, start: &str, path: &str) -> Result<PathBuf, String> {
        let map: HashMap<PathBuf, PathBuf> = links.iter().map(|(a, b)| (PathBuf::from(a), PathBuf::from(b))).collect();
        let mut link = |p: &Path| Ok(map.get(p).cloned());
        let mut steps = DEFAULT_STEPS;
        let mut tree = Tree { root: root.map(Path::new), link: &mut link, steps: &mut steps };
        resolve(&mut tree, Path::new(start), Path::new(path), true).map_err(|e| e.to_string())
    }

    #[test]
    fn plain_paths_and_parents_inside() {
        assert_eq!(run(&[], None, "a/b", "../c").unwrap(), PathBuf::from("a/c"));
        assert!(run(&[], None, "a", "../../c").is_err());
    }

    #[test]
    fn dot_link_then_parent_leaves() {
        // d -> . makes d/../x the parent of the root: lexically inside, really outside.
        let err = run(&[("d", ".")], None, "", "d/../x").unwrap_err();
        assert!(err.contains("outside"), "{err}");
    }

    #[test]
    fn absolute_targets_inside_the_root_stay_inside() {
        let links = [("a", "/opt/app/b")];
        assert_eq!(run(&links, Some("/opt/app"), "", "a").unwrap(), PathBuf::from("b"));
        let err = run(&[("a", "/etc")], Some("/opt/app"), "", "a").unwrap_err();
        assert!(err.contains("through the link a"), "{err}");
    }

    #[test]
    fn loops_stop_at_forty_hops() {
        let err = run(&[("a", "b"), ("b", "a")], None, "", "a").unwrap_err();
        assert!(err.contains("more than 40"), "{err}");
    }

    #[test]
    fn chains_inside_resolve() {
        assert_eq!(run(&[("a", "b/c"), ("b", "d")], None, "", "a/e").unwrap(), PathBuf::from("d/c/e"));
    }
}
