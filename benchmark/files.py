"""Files written whole or not at all: a report, or another worker, never reads half a file."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path


def write_whole(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, then rename it to ``path``.

    The temporary name holds the process id, so that concurrent writers do not clash, and it is
    removed when ``write`` fails; an ``OSError`` names ``path``, the file the caller knows. The file
    gets the permissions of a plain ``open`` (0666 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException as err:
        with contextlib.suppress(OSError):  # e.g. a name too long to make at all: the first error tells
            partial.unlink(missing_ok=True)
        # A failed write names no file (a full disk), a failed rename the partial one and ``path``.
        if isinstance(err, OSError) and err.errno is not None and err.filename in (None, str(partial)):
            raise OSError(err.errno, err.strerror, str(path)) from err  # of err's subclass, by its errno
        raise
    return path
