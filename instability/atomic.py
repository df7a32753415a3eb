"""Atomic writes for records and reports: write under a temporary name beside the target, then rename.

A process killed mid-write leaves the earlier file (or nothing), never a partial one. Files and folders get
the permissions an ordinary `open`/`mkdir` would give them (tempfile's are private), so a research group can
read each other's records.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def apply_umask(path: str | os.PathLike) -> None:
    """Give a file or folder made by `tempfile` (always 0600/0700) the umask's ordinary permissions."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~_UMASK)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside `path` durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_file(target: str | os.PathLike, produce: Callable[[IO], None], binary: bool = False) -> Path:
    """Write `target` through `produce(handle)` under a temporary name beside it, then rename it into place."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}-", dir=target.parent)
    try:
        text = {} if binary else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(handle, "wb" if binary else "w", **text) as out:
            produce(out)
            out.flush()
            os.fsync(out.fileno())
        apply_umask(temporary)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def dump_json(data: Any, handle: IO) -> None:
    """The project's JSON form: indented, sorted keys, no NaN (metrics of a diverged run are null)."""
    json.dump(data, handle, indent=2, sort_keys=True, allow_nan=False, default=str)


def write_json(target: str | os.PathLike, data: Any) -> Path:
    """Write JSON atomically."""
    return write_file(target, lambda out: dump_json(data, out))


@contextmanager
def staged_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Fill a temporary folder beside `target`; on success it replaces `target` whole, on error it is removed."""
    target = Path(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield staging
        apply_umask(staging)
        fsync_dir(staging)
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
            os.replace(target, retired / target.name)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
