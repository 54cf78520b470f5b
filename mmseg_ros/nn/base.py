"""What every multi-modal segmenter shares: input checking, per-sample presence, freezing, trained-state export.

Models take `inputs`: a mapping modality -> (B, 3, H, W) tensor holding only the modalities that are present, and an
optional `present` bool tensor (B, M_given) (columns in the mapping's order) for per-sample presence inside a batch;
a sample whose entry is False behaves as if that modality were absent for it. `forward` returns a dict with at
least "logits" (B, K, H, W) at input resolution; `compute_loss(out, target)` returns (total, {name: float}).

Subclasses declare their parts with `component_prefixes()` (name -> parameter-name prefix, in order; LoRA is
its own component wherever it sits) and what trains per setting with `trainable_parameters(setting)`.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from .lora import is_lora_name

LORA_COMPONENT = "lora"


class MultiModalSegmenter(nn.Module):
    def __init__(self, card):
        super().__init__()
        self.card = card
        self.modalities: Tuple[str, ...] = tuple(card.modalities)
        self.num_classes: int = card.num_classes

    # -- inputs ---------------------------------------------------------------------------------------------------

    def check_inputs(
        self, inputs: Mapping[str, torch.Tensor], present: Optional[torch.Tensor] = None
    ) -> Tuple[List[str], List[torch.Tensor], torch.Tensor]:
        """Canonical names (mapping order), the tensors, and presence (B, M_given) bool on the tensors' device."""
        if not isinstance(inputs, Mapping) or not inputs:
            raise ConfigError(f"{self.card.name}: inputs must be a non-empty mapping modality -> (B, 3, H, W) tensor")
        names = list(self.card.canonical_inputs(inputs))
        tensors = list(inputs.values())
        for name, tensor in zip(names, tensors):
            if not torch.is_tensor(tensor) or tensor.ndim != 4 or tensor.shape[1] != 3:
                shape = tuple(tensor.shape) if torch.is_tensor(tensor) else type(tensor).__name__
                raise ConfigError(f"{self.card.name}: input {name!r} must be a (B, 3, H, W) tensor, got {shape}")
        first = tensors[0].shape
        for name, t in zip(names, tensors):
            if t.shape != first:
                raise ConfigError(f"{self.card.name}: input {name!r} has shape {tuple(t.shape)}, "
                                  f"{names[0]!r} has {tuple(first)}")
        batch, _, height, width = first
        if height % 32 or width % 32:
            raise ConfigError(f"{self.card.name}: input size {height}x{width} must be a multiple of 32 "
                              f"(card: {self.card.input_size})")
        if present is None:
            present = torch.ones(batch, len(names), dtype=torch.bool, device=tensors[0].device)
        else:
            present = torch.as_tensor(present, device=tensors[0].device).bool()
            if tuple(present.shape) != (batch, len(names)):
                raise ConfigError(f"{self.card.name}: 'present' must have shape (B, M_given) = {(batch, len(names))}, "
                                  f"got {tuple(present.shape)}")
            if not bool(present.any(dim=1).all()):
                empty = (~present.any(dim=1)).nonzero().flatten().tolist()
                raise ConfigError(f"{self.card.name}: samples {empty} have no modality present")
        return names, tensors, present

    def expert_ids(self, names: Iterable[str]) -> List[int]:
        """Index of each named modality in the card's modality list (the expert / modality-embedding slot)."""
        return [self.modalities.index(n) for n in names]

    # -- training state -------------------------------------------------------------------------------------------

    def trainable_parameters(self, setting: str) -> Iterable[nn.Parameter]:
        """Parameters that train in `setting` ('paper' or 'from_scratch'); everything else is frozen."""
        raise NotImplementedError

    def apply_trainable(self, setting: Optional[str] = None) -> None:
        """Freeze everything, then unfreeze what `setting` (default: the card's) trains."""
        setting = setting or self.card.trainable
        for p in self.parameters():
            p.requires_grad_(False)
        for p in self.trainable_parameters(setting):
            p.requires_grad_(True)

    def trained_buffer_names(self) -> List[str]:
        """Buffers a project checkpoint must carry besides trained parameters (e.g. running prototypes)."""
        return []

    def self_initialised_names(self) -> List[str]:
        """Frozen tensors the model initialises itself rather than loading them from the official SAM2 file (e.g. a
        SAM2 layer re-created with K outputs that nothing trains). A checkpoint must carry them: a reload would
        draw other random values, and the reloaded model would differ from the one that was trained."""
        return []

    def trainable_state_dict(self) -> "OrderedDict[str, torch.Tensor]":
        """What the model holds beyond the official SAM2 weights: parameters that require grad,
        `trained_buffer_names()` and `self_initialised_names()`."""
        state = self.state_dict(keep_vars=True)
        keep = {name for name, p in self.named_parameters() if p.requires_grad}
        keep |= set(self.trained_buffer_names()) | set(self.self_initialised_names())
        return OrderedDict((k, v.detach()) for k, v in state.items() if k in keep)

    # -- parameter accounting -------------------------------------------------------------------------------------

    def component_prefixes(self) -> Mapping[str, Tuple[str, ...]]:
        """Component name -> parameter-name prefixes, in display order (LoRA is detected by name)."""
        raise NotImplementedError

    def component_of(self, name: str) -> str:
        if is_lora_name(name):
            return LORA_COMPONENT
        for component, prefixes in self.component_prefixes().items():
            if any(name == p or name.startswith(p + ".") for p in prefixes):
                return component
        return "other"

    def parameter_counts(self) -> Dict[str, Dict[str, int]]:
        """{component: {total, frozen, trainable}} in display order, LoRA after the trunk."""
        order = list(self.component_prefixes())
        order.insert(1 if order else 0, LORA_COMPONENT)
        counts: Dict[str, Dict[str, int]] = {c: {"total": 0, "frozen": 0, "trainable": 0} for c in order}
        seen = set()
        for name, p in self.named_parameters():
            if id(p) in seen:  # shared modules count once
                continue
            seen.add(id(p))
            entry = counts.setdefault(self.component_of(name), {"total": 0, "frozen": 0, "trainable": 0})
            entry["total"] += p.numel()
            entry["trainable" if p.requires_grad else "frozen"] += p.numel()
        return counts

    # -- interface ------------------------------------------------------------------------------------------------

    def compute_loss(self, out: Dict[str, torch.Tensor], target: torch.Tensor):
        raise NotImplementedError
