"""Semantic Prototype Memory Module (SPMM) of MemorySAM (memorysam.md Sec. 3.4, Eq. 7-12), training only.

The module holds one global prototype per class, a buffer with no gradient. Each training step it forms the
current per-class prototypes from the stride-4 features (averaged over the present modalities by the caller,
Eq. 7), with the labels downsampled (nearest) to the feature size, moves the global prototypes towards them with
momentum (Eq. 11) and returns MSE(global, current) * (H/4 * W/4) (Eq. 12). It adds no learnable parameter: the
"convolution to 32 channels" of the paper is the mask decoder's own `conv_s0` (the official code feeds SPMM the
`backbone_fpn[0]` features after `conv_s0`), so the caller passes those features in.

Details where paper and official code differ, and what this module does:
- Current prototype = masked average over the pixels of that class in the whole batch (the true class mean; the paper's
  Eq. 9-10 "global average" of the masked map and the official code's `mean / count`, which divides by the pixel
  count twice, both shrink prototypes by the class frequency, making the loss scale depend on it).
- Classes absent from a batch keep their global prototype and are left out of the loss (the official code sets
  their current prototype to 0, which decays the memory of rare classes and pulls their features to 0).
- Order as in the official code: update the global prototypes first, then compare with the updated (detached)
  ones; that is the paper's order times (1 - momentum)^2 on the loss.
- Global prototypes start at 0 (official); under torch.distributed the class sums and counts are all-reduced for
  the update so every replica keeps the same memory, while the loss uses the local (differentiable) prototypes.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..classes import IGNORE_INDEX
from ..errors import ConfigError


class SemanticPrototypeMemory(nn.Module):
    def __init__(self, num_classes: int, channels: int, momentum: float = 0.2, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ConfigError(f"SPMM momentum must be in (0, 1], got {momentum!r}")
        self.num_classes = int(num_classes)
        self.channels = int(channels)
        self.momentum = float(momentum)
        self.ignore_index = int(ignore_index)
        self.register_buffer("global_prototypes", torch.zeros(self.num_classes, self.channels))

    def current_prototypes(self, features: torch.Tensor, labels: torch.Tensor):
        """Per-class masked averages of `features` (B, C, h, w) under `labels` (B, H, W) resized (nearest) to
        (h, w). Returns (sums (K, C), counts (K,), prototypes (K, C)); prototypes of absent classes are 0."""
        if features.dim() != 4 or features.shape[1] != self.channels:
            raise ValueError(f"SPMM features must be (B, {self.channels}, h, w), got {tuple(features.shape)}")
        if labels.dim() != 3 or labels.shape[0] != features.shape[0]:
            raise ValueError(f"SPMM labels must be (B, H, W) with B={features.shape[0]}, got {tuple(labels.shape)}")
        h, w = features.shape[-2:]
        small = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
        # Ignored (and out-of-range) pixels go to an extra bucket K that is dropped afterwards.
        bucket = torch.where((small >= 0) & (small < self.num_classes), small, self.num_classes).flatten()
        flat = features.permute(0, 2, 3, 1).reshape(-1, self.channels)
        sums = flat.new_zeros(self.num_classes + 1, self.channels).index_add(0, bucket, flat)[:-1]
        counts = torch.bincount(bucket, minlength=self.num_classes + 1)[:-1].to(flat.dtype)
        return sums, counts, sums / counts.clamp(min=1)[:, None]

    @torch.no_grad()
    def update(self, sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Momentum update of the global prototypes of the classes seen (Eq. 11); returns the seen-class mask."""
        sums, counts = sums.detach().clone(), counts.detach().clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        seen = counts > 0
        current = sums[seen] / counts[seen, None]
        memory = self.global_prototypes
        memory[seen] = (1.0 - self.momentum) * memory[seen] + self.momentum * current.to(memory.dtype)
        return seen

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Update the memory and return the prototype loss MSE(global, current) * h * w (alpha not applied)."""
        sums, counts, current = self.current_prototypes(features.float(), labels)
        self.update(sums, counts)
        local = counts > 0
        if not bool(local.any()):
            return features.sum() * 0.0  # nothing labelled in this batch: a zero that keeps the graph
        h, w = features.shape[-2:]
        target = self.global_prototypes[local].detach()
        return F.mse_loss(current[local], target) * (h * w)
