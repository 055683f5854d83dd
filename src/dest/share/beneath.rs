//! Paths resolved beneath a share's root without following any symbolic
//! link.
//!
//! Every file a [`super::Share`] creates, renames, reads, stats or removes
//! is reached from an open file descriptor of the root, one component at a
//! time as the kernel sees them: `openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS` where the kernel has it (Linux 5.6 and later), and
//! otherwise `openat` with `O_NOFOLLOW | O_DIRECTORY` per component. A
//! symbolic link (or anything that is not a directory) where a directory
//! should be stops the operation with [`Blocked`], naming the component; the
//! final component is likewise never followed. So a link planted in a
//! destination can neither send a landing outside it nor get a rollback to
//! remove what it points at, and there is no window between a check and
//! the use of a path: the check *is* the descriptor the operation uses.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::relpath::RelPath;

/// A component on the way to a path is not a real directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The offending component, relative to the root (`/`-separated).
    pub at: String,
    /// What it is instead.
    pub what: &'static str,
}

/// Why a lookup beneath the root failed.
#[derive(Debug)]
pub enum Error {
    /// A component is a link or not a directory.
    Blocked(Blocked),
    /// Anything else the kernel said.
    Io(io::Error),
}

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Self {
        Error::Io(e.into())
    }
}

/// What is at a path, seen without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A FIFO, socket or device.
    Special,
}

impl Kind {
    /// The kind a stat describes.
    pub fn of_stat(st: &rustix::fs::Stat) -> Kind {
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Special,
        }
    }

    /// How it reads in a message.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::File => "a file",
            Kind::Dir => "a directory",
            Kind::Symlink => "a symbolic link",
            Kind::Special => "not a regular file or directory",
        }
    }
}

/// An open root directory.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Root {
    /// Opens `path` (already resolved by the caller) as the root.
    ///
    /// # Errors
    /// It cannot be opened as a directory.
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(path, DIR_FLAGS, Mode::empty())?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The root's own descriptor.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The absolute path of `rel` under the root, for messages.
    pub fn display(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.path.clone()
        } else {
            self.path.join(rel)
        }
    }

    /// Opens the directory `dir` (relative, `/`-separated; `""` is the
    /// root), without following links; with `create`, makes the missing
    /// directories on the way (mode 0777 less the umask) and returns how
    /// many it made.
    ///
    /// # Errors
    /// [`Error::Blocked`] naming the first component that is not a real
    /// directory; [`Error::Io`] for anything else (including a missing one
    /// without `create`).
    pub fn dir(&self, dir: &str, create: bool) -> Result<(OwnedFd, usize), Error> {
        if dir.is_empty() {
            return Ok((self.fd.try_clone().map_err(Error::Io)?, 0));
        }
        match self.openat2(dir, DIR_FLAGS) {
            Some(Ok(fd)) => return Ok((fd, 0)),
            Some(Err(e)) if !matches!(e, rustix::io::Errno::NOENT if create) => {
                return match e {
                    // A link or a non-directory on the way: say which.
                    rustix::io::Errno::LOOP
                    | rustix::io::Errno::NOTDIR
                    | rustix::io::Errno::XDEV => self.walk(dir, false),
                    e => Err(e.into()),
                };
            }
            _ => {}
        }
        self.walk(dir, create)
    }

    /// The directory holding `rel` and `rel`'s last component.
    ///
    /// # Errors
    /// As [`Root::dir`].
    pub fn parent<'r>(&self, rel: &'r RelPath, create: bool) -> Result<(OwnedFd, &'r str), Error> {
        let (dir, name) = split(rel);
        self.dir(dir, create).map(|(fd, _)| (fd, name))
    }

    /// What is at `rel` (not following it), or `None` if nothing is.
    ///
    /// # Errors
    /// As [`Root::dir`] for the directories on the way; a missing
    /// directory on the way means nothing is there.
    pub fn stat(&self, rel: &RelPath) -> Result<Option<(Kind, rustix::fs::Stat)>, Error> {
        let (dir, name) = match self.parent(rel, false) {
            Ok(p) => p,
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some((Kind::of_stat(&st), st))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens the regular file at `rel` for reading, never through a link.
    ///
    /// # Errors
    /// As [`Root::dir`]; a final component that is a link or not a regular
    /// file is [`Error::Blocked`].
    pub fn open_file(&self, rel: &RelPath) -> Result<File, Error> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = match self.openat2(rel.as_str(), flags) {
            Some(Ok(fd)) => fd,
            Some(Err(
                rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR | rustix::io::Errno::XDEV,
            ))
            | None => {
                let (dir, name) = self.parent(rel, false)?;
                rustix::fs::openat(&dir, name, flags, Mode::empty()).map_err(|e| match e {
                    rustix::io::Errno::LOOP => Error::Blocked(Blocked {
                        at: rel.to_string(),
                        what: Kind::Symlink.describe(),
                    }),
                    e => e.into(),
                })?
            }
            Some(Err(e)) => return Err(e.into()),
        };
        let st = rustix::fs::fstat(&fd)?;
        if Kind::of_stat(&st) != Kind::File {
            return Err(Error::Blocked(Blocked {
                at: rel.to_string(),
                what: Kind::of_stat(&st).describe(),
            }));
        }
        // Opened non-blocking so that a FIFO could not hang the open;
        // a regular file reads the same either way, but clear it.
        rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
        Ok(File::from(fd))
    }

    /// `openat2` beneath the root with no links followed; `None` where the
    /// kernel does not have it.
    #[cfg(target_os = "linux")]
    fn openat2(&self, path: &str, flags: OFlags) -> Option<rustix::io::Result<OwnedFd>> {
        use rustix::fs::ResolveFlags;
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(&self.fd, path, flags, Mode::empty(), how) {
            Err(rustix::io::Errno::NOSYS) => None,
            r => Some(r),
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn openat2(&self, _path: &str, _flags: OFlags) -> Option<rustix::io::Result<OwnedFd>> {
        None
    }

    /// Opens `dir` one component at a time (the portable way, and the one
    /// that can name the component in the way).
    fn walk(&self, dir: &str, create: bool) -> Result<(OwnedFd, usize), Error> {
        let mut fd = self.fd.try_clone().map_err(Error::Io)?;
        let mut made = 0;
        let mut at = 0;
        for comp in dir.split('/') {
            at += comp.len() + usize::from(at > 0);
            let blocked = |what: &'static str| {
                Error::Blocked(Blocked {
                    at: dir[..at].to_owned(),
                    what,
                })
            };
            let next = match rustix::fs::openat(&fd, comp, DIR_FLAGS, Mode::empty()) {
                Err(rustix::io::Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&fd, comp, Mode::from_raw_mode(0o777)) {
                        Ok(()) => made += 1,
                        // Made by a worker landing a sibling at the same time.
                        Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    rustix::fs::openat(&fd, comp, DIR_FLAGS, Mode::empty())
                }
                r => r,
            };
            fd = match next {
                Ok(next) => next,
                Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                    let what = rustix::fs::statat(&fd, comp, AtFlags::SYMLINK_NOFOLLOW).map_or(
                        "not a directory",
                        |st| match Kind::of_stat(&st) {
                            Kind::Symlink => Kind::Symlink.describe(),
                            Kind::File => "a file, not a directory",
                            _ => "not a directory",
                        },
                    );
                    return Err(blocked(what));
                }
                Err(e) => return Err(e.into()),
            };
        }
        Ok((fd, made))
    }
}

/// `rel`'s directory (`""` for the root) and last component.
pub fn split(rel: &RelPath) -> (&str, &str) {
    rel.as_str().rsplit_once('/').unwrap_or(("", rel.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn rel(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn links_on_the_way_are_named_and_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("x"), b"secret").unwrap();
        symlink(&outside, root.join("a/link")).unwrap();
        std::fs::write(root.join("a/file"), b"f").unwrap();
        let r = Root::open(&root).unwrap();
        for create in [false, true] {
            match r.dir("a/link", create) {
                Err(Error::Blocked(b)) => {
                    assert_eq!(b.at, "a/link");
                    assert_eq!(b.what, "a symbolic link");
                }
                other => panic!("{other:?}"),
            }
        }
        match r.parent(&rel("a/file/y"), true) {
            Err(Error::Blocked(b)) => assert_eq!(b.at, "a/file"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            r.open_file(&rel("a/link/x")),
            Err(Error::Blocked(_))
        ));
        // The final component is not followed either.
        symlink(outside.join("x"), root.join("a/to-file")).unwrap();
        assert!(matches!(
            r.open_file(&rel("a/to-file")),
            Err(Error::Blocked(Blocked {
                what: "a symbolic link",
                ..
            }))
        ));
        assert_eq!(r.stat(&rel("a/to-file")).unwrap().unwrap().0, Kind::Symlink);
        assert!(r.stat(&rel("nothing/here")).unwrap().is_none());
        assert!(matches!(r.stat(&rel("a/link/x")), Err(Error::Blocked(_))));
    }

    #[test]
    fn create_makes_missing_directories_and_counts_them() {
        let t = tempfile::tempdir().unwrap();
        let r = Root::open(t.path()).unwrap();
        let (_, made) = r.dir("x/y/z", true).unwrap();
        assert_eq!(made, 3);
        let (_, made) = r.dir("x/y/z", true).unwrap();
        assert_eq!(made, 0);
        assert!(t.path().join("x/y/z").is_dir());
        assert!(
            matches!(r.dir("x/q", false), Err(Error::Io(e)) if e.kind() == io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn a_fifo_is_opened_without_blocking_and_refused() {
        let t = tempfile::tempdir().unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            t.path().join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let r = Root::open(t.path()).unwrap();
        match r.open_file(&rel("fifo")) {
            Err(Error::Blocked(b)) => assert_eq!(b.what, "not a regular file or directory"),
            other => panic!("{other:?}"),
        }
    }
}
