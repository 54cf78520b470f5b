"""Which modality subsets a missing-modality evaluation runs, in the papers' column order."""
from __future__ import annotations

from itertools import combinations
from typing import List, Sequence, Tuple

from .. import modalities
from ..errors import ConfigError


def modality_subsets(trained: Sequence[str]) -> List[Tuple[str, ...]]:
    """Every non-empty subset of the trained modalities: by size, then in the trained order.

    For R-D-E-L that is MLE-SAM Table VI's column order: R, D, E, L, R-D, R-E, R-L, D-E, D-L, E-L, R-D-E, R-D-L,
    R-E-L, D-E-L, R-D-E-L (2^M - 1 subsets)."""
    names = modalities.canonical(trained)
    return [subset for size in range(1, len(names) + 1) for subset in combinations(names, size)]


def subset_code(subset: Sequence[str]) -> str:
    """Paper-style name of a subset, e.g. ('rgb', 'depth') -> 'R-D'."""
    return modalities.short_code(subset)


def parse_subset(text: str, trained: Sequence[str]) -> Tuple[str, ...]:
    """'R-D' or 'rgb,depth' -> canonical names in the trained order; names outside the trained set are rejected."""
    trained = modalities.canonical(trained)
    by_code = {m.code.lower(): m.name for m in modalities.REGISTRY.values()}
    parts = [p for p in text.replace(",", "-").split("-") if p]
    chosen = set()
    for part in parts:
        name = by_code.get(part.lower()) or modalities.get(part).name
        if name not in trained:
            raise ConfigError(f"subset {text!r}: modality {name!r} is not one of the trained {list(trained)}")
        chosen.add(name)
    if not chosen:
        raise ConfigError(f"subset {text!r} names no modality")
    return tuple(name for name in trained if name in chosen)
