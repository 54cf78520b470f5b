"""Write files so that readers never see a half-written one: temp file in the same folder, fsync, rename.

If writing fails (disk full, exception, SIGKILL) the destination keeps its previous content, or stays absent, and
the temporary file is removed (except after SIGKILL, which leaves only a `.tmp-*` file that no reader opens).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path, suffix: str = ""):
    """Yield a temporary path beside `path`; on clean exit it is fsynced and renamed onto `path`.

    For writers that want a file name (torch.save, cv2.imwrite, rosbags writers). `suffix` keeps an extension
    that such writers look at (e.g. '.png')."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{dest.name}-", suffix=suffix, dir=dest.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results should be as readable as any open() file
    try:
        yield Path(tmp)
        _fsync_file(tmp)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb"):
    """Like open(path, mode) for writing, but the file appears only complete."""
    if not any(m in mode for m in "wx"):
        raise ValueError(f"atomic_open is for writing, got mode {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            yield f
            f.flush()


def torch_save(obj, path) -> Path:
    """torch.save(obj, path) through `atomic_open`. torch reports a failed write as an opaque RuntimeError
    ('unexpected pos ...'); the OSError behind it (e.g. ENOSPC, disk full) is raised instead, naming the file."""
    import torch

    path = Path(path)
    try:
        with atomic_open(path, "wb") as f:
            torch.save(obj, f)
    except (RuntimeError, OSError) as exc:
        cause = exc
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__context__
        if cause is None or getattr(cause, "filename", None):
            raise
        raise OSError(cause.errno, cause.strerror, str(path)) from exc
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path) -> None:
    if os.path.isdir(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
