"""Find the package's shared files (config/, models/, train/, launch/) in every way the package gets installed.

Order: a source checkout (the folder above this package), then `<prefix>/share/mmseg_ros` of the running Python
(pip install), then the ament index (colcon install; `AMENT_PREFIX_PATH`). `pip install -e .` does not install
data files, so the checkout must come first.
"""
from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

from .errors import ConfigError

PACKAGE = "mmseg_ros"


def _candidates():
    yield Path(__file__).resolve().parent.parent
    yield Path(sys.prefix) / "share" / PACKAGE
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        yield Path(prefix) / "share" / PACKAGE


@lru_cache(maxsize=None)
def share_dir() -> Path:
    """The folder that holds config/ and models/ for this installation."""
    for root in _candidates():
        if (root / "config").is_dir() and (root / "models").is_dir():
            return root
    raise ConfigError(
        "cannot find mmseg_ros's share folder (config/, models/); looked in: "
        + ", ".join(str(p) for p in _candidates())
    )


def resolve(path: str | os.PathLike, kind: str = "") -> Path:
    """Resolve a user-given file: as given (absolute or relative to the working directory) if it exists, else
    relative to the share folder, else inside the share folder's `kind` sub-folder (e.g. 'models')."""
    p = Path(os.path.expanduser(str(path)))
    if p.exists():
        return p
    if not p.is_absolute():
        for candidate in (share_dir() / p, share_dir() / kind / p):
            if candidate.exists():
                return candidate
    where = f" (also looked in {share_dir() / kind})" if kind else ""
    raise ConfigError(f"file not found: {path}{where}")
