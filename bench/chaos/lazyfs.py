"""Power loss under a node's data directory: a FUSE filesystem that keeps unsynced writes in memory (Jepsen's LazyFS).

``python -m bench.chaos.lazyfs BACKING MOUNTPOINT --control SOCKET`` mounts MOUNTPOINT over the directory BACKING and
serves it in the foreground (libfuse 3 through mfusepy's ctypes bindings). ``LazyFS`` below starts, drives and stops
that process for the verifier and the tests.

What survives "pulling the plug" (the model; chosen to find exactly the bugs an fsync discipline is meant to prevent):

- **File data** written with write/pwrite is kept in memory, per file, in 4 KiB pages; reads (read, pread, mmap,
  sendfile: the kernel turns them all into FUSE reads) see the buffered pages merged over the backing file.
  ``fsync``/``fdatasync`` of a file writes that file's pages to the backing file. ``pull_plug()`` discards every
  page not yet synced, of every file: what a kernel's page cache loses when the power goes.
- **Size changes** (ftruncate, O_TRUNC, writes past the end) are tracked with the data: the backing file keeps its
  synced size until an fsync, so an unsynced truncation is undone by a plug pull and an unsynced append vanishes.
- **Metadata operations** (create, mkdir, rename, unlink, rmdir, chmod, chown, utimens, symlink) pass straight
  through to BACKING and survive a plug pull, as if every directory were fsynced at once. This is kinder than a
  real disk (a rename not followed by a directory fsync may be lost there); the broker fsyncs its directories
  anyway, and losing file data is what this tool is for. Hard links are refused (EPERM): the broker uses none.
- **A clean unmount** (``stop()``, SIGTERM) writes every buffered page to BACKING first: nothing is lost then.

The backing file is never fsynced itself: the simulated power loss never reaches the real disk, so an fsync of
BACKING would only cost time. Unlinked files that are still open keep their buffered pages until the last close.

Bounds: buffered (unsynced) data is capped at ``--buffer-bytes-max`` (default ``BUFFER_BYTES_MAX``, 512 MiB) over
all files; a write that would need more gets ENOSPC instead of growing memory (the broker fsyncs acknowledged data
long before that). The control channel reads one command of at most ``CONTROL_LINE_BYTES_MAX`` bytes per connection.

The control channel is a unix socket (``--control``): one line in, one line out. ``ping`` -> ``ok``; ``pull`` ->
``ok <bytes dropped> <files>``: every unsynced write is gone when the answer arrives, and the filesystem keeps
serving with an empty cache; ``flush`` -> ``ok``: every buffered page written to BACKING (a sync(2) of everything);
``stats`` -> ``ok <buffered bytes> <dirty files>``; ``dirty`` -> ``ok <path> ...`` (at most ``DIRTY_PATHS_MAX``
files). A socket rather than signals because the main thread sits in libfuse's loop, where Python signal handlers
never run.

The kernel's own page cache for a FUSE file is dropped when the file is next opened (no ``kernel_cache`` option)
and attributes are never cached (``attr_timeout=0``), so a process started after a plug pull reads what survived.
The caller SIGKILLs the node before pulling the plug; a process that still holds a file open across a plug pull
may read stale pages from the kernel's cache.

Runs in its own process, one FUSE thread (``-s``) plus the control thread, both under one lock.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

PAGE_BYTES = 4096
BUFFER_BYTES_MAX = 512 * 1024 * 1024
CONTROL_LINE_BYTES_MAX = 64
DIRTY_PATHS_MAX = 100  # the "dirty" answer lists at most this many files
CONTROL_TIMEOUT_S = 30.0
MOUNT_TIMEOUT_S = 30.0
UNMOUNT_TIMEOUT_S = 30.0


class LazyFSError(RuntimeError):
    """The lazyfs process failed to mount, answer or unmount; the message carries its log's tail."""


# ---- the write cache: which bytes of each file exist only in memory ------------------------------------------------


@dataclass(eq=False)
class FileState:
    """One file's unsynced data. Invariants: ``floor <= size``; ``floor <= backing_size``; page bytes at or past
    ``size`` are zero (so a later extension reads zeros); backing bytes at or past ``floor`` are stale (a truncation
    not yet synced cut them off) and read as zeros unless a page covers them."""

    backing_size: int  # the backing file's size: changed only by sync()
    size: int  # the size every reader sees
    floor: int  # lowest size since the last sync
    pages: dict[int, bytearray] = field(default_factory=dict)  # page index -> PAGE_BYTES bytes
    opens: int = 0

    @classmethod
    def of(cls, backing_size: int) -> FileState:
        return cls(backing_size=backing_size, size=backing_size, floor=backing_size)

    @property
    def dirty(self) -> bool:
        return bool(self.pages) or self.size != self.backing_size or self.floor != self.backing_size


class WriteCache:
    """The buffered pages of every file, with the global bound. No locking: the caller holds the filesystem's lock.
    ``fd`` arguments are descriptors of the backing file, used to read what is not buffered and to write at sync."""

    def __init__(self, buffer_bytes_max: int = BUFFER_BYTES_MAX) -> None:
        self.buffer_bytes_max = buffer_bytes_max
        self.buffered_bytes = 0

    def read(self, st: FileState, fd: int, offset: int, size: int) -> bytes:
        end = min(offset + size, st.size)
        if offset >= end:
            return b""
        out = bytearray(end - offset)
        backing_end = min(end, st.floor)
        if backing_end > offset:
            data = os.pread(fd, backing_end - offset, offset)
            out[: len(data)] = data  # shorter than asked: the rest stays zero
        if st.pages:
            for index in range(offset // PAGE_BYTES, (end - 1) // PAGE_BYTES + 1):
                page = st.pages.get(index)
                if page is not None:
                    base = index * PAGE_BYTES
                    lo, hi = max(base, offset), min(base + PAGE_BYTES, end)
                    out[lo - offset : hi - offset] = page[lo - base : hi - base]
        return bytes(out)

    def write(self, st: FileState, fd: int, offset: int, data: bytes) -> int:
        if not data:
            return 0
        end = offset + len(data)
        first, last = offset // PAGE_BYTES, (end - 1) // PAGE_BYTES
        new_pages = sum(1 for index in range(first, last + 1) if index not in st.pages)
        if self.buffered_bytes + new_pages * PAGE_BYTES > self.buffer_bytes_max:
            raise OSError(errno.ENOSPC, "lazyfs: unsynced data would exceed --buffer-bytes-max")
        view = memoryview(data)
        for index in range(first, last + 1):
            base = index * PAGE_BYTES
            page = st.pages.get(index)
            if page is None:
                page = self._fill(st, fd, base)
                st.pages[index] = page
                self.buffered_bytes += PAGE_BYTES
            lo, hi = max(base, offset), min(base + PAGE_BYTES, end)
            page[lo - base : hi - base] = view[lo - offset : hi - offset]
        st.size = max(st.size, end)
        return len(data)

    def truncate(self, st: FileState, size: int) -> None:
        if size < st.size:
            for index in [i for i in st.pages if i * PAGE_BYTES >= size]:
                del st.pages[index]
                self.buffered_bytes -= PAGE_BYTES
            partial = st.pages.get(size // PAGE_BYTES)
            if partial is not None:
                cut = size % PAGE_BYTES
                partial[cut:] = bytes(PAGE_BYTES - cut)
        st.floor = min(st.floor, size)
        st.size = size

    def sync(self, st: FileState, fd: int) -> None:
        """Make the file's data what every reader sees now, in the backing file."""
        if not st.dirty:
            return
        if st.floor < st.backing_size:
            os.ftruncate(fd, st.floor)  # first cut what a truncation removed, so no stale byte survives
        for index in sorted(st.pages):
            base = index * PAGE_BYTES
            valid = min(PAGE_BYTES, st.size - base)
            if valid > 0:
                page = memoryview(st.pages[index])[:valid]
                written = 0
                while written < valid:
                    written += os.pwrite(fd, page[written:], base + written)
        if os.fstat(fd).st_size != st.size:
            os.ftruncate(fd, st.size)
        self.drop(st)
        st.backing_size = st.floor = st.size

    def drop(self, st: FileState) -> int:
        """Forget the buffered pages (the caller resets sizes). Returns the bytes dropped."""
        dropped = len(st.pages) * PAGE_BYTES
        self.buffered_bytes -= dropped
        st.pages.clear()
        return dropped

    def pull_plug(self, st: FileState) -> int:
        dropped = self.drop(st)
        st.size = st.floor = st.backing_size
        return dropped

    def _fill(self, st: FileState, fd: int, base: int) -> bytearray:
        page = bytearray(PAGE_BYTES)
        valid = min(base + PAGE_BYTES, st.floor, st.size) - base
        if valid > 0:
            data = os.pread(fd, valid, base)
            page[: len(data)] = data
        return page


# ---- the filesystem (mfusepy's operations protocol; paths are mount-relative, starting with "/") ------------------


@dataclass(eq=False)
class _Handle:
    fd: int
    state: FileState
    path: str


class LazyOps:
    """FUSE operations over ``backing``. mfusepy looks methods up by name; a missing one is left to libfuse's
    default (ENOSYS), so no base class is needed and this module imports without libfuse."""

    use_ns = True  # utimens/getattr times in nanoseconds

    def __init__(self, backing: Path, buffer_bytes_max: int = BUFFER_BYTES_MAX) -> None:
        self.backing = str(backing.resolve())
        self.cache = WriteCache(buffer_bytes_max)
        self.mutex = threading.Lock()  # not "lock": mfusepy would take that for the POSIX-lock operation
        self._states: dict[str, FileState] = {}  # mount path -> state, for files with buffered data or open handles
        self._handles: dict[int, _Handle] = {}
        self._orphans: set[FileState] = set()  # unlinked or replaced while open
        self._next_fh = 1

    def _real(self, path: str) -> str:
        return self.backing + path

    def _state(self, path: str, fd: int) -> FileState:
        st = self._states.get(path)
        if st is None:
            st = FileState.of(os.fstat(fd).st_size)
            self._states[path] = st
        return st

    def _forget(self, path: str) -> None:
        st = self._states.pop(path, None)
        if st is not None:
            if st.opens > 0:
                self._orphans.add(st)
            else:
                self.cache.drop(st)

    def _release_state(self, path: str, st: FileState) -> None:
        if st.opens == 0 and not st.dirty and self._states.get(path) is st:
            del self._states[path]
        if st.opens == 0 and st in self._orphans:
            self._orphans.discard(st)
            self.cache.drop(st)

    # -- control channel --

    def pull_plug(self) -> tuple[int, int]:
        with self.mutex:
            states = [*self._states.values(), *self._orphans]
            dirty = [st for st in states if st.dirty]
            dropped = sum(self.cache.pull_plug(st) for st in dirty)
            for path, st in list(self._states.items()):
                if st.opens == 0:
                    del self._states[path]
            return dropped, len(dirty)

    def flush_all(self) -> None:
        with self.mutex:
            for path, st in list(self._states.items()):
                if st.dirty:
                    fd = os.open(self._real(path), os.O_WRONLY)
                    try:
                        self.cache.sync(st, fd)
                    finally:
                        os.close(fd)

    def stats(self) -> tuple[int, int]:
        with self.mutex:
            return self.cache.buffered_bytes, sum(1 for st in self._states.values() if st.dirty)

    def dirty_paths(self) -> list[str]:
        with self.mutex:
            return sorted(path for path, st in self._states.items() if st.dirty)[:DIRTY_PATHS_MAX]

    # -- FUSE operations --

    def destroy(self, path: str) -> None:
        self.flush_all()  # a clean unmount loses nothing

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        with self.mutex:
            handle = self._handles.get(fh) if fh is not None else None
            st: FileState | None
            if handle is not None:
                s, st = os.fstat(handle.fd), handle.state
            else:
                if path is None:
                    raise OSError(errno.EBADF, "no path and no handle")
                s, st = os.lstat(self._real(path)), self._states.get(path)
            attrs = {
                key: getattr(s, key)
                for key in ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks", "st_rdev")
            }
            attrs |= {"st_atime": s.st_atime_ns, "st_mtime": s.st_mtime_ns, "st_ctime": s.st_ctime_ns}
            if st is not None and stat.S_ISREG(s.st_mode):
                attrs["st_size"] = st.size
                attrs["st_blocks"] = (st.size + 511) // 512
            return attrs

    def readdir(self, path: str, fh: int) -> Iterable[str]:
        return [".", "..", *os.listdir(self._real(path))]

    def readlink(self, path: str) -> str:
        return os.readlink(self._real(path))

    def access(self, path: str, amode: int) -> int:
        if not os.access(self._real(path), amode):
            raise OSError(errno.EACCES, "access denied")
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        s = os.statvfs(self._real(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag")
        return {key: getattr(s, key) for key in (*keys, "f_frsize", "f_namemax")}

    def mkdir(self, path: str, mode: int) -> int:
        os.mkdir(self._real(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        os.rmdir(self._real(path))
        return 0

    def symlink(self, target: str, source: str) -> int:
        os.symlink(source, self._real(target))
        return 0

    def link(self, target: str, source: str) -> int:
        # Two paths sharing one FileState is not modelled; the broker makes no hard links.
        raise OSError(errno.EPERM, "lazyfs does not support hard links")

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._real(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._real(path), uid, gid)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        if times is None:
            os.utime(self._real(path))
        else:
            os.utime(self._real(path), ns=times)
        return 0

    def unlink(self, path: str) -> int:
        with self.mutex:
            os.unlink(self._real(path))
            self._forget(path)
        return 0

    def rename(self, old: str, new: str) -> int:
        with self.mutex:
            os.rename(self._real(old), self._real(new))
            if old == new:
                return 0  # a no-op rename: forgetting "new" would drop the file's own unsynced data
            self._forget(new)  # the replaced file's unsynced data goes with it
            moved = {p: st for p, st in self._states.items() if p == old or p.startswith(old + "/")}
            for p in moved:
                del self._states[p]
            for p, st in moved.items():
                self._states[new + p[len(old) :]] = st
            for handle in self._handles.values():
                if handle.path == old or handle.path.startswith(old + "/"):
                    handle.path = new + handle.path[len(old) :]
        return 0

    def _open(self, path: str, flags: int, mode: int | None) -> int:
        # The backing fd is always read-write and never O_APPEND: FUSE hands every write its offset, and sync()
        # writes pages back through the same descriptor.
        real_flags = os.O_RDWR | (flags & (os.O_CREAT | os.O_EXCL))
        fd = os.open(self._real(path), real_flags, 0o644 if mode is None else mode)
        with self.mutex:
            st = self._state(path, fd)
            if flags & os.O_TRUNC:
                self.cache.truncate(st, 0)
            st.opens += 1
            fh = self._next_fh
            self._next_fh += 1
            self._handles[fh] = _Handle(fd, st, path)
            return fh

    def open(self, path: str, flags: int) -> int:
        return self._open(path, flags, None)

    def create(self, path: str, mode: int, flags: int = os.O_RDWR) -> int:
        return self._open(path, flags | os.O_CREAT, mode)

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        with self.mutex:
            handle = self._handles[fh]
            return self.cache.read(handle.state, handle.fd, offset, size)

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        with self.mutex:
            handle = self._handles[fh]
            return self.cache.write(handle.state, handle.fd, offset, data)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        with self.mutex:
            handle = self._handles.get(fh) if fh is not None else None
            if handle is not None:
                self.cache.truncate(handle.state, length)
                return 0
            if path is None:
                raise OSError(errno.EBADF, "no path and no handle")
            fd = os.open(self._real(path), os.O_RDONLY)
            try:
                st = self._state(path, fd)
                self.cache.truncate(st, length)
                self._release_state(path, st)
            finally:
                os.close(fd)
            return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        with self.mutex:
            handle = self._handles[fh]
            self.cache.sync(handle.state, handle.fd)
        return 0

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        return 0  # metadata is never lost in this model (see the module docstring): nothing to make durable

    def flush(self, path: str | None, fh: int) -> int:
        return 0  # close(2) makes nothing durable

    def release(self, path: str | None, fh: int) -> int:
        with self.mutex:
            handle = self._handles.pop(fh)
            os.close(handle.fd)
            handle.state.opens -= 1
            self._release_state(handle.path, handle.state)
        return 0


# ---- the process: FUSE loop in the main thread, control socket in another ------------------------------------------


def _serve_control(ops: LazyOps, sock: socket.socket) -> None:
    while True:
        conn, _ = sock.accept()
        with conn:
            conn.settimeout(CONTROL_TIMEOUT_S)
            try:
                line = conn.recv(CONTROL_LINE_BYTES_MAX).decode(errors="replace").strip()
                if line == "ping":
                    answer = "ok"
                elif line == "pull":
                    dropped, files = ops.pull_plug()
                    answer = f"ok {dropped} {files}"
                elif line == "flush":
                    ops.flush_all()
                    answer = "ok"
                elif line == "dirty":
                    answer = " ".join(["ok", *ops.dirty_paths()])
                elif line == "stats":
                    buffered, dirty = ops.stats()
                    answer = f"ok {buffered} {dirty}"
                else:
                    answer = f"error unknown command {line!r}"
                conn.sendall(answer.encode() + b"\n")
            except OSError as e:  # a client that went away, or a failed flush: reported, the server keeps serving
                print(f"lazyfs: control command failed: {e}", file=sys.stderr, flush=True)
                with contextlib.suppress(OSError):
                    conn.sendall(f"error {e}\n".encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos.lazyfs", description=__doc__.split("\n")[0])
    parser.add_argument("backing", type=Path, help="directory holding the durable data")
    parser.add_argument("mountpoint", type=Path, help="where the filesystem appears (an empty directory)")
    parser.add_argument("--control", type=Path, required=True, help="unix socket path for ping/pull/flush/stats")
    parser.add_argument("--buffer-bytes-max", type=int, default=BUFFER_BYTES_MAX, help="cap on unsynced bytes")
    parser.add_argument("--debug", action="store_true", help="libfuse's debug output")
    args = parser.parse_args(argv)

    # Debian ships libfuse 2 and 3; mfusepy picks 2 unless told. 3 has big writes and atomic O_TRUNC by default.
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
    import mfusepy  # here, not at the top: importing the verifier must not need libfuse

    ops = LazyOps(args.backing, args.buffer_bytes_max)
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    args.control.unlink(missing_ok=True)
    control.bind(str(args.control))
    control.listen(8)
    threading.Thread(target=_serve_control, args=(ops, control), name="lazyfs-control", daemon=True).start()
    try:
        mfusepy.FUSE(
            ops,
            str(args.mountpoint),
            foreground=True,
            nothreads=True,
            debug=args.debug,
            fsname=f"lazyfs:{ops.backing}",
            # Never cache attributes or lookups in the kernel: after a plug pull the sizes must be ours.
            attr_timeout=0,
            entry_timeout=0,
            negative_timeout=0,
            hard_remove=True,  # no .fuse_hidden files in the broker's directories when an open file is unlinked
        )
    except RuntimeError as e:
        # fuse_main gives 8 whenever its loop ended with a nonzero status, which includes the SIGTERM of a clean
        # stop (unmounted, destroy ran). Anything else is a failure to mount.
        if str(e) != "8":
            raise
    return 0


# ---- the handle the verifier and the tests use ----------------------------------------------------------------------


def _mounted(mountpoint: Path) -> bool:
    target = str(mountpoint.resolve())
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def _unmount(mountpoint: Path) -> None:
    """Detach a mount whatever state its server is in (a dead server leaves 'transport endpoint not connected')."""
    for argv in (["fusermount3", "-u", "-z", str(mountpoint)], ["umount", "-l", str(mountpoint)]):
        if not _mounted(mountpoint):
            return
        subprocess.run(argv, capture_output=True, timeout=UNMOUNT_TIMEOUT_S, check=False)


def available() -> str | None:
    """None if lazyfs can run here; otherwise why not (a test's skip reason)."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    import ctypes.util

    if ctypes.util.find_library("fuse3") is None:
        return "libfuse3 is not installed (Debian: fuse3)"
    try:
        import mfusepy  # noqa: F401
    except ImportError:
        return "mfusepy is not installed (pip: the [test] extras)"
    except OSError as e:
        return f"mfusepy cannot load libfuse: {e}"
    return None


class LazyFS:
    """One lazyfs process serving ``mountpoint`` over ``backing``; see the module docstring for the model.

    ``start()`` returns once the mount answers; ``pull_plug()`` discards every unsynced write (SIGKILL the processes
    using the mount first); ``stop()`` unmounts cleanly (buffered data is written to ``backing``) and never leaves a
    mount behind, even when the server died.
    """

    def __init__(
        self,
        backing: Path,
        mountpoint: Path,
        buffer_bytes_max: int = BUFFER_BYTES_MAX,
        log_path: Path | None = None,
    ) -> None:
        self.backing = backing
        self.mountpoint = mountpoint
        self.buffer_bytes_max = buffer_bytes_max
        # The control socket (and the log, unless the caller keeps it elsewhere) live in a private directory that
        # stop() removes; a unix socket path must stay under 108 bytes, so not under the caller's deep tmp dirs.
        self._dir = Path(tempfile.mkdtemp(prefix="lazyfs-"))
        self.control_path = self._dir / "control.sock"
        self.log_path = log_path if log_path is not None else self._dir / "lazyfs.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._dir.mkdir(exist_ok=True)  # again after a stop(): a LazyFS can be started anew
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        _unmount(self.mountpoint)  # a stale mount of a crashed earlier run
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "bench.chaos.lazyfs", str(self.backing), str(self.mountpoint)),
                    *("--control", str(self.control_path), "--buffer-bytes-max", str(self.buffer_bytes_max)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the verifier must not kill it before the nodes
                env={
                    **os.environ,
                    "PYTHONPATH": os.pathsep.join(filter(None, [_repo_root(), os.environ.get("PYTHONPATH")])),
                },
            )
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while not (_mounted(self.mountpoint) and self._ping()):
            if self.proc.poll() is not None:
                raise LazyFSError(f"lazyfs exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise LazyFSError(f"lazyfs did not mount within {MOUNT_TIMEOUT_S}s:\n{self.log()}")
            time.sleep(0.05)

    def pull_plug(self) -> tuple[int, int]:
        """Drop every unsynced write; returns (bytes dropped, files that lost data)."""
        words = self.command("pull").split()
        return int(words[1]), int(words[2])

    def flush(self) -> None:
        """Write every buffered page to the backing directory (a sync(2) of the whole filesystem)."""
        self.command("flush")

    def dirty_paths(self) -> list[str]:
        """Mount-relative paths of the files holding unsynced data (at most DIRTY_PATHS_MAX): for a run's log."""
        return self.command("dirty").split()[1:]

    def stats(self) -> tuple[int, int]:
        """(buffered unsynced bytes, files with unsynced data)."""
        words = self.command("stats").split()
        return int(words[1]), int(words[2])

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(CONTROL_TIMEOUT_S)
            s.connect(str(self.control_path))
            s.sendall(line.encode() + b"\n")
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = s.recv(256)
                if not chunk:
                    break
                answer += chunk
        text = answer.decode(errors="replace").strip()
        if not text.startswith("ok"):
            raise LazyFSError(f"lazyfs {line}: {text or 'no answer'}\n{self.log()}")
        return text

    def stop(self) -> None:
        """Unmount (clean: buffered data reaches ``backing``) and end the process; no mount is left behind."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                # libfuse's SIGTERM handler leaves the loop, unmounts and calls destroy (the final flush).
                self.proc.terminate()
                try:
                    self.proc.wait(UNMOUNT_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(UNMOUNT_TIMEOUT_S)
        finally:
            _unmount(self.mountpoint)
            shutil.rmtree(self._dir, ignore_errors=True)
        if _mounted(self.mountpoint):
            raise LazyFSError(f"{self.mountpoint} is still mounted")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def _ping(self) -> bool:
        try:
            self.command("ping")
        except (OSError, LazyFSError):
            return False
        return True

    def __enter__(self) -> LazyFS:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _repo_root() -> str:
    return str(Path(__file__).resolve().parents[2])


if __name__ == "__main__":
    sys.exit(main())
