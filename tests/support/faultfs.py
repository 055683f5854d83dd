#!/usr/bin/env python3
"""A passthrough FUSE file system that returns EIO on chosen operations.

    faultfs.py ROOT MOUNTPOINT RULES

Mirrors the real directory ROOT at MOUNTPOINT (foreground; unmount with
`fusermount -u MOUNTPOINT` or SIGTERM). RULES is a JSON file, read again
whenever it changes, holding a list of faults:

    [{"op": "read", "path": "PAT1/IM2.dcm", "after": 65536}]

`op` is one of getattr, readdir, open, read, write, fsync (a file's, or a
folder's), rename, create. `path` is the path under ROOT ("/"-separated,
no leading slash) the fault applies to, or `contains` a part of it (a
landing's temporary name holds its file's name; for rename, either name
matches). `after` (read and write only) lets the first `after` bytes of
the file through and fails any request reaching past them; with
`larger_than` (fsync) only a file holding more than that many bytes fails.
A rule with `delay` (seconds) fails nothing: the operation waits that long
first (a slow device or listing, to make a kill land in a verify). A matching
operation fails with EIO, as a failing disk or controller reports it.
Caching is off (`direct_io`, zero attribute and entry timeouts) so every
read and stat reaches this process. At unmount it writes RULES.stats: the
most operations that waited in a `delay` at once (`peak_delayed`: how many
requests a client kept outstanding) and the read requests per path
(`reads`). Used by the integration tests of
tests/cli/eio.rs; pure passthrough otherwise.
"""

import errno
import json
import os
import sys
import threading
import time

from fuse import FUSE, FuseOSError, Operations


class Faults:
    def __init__(self, path):
        self.path = path
        self.stamp = None
        self.rules = []
        self.lock = threading.Lock()
        self.delayed = 0
        self.peak_delayed = 0
        self.reads = {}

    def current(self):
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return []
        with self.lock:
            if stamp != self.stamp:
                with open(self.path) as f:
                    text = f.read()
                self.rules = json.loads(text) if text.strip() else []
                self.stamp = stamp
            return self.rules

    def check(self, op, path, offset=None, size=None, fh=None):
        rel = path.lstrip("/")
        for r in self.current():
            if r.get("op") != op:
                continue
            if "path" in r and r["path"] != rel:
                continue
            if "contains" in r and r["contains"] not in rel:
                continue
            larger = r.get("larger_than")
            if larger is not None and (fh is None or os.fstat(fh).st_size <= larger):
                continue
            after = r.get("after")
            if after is not None and offset is not None and offset + (size or 0) <= after:
                continue
            if "delay" in r:
                with self.lock:
                    self.delayed += 1
                    self.peak_delayed = max(self.peak_delayed, self.delayed)
                time.sleep(r["delay"])
                with self.lock:
                    self.delayed -= 1
                continue
            raise FuseOSError(errno.EIO)


class FaultFs(Operations):
    def __init__(self, root, faults):
        self.root = os.path.realpath(root)
        self.faults = faults

    def _full(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def destroy(self, path):
        f = self.faults
        with f.lock, open(f.path + ".stats", "w") as out:
            json.dump({"peak_delayed": f.peak_delayed, "reads": f.reads}, out)

    # Metadata.
    def getattr(self, path, fh=None):
        self.faults.check("getattr", path)
        st = os.lstat(self._full(path)) if fh is None else os.fstat(fh)
        keys = ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime",
                "st_nlink", "st_size", "st_uid", "st_blocks")
        out = {k: getattr(st, k) for k in keys}
        out["st_atime"] = st.st_atime_ns / 1e9
        out["st_mtime"] = st.st_mtime_ns / 1e9
        out["st_ctime"] = st.st_ctime_ns / 1e9
        return out

    def readdir(self, path, fh):
        self.faults.check("readdir", path)
        return [".", ".."] + os.listdir(self._full(path))

    def readlink(self, path):
        return os.readlink(self._full(path))

    def access(self, path, mode):
        if not os.access(self._full(path), mode):
            raise FuseOSError(errno.EACCES)

    def statfs(self, path):
        st = os.statvfs(self._full(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")
        return {k: getattr(st, k) for k in keys}

    def chmod(self, path, mode):
        os.chmod(self._full(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._full(path), uid, gid)

    def utimens(self, path, times=None):
        if times is None:
            os.utime(self._full(path))
        else:
            # fusepy hands seconds as floats; keep nanoseconds exact.
            os.utime(self._full(path), ns=tuple(int(round(t * 1e9)) for t in times))

    # Names.
    def mkdir(self, path, mode):
        os.mkdir(self._full(path), mode)

    def rmdir(self, path):
        os.rmdir(self._full(path))

    def unlink(self, path):
        os.unlink(self._full(path))

    def symlink(self, target, source):
        os.symlink(source, self._full(target))

    def rename(self, old, new):
        self.faults.check("rename", old)
        self.faults.check("rename", new)
        os.rename(self._full(old), self._full(new))

    def link(self, target, source):
        os.link(self._full(source), self._full(target))

    # Contents.
    def open(self, path, flags):
        self.faults.check("open", path)
        return os.open(self._full(path), flags)

    def create(self, path, mode, fi=None):
        self.faults.check("create", path)
        return os.open(self._full(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)

    def read(self, path, size, offset, fh):
        self.faults.check("read", path, offset, size)
        with self.faults.lock:
            rel = path.lstrip("/")
            self.faults.reads[rel] = self.faults.reads.get(rel, 0) + 1
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        self.faults.check("write", path, offset, len(data))
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        if fh is None:
            with open(self._full(path), "r+b") as f:
                f.truncate(length)
        else:
            os.ftruncate(fh, length)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        os.close(fh)

    def fsync(self, path, datasync, fh):
        self.faults.check("fsync", path, fh=fh)
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)

    def fsyncdir(self, path, datasync, fh):
        self.faults.check("fsync", path)
        fd = os.open(self._full(path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def main():
    root, mountpoint, rules = sys.argv[1:4]
    FUSE(
        FaultFs(root, Faults(rules)),
        mountpoint,
        foreground=True,
        nothreads=False,
        direct_io=True,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
        allow_other=False,
        default_permissions=False,
    )


if __name__ == "__main__":
    main()
