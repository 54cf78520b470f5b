"""Project checkpoints: what the official SAM2 file cannot give (what training changed, and frozen layers the model
initialised itself), plus what is needed to check it fits before loading.

A file (written atomically with torch.save, read with weights_only=True) holds:
  format, version, architecture, card (self-contained card dict), classes (names), modalities (expert order),
  lora_rank, sam2 {config, overrides}, trainable (setting), state (the model's `trainable_state_dict()`), meta.
The frozen SAM2 weights are not in it: loading builds the model from a card, which loads the official SAM2 file the
card names, then loads `state` on top, strict on names and shapes. A card without an official SAM2 file has
randomly initialised frozen weights that nothing could reproduce, so then `state` is the whole model state
(`stores_frozen: true`). Classes, modalities, LoRA rank,
SAM2 config/overrides, architecture and trainable setting are compared with the card first; a mismatch fails with a
CheckpointError naming both sides.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch

from ..atomic import torch_save
from ..errors import CheckpointError, ConfigError
from .sam2_backbone import check_state_matches, load_torch_file

FORMAT = "mmseg_ros.checkpoint"
VERSION = 1
REQUIRED_KEYS = ("architecture", "card", "classes", "modalities", "lora_rank", "sam2", "trainable", "stores_frozen",
                 "state")
SHOWN = 6  # list entries shown in an error message


def save_checkpoint(model, path, meta: Optional[Mapping[str, Any]] = None) -> Path:
    """Write `model`'s trained tensors and its card to `path` (atomically). `meta` must be JSON-like."""
    meta = dict(meta or {})
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"checkpoint meta must hold plain values (numbers, strings, lists, dicts): {exc}") from None
    card = model.card
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": card.architecture,
        "card": card.to_dict(),
        "classes": list(card.class_names),
        "modalities": list(model.modalities),
        "lora_rank": card.lora_rank,
        "sam2": {"config": card.sam2_config, "overrides": list(card.sam2_overrides)},
        "trainable": card.trainable,
        "stores_frozen": stores_frozen(card),
        "state": {k: v.detach().to("cpu", copy=True) for k, v in saved_state(model).items()},
        "meta": meta,
    }
    return torch_save(payload, path)


def stores_frozen(card) -> bool:
    """Whether a checkpoint for `card` must carry the frozen weights too (no official SAM2 file to rebuild them)."""
    return card.sam2_checkpoint is None


def saved_state(model) -> Dict[str, torch.Tensor]:
    """What a checkpoint of `model` holds: the trained tensors, or everything when `stores_frozen(card)`."""
    if stores_frozen(model.card):
        return {k: v.detach() for k, v in model.state_dict().items()}
    return model.trainable_state_dict()


def read_checkpoint(path) -> Dict[str, Any]:
    """The checkpoint dict, with its format and version checked."""
    path = Path(path)
    data = load_torch_file(path, "checkpoint")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        official = isinstance(data, dict) and "model" in data
        hint = " (an official SAM2 checkpoint belongs in the card's sam2.checkpoint)" if official else ""
        raise CheckpointError(f"{path} is not an mmseg_ros checkpoint{hint}")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {data.get('version')!r}, "
                              f"this mmseg_ros reads {VERSION}")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise CheckpointError(f"{path}: damaged mmseg_ros checkpoint, missing {missing}")
    malformed = [key for key in ("card", "sam2", "state") if not isinstance(data[key], dict)]
    if malformed:
        raise CheckpointError(f"{path}: damaged mmseg_ros checkpoint, {malformed} must be mappings")
    data["path"] = str(path)
    return data


def check_compatible(card, ckpt: Mapping[str, Any]) -> None:
    """Raise CheckpointError if `ckpt` was trained for another architecture, class set, modality list, LoRA rank,
    SAM2 config or trainable setting than `card` describes."""
    where = ckpt.get("path", "checkpoint")
    sides = [
        ("architecture", ckpt["architecture"], card.architecture),
        ("classes", list(ckpt["classes"]), list(card.class_names)),
        ("modalities", list(ckpt["modalities"]), list(card.modalities)),
        ("LoRA rank", ckpt["lora_rank"], card.lora_rank),
        ("SAM2 config", ckpt["sam2"]["config"], card.sam2_config),
        ("SAM2 overrides", list(ckpt["sam2"]["overrides"]), list(card.sam2_overrides)),
        ("trainable setting", ckpt["trainable"], card.trainable),
    ]
    problems = [f"{what}: checkpoint has {_show(theirs)}, card {card.name!r} has {_show(ours)}"
                + _only_in(theirs, ours) for what, theirs, ours in sides if theirs != ours]
    if problems:
        raise CheckpointError(f"{where} does not fit card {card.name!r}: " + "; ".join(problems))


def load_trained_state(model, checkpoint) -> Dict[str, Any]:
    """Load a checkpoint (path or dict from read_checkpoint) into a model built from a compatible card; returns meta."""
    ckpt = checkpoint if isinstance(checkpoint, Mapping) else read_checkpoint(checkpoint)
    check_compatible(model.card, ckpt)
    state = ckpt["state"]
    if ckpt["stores_frozen"]:
        expected = {k: v.detach() for k, v in model.state_dict().items()}
    elif model.card.sam2_checkpoint is None:
        raise CheckpointError(
            f"{ckpt.get('path', 'checkpoint')} holds only trained tensors and needs the official SAM2 weights it was "
            f"trained on ({ckpt['card']['sam2'].get('checkpoint')}), "
            f"but card {model.card.name!r} names no sam2.checkpoint")
    else:
        expected = model.trainable_state_dict()
    # Strict on exactly the trained tensors: anything else would silently mix trained and fresh weights.
    check_state_matches(expected, state, f"checkpoint {ckpt.get('path', '')}".strip(),
                        hint="saved from another model version or trainable setting?")
    model.load_state_dict(state, strict=False)
    return dict(ckpt.get("meta") or {})


def _show(value) -> str:
    if isinstance(value, list) and len(value) > SHOWN:
        return f"{len(value)} {value[:SHOWN]}..."
    return repr(value)


def _only_in(theirs, ours) -> str:
    """For long lists, which entries differ: they may lie past what `_show` prints."""
    if not (isinstance(theirs, list) and isinstance(ours, list)) or max(len(theirs), len(ours)) <= SHOWN:
        return ""
    only_theirs = [v for v in theirs if v not in ours]
    only_ours = [v for v in ours if v not in theirs]
    if not (only_theirs or only_ours):
        return " (same entries, other order)"
    return f" (only in checkpoint: {_show(only_theirs)}; only in card: {_show(only_ours)})"
