"""Class sets: names and palette colours, defined once in config/classes/*.yaml."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
import yaml

from .errors import ConfigError
from .resources import resolve

IGNORE_INDEX = 255


@dataclass(frozen=True)
class ClassSet:
    name: str
    names: Tuple[str, ...]
    colors: Tuple[Tuple[int, int, int], ...]

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def palette(self) -> np.ndarray:
        """(K, 3) uint8 colours, row k for class k."""
        return np.asarray(self.colors, dtype=np.uint8).reshape(-1, 3)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise ConfigError(f"class {name!r} not in class set {self.name!r}: {list(self.names)}") from None

    def colorize(self, labels: np.ndarray, unlabeled=(0, 0, 0)) -> np.ndarray:
        """(H, W) class ids -> (H, W, 3) uint8; ids outside the set (ignore/unlabeled) get `unlabeled`."""
        lut = np.zeros((max(self.num_classes, int(labels.max(initial=0)) + 1), 3), np.uint8)
        lut[:] = unlabeled
        lut[: self.num_classes] = self.palette()
        return lut[labels]


def from_dict(data: dict, source: str = "<dict>") -> ClassSet:
    try:
        entries = data["classes"]
        names = tuple(str(e["name"]) for e in entries)
        colors = tuple(tuple(int(c) for c in e["color"]) for e in entries)
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{source}: a class set needs 'classes: [{{name, color: [r, g, b]}}, ...]' ({exc})") from None
    if not names:
        raise ConfigError(f"{source}: class set is empty")
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: duplicate class names in {list(names)}")
    bad = [c for c in colors if len(c) != 3 or not all(0 <= v <= 255 for v in c)]
    if bad:
        raise ConfigError(f"{source}: colours must be [r, g, b] in 0..255, got {bad[:3]}")
    return ClassSet(str(data.get("name", source)), names, colors)


def load(name_or_path: str) -> ClassSet:
    """Load a class set by name ('deliver', 'cityscapes', 'mcubes') or by YAML path."""
    ref = name_or_path if str(name_or_path).endswith((".yaml", ".yml")) else f"{name_or_path}.yaml"
    path = resolve(ref, "config/classes")
    with open(path) as f:
        return from_dict(yaml.safe_load(f) or {}, str(path))
