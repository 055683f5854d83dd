//! Azure Data Box's naming and size rules, checked before anything moves.
//!
//! Data Box copies what lands on its shares into an Azure storage account:
//! the share's type decides the object type (`<account>_BlockBlob`,
//! `<account>_PageBlob`, `<account>_AzFile`), the first folder under a
//! share becomes the container (or file share), and the rest of the path
//! the blob (or file) name. A name Azure would refuse is renamed silently
//! at upload (`DataBox-<GUID>` or a hash of the path, reported only in the
//! copy log), and a file too large for its type fails. [`Placement`] says
//! where a destination lands and [`Placement::check`] names every rule a file
//! would break, reading no file contents. The rules and their sources are
//! listed in `docs/databox.md`. `databox::dicom` holds the other kind of
//! destination rule: what a DICOMweb service refuses, from each header.

use std::fmt;

use serde::Serialize;

pub mod bom;
pub mod copylog;
pub mod device;
pub mod dicom;

/// The Azure object type a Data Box share (or a blob URL) stores into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Block blobs: a `<account>_BlockBlob` share, or a blob URL.
    BlockBlob,
    /// Page blobs (VHDs): a `<account>_PageBlob` share.
    PageBlob,
    /// Azure Files: a `<account>_AzFile` share.
    AzureFiles,
}

impl Profile {
    /// The profile a Data Box share name stands for, from its suffix.
    pub fn from_share_name(name: &str) -> Option<Profile> {
        let (account, kind) = name.rsplit_once('_')?;
        if account.is_empty() {
            return None;
        }
        match kind {
            "BlockBlob" => Some(Profile::BlockBlob),
            "PageBlob" => Some(Profile::PageBlob),
            "AzFile" => Some(Profile::AzureFiles),
            _ => None,
        }
    }

    /// The largest object of this type, in bytes.
    pub fn max_size(self) -> u64 {
        match self {
            // 50,000 blocks of 100 MiB (the limit Data Box documents as
            // "about 4.75 TiB").
            Profile::BlockBlob => 50_000 * 100 * MIB,
            Profile::PageBlob => 8 * TIB,
            Profile::AzureFiles => TIB,
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::BlockBlob => "block blob",
            Profile::PageBlob => "page blob",
            Profile::AzureFiles => "Azure Files",
        })
    }
}

const MIB: u64 = 1 << 20;
const TIB: u64 = 1 << 40;

/// Longest blob name, in characters.
pub const MAX_BLOB_NAME: usize = 1024;
/// Longest blob name through a Data Box's own Blob REST endpoint.
pub const MAX_BLOB_NAME_REST: usize = 880;
/// Most `/`-separated segments in a blob name.
pub const MAX_SEGMENTS: usize = 254;
/// Longest Azure Files path component, in characters.
pub const MAX_FILE_COMPONENT: usize = 255;
/// Longest Azure Files path, in characters.
pub const MAX_FILE_PATH: usize = 2048;
/// Page blobs are written in pages of this many bytes.
pub const PAGE: u64 = 512;
/// Through a Data Box's Blob REST endpoint, page blobs are 4 KiB-aligned
/// ("Azure Data Box Blob storage requirements").
pub const PAGE_REST: u64 = 4096;
/// The largest page blob through a Data Box's Blob REST endpoint.
pub const MAX_PAGE_BLOB_REST: u64 = TIB;

/// A rule of Azure or Data Box that a file (or the destination) breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Rule {
    /// Files directly under a Data Box share root (no container folder).
    ShareRoot,
    /// The container (first folder under the share) is not a valid name.
    ContainerName,
    /// The blob or file name is too long.
    NameTooLong,
    /// The blob name has too many path segments.
    TooManySegments,
    /// A name ends with a dot (or a segment does, which SMB drops).
    TrailingDot,
    /// A character Azure Files does not allow.
    InvalidCharacter,
    /// A page blob whose size is not a multiple of 512 bytes.
    PageAlignment,
    /// Larger than the object type allows.
    TooLarge,
    /// Two names in one folder that differ only by case (they collide on
    /// SMB shares and in Azure Files).
    CaseCollision,
    /// Something already exists at the destination under that name (Data
    /// Box merges folders and overwrites same-named blobs).
    ExistsAtDestination,
    /// A DICOM header that cannot be read (a DICOMweb destination).
    UnreadableHeader,
    /// A UID attribute that is not a DICOM UID (a DICOMweb destination).
    InvalidUid,
    /// An attribute the DICOMweb service requires is absent.
    MissingAttribute,
    /// An implicit-VR transfer syntax (Azure's DICOM service).
    ImplicitVr,
    /// Another file holds the same SOP Instance UID with other bytes.
    DuplicateInstance,
}

impl Rule {
    /// Its stable name, as `--json` and `--skip-violations` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Rule::ShareRoot => "share-root",
            Rule::ContainerName => "container-name",
            Rule::NameTooLong => "name-too-long",
            Rule::TooManySegments => "too-many-segments",
            Rule::TrailingDot => "trailing-dot",
            Rule::InvalidCharacter => "invalid-character",
            Rule::PageAlignment => "page-alignment",
            Rule::TooLarge => "too-large",
            Rule::CaseCollision => "case-collision",
            Rule::ExistsAtDestination => "exists-at-destination",
            Rule::UnreadableHeader => "unreadable-header",
            Rule::InvalidUid => "invalid-uid",
            Rule::MissingAttribute => "missing-attribute",
            Rule::ImplicitVr => "implicit-vr",
            Rule::DuplicateInstance => "duplicate-instance",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One rule one path breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The source-relative path (`/`-separated).
    pub path: String,
    /// The rule.
    pub rule: Rule,
    /// What exactly is wrong, naming the limit.
    pub detail: String,
}

/// Where files land: the object type, whether through a Data Box's REST
/// endpoint, and which container and name prefix a source path maps to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// The object type.
    pub profile: Profile,
    /// Names go through a Data Box's Blob REST endpoint (shorter limit).
    pub rest: bool,
    /// The container every file lands in; `None` when the destination is
    /// a share root, so each file's first folder is its container.
    pub container: Option<String>,
    /// Folders between the container and the source tree (`/`-separated,
    /// possibly empty).
    pub prefix: String,
    /// The block size custody stages a blob in (blob URLs; `None` for a
    /// share, whose uploads the device makes): a block blob holds at most
    /// 50,000 blocks, so this bounds a file's size.
    pub block_size: Option<u64>,
}

/// Whether `name` is a valid container (or file share) name: 3–63
/// characters of lowercase letters, digits and hyphens, starting and ending
/// with a letter or digit, with no two hyphens in a row.
pub fn container_name_problem(name: &str) -> Option<String> {
    let n = name.chars().count();
    if !(3..=63).contains(&n) {
        return Some(format!("{n} characters (3 to 63 allowed)"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!("{c:?} is not a lowercase letter, digit or hyphen"));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some("starts or ends with a hyphen".into());
    }
    if name.contains("--") {
        return Some("two hyphens in a row".into());
    }
    None
}

/// Characters Azure Files does not allow in a name.
const AZURE_FILES_FORBIDDEN: &[char] = &['"', '\\', ':', '|', '<', '>', '*', '?'];

impl Placement {
    /// The target of a local destination path: the Data Box share is the
    /// nearest component named `<account>_BlockBlob|_PageBlob|_AzFile`,
    /// the next one the container, the rest the prefix. `None` when no
    /// component names a share (a plain directory).
    pub fn from_share_path(dest: &std::path::Path) -> Option<Placement> {
        let parts: Vec<String> = dest
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        let (i, profile) = parts
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, p)| Profile::from_share_name(p).map(|pr| (i, pr)))?;
        Some(Placement {
            profile,
            rest: false,
            container: parts.get(i + 1).cloned(),
            prefix: parts.get(i + 2..).map(|p| p.join("/")).unwrap_or_default(),
            block_size: None,
        })
    }

    /// Where files given `dest` land. A directory is placed by the nearest
    /// component naming a Data Box share ([`Placement::from_share_path`]);
    /// with `profile` and no such component, the directory is taken as a
    /// share root of that type. A blob URL is a block blob container (its
    /// Data Box REST endpoint has the shorter name limit). `None`: a plain
    /// directory and no `profile`, so no Data Box rules apply.
    pub fn for_destination(dest: &crate::dest::Target, profile: Option<Profile>) -> Option<Self> {
        let mut placement = match dest {
            crate::dest::Target::Share(path) => match (Self::from_share_path(path), profile) {
                (Some(p), _) => p,
                (None, Some(profile)) => Placement {
                    profile,
                    rest: false,
                    container: None,
                    prefix: String::new(),
                    block_size: None,
                },
                (None, None) => return None,
            },
            crate::dest::Target::Blob(url) => {
                Self::for_blob(&url.container, &url.prefix, url.is_databox_host())
            }
            // A DICOMweb service holds instances, not files: no Data Box
            // placement (its own rules are the DICOM preflight's).
            crate::dest::Target::Dicomweb(_) => return None,
        };
        if let Some(profile) = profile {
            placement.profile = profile;
        }
        Some(placement)
    }

    /// The folders a manifest's files are under in the storage account
    /// (container, then prefix), from the destination it was sealed with.
    ///
    /// # Errors
    /// A destination that is neither a Data Box share nor a blob URL.
    pub(crate) fn folders_of(manifest: &crate::manifest::Manifest) -> Result<Vec<String>, String> {
        let target = crate::dest::Target::parse(std::path::Path::new(&manifest.destination))
            .map_err(|e| e.to_string())?;
        let placement = Self::for_destination(&target, None).ok_or_else(|| {
            format!(
                "destination {} is not a Data Box share or a blob URL",
                manifest.destination
            )
        })?;
        Ok(placement
            .container
            .into_iter()
            .chain(
                placement
                    .prefix
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            )
            .collect())
    }

    /// The target of a blob URL's container and prefix (block blobs, in
    /// blocks of the default size; `rest` for a Data Box's own endpoint).
    pub fn for_blob(container: &str, prefix: &str, rest: bool) -> Placement {
        Placement {
            profile: Profile::BlockBlob,
            rest,
            container: Some(container.to_owned()),
            prefix: prefix.trim_matches('/').to_owned(),
            block_size: Some(crate::dest::blob::DEFAULT_BLOCK_SIZE as u64),
        }
    }

    /// The largest object of the placement's type, in bytes: the type's
    /// own limit, a Data Box endpoint's for page blobs, and what 50,000
    /// blocks of the block size hold.
    pub fn max_size(&self) -> u64 {
        let mut max = self.profile.max_size();
        if self.rest && self.profile == Profile::PageBlob {
            max = max.min(MAX_PAGE_BLOB_REST);
        }
        if let Some(block) = self
            .block_size
            .filter(|_| self.profile == Profile::BlockBlob)
        {
            max = max.min(crate::dest::blob::api::MAX_BLOCKS.saturating_mul(block));
        }
        max
    }

    /// The page size page blobs are aligned to here.
    fn page(&self) -> u64 {
        if self.rest { PAGE_REST } else { PAGE }
    }

    /// Problems with the destination itself (its container name), before
    /// any file.
    pub fn check_destination(&self) -> Vec<Violation> {
        self.container
            .as_deref()
            .and_then(|c| {
                container_name_problem(c).map(|detail| Violation {
                    path: String::new(),
                    rule: Rule::ContainerName,
                    detail: format!("container {c:?}: {detail}"),
                })
            })
            .into_iter()
            .collect()
    }

    /// Every rule the file at source-relative `path` (of `size` bytes)
    /// breaks, in [`Rule`] order. The destination's own container is
    /// checked once by [`Placement::check_destination`], not here.
    pub fn check(&self, path: &str, size: u64) -> Vec<Violation> {
        let mut out = Vec::new();
        let mut add = |rule, detail: String| {
            out.push(Violation {
                path: path.to_owned(),
                rule,
                detail,
            })
        };
        // The object's name within its container.
        let name = match &self.container {
            Some(_) => join(&self.prefix, path),
            None => match path.split_once('/') {
                Some((container, rest)) => {
                    if let Some(p) = container_name_problem(container) {
                        add(
                            Rule::ContainerName,
                            format!("first folder {container:?} becomes the container: {p}"),
                        );
                    }
                    rest.to_owned()
                }
                None => {
                    add(
                        Rule::ShareRoot,
                        "a file directly under the share root (the first folder becomes the container)".into(),
                    );
                    path.to_owned()
                }
            },
        };
        let chars = name.chars().count();
        match self.profile {
            Profile::AzureFiles => {
                if chars > MAX_FILE_PATH {
                    add(
                        Rule::NameTooLong,
                        format!("{chars} characters ({MAX_FILE_PATH} allowed)"),
                    );
                }
                if let Some(seg) = name
                    .split('/')
                    .find(|s| s.chars().count() > MAX_FILE_COMPONENT)
                {
                    add(
                        Rule::NameTooLong,
                        format!(
                            "component of {} characters ({MAX_FILE_COMPONENT} allowed): {seg:?}",
                            seg.chars().count()
                        ),
                    );
                }
            }
            Profile::BlockBlob | Profile::PageBlob => {
                let limit = if self.rest {
                    MAX_BLOB_NAME_REST
                } else {
                    MAX_BLOB_NAME
                };
                if chars > limit {
                    add(
                        Rule::NameTooLong,
                        format!("blob name of {chars} characters ({limit} allowed)"),
                    );
                }
                let segments = name.split('/').count();
                if segments > MAX_SEGMENTS {
                    add(
                        Rule::TooManySegments,
                        format!("{segments} path segments ({MAX_SEGMENTS} allowed)"),
                    );
                }
            }
        }
        if let Some(seg) = path.split('/').find(|s| s.ends_with('.')) {
            add(
                Rule::TrailingDot,
                format!("{seg:?} ends with a dot, which SMB and Azure drop or rename"),
            );
        }
        let forbidden = |c: &char| c.is_control() || AZURE_FILES_FORBIDDEN.contains(c);
        if self.profile == Profile::AzureFiles
            && let Some(c) = path.chars().find(forbidden)
        {
            add(
                Rule::InvalidCharacter,
                format!("{c:?} is not allowed in Azure Files names"),
            );
        } else if let Some(c) = path.chars().find(|c| c.is_control()) {
            add(
                Rule::InvalidCharacter,
                format!("control character {c:?} in the name"),
            );
        }
        if self.profile == Profile::PageBlob && !size.is_multiple_of(self.page()) {
            add(
                Rule::PageAlignment,
                format!("{size} bytes is not a multiple of {}", self.page()),
            );
        }
        let max = self.max_size();
        if size > max {
            let detail = match self.block_size {
                Some(block)
                    if max < self.profile.max_size() && self.profile == Profile::BlockBlob =>
                {
                    format!(
                        "{size} bytes; 50,000 blocks of {} MiB hold at most {max} (a larger --block-size holds more)",
                        block >> 20
                    )
                }
                _ => format!("{size} bytes; a {} holds at most {max}", self.profile),
            };
            add(Rule::TooLarge, detail);
        }
        out
    }
}

fn join(prefix: &str, path: &str) -> String {
    if prefix.is_empty() {
        path.to_owned()
    } else {
        format!("{prefix}/{path}")
    }
}

/// The names already taken at a destination, for the
/// `exists-at-destination` rule: Data Box merges folders into existing
/// containers and overwrites same-named blobs.
pub trait Occupied: fmt::Debug + Send + Sync {
    /// What already holds `path` (relative to the destination root), for
    /// the report, or `None` if the name is free.
    fn occupied(&self, path: &str) -> Option<String>;
}

/// A directory (a mounted share), for `custody scan --dest` before the
/// destination exists: a name is taken if anything is there.
impl Occupied for std::path::PathBuf {
    fn occupied(&self, path: &str) -> Option<String> {
        let at = self.join(path);
        at.symlink_metadata()
            .is_ok()
            .then(|| format!("{} already exists", at.display()))
    }
}

/// What stands in the way of landing files in a directory destination,
/// seen without following links: a symbolic link (or a file) where a
/// directory of the path should be is always in the way; so is anything
/// but a regular file under the file's own name; a regular file there is
/// in the way unless landings may replace it (`--overwrite`).
#[derive(Debug)]
pub struct ShareNames {
    share: crate::dest::share::Share,
    replace: bool,
}

impl ShareNames {
    /// The names in the way in `share`; `replace`: regular files may be
    /// replaced.
    pub fn new(share: crate::dest::share::Share, replace: bool) -> Self {
        ShareNames { share, replace }
    }
}

impl Occupied for ShareNames {
    fn occupied(&self, path: &str) -> Option<String> {
        use crate::dest::share::Kind;
        let rel = crate::relpath::RelPath::new(path).ok()?;
        let at = || self.share.root().join(path).display().to_string();
        match self.share.kind(&rel) {
            Ok(None) => None,
            Ok(Some(Kind::File)) if self.replace => None,
            Ok(Some(Kind::File)) => Some(format!("{} already exists", at())),
            Ok(Some(kind)) => Some(format!("{} is {}", at(), kind.describe())),
            Err(e) => Some(e.to_string()),
        }
    }
}

/// The rules of a [`Placement`] applied to a whole tree, fed one file at a
/// time in walk order (each folder's entries together, as
/// [`crate::source::walk`] yields them): the per-file rules, names that
/// differ only by case within a folder, and, given what the destination
/// already holds, names that are taken there.
#[derive(Debug)]
pub struct Linter {
    /// The Data Box rules; `None` for a plain directory, where only names
    /// in the way count.
    placement: Option<Placement>,
    existing: Option<std::sync::Arc<dyn Occupied>>,
    /// The folders on the current path, root first.
    open: Vec<Folder>,
}

impl Linter {
    /// Checks files against `placement`; with `existing`, also whether each
    /// file's name is already taken at the destination.
    pub fn new(placement: Placement, existing: Option<std::sync::Arc<dyn Occupied>>) -> Self {
        Linter {
            placement: Some(placement),
            existing,
            open: Vec::new(),
        }
    }

    /// Checks only that no file's name is taken (or blocked) at the
    /// destination: a plain directory, which has no Data Box rules.
    pub fn names_only(existing: std::sync::Arc<dyn Occupied>) -> Self {
        Linter {
            placement: None,
            existing: Some(existing),
            open: Vec::new(),
        }
    }

    /// The placement checked against (`None`: names only).
    pub fn placement(&self) -> Option<&Placement> {
        self.placement.as_ref()
    }

    /// Every rule the next file breaks.
    pub fn check(&mut self, path: &str, size: u64) -> Vec<Violation> {
        let mut out = Vec::new();
        if let Some(p) = &self.placement {
            out = p.check(path, size);
            out.extend(self.case(path));
        }
        if let Some(detail) = self.existing.as_ref().and_then(|e| e.occupied(path)) {
            out.push(Violation {
                path: path.to_owned(),
                rule: Rule::ExistsAtDestination,
                detail,
            });
        }
        out
    }

    fn case(&mut self, path: &str) -> Option<Violation> {
        let comps: Vec<&str> = path.split('/').collect();
        let mut diverged = false;
        for (depth, name) in comps.iter().enumerate() {
            if !diverged && self.open.get(depth).is_some_and(|l| l.current == *name) {
                continue;
            }
            if !diverged {
                // The walk has left the folders below this depth for good.
                self.open.truncate(depth + 1);
                diverged = true;
            }
            if self.open.len() == depth {
                self.open.push(Folder::default());
            }
            let folder = &mut self.open[depth];
            let first = folder
                .seen
                .entry(name.to_lowercase())
                .or_insert_with(|| (*name).to_owned());
            folder.collides = (first.as_str() != *name).then(|| first.clone());
            (*name).clone_into(&mut folder.current);
        }
        // A file is ambiguous if its name, or any folder on its path,
        // differs only by case from an earlier sibling.
        self.open
            .iter()
            .take(comps.len())
            .enumerate()
            .find_map(|(depth, f)| {
                let first = f.collides.as_ref()?;
                let folder = comps[..depth].join("/");
                Some(Violation {
                    path: path.to_owned(),
                    rule: Rule::CaseCollision,
                    detail: format!(
                        "{:?} differs only by case from {:?}",
                        join(&folder, &f.current),
                        join(&folder, first)
                    ),
                })
            })
    }
}

/// One folder on the walk's current path.
#[derive(Debug, Default)]
struct Folder {
    /// The entry being walked in it.
    current: String,
    /// Its entries so far, by case-folded name (the first spelling).
    seen: std::collections::HashMap<String, String>,
    /// The earlier entry `current` differs from only by case.
    collides: Option<String>,
}

/// A blob container's listing: a name in it is taken.
impl Occupied for crate::dest::names::Names {
    fn occupied(&self, path: &str) -> Option<String> {
        match self.contains(path) {
            Ok(false) => None,
            Ok(true) => Some(format!("{}/{path} already exists", self.listed())),
            // Refuse rather than risk an overwrite; the message says why.
            Err(e) => Some(format!("cannot tell whether {path} exists: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn rules(t: &Placement, path: &str, size: u64) -> Vec<Rule> {
        t.check(path, size).into_iter().map(|v| v.rule).collect()
    }

    fn share(dest: &str) -> Placement {
        Placement::from_share_path(Path::new(dest)).unwrap()
    }

    #[test]
    fn profiles_from_share_names() {
        assert_eq!(
            Profile::from_share_name("contoso_BlockBlob"),
            Some(Profile::BlockBlob)
        );
        assert_eq!(
            Profile::from_share_name("contoso_PageBlob"),
            Some(Profile::PageBlob)
        );
        assert_eq!(
            Profile::from_share_name("my_acct_AzFile"),
            Some(Profile::AzureFiles)
        );
        assert_eq!(Profile::from_share_name("_BlockBlob"), None);
        assert_eq!(Profile::from_share_name("contoso_blockblob"), None);
        assert_eq!(Profile::from_share_name("pacs"), None);
        assert_eq!(Placement::from_share_path(Path::new("/srv/copy")), None);
        let t = share("/mnt/databox/contoso_BlockBlob/pacs-2024/wave-1/a");
        assert_eq!(t.container.as_deref(), Some("pacs-2024"));
        assert_eq!(t.prefix, "wave-1/a");
        let root = share("/mnt/databox/contoso_PageBlob");
        assert_eq!((root.profile, root.container), (Profile::PageBlob, None));
    }

    #[test]
    fn container_names() {
        for ok in ["abc", "pacs-2024", "a1b", &"a".repeat(63)] {
            assert_eq!(container_name_problem(ok), None, "{ok}");
        }
        for bad in [
            "ab",
            &"a".repeat(64),
            "Pacs",
            "pacs_2024",
            "-pacs",
            "pacs-",
            "pa--cs",
            "päcs",
        ] {
            assert!(container_name_problem(bad).is_some(), "{bad}");
        }
        let t = share("/mnt/databox/contoso_BlockBlob/PACS");
        assert_eq!(t.check_destination()[0].rule, Rule::ContainerName);
        assert!(
            share("/mnt/databox/contoso_BlockBlob/pacs")
                .check_destination()
                .is_empty()
        );
    }

    #[test]
    fn share_root_and_first_folder() {
        let root = share("/mnt/databox/contoso_BlockBlob");
        assert_eq!(rules(&root, "study.dcm", 1), [Rule::ShareRoot]);
        assert_eq!(rules(&root, "Study_1/im.dcm", 1), [Rule::ContainerName]);
        assert!(rules(&root, "study-1/im.dcm", 1).is_empty());
        // Inside a container, the first folder is just a folder.
        let t = share("/mnt/databox/contoso_BlockBlob/pacs");
        assert!(rules(&t, "Study_1/im.dcm", 1).is_empty());
        assert!(rules(&t, "im.dcm", 1).is_empty());
    }

    #[test]
    fn name_length_and_segments() {
        let t = share("/mnt/databox/contoso_BlockBlob/pacs/pre");
        let at_limit = "a".repeat(MAX_BLOB_NAME - 4);
        assert!(rules(&t, &at_limit, 1).is_empty(), "pre/ + 1020 = 1024");
        assert_eq!(rules(&t, &format!("{at_limit}b"), 1), [Rule::NameTooLong]);
        let rest = Placement::for_blob("pacs", "", true);
        assert!(rules(&rest, &"a".repeat(880), 1).is_empty());
        assert_eq!(rules(&rest, &"a".repeat(881), 1), [Rule::NameTooLong]);
        let deep = |n: usize| vec!["d"; n].join("/");
        assert!(rules(&t, &deep(MAX_SEGMENTS - 1), 1).is_empty());
        assert_eq!(rules(&t, &deep(MAX_SEGMENTS), 1), [Rule::TooManySegments]);
        let files = share("/mnt/databox/contoso_AzFile/share");
        assert!(rules(&files, &"a".repeat(255), 1).is_empty());
        assert_eq!(rules(&files, &"a".repeat(256), 1), [Rule::NameTooLong]);
    }

    #[test]
    fn fifty_thousand_blocks_of_the_block_size_bound_a_blob() {
        let mut t = Placement::for_blob("pacs", "", false);
        let eight_mib_max = 50_000 * 8 * MIB;
        assert!(rules(&t, "big.dcm", eight_mib_max).is_empty());
        assert_eq!(rules(&t, "big.dcm", eight_mib_max + 1), [Rule::TooLarge]);
        let v = t.check("big.dcm", eight_mib_max + 1);
        assert!(
            v[0].detail.contains("50,000 blocks of 8 MiB"),
            "{}",
            v[0].detail
        );
        t.block_size = Some(100 * MIB);
        assert!(rules(&t, "big.dcm", eight_mib_max + 1).is_empty());
        // 4.75 TiB, the block blob's own limit, is reached at 100 MiB.
        assert_eq!(t.max_size(), Profile::BlockBlob.max_size());
    }

    #[test]
    fn page_blobs_through_a_data_box_endpoint_are_4_kib_aligned_and_at_most_1_tib() {
        let mut t = Placement::for_blob("vhds", "", true);
        t.profile = Profile::PageBlob;
        assert!(rules(&t, "disk.vhd", 4096 * 1000).is_empty());
        assert_eq!(rules(&t, "disk.vhd", 512 * 1001), [Rule::PageAlignment]);
        assert!(rules(&t, "disk.vhd", TIB).is_empty());
        assert_eq!(rules(&t, "disk.vhd", TIB + 4096), [Rule::TooLarge]);
        // On a share, 512-byte pages and 8 TiB.
        let share_page = share("/mnt/databox/contoso_PageBlob/vhds");
        assert!(rules(&share_page, "disk.vhd", 512 * 1001).is_empty());
        assert!(rules(&share_page, "disk.vhd", TIB + 4096).is_empty());
    }

    #[test]
    fn trailing_dots_and_characters() {
        let t = share("/mnt/databox/contoso_BlockBlob/pacs");
        assert_eq!(rules(&t, "study./im.dcm", 1), [Rule::TrailingDot]);
        assert_eq!(rules(&t, "study/im.", 1), [Rule::TrailingDot]);
        assert!(rules(&t, "study/.hidden", 1).is_empty());
        assert!(rules(&t, "a:b?.dcm", 1).is_empty(), "fine in a blob name");
        let files = share("/mnt/databox/contoso_AzFile/share");
        assert_eq!(rules(&files, "a:b.dcm", 1), [Rule::InvalidCharacter]);
        assert!(rules(&files, "a-b.dcm", 1).is_empty());
        assert_eq!(rules(&t, "a\u{7}b", 1), [Rule::InvalidCharacter]);
    }

    #[test]
    fn sizes() {
        let page = share("/mnt/databox/contoso_PageBlob/vhds");
        assert!(rules(&page, "disk.vhd", 512 * 1000).is_empty());
        assert_eq!(
            rules(&page, "disk.vhd", 512 * 1000 + 1),
            [Rule::PageAlignment]
        );
        assert_eq!(rules(&page, "disk.vhd", 16 * TIB), [Rule::TooLarge]);
        let block = share("/mnt/databox/contoso_BlockBlob/pacs");
        assert!(rules(&block, "x", Profile::BlockBlob.max_size()).is_empty());
        assert_eq!(
            rules(&block, "x", Profile::BlockBlob.max_size() + 1),
            [Rule::TooLarge]
        );
        let files = share("/mnt/databox/contoso_AzFile/share");
        assert_eq!(rules(&files, "x", TIB + 1), [Rule::TooLarge]);
        assert!(rules(&files, "x", TIB).is_empty());
    }

    #[test]
    fn case_collisions_in_walk_order() {
        let mut l = Linter::new(share("/mnt/databox/contoso_BlockBlob/pacs"), None);
        let mut collisions = |paths: &[&str]| -> Vec<String> {
            paths
                .iter()
                .flat_map(|p| l.check(p, 1))
                .filter(|v| v.rule == Rule::CaseCollision)
                .map(|v| v.path)
                .collect()
        };
        // Sorted by name as the walk yields them: "IM1" < "Im1" < "im1".
        let got = collisions(&[
            "P1/IM1.dcm",
            "P1/Im1.dcm",
            "P1/S/x",
            "P1/im2.dcm",
            "P2/IM1.dcm",
            "p1/other",
            "p1/x",
        ]);
        // The same name in another folder (P2) is fine; folder p1 collides
        // with P1 for every file under it.
        assert_eq!(got, ["P1/Im1.dcm", "p1/other", "p1/x"]);
    }

    #[test]
    fn existing_names_at_the_destination() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/old.dcm"), b"x").unwrap();
        let mut l = Linter::new(
            share("/mnt/databox/contoso_BlockBlob/pacs"),
            Some(std::sync::Arc::new(dir.path().to_path_buf())),
        );
        assert_eq!(
            l.check("a/old.dcm", 1)
                .into_iter()
                .map(|v| v.rule)
                .collect::<Vec<_>>(),
            [Rule::ExistsAtDestination]
        );
        assert!(l.check("a/new.dcm", 1).is_empty());
    }
}
