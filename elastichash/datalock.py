"""One writer per data directory: ``serve`` and ``index`` each hold an exclusive lock on it.

Two processes writing one embedded index would each keep their own in-memory view of it, so
a folder indexed beside a running server would stay invisible to that server until restart.
The second process is refused with a message naming the first (its pid, its command, and
for a server its address) instead of diverging silently. The lock is an ``flock`` on
``DATA/.lock``: the kernel drops it when its holder dies, so a crash never leaves it stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK_NAME = ".lock"


class DataDirBusy(Exception):
    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        self.path = path
        self.holder = holder
        what = holder.get("command", "another elastichash process")
        pid = holder.get("pid", "?")
        where = f" at {holder['url']}" if holder.get("url") else ""
        super().__init__(f"{path} is in use by `elastichash {what}` (pid {pid}){where}")


@contextlib.contextmanager
def hold(path: Path, command: str, url: str | None = None) -> Iterator[None]:
    """Hold the data directory ``path`` for ``command``; :class:`DataDirBusy` if taken."""
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirBusy(path, _read(fd)) from None
        note = json.dumps({"pid": os.getpid(), "command": command, "url": url}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, note, 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def _read(fd: int) -> dict[str, Any]:
    try:
        note: dict[str, Any] = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return note
