"""Files written so that a failed or killed run never leaves half of one behind.

Every file provex writes (explanations, weights, JSON results, run shards, reports) goes
through :func:`atomic_write`: the bytes go to a hidden temporary name in the same folder,
are flushed and fsynced, and the temporary file is renamed over the final name, which is
atomic on POSIX file systems. A process killed mid-write leaves only a ``.NAME.PID.tmp``
file; :func:`remove_stale_temporaries` (called by the writers of folders that runs reuse)
deletes those whose process is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write", "remove_stale_temporaries", "write_json"]

_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


def atomic_path(path: str | os.PathLike) -> tuple[Path, Path]:
    """Return ``(final, temporary)`` paths: write the temporary one, then rename it.

    The parent folder is created. The temporary name is hidden and carries the process id,
    so concurrent writers never share one and stale ones can be recognised.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    return final, final.with_name(f".{final.name}.{os.getpid()}.tmp")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _file_mode() -> int:
    """The mode ``open()`` gives a new file under this process's umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Context manager yielding a temporary path; on success it replaces ``path`` atomically.

    >>> with atomic_write("out/result.json") as tmp:   # doctest: +SKIP
    ...     tmp.write_text("{}")

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    final, tmp = atomic_path(path)
    try:
        yield tmp
        if tmp.exists():  # writers such as safetensors create 0600 files: give the usual mode
            os.chmod(tmp, _FILE_MODE)
        if fsync and tmp.exists():
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
        if fsync:
            _fsync_dir(final.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Delete temporary files of :func:`atomic_write` left by processes that no longer run."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"):
        m = _TMP.match(p.name)
        if m and p.is_file() and not _pid_alive(int(m["pid"])):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON atomically (tensors and arrays become lists, paths strings)."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, default=_jsonable) + "\n")
    return Path(path)
