"""Files written whole or not at all: a temp file beside the target, renamed over it at the end."""
from __future__ import annotations

import contextlib
import os
import tempfile

# mkstemp creates files as 0600; the result gets the mode a plain open() would give it.
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w"):
    """Open a temp file in `path`'s folder for writing. A clean exit syncs it and renames it to
    `path` (os.replace: readers see the old file or the new one, never half of one); an error
    removes it and leaves `path` as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
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
