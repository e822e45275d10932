"""Atomic files: a file is seen whole or not at all, and a failed write leaves nothing.

Used by :class:`~connector_batching.LocalWorkManager` for its bundle files.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op elsewhere)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to the new file ``path`` so that readers see all of it or nothing.

    When it raises, nothing it wrote stays behind: neither the temporary file
    nor, when the rename was done but the directory ``fsync`` failed, ``path``
    itself (``path`` must not exist before the call).
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    try:
        fsync_directory(path.parent)
    except BaseException:
        # the rename may not be durable: the caller treats the write as failed and
        # writes again, so this copy must go (or a batch would be in two files)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
