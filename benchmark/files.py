"""Files written whole or not at all: a report, or another worker, never reads half a file; and the
checks, before a command writes anything, that the folder an option names can be written in and that
a name given for files can name them."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

MAX_NAME = 100  # characters of a name that names files (a file name may have 255 bytes)


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


def check_name(name: str, what: str) -> None:
    """A ``ValueError`` unless ``name`` can name files and folders on any system: ``what`` is whose
    name it is, e.g. "suite name"."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ValueError(f"{what} {name!r} must start with a letter or digit and hold only letters, "
                         "digits, '.', '_' or '-' (it names files)")
    if len(name) > MAX_NAME:  # with the suffixes of its files, a longer one can pass a file system's limit
        raise ValueError(f"{what} {name[:20]}… is {len(name)} characters long; at most {MAX_NAME} "
                         "(it names files)")


def check_folder(flag: str, given: str | Path, folder: Path | None = None) -> None:
    """A one-line ``ValueError`` naming option ``flag`` and its value ``given`` unless ``folder`` (``given``
    itself, or a folder under it that the command writes in) is a folder to write in, or can be made one:
    "--studies-dir /proc/nope: the folder cannot be made (No such file or directory)".

    It makes nothing that stays, so that a command refused after it leaves no empty folder behind: the
    command makes ``folder`` when it writes there. To find out, it makes a folder of its own, holding the
    rest of ``folder``'s path, in the nearest folder that exists, and removes it; another process's
    folder is never touched.
    """
    folder = Path(given if folder is None else folder)
    if problem := _unwritable(folder):
        raise ValueError(f"{flag} {given}: the folder{'' if folder == Path(given) else f' {folder}'} {problem}")


def _unwritable(folder: Path) -> str | None:
    """Why ``folder`` cannot be written in (see ``check_folder``), or None."""
    try:
        # "." ends a relative path's parents; it is missing only where the working folder was removed
        existing = next((path for path in (folder, *folder.parents) if os.path.lexists(path)), Path("."))
        if not existing.exists():  # a link to nothing (an unmounted disk), or a loop of links
            return f"cannot be made ({existing} is a broken link)"
        if not existing.is_dir():
            return f"cannot be made ({existing} is not a folder)"
        try:
            probe = Path(tempfile.mkdtemp(prefix=".probe-", dir=existing))
        except OSError as err:
            return f"{'is not writable' if existing == folder else 'cannot be made'} ({err.strerror})"
        try:
            (probe / folder.relative_to(existing)).mkdir(parents=True, exist_ok=True)
        finally:
            shutil.rmtree(probe, ignore_errors=True)
    except OSError as err:  # e.g. a name too long, or a folder on the way that cannot be looked in
        return f"cannot be made ({err.strerror})"
    return None
