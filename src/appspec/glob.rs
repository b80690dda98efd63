//! The globs of `permissions[].pattern` and `except`: `*` (any run of
//! characters within one path component), `?` (one character within a
//! component) and `**` as a whole component (any number of components).

/// True when the `/`-separated `path` matches `pattern` entirely.
pub(super) fn matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    match_components(&pattern, &path)
}

/// Component-wise match; `**` components match zero or more components.
/// Dynamic programming over (pattern, path) suffixes: O(n*m), no recursion.
fn match_components(pattern: &[&str], path: &[&str]) -> bool {
    let width = path.len() + 1;
    // suffix[j] == "pattern[i..] matches path[j..]" for the current i.
    let mut suffix = vec![false; width];
    suffix[path.len()] = true;
    for part in pattern.iter().rev() {
        let mut current = vec![false; width];
        for j in (0..width).rev() {
            current[j] = if *part == "**" {
                suffix[j] || (j < path.len() && current[j + 1])
            } else {
                j < path.len() && suffix[j + 1] && match_component(part, path[j])
            };
        }
        suffix = current;
    }
    suffix[0]
}

/// Wildcard match of one component: `*` any run, `?` one character
/// (`**` inside a component behaves as `*`). Backtracks to the last `*`
/// only: O(n*m) at worst.
fn match_component(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(c) if *c == '?' || *c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    p = sp + 1;
                    n = sn + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_stays_within_a_component() {
        assert!(matches("*.txt", "my-file-1.txt"));
        assert!(matches("*-3.txt", "my-file-3.txt"));
        assert!(!matches("*-3.txt", "my-file-2.txt"));
        assert!(!matches("*.txt", "my-folder-1/my-file-4.txt"));
        assert!(matches("*my-folder*", "my-folder-1"));
        assert!(!matches("*my-folder*", "my-folder-2/my-folder-3"));
        assert!(matches("*", "a"));
        assert!(!matches("*", "a/b"));
    }

    #[test]
    fn question_mark_is_one_character() {
        assert!(matches("file?.txt", "file1.txt"));
        assert!(!matches("file?.txt", "file.txt"));
        assert!(!matches("file?.txt", "file12.txt"));
        assert!(!matches("a?b", "a/b"));
    }

    #[test]
    fn double_star_spans_components() {
        assert!(matches("**", "a"));
        assert!(matches("**", "a/b/c"));
        assert!(matches("**/*.txt", "a.txt"));
        assert!(matches("**/*.txt", "a/b/c.txt"));
        assert!(!matches("**/*.txt", "a/b/c.conf"));
        assert!(matches("a/**/z", "a/z"));
        assert!(matches("a/**/z", "a/b/c/z"));
        assert!(!matches("a/**/z", "b/c/z"));
        assert!(matches("a**b", "axxb"));
    }

    #[test]
    fn literal_match_is_exact() {
        assert!(matches("my-file-8.txt", "my-file-8.txt"));
        assert!(!matches("my-file-8.txt", "my-file-8.txt.bak"));
        assert!(matches("[x]", "[x]"));
    }

    #[test]
    fn pathological_patterns_finish_quickly() {
        let pattern = "*a*a*a*a*a*a*a*a*a*a*b";
        let name = "a".repeat(5000);
        assert!(!matches(pattern, &name));
        let deep = vec!["**"; 200].join("/");
        let path = vec!["x"; 200].join("/");
        assert!(matches(&deep, &path));
    }
}
