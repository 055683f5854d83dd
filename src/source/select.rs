//! Which files of a tree a run carries: `--include`/`--exclude` filters in
//! rclone's syntax and order, and a list of paths (`--files-from`, or one
//! shard of a split) (`docs/selection.md`).
//!
//! Filters are rules tried in order, the first that matches deciding:
//! every `--include` (in the order given), then every `--exclude`, then,
//! if there was any include, an implicit exclude of everything, as rclone
//! builds them (`fs/filter/rules.go`, `parseRules`). A pattern matches
//! rclone's way: anchored at the root with a leading `/`, otherwise at any
//! depth; `*` stays within one component, `**` crosses them; a trailing
//! `/` names a directory and everything under it. Globs are compiled by
//! `globset`.
//!
//! A list is matched against the walk as a merge: both are in component
//! order, so a shard's list streams from its file in constant memory
//! (`--files-from`, in any order, is read and sorted first). A listed path
//! the walk does not find is reported as a failure: the list promised it.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};

use super::SourceEntry;
use crate::relpath::{RelPath, cmp_components};

/// Errors reading a selection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SelectError {
    /// A pattern that is not a glob.
    #[error("{flag} {pattern:?}: {reason}")]
    Pattern {
        /// The flag that gave it.
        flag: &'static str,
        /// The pattern.
        pattern: String,
        /// Why it is refused.
        reason: String,
    },
    /// A list file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The list.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line of a list is not a relative path inside the tree.
    #[error("{path}, line {line}: {reason}")]
    Line {
        /// The list.
        path: PathBuf,
        /// Its 1-based line number.
        line: u64,
        /// Why.
        reason: String,
    },
}

/// One filter rule as given: include or exclude, and its pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterRule {
    /// `include` or `exclude`.
    pub action: FilterAction,
    /// The pattern as given.
    pub pattern: String,
}

/// What a rule does with what it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterAction {
    /// Carry it.
    Include,
    /// Leave it out.
    Exclude,
}

impl FilterAction {
    /// Its word, as the manifest spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterAction::Include => "include",
            FilterAction::Exclude => "exclude",
        }
    }
}

/// Compiled filters, in the order they are tried.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    rules: Vec<FilterRule>,
    matchers: Vec<(FilterAction, GlobMatcher)>,
    implicit_exclude: bool,
}

impl Filters {
    /// rclone's order: the includes, then the excludes, then (with any
    /// include) everything else excluded.
    ///
    /// # Errors
    /// A pattern globset refuses, or rclone's `{{regexp}}` form (not
    /// supported).
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, SelectError> {
        let mut f = Filters::default();
        for (flag, action, patterns) in [
            ("--include", FilterAction::Include, include),
            ("--exclude", FilterAction::Exclude, exclude),
        ] {
            for p in patterns {
                f.matchers.push((action, compile(flag, p)?));
                f.rules.push(FilterRule {
                    action,
                    pattern: p.clone(),
                });
            }
        }
        f.implicit_exclude = !include.is_empty();
        Ok(f)
    }

    /// No rule at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules as given, in the order they are tried.
    pub fn rules(&self) -> &[FilterRule] {
        &self.rules
    }

    /// Whether `path` (relative, `/`-separated) is carried.
    pub fn admits(&self, path: &str) -> bool {
        for (action, m) in &self.matchers {
            if m.is_match(path) {
                return *action == FilterAction::Include;
            }
        }
        !self.implicit_exclude
    }
}

/// One rclone pattern as a glob over the whole relative path.
fn compile(flag: &'static str, pattern: &str) -> Result<GlobMatcher, SelectError> {
    let refuse = |reason: &str| SelectError::Pattern {
        flag,
        pattern: pattern.to_owned(),
        reason: reason.to_owned(),
    };
    if pattern.is_empty() {
        return Err(refuse("is empty"));
    }
    if pattern.contains("{{") {
        return Err(refuse(
            "rclone's {{regexp}} form is not supported; use a glob",
        ));
    }
    let (anchored, rest) = match pattern.strip_prefix('/') {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    // A directory pattern matches everything under it.
    let body = match rest.strip_suffix('/') {
        Some(dir) => format!("{dir}/**"),
        None => rest.to_owned(),
    };
    let glob = if anchored { body } else { format!("**/{body}") };
    GlobBuilder::new(&glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| refuse(&e.kind().to_string()))
}

/// Where a list of paths comes from.
#[derive(Debug, Clone)]
pub enum ListSource {
    /// `--files-from`: any order, blank lines and `#`/`;` comments
    /// ignored, a leading `/` or `./` dropped (as rclone reads it); held
    /// sorted in memory.
    FilesFrom(PathBuf),
    /// A split's shard list: one relative path per line, in component
    /// order, streamed.
    Shard(PathBuf),
}

impl ListSource {
    /// The list's file.
    pub fn path(&self) -> &Path {
        match self {
            ListSource::FilesFrom(p) | ListSource::Shard(p) => p,
        }
    }
}

/// Which files of the tree a run carries.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The filters.
    pub filters: Filters,
    /// Only these paths, when set.
    pub list: Option<ListSource>,
}

impl Selection {
    /// Everything (no filter, no list).
    pub fn is_everything(&self) -> bool {
        self.filters.is_empty() && self.list.is_none()
    }
}

/// Reads a shard list: relative paths, one per line, strictly increasing
/// in component order.
///
/// # Errors
/// The file cannot be read, or a line is not a relative path or is out of
/// order.
pub fn read_shard_list(
    path: &Path,
) -> Result<impl Iterator<Item = Result<RelPath, SelectError>> + Send + use<>, SelectError> {
    let file = File::open(path).map_err(|source| SelectError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let path = path.to_path_buf();
    let mut prev: Option<RelPath> = None;
    let mut n = 0u64;
    Ok(BufReader::new(file).lines().map(move |line| {
        n += 1;
        let line = line.map_err(|source| SelectError::Io {
            path: path.clone(),
            source,
        })?;
        let bad = |reason: String| SelectError::Line {
            path: path.clone(),
            line: n,
            reason,
        };
        let rel = RelPath::new(line).map_err(|e| bad(e.to_string()))?;
        if let Some(p) = &prev
            && p.cmp_components(&rel) != std::cmp::Ordering::Less
        {
            return Err(bad(format!(
                "{rel:?} is not after {p:?} in component order (lists are sorted, without repeats)"
            )));
        }
        prev = Some(rel.clone());
        Ok(rel)
    }))
}

/// Reads a `--files-from` list, sorted in component order, repeats dropped.
///
/// # Errors
/// The file cannot be read, or a line names no path inside the tree.
pub fn read_files_from(path: &Path) -> Result<Vec<RelPath>, SelectError> {
    let file = File::open(path).map_err(|source| SelectError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| SelectError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let t = line.trim_end_matches('\r');
        if t.trim().is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        let t = t.trim_start_matches("./").trim_start_matches('/');
        let rel = RelPath::new(t).map_err(|e| SelectError::Line {
            path: path.to_path_buf(),
            line: i as u64 + 1,
            reason: e.to_string(),
        })?;
        out.push(rel);
    }
    out.sort_by(|a, b| a.cmp_components(b));
    out.dedup();
    Ok(out)
}

impl SelectError {
    /// The file concerned (the list; for a pattern, nothing: empty).
    pub fn path(&self) -> &Path {
        match self {
            SelectError::Io { path, .. } | SelectError::Line { path, .. } => path,
            SelectError::Pattern { .. } => Path::new(""),
        }
    }
}

/// What a selected walk left out, counted as it goes.
#[derive(Debug, Clone, Default)]
pub struct LeftOut(Arc<AtomicU64>);

impl LeftOut {
    /// Files the selection left out so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A list's paths, merged against the walk.
type Paths = Box<dyn Iterator<Item = Result<RelPath, SelectError>> + Send>;

/// [`super::walk`] through a selection: only selected files come out (an
/// excluded entry only if the filters admit its path; none with a list,
/// which names regular files only); every listed path the walk does not
/// find comes out as a failure, in order.
///
/// # Errors
/// The list cannot be opened.
pub fn walk(
    root: &Path,
    selection: &Selection,
    left_out: LeftOut,
) -> Result<Box<dyn Iterator<Item = SourceEntry> + Send>, SelectError> {
    let entries = super::walk(root);
    if selection.is_everything() {
        return Ok(Box::new(entries));
    }
    let (paths, list_name): (Option<Paths>, String) = match &selection.list {
        None => (None, String::new()),
        Some(l) => {
            let name = l
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let paths: Paths = match l {
                ListSource::Shard(p) => Box::new(read_shard_list(p)?),
                ListSource::FilesFrom(p) => Box::new(read_files_from(p)?.into_iter().map(Ok)),
            };
            (Some(paths), name)
        }
    };
    Ok(Box::new(Selected {
        entries: Box::new(entries),
        paths: paths.map(Iterator::peekable),
        filters: selection.filters.clone(),
        root: root.to_path_buf(),
        list_name,
        left_out,
        out: std::collections::VecDeque::new(),
        done: false,
    }))
}

/// The walk and the list, merged.
struct Selected {
    entries: Box<dyn Iterator<Item = SourceEntry> + Send>,
    paths: Option<std::iter::Peekable<Paths>>,
    filters: Filters,
    root: PathBuf,
    list_name: String,
    left_out: LeftOut,
    out: std::collections::VecDeque<SourceEntry>,
    done: bool,
}

impl Iterator for Selected {
    type Item = SourceEntry;

    fn next(&mut self) -> Option<SourceEntry> {
        loop {
            if let Some(e) = self.out.pop_front() {
                return Some(e);
            }
            if self.done {
                return None;
            }
            match self.entries.next() {
                None => {
                    // What the list names after the last file is missing.
                    self.advance_to(None);
                    self.done = true;
                }
                Some(SourceEntry::File(f)) => {
                    let listed = self.advance_to(Some(f.rel.as_str()));
                    if listed && self.filters.admits(f.rel.as_str()) {
                        self.out.push_back(SourceEntry::File(f));
                    } else {
                        self.left_out.add();
                    }
                }
                Some(SourceEntry::Excluded { path, reason }) => {
                    if self.paths.is_none() && self.filters.admits(&path) {
                        self.out.push_back(SourceEntry::Excluded { path, reason });
                    }
                }
                Some(SourceEntry::Failed { path, error }) => {
                    // A directory that could not be read: inside the
                    // selection unless the filters leave its path out.
                    let keep = self.paths.is_some()
                        || path
                            .strip_prefix(&self.root)
                            .ok()
                            .and_then(|p| p.to_str())
                            .is_none_or(|p| self.filters.admits(p));
                    if keep {
                        self.out.push_back(SourceEntry::Failed { path, error });
                    }
                }
            }
        }
    }
}

impl Selected {
    /// Moves the list up to `rel` (to its end with `None`), reporting
    /// every listed path passed over as missing; whether `rel` is listed
    /// (always true without a list).
    fn advance_to(&mut self, rel: Option<&str>) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let Some(paths) = self.paths.as_mut() else {
            return true;
        };
        loop {
            let ord = match (paths.peek(), rel) {
                (None, _) => return false,
                (Some(Ok(p)), Some(r)) => cmp_components(p.as_str(), r),
                (Some(_), _) => Less,
            };
            match ord {
                Greater => return false,
                Equal => {
                    paths.next();
                    return true;
                }
                Less => match paths.next() {
                    Some(Ok(p)) => self.out.push_back(SourceEntry::Failed {
                        path: p.to_fs(&self.root),
                        error: std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            format!(
                                "listed in {} but not a regular file in the source",
                                self.list_name
                            ),
                        ),
                    }),
                    Some(Err(e)) => {
                        // A list that cannot be read further selects
                        // nothing more: the run fails, and is not sealed.
                        self.out.push_back(SourceEntry::Failed {
                            path: e.path().to_path_buf(),
                            error: std::io::Error::other(e.to_string()),
                        });
                        let rest: Paths = Box::new(std::iter::empty());
                        self.paths = Some(rest.peekable());
                        return false;
                    }
                    None => return false,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(include: &[&str], exclude: &[&str], path: &str) -> bool {
        let s = |v: &[&str]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        Filters::new(&s(include), &s(exclude)).unwrap().admits(path)
    }

    #[test]
    fn rclone_patterns_and_order() {
        // Unanchored: at any depth; `*` stays in one component.
        assert!(!admitted(&[], &["*.tmp"], "a/b/c.tmp"));
        assert!(!admitted(&[], &["*.tmp"], "c.tmp"));
        assert!(admitted(&[], &["*.tmp"], "a/c.tmp.dcm"));
        // Anchored at the root.
        assert!(!admitted(&[], &["/index.db"], "index.db"));
        assert!(admitted(&[], &["/index.db"], "p1/index.db"));
        // A directory and everything under it.
        assert!(!admitted(&[], &["thumbs/"], "p1/thumbs/a/1.jpg"));
        assert!(admitted(&[], &["thumbs/"], "p1/thumbsx/1.jpg"));
        // Includes first, then excludes, then everything else left out.
        assert!(admitted(&["*.dcm"], &["p2/**"], "p2/x.dcm"));
        assert!(!admitted(&["*.dcm"], &[], "x.jpg"));
        assert!(admitted(&["/p1/**"], &[], "p1/a/b"));
        assert!(!admitted(&["/p1/**"], &[], "p2/a"));
        // `**` crosses components.
        assert!(!admitted(&[], &["/a/**/z"], "a/b/c/z"));
    }

    #[test]
    fn regexp_and_empty_patterns_are_refused() {
        let e = Filters::new(&["{{.*}}".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("{{regexp}}"), "{e}");
        assert!(Filters::new(&[], &[String::new()]).is_err());
        assert!(Filters::new(&[], &["a[".into()]).is_err());
    }

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for p in ["a/1", "a/2.tmp", "b/1", "b/2", "c"] {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        d
    }

    fn run(root: &Path, sel: &Selection) -> (Vec<String>, Vec<String>, u64) {
        let left = LeftOut::default();
        let (mut files, mut missing) = (Vec::new(), Vec::new());
        for e in walk(root, sel, left.clone()).unwrap() {
            match e {
                SourceEntry::File(f) => files.push(f.rel.to_string()),
                SourceEntry::Failed { path, .. } => missing.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                ),
                SourceEntry::Excluded { .. } => {}
            }
        }
        (files, missing, left.get())
    }

    #[test]
    fn a_shard_list_merges_with_the_walk() {
        let d = tree();
        let list = d.path().join("../shard.list");
        std::fs::write(&list, "a/1\na/15\nb/2\nz\n").unwrap();
        let sel = Selection {
            filters: Filters::default(),
            list: Some(ListSource::Shard(list.clone())),
        };
        let (files, missing, left) = run(d.path(), &sel);
        assert_eq!(files, ["a/1", "b/2"]);
        assert_eq!(missing, ["a/15", "z"]);
        assert_eq!(left, 3);
        std::fs::remove_file(list).unwrap();
    }

    #[test]
    fn an_unsorted_shard_list_fails_at_the_line() {
        let d = tree();
        let list = d.path().join("l");
        std::fs::write(&list, "b/1\na/1\n").unwrap();
        let e = read_shard_list(&list)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn files_from_is_sorted_and_filters_still_apply() {
        let d = tree();
        let list = d.path().join("../ff.txt");
        std::fs::write(&list, "# comment\n/c\n./a/2.tmp\na/1\n\nb/1\n").unwrap();
        let sel = Selection {
            filters: Filters::new(&[], &["*.tmp".into()]).unwrap(),
            list: Some(ListSource::FilesFrom(list.clone())),
        };
        let (files, missing, left) = run(d.path(), &sel);
        assert_eq!(files, ["a/1", "b/1", "c"]);
        assert!(missing.is_empty());
        assert_eq!(left, 2);
        std::fs::remove_file(list).unwrap();
    }
}
