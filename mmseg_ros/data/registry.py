"""The dataset registry: the names recipes (`data.dataset`) and `mmseg eval --dataset` accept, and how to open them.

Every registered class takes (root, split=, modalities=, transform=, **options). A recipe may also name any factory
as 'package.module:function'."""
from __future__ import annotations

import importlib
from typing import Callable

from ..errors import ConfigError

# name -> (module, class)
LOADERS = {
    "deliver": ("mmseg_ros.data.deliver", "Deliver"),
    "muses": ("mmseg_ros.data.muses", "Muses"),
    "mcubes": ("mmseg_ros.data.mcubes", "MCubeS"),
}


def factory(name: str, what: str = "data.dataset", allow_import_path: bool = True) -> Callable:
    """The dataset class (or function) registered as `name`, or imported from 'package.module:function'."""
    if name in LOADERS:
        module, attribute = LOADERS[name]
    elif allow_import_path and ":" in name:
        module, attribute = name.split(":", 1)
    else:
        extra = " or 'package.module:function'" if allow_import_path else ""
        raise ConfigError(f"{what}: unknown dataset {name!r}; use one of {', '.join(LOADERS)}{extra}")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{what}: cannot import {name!r} ({exc})") from None
