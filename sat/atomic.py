"""Atomic file writes: the one helper every writer of this repository uses (weights, vocab, caches,
checkpoints, histories, generated datasets).

    write_atomic(path, "text")                 # or bytes
    write_json(path, obj, indent=2)            # json.dumps(obj, **kwargs) + "\\n"
    with replacing(path) as tmp:               # for writers that take a path (torch.save, safetensors)
        torch.save(obj, tmp)

The data goes to a hidden temporary file beside `path` (same folder, so same filesystem), is
flushed to disk, then `os.replace`s `path`: a crash, a kill or a full disk mid-write leaves the
previous file (or none), never a truncated one, and the temporary file is removed on failure.
Every file gets the mode a plain `open(path, "w")` would give (0o666 minus the umask).
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Iterator

__all__ = ["replacing", "write_atomic", "write_json"]


def _tmp_name(path: Path) -> Path:
    # NOTE: unique per process and thread, so two writers of one file (torchrun ranks, app threads)
    # never share a temporary file; hidden, so globs over the folder do not pick it up.
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds it replaces `path`.

    On an exception the temporary file is removed and the exception propagates unchanged.
    """
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb"):  # created as every other file: 0o666 minus the umask …
            pass
        mode = os.stat(tmp).st_mode & 0o777
        yield tmp
        os.chmod(tmp, mode)  # NOTE: … which some writers (safetensors: 0o600) replace
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # NOTE: on disk before the rename, so a power loss cannot leave an empty file
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write `data` (str as UTF-8) to `path` atomically; returns the path.

    Raises OSError with one line naming the path (e.g. a full disk or a read-only folder).
    """
    path = Path(path)
    try:
        with replacing(path) as tmp:
            tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    except OSError as e:
        raise OSError(f"could not write {path}: {e.strerror or e}") from None
    return path


def write_json(path: str | os.PathLike[str], obj: Any, **dumps_kwargs: Any) -> Path:
    """`json.dumps(obj, **dumps_kwargs)` plus a newline, written atomically; returns the path."""
    return write_atomic(path, json.dumps(obj, **dumps_kwargs) + "\n")
