"""One training run from a recipe: process group, determinism, seeds, model, data, trainer; what `mmseg train`
does, callable from Python (e.g. under torchrun) as `run(recipe, out_dir)`."""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from . import build, checkpoints, distributed
from .config import Recipe
from .trainer import Progress, Trainer

RECIPE_COPY = "recipe.yaml"


def run(recipe: Recipe, out_dir, resume=None, device: str = "auto",
        ctx: Optional[distributed.Context] = None) -> Tuple[torch.nn.Module, Progress]:
    """Train as `recipe` says into `out_dir`; returns the (unwrapped) trained model and the final progress.

    `resume`: None/False = a new run (refused if `out_dir` already holds one), True = continue from
    `out_dir/latest.pt` when it exists (else start fresh), or a path to a training-state file."""
    ctx = ctx or distributed.init(device)
    out_dir = Path(out_dir)
    resume_from = _resume_file(out_dir, resume)
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if resume_from is None:
            _write_recipe(recipe, out_dir / RECIPE_COPY)
    if recipe.train.deterministic:
        _deterministic(ctx)
    card = build.load_card(recipe)
    train_set, val_set = build.build_datasets(recipe, card)  # before the model: a wrong data root fails at once
    model = build.build_model(card, recipe.seed, ctx.device)
    if recipe.init_from is not None and resume_from is None:
        build.init_weights(model, recipe.init_from)
    _seed(recipe.seed + ctx.rank)  # training randomness (dropout) differs per process, repeats per seed
    trainer = Trainer(recipe, model, train_set, val_set, build.collate(card), out_dir, ctx, card.class_names,
                      resume_from=resume_from, export=_exporter())
    progress = trainer.fit()
    return model, progress


def _resume_file(out_dir: Path, resume) -> Optional[Path]:
    if resume is None or resume is False:
        if checkpoints.find_latest(out_dir) is not None:
            raise ConfigError(f"{out_dir} already holds a run ({checkpoints.LATEST}); pass --resume to continue it "
                              f"or choose another --out")
        return None
    if resume is True:
        found = checkpoints.find_latest(out_dir)
        if found is None:
            print(f"note: no {checkpoints.LATEST} in {out_dir}; starting a new run", file=sys.stderr)
        return found
    path = Path(resume)
    checkpoints.load_state(path)  # fails early with a clear message if it is not a training state
    return path


def _write_recipe(recipe: Recipe, path: Path) -> None:
    import yaml

    from ..atomic import atomic_open

    with atomic_open(path, "w") as f:
        yaml.safe_dump(recipe.to_dict(), f, sort_keys=False)


def _deterministic(ctx: distributed.Context) -> None:
    # cuBLAS needs this before its first use to be deterministic; harmless on CPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = False


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _exporter():
    """The project-checkpoint writer (what `mmseg eval`, the engine and the node load)."""
    from ..nn.checkpoint import save_checkpoint

    return save_checkpoint
