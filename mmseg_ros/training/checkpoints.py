"""Training-state checkpoints: everything a run needs to continue exactly where it stopped.

A state file holds the model's trained tensors (`trainable_state_dict()`: LoRA, heads, decoder, router, memory
modules, trained buffers), the optimiser, lr scheduler and AMP grad-scaler states, the progress counters (epoch,
optimiser steps done in that epoch, global step, best validation mIoU), the python/numpy/torch RNG states of every
process, the recipe and the model card. The frozen SAM2 weights are not stored — they are rebuilt from the card with
the run's seed — but a digest of them is, so resuming against different frozen weights fails loudly instead of
silently training something else.

Files are written through `atomic.torch_save` (temp file + fsync + rename): a run killed at any instant leaves
either the previous complete file or the new complete one, plus at most a `.tmp-*` leftover that nothing reads.
The shipped model (what `mmseg eval`, the engine and the node load) is exported separately in the project
checkpoint format of `mmseg_ros.nn.checkpoint`.
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from ..atomic import torch_save
from ..errors import CheckpointError

FORMAT = "mmseg_ros.training_state/1"
LATEST = "latest.pt"


def epoch_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}.pt"


# ---------------------------------------------------------------------------------------------------- RNG states
def capture_rng() -> dict:
    """This process's global RNG states as plain data (loadable with torch.load(weights_only=True))."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------------- frozen digest
def frozen_digest(model: torch.nn.Module) -> Dict[str, List[float]]:
    """A cheap fingerprint of every frozen parameter: (sum, sum of |x|) in float64."""
    out = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            values = p.detach().double()
            out[name] = [float(values.sum()), float(values.abs().sum())]
    return out


def check_frozen_digest(model: torch.nn.Module, stored: Dict[str, List[float]], source) -> None:
    current = frozen_digest(model)
    if set(current) != set(stored):
        extra = sorted(set(current) ^ set(stored))
        raise CheckpointError(f"{source}: the set of frozen parameters differs from the run that wrote it "
                              f"(e.g. {extra[0]!r}); was the card's 'trainable' setting changed?")
    for name, (total, magnitude) in current.items():
        ref_total, ref_magnitude = stored[name]
        scale = max(1.0, abs(ref_magnitude))
        if abs(total - ref_total) > 1e-6 * scale or abs(magnitude - ref_magnitude) > 1e-6 * scale:
            raise CheckpointError(
                f"{source}: frozen weights differ from the run that wrote it (first: {name!r}); resume with the same "
                f"seed and the same SAM2 checkpoint as that run"
            )


# ---------------------------------------------------------------------------------------------------- state files
def save_state(path, *, recipe: dict, card: dict, model, optimizer, scheduler, scaler, progress: dict,
               rng: List[dict], frozen: Dict[str, List[float]]) -> Path:
    """Write one training-state file atomically; returns its path."""
    state = {
        "format": FORMAT,
        "recipe": recipe,
        "card": card,
        "model": {k: v.detach().cpu() for k, v in model.trainable_state_dict().items()},
        "frozen_digest": frozen,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "progress": dict(progress),
        "rng": rng,
    }
    return torch_save(state, path)


def load_state(path) -> dict:
    """Read a training-state file; a missing, torn or foreign file is a CheckpointError naming the path."""
    path = Path(path)
    if path.name.startswith(".tmp-"):
        raise CheckpointError(f"{path}: a temporary file of an interrupted write, not a checkpoint")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, pickle/zip errors, EOFError for torn files
        raise CheckpointError(f"{path}: not a readable training checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not a training-state checkpoint (format {found!r}, expected {FORMAT!r}); "
                              f"project checkpoints are for `mmseg eval`, not --resume")
    return state


def find_latest(out_dir) -> Optional[Path]:
    """The run folder's latest.pt, if one was ever completed (temporary `.tmp-*` files are never candidates)."""
    path = Path(out_dir) / LATEST
    return path if path.is_file() else None


def load_model_tensors(model: torch.nn.Module, tensors: Dict[str, torch.Tensor], source) -> None:
    """Put a checkpoint's trained tensors into `model`; every trained tensor of the model must be there."""
    expected = set(model.trainable_state_dict())
    missing = sorted(expected - set(tensors))
    unexpected = sorted(set(tensors) - set(model.state_dict()))
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unknown {unexpected[:3]}"
        raise CheckpointError(f"{source}: trained tensors do not fit this model ({what})")
    own = model.state_dict()
    for name, tensor in tensors.items():
        if own[name].shape != tensor.shape:
            raise CheckpointError(f"{source}: {name!r} has shape {tuple(tensor.shape)}, the model's is "
                                  f"{tuple(own[name].shape)}")
    model.load_state_dict(tensors, strict=False)


def best_score(progress: dict) -> float:
    value = progress.get("best_miou")
    return -math.inf if value is None else float(value)
