"""OHEM cross-entropy (mle-sam.md Eq. 13) and a weighted sum of OHEM terms (Eq. 14).

OHEM keeps the pixels whose cross-entropy exceeds -log(thresh) (their probability of the true class is below
`thresh`), but never fewer than n_valid // 16 (the hardest ones then), and averages over the kept pixels. Labels equal
to `ignore_index` (255) count neither as valid nor as hard. Pixels of the whole batch are pooled, as in the DELIVER
code base the papers build on.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..classes import IGNORE_INDEX
from ..errors import ConfigError, DataError

MIN_KEPT_DIVISOR = 16


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, thresh: float = 0.7,
                       ignore_index: int = IGNORE_INDEX, min_kept_divisor: int = MIN_KEPT_DIVISOR) -> torch.Tensor:
    """logits (B, K, H, W), target (B, H, W) long in 0..K-1 or ignore_index -> scalar loss."""
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise DataError(f"OHEM: logits (B, K, H, W) and target (B, H, W) must agree, "
                        f"got {tuple(logits.shape)} and {tuple(target.shape)}")
    valid = target != ignore_index
    n_valid = int(valid.sum())
    if n_valid == 0:
        return logits.sum() * 0.0  # keeps the graph (and DDP) intact when a batch is all-ignore
    bad = target[valid]
    if int(bad.min()) < 0 or int(bad.max()) >= logits.shape[1]:
        raise DataError(f"OHEM: labels must be in 0..{logits.shape[1] - 1} or {ignore_index}, "
                        f"found {int(bad.min())}..{int(bad.max())}")
    pixel_loss = F.cross_entropy(logits.float(), target.long(), ignore_index=ignore_index, reduction="none").flatten()
    min_kept = max(n_valid // min_kept_divisor, 1)
    hard = pixel_loss[pixel_loss > -math.log(thresh)]
    if hard.numel() < min_kept:
        hard = pixel_loss.topk(min_kept).values
    return hard.mean()


def weighted_ohem(named_logits: Mapping[str, torch.Tensor], weights: Sequence[float], target: torch.Tensor,
                  thresh: float = 0.7) -> Tuple[torch.Tensor, Dict[str, float]]:
    """sum_j w_j * OHEM(S_j, L) (Eq. 14); returns the total and each term's value by name."""
    if len(weights) != len(named_logits):
        raise ConfigError(f"loss.weights has {len(weights)} entries for {len(named_logits)} outputs "
                          f"{list(named_logits)}")
    total, parts = None, {}
    for (name, logits), w in zip(named_logits.items(), weights):
        term = ohem_cross_entropy(logits, target, thresh)
        parts[name] = float(term.detach())
        total = w * term if total is None else total + w * term
    return total, parts
