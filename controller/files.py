"""Small durable-file helpers shared by every on-disk state: the broker's (partition logs, markers) and the
controller's (Raft log and snapshot, the pre-Raft metadata log).

Runs in any process; synchronous. ``write_atomically`` gives all-or-nothing replacement of a small file that
survives power loss: write a temporary file, fsync it, rename it over the target, fsync the directory.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
