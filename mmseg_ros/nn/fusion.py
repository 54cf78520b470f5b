"""MLE-SAM's cross-modal fusion of one feature level (mle-sam.md Sec. III-D, Eq. 7-10), over PRESENT modalities only.

Per level i, with Y_i^m the maps of the present modalities m of a sample:
* integrated feature (Eq. 7): mean over present modalities;
* router (Eq. 8-9): spatial mean f_i^m -> linear score -> softmax over the present modalities -> weights w_i^m;
* weighted feature (Eq. 10): sum over the top-k weights (k <= number present) times their maps, the weights used as
  the softmax gave them (not renormalised over the k, as Eq. 10 is written); `renormalize=True` divides them by
  their sum over the k, so the weighted term has the scale of one map whatever the number of present modalities
  (one present modality gives weight 1 either way; four give w1 + w2 < 1 without it);
* unified feature: integrated + weighted (`combine: sum`, default) or their average (`combine: mean`). The paper
  combines both (Table V) without saying how; neither form adds parameters, which matches Table V's counts.
Absent modalities get weight exactly 0 and never enter the mean, so a sample behaves as if they were not given.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

COMBINE_MODES = ("sum", "mean")


class ModalityFusion(nn.Module):
    def __init__(self, dim: int, top_k: int, combine: str = "sum", renormalize: bool = False):
        super().__init__()
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {COMBINE_MODES}, got {combine!r}")
        self.top_k = top_k
        self.combine = combine
        self.renormalize = bool(renormalize)
        self.router = nn.Linear(dim, 1)  # W_i, b_i of Eq. 9: one score per modality embedding

    def forward(self, feats: torch.Tensor, present: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """feats (M, B, C, H, W) with zeros where absent; present (M, B) bool.

        Returns the unified map (B, C, H, W), router weights (B, M) (softmax over present, 0 for absent) and the
        top-k selection (B, M) bool."""
        mask = present.to(feats.dtype)
        expand = (...,) + (None,) * (feats.ndim - 2)
        integrated = (feats * mask[expand]).sum(0) / mask.sum(0)[expand]  # Eq. 7
        embeddings = feats.mean(dim=(-2, -1))  # (M, B, C): spatial mean, Eq. 8
        scores = self.router(embeddings).squeeze(-1).float()
        scores = scores.masked_fill(~present, float("-inf"))
        weights = torch.softmax(scores, dim=0)  # over modalities, per sample; absent -> exactly 0
        k = min(self.top_k, feats.shape[0])
        chosen = torch.zeros_like(present).scatter(0, weights.topk(k, dim=0).indices, True) & present
        gate = weights * chosen
        if self.renormalize:
            gate = gate / gate.sum(0, keepdim=True)  # the top weight is > 0, so the sum is too
        gate = gate.to(feats.dtype)
        weighted = (feats * gate[expand]).sum(0)
        unified = integrated + weighted
        if self.combine == "mean":
            unified = unified / 2
        return unified, weights.transpose(0, 1), chosen.transpose(0, 1)
