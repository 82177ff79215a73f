//! Which files are policies. The registry (`serve`, reloads, the watcher's fingerprint) and the
//! command-line tools (`policy lint`, `policy test`, `classify`) all list files here, so a file
//! lint checks is a file the gateway loads, and the other way round.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Whether a directory entry called `name` is a policy file. Hidden entries are skipped by the
/// walk before this is asked; `README.md` documents a pack and has no front matter.
pub fn is_policy_name(name: &str) -> bool {
    name.ends_with(".md") && !name.eq_ignore_ascii_case("README.md")
}

/// Every policy file under `dir`, recursively, sorted. Hidden entries are skipped: Kubernetes
/// ConfigMap volumes keep the real files under `..data/` and `..<timestamp>/` and expose them
/// through symlinks at the top. Symlinks are followed (those layouts need it), each directory is
/// listed once however many links reach it, and a dangling link is skipped: mid-swap, the next
/// event reloads again.
pub fn policy_files_in(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = Visited::default();
    while let Some(d) = stack.pop() {
        // A symlink back up the tree would otherwise list the same files again at every level
        // (two such links: exponentially many paths, and the walk never ends).
        if !seen.first_visit(&d) {
            continue;
        }
        let entries =
            std::fs::read_dir(&d).map_err(|e| format!("{}: cannot list: {e}", d.display()))?;
        let mut entries = entries
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", d.display()))?;
        // In name order, so that when two links reach one directory the same one names its
        // files on every run, whatever order the file system lists them in.
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for entry in entries {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                subdirs.push(path);
            } else if is_policy_name(&name) {
                out.push(path);
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    out.sort();
    Ok(out)
}

/// The files named on a command line: a file as given (the user chose it, whatever its name), a
/// directory as `policy_files_in` lists it.
pub fn policy_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            out.extend(policy_files_in(p)?);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such file or directory", p.display()));
        }
    }
    Ok(out)
}

/// Directories already listed, by what they are rather than by the path that reached them.
#[derive(Default)]
struct Visited(HashSet<DirKey>);

#[cfg(unix)]
type DirKey = (u64, u64);
#[cfg(not(unix))]
type DirKey = PathBuf;

impl Visited {
    /// False when `dir` was listed before. A directory whose identity cannot be read counts as
    /// new: listing it then fails with the reason.
    fn first_visit(&mut self, dir: &Path) -> bool {
        match dir_key(dir) {
            Some(k) => self.0.insert(k),
            None => true,
        }
    }
}

#[cfg(unix)]
fn dir_key(dir: &Path) -> Option<DirKey> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn dir_key(dir: &Path) -> Option<DirKey> {
    std::fs::canonicalize(dir).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn symlink_loops_are_listed_once() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("pack");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("a.md"), "x").unwrap();
        // Two links back up the tree: without the check, ~2^40 paths.
        std::os::unix::fs::symlink(dir.path(), sub.join("up")).unwrap();
        std::os::unix::fs::symlink(dir.path(), sub.join("again")).unwrap();
        let files = policy_files_in(dir.path()).unwrap();
        assert_eq!(files, vec![sub.join("a.md")]);
    }

    #[test]
    fn names() {
        assert!(is_policy_name("self-harm.md"));
        assert!(is_policy_name("self-harm.next.md"));
        assert!(!is_policy_name("README.md"));
        assert!(!is_policy_name("readme.md"));
        assert!(!is_policy_name("self-harm.cases.jsonl"));
        assert!(!is_policy_name("notes.MD"));
    }

    #[test]
    fn named_files_are_taken_as_given_and_missing_ones_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("policy.txt");
        std::fs::write(&odd, "x").unwrap();
        assert_eq!(
            policy_files(std::slice::from_ref(&odd)).unwrap(),
            vec![odd.clone()]
        );
        let e = policy_files(&[dir.path().join("nope.md")]).unwrap_err();
        assert!(e.ends_with("nope.md: no such file or directory"), "{e}");
    }
}
