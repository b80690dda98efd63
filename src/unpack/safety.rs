//! The safety rules as pure decisions: entry names, modes, where an entry may
//! land in the tree unpacked so far, and where a symbolic link leads. No I/O
//! here, so every rule is unit-tested without touching the disk.

use std::collections::BTreeMap;

use super::Policy;

/// Longest entry name or link target accepted, in bytes (Linux's PATH_MAX
/// less the NUL). It also bounds the memory one entry's name can take.
pub(super) const MAX_NAME: usize = 4095;

/// Most symbolic links followed while checking one link's target, as
/// Linux's own limit (MAXSYMLINKS).
pub(super) const MAX_HOPS: u32 = 40;

/// Most path components walked while checking all of a bundle's symlinks
/// (each link costs its components, times the links it goes through): a
/// bound on the work a bundle of many deep, chained links can cause.
pub(super) const SYMLINK_STEPS: u64 = 4 << 20;

/// The words each refusal carries, one per rule.
pub(super) mod rule {
    pub const EMPTY_NAME: &str = "empty name";
    pub const NUL_IN_NAME: &str = "NUL byte in name";
    pub const NAME_TOO_LONG: &str = "name too long";
    pub const ABSOLUTE: &str = "absolute path";
    pub const PARENT: &str = "parent directory component";
    pub const LEAVES: &str = "leaves the archive";
    pub const ROOT: &str = "names the archive root";
    pub const THROUGH_SYMLINK: &str = "path goes through a symlink";
    pub const THROUGH_FILE: &str = "path goes through a file";
    pub const DUPLICATE: &str = "duplicate entry";
    pub const SYMLINK_LEAVES: &str = "symlink target leaves the archive";
    pub const SYMLINK_EMPTY: &str = "empty symlink target";
    pub const SYMLINK_NUL: &str = "NUL byte in symlink target";
    pub const SYMLINK_TOO_LONG: &str = "symlink target too long";
    pub const SYMLINK_TOO_DEEP: &str = "symlink chain too deep (more than 40 links)";
    pub const HARDLINK_LEAVES: &str = "hard link target leaves the archive";
    pub const HARDLINK_NOT_FILE: &str = "hard link target is not an earlier file";
    pub const HARDLINK_SELF: &str = "hard link to itself";
    pub const SPECIAL: &str = "special file";
    pub const SETUID: &str = "setuid/setgid bit";
}

/// What a path of the unpacked tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A directory.
    Dir,
    /// A regular file (or a hard link to one).
    File,
    /// A symbolic link (pending until unpacking ends).
    Symlink,
    /// A device, fifo or socket.
    Special,
}

/// What is kept in memory about a path: directories (for their final mode)
/// and pending symlinks. Files and special files are only on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Node {
    /// A directory; `mode` is applied when unpacking ends.
    Dir {
        /// Final permission bits.
        mode: u32,
    },
    /// A symbolic link, created only when unpacking ends.
    Symlink {
        /// The link's target, as stored.
        target: Vec<u8>,
        /// The entry's name as stored, for the refusal message.
        entry: Vec<u8>,
    },
}

impl Node {
    /// The node's kind.
    pub(super) fn kind(&self) -> Kind {
        match self {
            Node::Dir { .. } => Kind::Dir,
            Node::Symlink { .. } => Kind::Symlink,
        }
    }
}

/// Directories and pending symlinks by normalized relative path (`a/b/c`).
/// Invariant: every proper prefix of a path in the tree is a directory.
pub(super) type Nodes = BTreeMap<Vec<u8>, Node>;

/// Why a symlink was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LinkCheck {
    /// It breaks this rule.
    Refused(&'static str),
    /// Checking the bundle's links took more than [`SYMLINK_STEPS`].
    TooMuchWork,
}

/// Turns an entry name into a normalized relative path (`a/b/c`, or empty
/// for the archive root), or says which rule it breaks.
pub(super) fn normalize(raw: &[u8], policy: &Policy) -> Result<Vec<u8>, &'static str> {
    if raw.is_empty() {
        return Err(rule::EMPTY_NAME);
    }
    if raw.contains(&0) {
        return Err(rule::NUL_IN_NAME);
    }
    if raw.len() > MAX_NAME {
        return Err(rule::NAME_TOO_LONG);
    }
    let relative = match raw.strip_prefix(b"/") {
        Some(_) if !policy.allow_absolute_paths => return Err(rule::ABSOLUTE),
        Some(rest) => rest,
        None => raw,
    };
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in relative.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if !policy.allow_parent_components => return Err(rule::PARENT),
            b".." => {
                if parts.pop().is_none() {
                    return Err(rule::LEAVES);
                }
            }
            name => parts.push(name),
        }
    }
    Ok(parts.join(&b'/'))
}

/// What is at an entry's path already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// Nothing: create it.
    Free,
    /// An earlier regular file: remove it, then create (later entry wins).
    File,
    /// An earlier directory, and the entry is a directory too: keep it.
    Dir,
}

/// Where an entry lands: the parents to create first, and what is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    /// Lengths of the path prefixes that are missing directories, shortest first.
    pub missing_parents: Vec<usize>,
    /// What is at the path itself.
    pub slot: Slot,
}

/// Decides whether an entry at `path` may be written given the tree so far
/// (`kind_at` says what a path is). A path through a (pending) symlink or a
/// file is refused, and an entry may replace an earlier regular file but
/// never a directory, symlink or special file.
pub(super) fn plan(kind_at: &dyn Fn(&[u8]) -> Option<Kind>, path: &[u8], is_dir: bool) -> Result<Plan, &'static str> {
    let mut missing_parents = Vec::new();
    let slashes = path.iter().enumerate().filter(|(_, b)| **b == b'/').map(|(i, _)| i);
    for end in slashes {
        match kind_at(&path[..end]) {
            None => missing_parents.push(end),
            Some(Kind::Dir) => {}
            Some(Kind::Symlink) => return Err(rule::THROUGH_SYMLINK),
            Some(Kind::File | Kind::Special) => return Err(rule::THROUGH_FILE),
        }
    }
    let slot = match kind_at(path) {
        None => Slot::Free,
        Some(Kind::File) => Slot::File,
        Some(Kind::Dir) if is_dir => Slot::Dir,
        Some(_) => return Err(rule::DUPLICATE),
    };
    Ok(Plan { missing_parents, slot })
}

/// Checks a symlink target's bytes before it is recorded.
pub(super) fn symlink_target(target: &[u8], policy: &Policy) -> Result<(), &'static str> {
    if target.is_empty() {
        return Err(rule::SYMLINK_EMPTY);
    }
    if target.contains(&0) {
        return Err(rule::SYMLINK_NUL);
    }
    if target.len() > MAX_NAME {
        return Err(rule::SYMLINK_TOO_LONG);
    }
    if target.starts_with(b"/") && !policy.allow_external_symlinks {
        return Err(rule::SYMLINK_LEAVES);
    }
    Ok(())
}

/// Follows the symlink at `link` (a path in `nodes`) through the final
/// tree, component by component, as the kernel would: a component that is
/// itself a symlink is replaced by its target. Refuses a target that climbs
/// above the archive root or is absolute anywhere along the way. Other
/// components are taken lexically (as directories), which can only make the
/// check stricter than the kernel. Each component walked costs one of `steps`.
pub(super) fn check_symlink(nodes: &Nodes, link: &[u8], target: &[u8], steps: &mut u64) -> Result<(), LinkCheck> {
    let leaves = LinkCheck::Refused(rule::SYMLINK_LEAVES);
    if target.starts_with(b"/") {
        return Err(leaves);
    }
    // Where the walk is, as a path; the link's parent to begin with.
    let mut at = link.to_vec();
    pop_component(&mut at);
    // Components still to walk, the next one last.
    let mut todo: Vec<&[u8]> = target.rsplit(|b| *b == b'/').collect();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        *steps = steps.checked_sub(1).ok_or(LinkCheck::TooMuchWork)?;
        match part {
            b"" | b"." => {}
            b".." if at.is_empty() => return Err(leaves),
            b".." => pop_component(&mut at),
            name => {
                let parent_len = at.len();
                if !at.is_empty() {
                    at.push(b'/');
                }
                at.extend_from_slice(name);
                // Nothing longer than MAX_NAME is in the tree: skip the lookup.
                let found = if at.len() <= MAX_NAME { nodes.get(&at) } else { None };
                if let Some(Node::Symlink { target: next, .. }) = found {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return Err(LinkCheck::Refused(rule::SYMLINK_TOO_DEEP));
                    }
                    if next.starts_with(b"/") {
                        return Err(leaves);
                    }
                    at.truncate(parent_len);
                    todo.extend(next.rsplit(|b| *b == b'/'));
                }
            }
        }
    }
    Ok(())
}

/// Drops the last component of a `/`-joined path.
fn pop_component(path: &mut Vec<u8>) {
    let keep = path.iter().rposition(|b| *b == b'/').unwrap_or(0);
    path.truncate(keep);
}

/// The permission bits to give an entry: the archive's (`raw`), or 0644 for
/// files and 0755 for directories when the archive has none. Setuid/setgid
/// bits refuse a file unless allowed; on a directory they are dropped
/// (they grant nothing there but group inheritance) unless allowed.
pub(super) fn entry_mode(raw: Option<u32>, is_dir: bool, policy: &Policy) -> Result<u32, &'static str> {
    let default = if is_dir { 0o755 } else { 0o644 };
    let mode = raw.unwrap_or(default);
    if policy.allow_setuid {
        return Ok(mode & 0o7777);
    }
    if mode & 0o6000 != 0 && !is_dir {
        return Err(rule::SETUID);
    }
    Ok(mode & 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> Policy {
        Policy::default()
    }

    fn relaxed() -> Policy {
        Policy { allow_absolute_paths: true, allow_parent_components: true, ..Policy::default() }
    }

    fn dir() -> Node {
        Node::Dir { mode: 0o755 }
    }

    fn link(target: &str) -> Node {
        Node::Symlink { target: target.as_bytes().to_vec(), entry: Vec::new() }
    }

    fn tree(items: &[(&str, Node)]) -> Nodes {
        items.iter().map(|(p, n)| (p.as_bytes().to_vec(), n.clone())).collect()
    }

    /// `plan` over a tree plus files and special files "on disk".
    fn plan_in(nodes: &Nodes, files: &[&str], path: &str, is_dir: bool) -> Result<Plan, &'static str> {
        let kind_at = |p: &[u8]| match nodes.get(p) {
            Some(node) => Some(node.kind()),
            None if p == b"s" => Some(Kind::Special),
            None => files.iter().any(|f| f.as_bytes() == p).then_some(Kind::File),
        };
        plan(&kind_at, path.as_bytes(), is_dir)
    }

    fn check(nodes: &Nodes, link: &str, target: &str) -> Result<(), LinkCheck> {
        check_symlink(nodes, link.as_bytes(), target.as_bytes(), &mut SYMLINK_STEPS.clone())
    }

    const LEAVES: Result<(), LinkCheck> = Err(LinkCheck::Refused(rule::SYMLINK_LEAVES));

    #[test]
    fn normalize_plain_names() {
        assert_eq!(normalize(b"a/b/c", &strict()), Ok(b"a/b/c".to_vec()));
        assert_eq!(normalize(b"./a//b/./c/", &strict()), Ok(b"a/b/c".to_vec()));
        assert_eq!(normalize(b"./", &strict()), Ok(Vec::new()));
    }

    #[test]
    fn normalize_refuses_by_default() {
        assert_eq!(normalize(b"", &strict()), Err(rule::EMPTY_NAME));
        assert_eq!(normalize(b"a\0b", &strict()), Err(rule::NUL_IN_NAME));
        assert_eq!(normalize(b"/etc/x", &strict()), Err(rule::ABSOLUTE));
        assert_eq!(normalize(b"a/../b", &strict()), Err(rule::PARENT));
        assert_eq!(normalize(&[b'a'; MAX_NAME + 1], &strict()), Err(rule::NAME_TOO_LONG));
    }

    #[test]
    fn normalize_relaxed_stays_inside() {
        assert_eq!(normalize(b"/etc/x", &relaxed()), Ok(b"etc/x".to_vec()));
        assert_eq!(normalize(b"//etc/x", &relaxed()), Ok(b"etc/x".to_vec()));
        assert_eq!(normalize(b"a/../b", &relaxed()), Ok(b"b".to_vec()));
        assert_eq!(normalize(b"a/../../b", &relaxed()), Err(rule::LEAVES));
        assert_eq!(normalize(b"/../etc", &relaxed()), Err(rule::LEAVES));
    }

    #[test]
    fn plan_creates_missing_parents() {
        let nodes = tree(&[("a", dir())]);
        let plan = plan_in(&nodes, &[], "a/b/c", false).expect("plan");
        assert_eq!(plan, Plan { missing_parents: vec![3], slot: Slot::Free });
    }

    #[test]
    fn plan_refuses_paths_through_symlinks_and_files() {
        let nodes = tree(&[("d", link("."))]);
        assert_eq!(plan_in(&nodes, &["f"], "d/x", false), Err(rule::THROUGH_SYMLINK));
        assert_eq!(plan_in(&nodes, &["f"], "f/x", false), Err(rule::THROUGH_FILE));
        assert_eq!(plan_in(&nodes, &[], "s/x", false), Err(rule::THROUGH_FILE));
    }

    #[test]
    fn plan_replaces_files_only() {
        let nodes = tree(&[("d", dir()), ("l", link("f"))]);
        let slot = |path: &str, is_dir: bool| plan_in(&nodes, &["f"], path, is_dir).map(|p| p.slot);
        assert_eq!(slot("f", false), Ok(Slot::File));
        assert_eq!(slot("f", true), Ok(Slot::File));
        assert_eq!(slot("d", true), Ok(Slot::Dir));
        assert_eq!(slot("d", false), Err(rule::DUPLICATE));
        assert_eq!(slot("l", false), Err(rule::DUPLICATE));
        assert_eq!(slot("l", true), Err(rule::DUPLICATE));
        assert_eq!(slot("s", false), Err(rule::DUPLICATE));
    }

    #[test]
    fn symlink_inside_is_accepted() {
        let nodes = tree(&[("a", dir()), ("up", link("a/../a/b"))]);
        assert_eq!(check(&nodes, "up", "a/../a/b"), Ok(()));
        assert_eq!(check(&nodes, "a/l", "../a/b"), Ok(()));
        assert_eq!(check(&nodes, "a/l", "missing/../b"), Ok(()));
        assert_eq!(check(&nodes, "a/l", "../up/.."), Ok(()));
    }

    #[test]
    fn symlink_leaving_is_refused() {
        let nodes = tree(&[("a", dir())]);
        assert_eq!(check(&nodes, "l", ".."), LEAVES);
        assert_eq!(check(&nodes, "a/l", "../../x"), LEAVES);
        assert_eq!(check(&nodes, "a/l", "./../b/../.."), LEAVES);
        assert_eq!(check(&nodes, "l", "/etc"), LEAVES);
    }

    #[test]
    fn symlink_through_dot_link_is_refused() {
        // d -> . makes d/.. the archive's parent, though it looks lexically inside.
        let nodes = tree(&[("d", link(".")), ("x", link("d/../etc"))]);
        assert_eq!(check(&nodes, "d", "."), Ok(()));
        assert_eq!(check(&nodes, "x", "d/../etc"), LEAVES);
    }

    #[test]
    fn symlink_through_deep_link_is_refused() {
        let nodes = tree(&[("a", dir()), ("a/b", dir()), ("a/b/up", link("../..")), ("x", link("a/b/up/.."))]);
        assert_eq!(check(&nodes, "a/b/up", "../.."), Ok(()));
        assert_eq!(check(&nodes, "x", "a/b/up/.."), LEAVES);
    }

    #[test]
    fn symlink_through_absolute_link_is_refused() {
        let nodes = tree(&[("etc", link("/etc"))]);
        assert_eq!(check(&nodes, "p", "etc/passwd"), LEAVES);
    }

    #[test]
    fn symlink_loop_is_refused() {
        let nodes = tree(&[("a", link("b")), ("b", link("a"))]);
        assert_eq!(check(&nodes, "a", "b"), Err(LinkCheck::Refused(rule::SYMLINK_TOO_DEEP)));
    }

    #[test]
    fn symlink_work_is_bounded() {
        let nodes = tree(&[("a", dir())]);
        let mut steps = 3;
        assert_eq!(check_symlink(&nodes, b"l", b"a/b/c", &mut steps), Ok(()));
        assert_eq!(steps, 0);
        assert_eq!(check_symlink(&nodes, b"l", b"a", &mut steps), Err(LinkCheck::TooMuchWork));
    }

    #[test]
    fn symlink_target_bytes() {
        assert_eq!(symlink_target(b"", &strict()), Err(rule::SYMLINK_EMPTY));
        assert_eq!(symlink_target(b"a\0", &strict()), Err(rule::SYMLINK_NUL));
        assert_eq!(symlink_target(b"/etc", &strict()), Err(rule::SYMLINK_LEAVES));
        let open = Policy { allow_external_symlinks: true, ..Policy::default() };
        assert_eq!(symlink_target(b"/etc", &open), Ok(()));
    }

    #[test]
    fn modes() {
        assert_eq!(entry_mode(None, false, &strict()), Ok(0o644));
        assert_eq!(entry_mode(None, true, &strict()), Ok(0o755));
        assert_eq!(entry_mode(Some(0o100755), false, &strict()), Ok(0o755));
        assert_eq!(entry_mode(Some(0o4755), false, &strict()), Err(rule::SETUID));
        assert_eq!(entry_mode(Some(0o2755), false, &strict()), Err(rule::SETUID));
        assert_eq!(entry_mode(Some(0o2775), true, &strict()), Ok(0o775));
        let setuid = Policy { allow_setuid: true, ..Policy::default() };
        assert_eq!(entry_mode(Some(0o4755), false, &setuid), Ok(0o4755));
    }
}
