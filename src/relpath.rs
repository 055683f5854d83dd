//! Relative paths as they appear in manifests and the ledger.
//!
//! A [`RelPath`] is valid UTF-8, uses `/` as its only separator, and has no
//! empty, `.` or `..` component, so it can never point outside the root it is
//! joined to. Manifest entries are ordered by [`RelPath::cmp_components`]:
//! component by component, each compared as bytes, which is the order of a
//! depth-first walk that visits directory entries sorted by name.

use std::cmp::Ordering;
use std::fmt;
use std::path::{Path, PathBuf};

/// A validated relative path (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RelPath(String);

/// Why a string is not a valid [`RelPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelPathError {
    /// The path is empty.
    #[error("path is empty")]
    Empty,
    /// The path starts with `/`.
    #[error("path is absolute")]
    Absolute,
    /// A component is empty, `.` or `..`.
    #[error("path has an empty, '.' or '..' component")]
    BadComponent,
    /// The path contains a NUL byte.
    #[error("path contains a NUL byte")]
    Nul,
}

impl RelPath {
    /// Validates `s` as a relative path.
    ///
    /// # Errors
    /// Returns the first rule `s` breaks.
    pub fn new(s: impl Into<String>) -> Result<Self, RelPathError> {
        let s = s.into();
        if s.is_empty() {
            return Err(RelPathError::Empty);
        }
        if s.starts_with('/') {
            return Err(RelPathError::Absolute);
        }
        if s.contains('\0') {
            return Err(RelPathError::Nul);
        }
        if s.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(RelPathError::BadComponent);
        }
        Ok(RelPath(s))
    }

    /// Builds the relative path of `path` under `root`.
    ///
    /// Returns `None` when `path` is not under `root` or a component is not
    /// valid UTF-8.
    pub fn from_fs(root: &Path, path: &Path) -> Option<Self> {
        let rel = path.strip_prefix(root).ok()?;
        let mut out = String::new();
        for comp in rel.components() {
            let std::path::Component::Normal(c) = comp else {
                return None;
            };
            if !out.is_empty() {
                out.push('/');
            }
            out.push_str(c.to_str()?);
        }
        RelPath::new(out).ok()
    }

    /// The path as a `/`-separated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Joins this path under `root`.
    pub fn to_fs(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        p.extend(self.0.split('/'));
        p
    }

    /// The manifest order: component by component, each compared as bytes.
    pub fn cmp_components(&self, other: &Self) -> Ordering {
        cmp_components(&self.0, &other.0)
    }
}

/// Compares two `/`-separated paths component by component (see the module
/// documentation). Equivalent to comparing the byte strings with `/` ranked
/// below every other byte.
pub fn cmp_components(a: &str, b: &str) -> Ordering {
    // `/` ranked as 0 is below every byte a path can hold (no NUL), so this
    // bytewise comparison equals the component-by-component one.
    let key = |c: u8| if c == b'/' { 0 } else { c };
    a.bytes().map(key).cmp(b.bytes().map(key))
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_escapes_and_empties() {
        assert_eq!(RelPath::new(""), Err(RelPathError::Empty));
        assert_eq!(RelPath::new("/etc/passwd"), Err(RelPathError::Absolute));
        assert_eq!(RelPath::new("a/../b"), Err(RelPathError::BadComponent));
        assert_eq!(RelPath::new("a//b"), Err(RelPathError::BadComponent));
        assert_eq!(RelPath::new("a/"), Err(RelPathError::BadComponent));
        assert_eq!(RelPath::new("./a"), Err(RelPathError::BadComponent));
        assert_eq!(RelPath::new("a\0b"), Err(RelPathError::Nul));
        assert!(RelPath::new("patient 1/study ü/IM 0001.dcm").is_ok());
    }

    #[test]
    fn component_order_matches_sorted_walk() {
        // Byte order would put "a.txt" before "a/b"; a walk sorted by name
        // visits directory "a" (and its children) first.
        let mut v = vec!["a.txt", "a/b", "a-b", "a/a/z", "b", "a"];
        v.sort_by(|x, y| cmp_components(x, y));
        assert_eq!(v, ["a", "a/a/z", "a/b", "a-b", "a.txt", "b"]);
    }

    #[test]
    fn bytewise_key_equals_component_comparison() {
        let paths = [
            "a", "a/b", "a/b/c", "a.txt", "a-b", "ab", "a/a", "b/a", "a b/c", "é/x", "e/x",
        ];
        for x in paths {
            for y in paths {
                assert_eq!(
                    cmp_components(x, y),
                    x.split('/').cmp(y.split('/')),
                    "{x} vs {y}"
                );
            }
        }
    }

    #[test]
    fn joins_under_root() {
        let p = RelPath::new("x/y z/w").unwrap();
        assert_eq!(p.to_fs(Path::new("/r")), PathBuf::from("/r/x/y z/w"));
        assert_eq!(
            RelPath::from_fs(Path::new("/r"), Path::new("/r/x/y z/w")),
            Some(p)
        );
    }
}
