"""Atomic file writes: a reader sees the old file or the complete new one, never part of a file.

Every file the package writes (policies, configs, checkpoints, results, reports) goes through
:func:`write_atomic`: the content goes to a temporary file in the same folder, is flushed and fsynced,
then renamed over the target with ``os.replace``. Any error on the way (a full disk, a kill of the
writer's thread by an exception) removes the temporary file and leaves the target as it was.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

__all__ = ["json_numbers", "save_torch_atomic", "unwritable", "write_atomic", "write_bytes_atomic", "write_json_atomic",
           "write_text_atomic"]

# A temporary file is created 0600; the finished file gets the mode a plain open() would give it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def unwritable(path: str | os.PathLike[str], *, folder: bool = False) -> str | None:
    """Why ``path`` cannot be written as a file (with ``folder``: made as a folder and written in), or None:
    a file's name that is a folder (or ends in a separator), a parent that is a file, or a nearest existing
    folder that refuses a new file. Checked before work starts; nothing is left behind."""
    text = os.fspath(path)
    target = Path(text)
    if not folder and (text.endswith(("/", os.sep)) or target.is_dir()):
        return "a folder, not a file"
    try:
        if not folder:  # as write_atomic writes it: through a link, and straight into a device or pipe
            target = Path(os.path.realpath(target))
            if target.exists() and not target.is_file():
                return None if os.access(target, os.W_OK) else "cannot write to it (Permission denied)"
        existing = wanted = target if folder else target.parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
    except OSError as exc:  # a folder on the way that this user may not look into
        return f"cannot look into {exc.filename or target} ({exc.strerror or exc})"
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        nearest = "" if existing == wanted else ", the nearest existing folder on its path"
        return f"cannot write in {existing}{nearest} ({exc.strerror or exc})"
    return None


def write_atomic(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(handle)`` on a temporary binary file next to ``path``, then rename it to ``path``.

    An existing folder at ``path`` is refused first, by its own name (IsADirectoryError). A symbolic link
    is written through (its target replaced, the link kept; a missing target's folders are made, as for
    ``path``), and a device or pipe (``/dev/null``) is written to directly: renaming over either would
    replace it with a plain file. An error about the temporary file or the device names ``path``."""
    if os.path.isdir(path):  # else the rename fails, naming the temporary file
        raise IsADirectoryError(errno.EISDIR, "is a directory", os.fspath(path))
    given, path = os.fspath(path), Path(os.path.realpath(path))
    if path.exists() and not path.is_file():
        try:
            with open(path, "wb") as handle:
                write(handle)
        except OSError as exc:
            if exc.filename in (None, os.fspath(path)):  # /dev/full: "No space left on device", naming nothing
                raise _renamed(exc, given) from exc
            raise
        return Path(given)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            if hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), 0o666 & ~_UMASK)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and _temporary(exc.filename, path):
            raise _renamed(exc, given) from exc
        raise
    _fsync_folder(path.parent)
    return Path(given)


def _temporary(name: Any, path: Path) -> bool:
    """Whether ``name`` is a temporary file of ``path`` (mkstemp's error names one it chose, not ``tmp``)."""
    return (isinstance(name, str) and os.path.dirname(name) == str(path.parent) and name.endswith(".tmp")
            and os.path.basename(name).startswith(f".{path.name}."))


def _renamed(exc: OSError, given: str) -> OSError:
    """``exc`` naming the path the caller gave (an error about another file is not passed here)."""
    return type(exc)(exc.errno, exc.strerror, given) if exc.errno is not None else exc


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable where the platform allows opening a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not fsync folders; the rename is still atomic
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return write_atomic(path, lambda handle: handle.write(data))


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (newlines as given)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], document: Any) -> Path:
    """Write ``document`` as indented JSON to ``path`` atomically. NaN and infinities (a std of one seed) are
    written as null: JSON has no such numbers, and strict readers (JavaScript's, jq's) refuse Python's NaN."""
    return write_text_atomic(path, json.dumps(json_numbers(document), indent=2, allow_nan=False) + "\n")


def json_numbers(value: Any) -> Any:
    """``value`` (dicts, lists and tuples of JSON values) with every NaN or infinite float as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_numbers(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_numbers(item) for item in value]
    return value


def save_torch_atomic(path: str | os.PathLike[str], state: Any) -> Path:
    """``torch.save(state)`` to ``path`` atomically."""
    import torch

    return write_atomic(path, lambda handle: torch.save(state, handle))
