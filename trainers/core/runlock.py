"""One process per run directory: an exclusive ``fcntl.flock`` on
``DIR/.lock``, held for the life of the run.

The kernel releases the lock when the process ends, however it ends (``kill
-9`` included), so a lock is never left stale: the file stays, the lock does
not. The file holds the holder's PID, for the message of the process refused.
"""

from __future__ import annotations

import fcntl
import os
import pathlib

from trainers.core.errors import UserError, write_failed

LOCK_NAME = ".lock"


class DirectoryInUse(UserError):
    """Another live process holds the directory's lock."""


class RunLock:
    def __init__(self, directory, fd: int):
        self.directory = pathlib.Path(directory)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return

        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def holder(directory) -> int | None:
    """The PID written by the process that holds (or last held) the lock."""
    try:
        return int((pathlib.Path(directory) / LOCK_NAME).read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def live_holder(directory) -> int | None:
    """The PID of the live process that holds ``directory``'s lock now, read
    from the kernel's table of locks (``/proc/locks``) without touching the lock
    (probing it with ``flock`` could make a run starting at that moment fail);
    None where no process holds it, or where that table cannot be read."""
    path = pathlib.Path(directory) / LOCK_NAME
    try:
        st = os.stat(path)
        with open("/proc/locks") as f:
            table = f.read().splitlines()
    except OSError:
        return None
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in table:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 7977 fe:00:16204238 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device and fields[4].isdigit():
            return int(fields[4])
    return None


def acquire(directory, what: str = "run directory", hint: str = "wait for it to end or choose another --output-dir"):
    """Locks ``directory`` (which must exist) or raises :class:`DirectoryInUse`
    naming the holder's PID."""

    path = pathlib.Path(directory) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise write_failed(path, error) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = holder(directory)
        raise DirectoryInUse(
            f"the {what} {directory} is in use by process {pid if pid else '(unknown PID)'}, which holds its lock; "
            f"{hint}"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return RunLock(directory, fd)
