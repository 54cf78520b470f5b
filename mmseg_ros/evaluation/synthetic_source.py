"""`--data synthetic:<spec>`: freshly generated, seeded scenes as an evaluation data set.

The spec is comma-separated `key=value` pairs (lists joined by '+'), e.g.

    synthetic:frames=100,seed=100,size=256,conditions=fog+night,failures=none

Keys are those of `data.synthetic.tree.plan_maps` plus `size` (default: the model's input height): frames,
seed, size, frames_per_map, frame_step, conditions, failures, failure_every. Every planned map goes to the split that
is evaluated, so all `frames` frames are scored. The scenes are written once as a DELIVER-layout tree by the
generator's own tree writer and read back by the DELIVER loader, so evaluation sees exactly the files, encodings and
label mapping that training on a generated tree sees. Trees are cached under a key that covers the spec, the split
and the generator settings (config/synthetic.yaml); the same spec always gives the same bytes.

The default seed is not 0 (the usual training tree's seed): validation scenes should be drives the model has not
been trained on.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence

from ..errors import ConfigError

DEFAULT_SEED = 100
INT_KEYS = ("frames", "seed", "size", "frames_per_map", "frame_step", "failure_every")
LIST_KEYS = ("conditions", "failures")
DONE_MARKER = "synthetic.json"  # written last by the tree writer's manifest


def parse_spec(text: str) -> Dict:
    """'frames=40,conditions=fog+night' -> {'frames': 40, 'conditions': ('fog', 'night')} (unset keys absent)."""
    spec: Dict = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in INT_KEYS + LIST_KEYS:
            raise ConfigError(f"synthetic spec {text!r}: expected key=value with keys "
                              f"{', '.join(INT_KEYS + LIST_KEYS)}; got {part!r}")
        if key in INT_KEYS:
            try:
                spec[key] = int(value)
            except ValueError:
                raise ConfigError(f"synthetic spec: {key} must be an integer, got {value!r}") from None
        else:
            names = tuple(n for n in value.split("+") if n and n != "none")
            spec[key] = names
    return spec


def tree_for(spec_text: str, split: str, default_size: int, cache: Optional[os.PathLike] = None,
             workers: int = 1) -> Path:
    """The DELIVER-layout tree of `spec_text`, generated into the cache unless it is there already."""
    from ..data.synthetic import config, tree

    spec = parse_spec(spec_text)
    size = spec.pop("size", default_size)
    frames = spec.pop("frames", 50)
    seed = spec.pop("seed", DEFAULT_SEED)
    if split not in tree.SPLITS:
        raise ConfigError(f"synthetic data: split must be one of {list(tree.SPLITS)}, got {split!r}")
    ratios = [1.0 if s == split else 0.0 for s in tree.SPLITS]
    plans = tree.plan_maps(frames, split_ratios=ratios, seed=seed, **spec)
    key_source = {"plans": [repr(p) for p in plans], "size": size, "settings": config.load().to_dict()}
    key = hashlib.sha256(json.dumps(key_source, sort_keys=True, default=str).encode()).hexdigest()[:16]
    root = Path(cache or _default_cache()) / f"{split}-{frames}f-{size}px-seed{seed}-{key}"
    if (root / DONE_MARKER).is_file():
        return root
    # Render into a private folder and rename it into place, so a crash or a concurrent run never leaves a
    # half-written tree where the next run would take it as complete.
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{root.name}-", dir=root.parent))
    try:
        for _ in tree.write_tree(staging, plans, size, workers):
            pass
        from ..data.synthetic import SceneGenerator

        tree.write_manifest(staging, plans, size, seed, SceneGenerator(seed, size))
        try:
            os.rename(staging, root)
        except OSError:  # another process finished the same tree first
            if not (root / DONE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def open_dataset(spec_text: str, split: str, modalities: Sequence[str], transform, default_size: int,
                 cache=None, workers: int = 1, **options):
    """A DELIVER loader over the generated tree (`options` go to the loader, e.g. depth_source)."""
    from ..data.deliver import Deliver

    root = tree_for(spec_text, split, default_size, cache, workers)
    return Deliver(root, split, modalities=modalities, transform=transform, **options)


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmseg_ros" / "synthetic"
