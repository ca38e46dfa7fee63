# SPDX-License-Identifier: Apache-2.0
"""A FUSE passthrough that forgets every write not yet fsynced when it dies.

In the spirit of LazyFS (dsrhaslab/lazyfs, used by Jepsen): file data
written through the mount is kept in this process's memory, per file, as an
overlay of 4 KiB blocks plus a pending size; reads see it, so the program
above behaves as on a normal disk. ``fsync``/``fdatasync`` of a file writes
that file's overlay into the backing file and drops it. A power cut is
``kill -9`` of this process: whatever was not fsynced vanishes with its
memory, and the backing directory is what the disk holds when power comes
back. (``fusermount3 -u -z`` then detaches the dead mount, taking the
kernel's page cache with it.)

Simplifications, like LazyFS's default: metadata (create, unlink, rename,
mkdir, chmod) goes to the backing directory at once; only file contents and
sizes are lazy. An fsync is applied in full or, if the process dies half
way, partly -- a torn write, which a real disk can also leave.

``--quota-file F``: F holds a byte count; a write that would make the
files' total logical size exceed it fails with ENOSPC (a full disk), and
``statfs`` reports the room left. The file is re-read on change, so a test
can fill the disk and free it again.

    python tests/powercut/lazyfs.py BACKING MOUNTPOINT [--quota-file F]
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import threading
from typing import Any

import mfusepy as fuse

BLOCK = 4096


class _Lazy:
    """Unsynced state of one file: block overlay and logical size."""

    __slots__ = ("blocks", "floor", "size")

    def __init__(self, size: int) -> None:
        self.blocks: dict[int, bytearray] = {}
        self.size = size
        # Backing bytes at or beyond ``floor`` were cut off by a pending
        # truncate: they read as zeros even if the file grows again.
        self.floor = size


class LazyFS(fuse.Operations):
    use_ns = True

    def __init__(self, root: str, quota_file: str | None = None) -> None:
        self.root = os.path.realpath(root)
        self.lazy: dict[str, _Lazy] = {}
        self.mutex = threading.RLock()
        self.quota_file = quota_file
        self._quota: tuple[float, int | None] = (-1.0, None)
        self.fsyncs = 0

    # -- helpers -------------------------------------------------------------

    def _full(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _state(self, path: str) -> _Lazy:
        st = self.lazy.get(path)
        if st is None:
            st = _Lazy(os.stat(self._full(path)).st_size)
            self.lazy[path] = st
        return st

    def _quota_bytes(self) -> int | None:
        if not self.quota_file:
            return None
        try:
            mtime = os.stat(self.quota_file).st_mtime
            if mtime != self._quota[0]:
                with open(self.quota_file) as fh:
                    self._quota = (mtime, int(fh.read().strip() or 0))
        except (OSError, ValueError):
            return None
        return self._quota[1]

    def _used(self) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                rel = "/" + os.path.relpath(os.path.join(dirpath, name), self.root)
                st = self.lazy.get(rel)
                if st is not None:
                    total += st.size
                else:
                    try:
                        total += os.stat(os.path.join(dirpath, name)).st_size
                    except OSError:
                        pass
        return total

    def _block(self, path: str, st: _Lazy, index: int) -> bytearray:
        blk = st.blocks.get(index)
        if blk is None:
            with open(self._full(path), "rb") as fh:
                fh.seek(index * BLOCK)
                blk = bytearray(fh.read(BLOCK))
            valid = max(0, min(BLOCK, st.floor - index * BLOCK))
            blk[valid:] = b""
            blk.extend(bytes(BLOCK - len(blk)))
            st.blocks[index] = blk
        return blk

    # -- metadata: straight to the backing directory ------------------------------

    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        s = os.lstat(self._full(path))
        attrs = {k: getattr(s, k) for k in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size",
                                             "st_atime_ns", "st_mtime_ns", "st_ctime_ns")}
        attrs["st_atime"], attrs["st_mtime"], attrs["st_ctime"] = s.st_atime_ns, s.st_mtime_ns, s.st_ctime_ns
        with self.mutex:
            st = self.lazy.get(path)
            if st is not None:
                attrs["st_size"] = st.size
        return attrs

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._full(path))]

    def access(self, path: str, amode: int) -> int:
        if not os.access(self._full(path), amode):
            raise fuse.FuseOSError(errno.EACCES)
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        os.mkdir(self._full(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        os.rmdir(self._full(path))
        return 0

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._full(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._full(path), uid, gid)
        return 0

    def utimens(self, path: str, times: Any = None) -> int:
        os.utime(self._full(path), ns=times) if times else os.utime(self._full(path))
        return 0

    def unlink(self, path: str) -> int:
        with self.mutex:
            os.unlink(self._full(path))
            self.lazy.pop(path, None)
        return 0

    def rename(self, old: str, new: str) -> int:
        with self.mutex:
            os.rename(self._full(old), self._full(new))
            st = self.lazy.pop(old, None)
            self.lazy.pop(new, None)
            if st is not None:
                self.lazy[new] = st
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        s = os.statvfs(self._full(path))
        out = {k: getattr(s, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                                          "f_ffree", "f_favail", "f_flag", "f_namemax")}
        quota = self._quota_bytes()
        if quota is not None:
            with self.mutex:
                room = max(0, quota - self._used())
            out["f_bavail"] = out["f_bfree"] = min(out["f_bavail"], room // s.f_frsize)
        return out

    # -- file data: lazy ---------------------------------------------------------------

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        fd = os.open(self._full(path), os.O_WRONLY | os.O_CREAT, mode)
        os.close(fd)
        return 0

    def open(self, path: str, flags: int) -> int:
        if flags & os.O_TRUNC:
            self.truncate(path, 0)
        return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self.mutex:
            st = self.lazy.get(path)
            if st is None:
                with open(self._full(path), "rb") as f:
                    f.seek(offset)
                    return f.read(size)
            end = min(offset + size, st.size)
            out = bytearray()
            pos = offset
            while pos < end:
                index, inner = divmod(pos, BLOCK)
                take = min(BLOCK - inner, end - pos)
                out += self._block(path, st, index)[inner:inner + take]
                pos += take
            return bytes(out)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self.mutex:
            st = self._state(path)
            quota = self._quota_bytes()
            if quota is not None and offset + len(data) > st.size \
                    and self._used() + offset + len(data) - st.size > quota:
                raise fuse.FuseOSError(errno.ENOSPC)
            pos, view = offset, memoryview(data)
            while view:
                index, inner = divmod(pos, BLOCK)
                take = min(BLOCK - inner, len(view))
                self._block(path, st, index)[inner:inner + take] = view[:take]
                view, pos = view[take:], pos + take
            st.size = max(st.size, offset + len(data))
            return len(data)

    def truncate(self, path: str, length: int, fh: Any = None) -> int:
        with self.mutex:
            st = self._state(path)
            for index in [i for i in st.blocks if i * BLOCK >= length]:
                del st.blocks[index]
            if length < st.size and length % BLOCK:
                blk = self._block(path, st, length // BLOCK)
                blk[length % BLOCK:] = bytes(BLOCK - length % BLOCK)
            st.size = length
            st.floor = min(st.floor, length)
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        with self.mutex:
            self.fsyncs += 1
            st = self.lazy.pop(path, None)
            if st is None:
                return 0
            fd = os.open(self._full(path), os.O_WRONLY)
            try:
                for index in sorted(st.blocks):
                    start = index * BLOCK
                    if start >= st.size:
                        continue
                    os.pwrite(fd, bytes(st.blocks[index][:min(BLOCK, st.size - start)]), start)
                os.ftruncate(fd, st.size)
            finally:
                os.close(fd)
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0

    def release(self, path: str, fh: int) -> int:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backing")
    parser.add_argument("mountpoint")
    parser.add_argument("--quota-file")
    args = parser.parse_args()
    ops = LazyFS(args.backing, args.quota_file)
    print("mounting", flush=True)
    fuse.FUSE(ops, args.mountpoint, foreground=True, nothreads=True, allow_other=False)
    sys.exit(0)


if __name__ == "__main__":
    main()
