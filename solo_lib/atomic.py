"""Writes that are never seen half done: files and folders are built next to their
destination, then renamed into place; and an inter-process lock.

The one place for this in the library: data sets (`atomic_directory`), checkpoints,
prediction files and benchmark results (`atomic_file`). A reader, or a run killed in
the middle of a write, finds the old file or folder or the new one, never a part.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed to `path`.

    Write the file's content to the yielded path (any writer: ``open``, ``torch.save``,
    ``Figure.savefig`` with an explicit format). On an exception the temporary file is
    removed and `path` is left untouched. The temporary name is unique per call, so
    several processes may write files of one folder at once. The content is flushed to
    the disk (fsync) before the rename and the folder after it, so that a power cut
    cannot leave the new name pointing at data that never reached the disk.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)  # mkstemp makes it 0600
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush `path` (a file, or a folder's entries) to the disk; folders only where POSIX allows."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # Windows cannot open folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_directory(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to `out_dir`; on success it replaces `out_dir`.

    On an exception the temporary folder is removed and `out_dir` is left untouched.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
        replace_directory(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def replace_directory(src: Path, dst: Path) -> None:
    """Move the folder `src` to `dst`, replacing whatever `dst` held."""
    if dst.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
        os.replace(dst, trash / dst.name)
        os.replace(src, dst)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(src, dst)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive inter-process lock on `path` (POSIX `flock`; a no-op where it is missing).

    Without `flock` two processes may both build the same folder; `atomic_directory`
    still keeps each result whole.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
