"""Atomic file and directory writes, so an interrupted run never leaves a half-written artefact.

Each writer puts its output under a temporary name in the destination's own directory and renames
it into place only when complete. A rename within one filesystem is atomic on POSIX, so readers
see either the old state or the finished new one.
"""

import contextlib
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> pathlib.Path:
    """Write `data` to `path` through a temporary file in the same directory, then rename it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp_file:
            tmp_file.write(data)
            tmp_file.flush()
            os.fsync(tmp_file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        pathlib.Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yield a temporary directory that is renamed to `path` when the block exits without error.

    On an exception the temporary directory is deleted and `path` is left untouched. Raises
    FileExistsError if `path` already exists, because replacing a directory is not atomic.
    """
    path = pathlib.Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; delete it or choose another directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = pathlib.Path(
        tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    )
    try:
        yield tmp_dir
        os.rename(tmp_dir, path)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
