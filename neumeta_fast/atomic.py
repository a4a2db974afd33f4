"""Files written whole or not at all: a temp file beside the target, renamed over it at the end.

Temp files are named `.tmp-<pid>-*`: a writer killed mid-write (kill -9, power loss) leaves one
behind, and `remove_orphans` deletes those whose process is gone on the next start in that folder.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile

# mkstemp creates files as 0600; the result gets the mode a plain open() would give it.
_UMASK = os.umask(0)
os.umask(_UMASK)
_TEMP_PREFIX = ".tmp-"
_TEMP_PID = re.compile(re.escape(_TEMP_PREFIX) + r"(\d+)-")


class OutputError(ValueError):
    """An output path that cannot be written (under a file, a folder where a file is meant, no permission)."""


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w"):
    """Open a temp file in `path`'s folder for writing. A clean exit syncs it and renames it to
    `path` (os.replace: readers see the old file or the new one, never half of one); an error
    removes it and leaves `path` as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}-", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_orphans(folder: str) -> list[str]:
    """Delete the temp files in `folder` that killed writers left (their process no longer runs, or
    an older version named them without a pid); returns their names. Live writers' files stay."""
    if not os.path.isdir(folder):
        return []
    removed = []
    for name in os.listdir(folder):
        if not name.startswith(_TEMP_PREFIX):
            continue
        match = _TEMP_PID.match(name)
        if match is None or not _running(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))
                removed.append(name)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or a number no pid can be
        return False
    except PermissionError:  # another user's process
        return True
    return True


def check_writable(path: str, what: str, *, folder: bool) -> None:
    """Raise OutputError unless `path` (a folder when `folder`, else a file) can be written, creating
    missing parent folders as atomic_open does. Creates nothing: a run checks its outputs before working."""
    if "\0" in path:  # os.path.exists says False; makedirs and open raise
        raise OutputError(f"{what} {path!r} contains a NUL character")
    path = os.path.abspath(path)
    if folder and os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"{what} {path!r} is a file, not a folder")
    if not folder and os.path.isdir(path):
        raise OutputError(f"{what} {path!r} is a folder; give the path of a file")
    existing = path if folder else os.path.dirname(path)
    while not os.path.exists(existing):  # the nearest existing ancestor must be a writable folder
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputError(f"{what} {path!r} cannot be created: {existing!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path!r} cannot be written: no write permission in {existing!r}")
