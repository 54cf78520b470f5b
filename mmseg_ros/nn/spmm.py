"""Semantic Prototype Memory Module (SPMM) of MemorySAM (memorysam.md Sec. 3.4, Eq. 7-12), training only.

The module holds one global prototype per class, a buffer with no gradient. Each training step it forms the
current per-class prototypes from the stride-4 features (averaged over the present modalities by the caller,
Eq. 7), with the labels downsampled (nearest) to the feature size, moves the global prototypes towards them with
momentum (Eq. 11) and returns MSE(global, current) * (H/4 * W/4) (Eq. 12). It adds no learnable parameter: the
"convolution to 32 channels" of the paper is the mask decoder's own `conv_s0` (the official code feeds SPMM the
`backbone_fpn[0]` features after `conv_s0`), so the caller passes those features in.

Two forms (`form`), because the paper's text and the official code give different losses in effect:
- `masked_mean` (default): current prototype = masked average over the pixels of that class in the whole batch.
  Classes absent from a batch keep their global prototype and are left out of the loss.
- `official`: the authors' `PrototypeSegmentation`: the class mean is divided by the class's pixel count once more
  (`features[mask].mean(0) / count`), absent classes are zero prototypes that enter the momentum update (their
  memory decays) and the MSE, which averages over all K classes. Prototypes shrink by the pixel count, so frequent
  classes contribute almost nothing and classes with few pixels in the batch dominate alpha * MSE * (H/4 * W/4);
  with alpha = 1 this is the loss the published results trained with. The paper's Eq. 9-10 "global average" of
  the masked map also shrinks prototypes by the class frequency; neither is a true mean.
- Order as in the official code (both forms): update the global prototypes first, then compare with the updated
  (detached) ones; that is the paper's order times (1 - momentum)^2 on the loss.
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


FORMS = ("masked_mean", "official")


class SemanticPrototypeMemory(nn.Module):
    def __init__(self, num_classes: int, channels: int, momentum: float = 0.2, ignore_index: int = IGNORE_INDEX,
                 form: str = "masked_mean"):
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ConfigError(f"SPMM momentum must be in (0, 1], got {momentum!r}")
        if form not in FORMS:
            raise ConfigError(f"SPMM form must be one of {list(FORMS)}, got {form!r}")
        self.form = form
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
        memory = self.global_prototypes
        if self.form == "official":  # every class moves; absent ones towards 0
            current = sums / counts.clamp(min=1)[:, None] ** 2
            memory.mul_(1.0 - self.momentum).add_(self.momentum * current.to(memory.dtype))
            return seen
        current = sums[seen] / counts[seen, None]
        memory[seen] = (1.0 - self.momentum) * memory[seen] + self.momentum * current.to(memory.dtype)
        return seen

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Update the memory and return the prototype loss MSE(global, current) * h * w (alpha not applied)."""
        sums, counts, current = self.current_prototypes(features.float(), labels)
        self.update(sums, counts)
        h, w = features.shape[-2:]
        if self.form == "official":
            shrunk = current / counts.clamp(min=1)[:, None]  # absent classes: 0
            return F.mse_loss(shrunk, self.global_prototypes.detach()) * (h * w)
        local = counts > 0
        if not bool(local.any()):
            return features.sum() * 0.0  # nothing labelled in this batch: a zero that keeps the graph
        target = self.global_prototypes[local].detach()
        return F.mse_loss(current[local], target) * (h * w)
