"""LoRA on the query and value projections of SAM2's Hiera attention (`blocks[i].attn.qkv`).

`Q' = Q + s * x A_q B_q` and `V' = V + s * x A_v B_v` with s = alpha / rank; B starts at zero, so a fresh adapter
leaves the trunk's output unchanged. Keys are not adapted.

Two forms share one layer type:
* `num_experts=1`: one shared adapter (MemorySAM). It can be merged into the frozen weights for inference.
* `num_experts=E`: one expert per modality (MLE-SAM). All modalities go through the trunk in one batch; every sample
  picks its expert by index. Hiera hands the qkv layer window-partitioned rows (B * windows, ws, ws, C) with each
  sample's windows contiguous, so rows are regrouped per sample and each sample's A and B are gathered once and
  applied with two batched matmuls - no Python loop over experts or trunk passes.

The expert index for the next trunk pass is held by an `ExpertSelection` shared by all layers of one trunk.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

LORA_MARK = "lora_"  # every LoRA parameter name starts with this; used to find and count them


class ExpertSelection:
    """Which expert each sample of the coming trunk pass uses: a LongTensor (N,) or None (no pass in progress)."""

    def __init__(self, num_experts: int):
        self.num_experts = num_experts
        self.index: Optional[torch.Tensor] = None

    @contextlib.contextmanager
    def use(self, index: Optional[torch.Tensor]):
        """Select experts for the passes inside the block; `None` is allowed only with a single adapter."""
        if index is not None:
            index = torch.as_tensor(index, dtype=torch.long)
            if index.ndim != 1:
                raise ValueError(f"expert index must be 1-D (one entry per sample), got shape {tuple(index.shape)}")
            if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_experts):
                raise ValueError(f"expert index out of range 0..{self.num_experts - 1}: {index.tolist()}")
        previous, self.index = self.index, index
        try:
            yield
        finally:
            self.index = previous


class LoRAQKV(nn.Linear):
    """A frozen qkv Linear (same parameter names: weight, bias) plus low-rank q and v updates, one set per expert."""

    def __init__(self, qkv: nn.Linear, rank: int, alpha: float, dropout: float, selection: ExpertSelection):
        nn.Module.__init__(self)
        if qkv.out_features % 3:
            raise ValueError(f"qkv projection must have 3 * dim outputs, got {qkv.out_features}")
        self.in_features, self.out_features = qkv.in_features, qkv.out_features
        self.weight, self.bias = qkv.weight, qkv.bias  # the original parameters, shared, not copies
        dim_out = qkv.out_features // 3
        experts = selection.num_experts
        self.rank = rank
        self.scale = alpha / rank
        self.selection = selection
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # Same initialisation as LoRA's reference code: A like a Linear layer's weight, B zero.
        bound = 1.0 / math.sqrt(self.in_features)
        like = {"device": qkv.weight.device, "dtype": qkv.weight.dtype}
        self.lora_a_q = nn.Parameter(torch.empty(experts, self.in_features, rank, **like).uniform_(-bound, bound))
        self.lora_b_q = nn.Parameter(torch.zeros(experts, rank, dim_out, **like))
        self.lora_a_v = nn.Parameter(torch.empty(experts, self.in_features, rank, **like).uniform_(-bound, bound))
        self.lora_b_v = nn.Parameter(torch.zeros(experts, rank, dim_out, **like))

    @property
    def num_experts(self) -> int:
        return self.lora_a_q.shape[0]

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, experts={self.num_experts}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = F.linear(x, self.weight, self.bias)
        q, k, v = qkv.chunk(3, dim=-1)
        h = self.lora_dropout(x)
        q = q + self._delta(h, self.lora_a_q, self.lora_b_q)
        v = v + self._delta(h, self.lora_a_v, self.lora_b_v)
        return torch.cat((q, k, v), dim=-1)

    def _delta(self, h: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        index = self.selection.index
        if index is None:
            if self.num_experts != 1:
                raise RuntimeError("LoRA experts need an expert index per sample (use ExpertSelection.use(index))")
            return (h @ a[0] @ b[0]) * self.scale
        samples = index.numel()
        rows = h.shape[0]
        if samples == 0 or rows % samples:
            raise RuntimeError(f"{rows} trunk rows cannot be split over {samples} samples")
        # Rows of one sample (its attention windows) are contiguous: regroup to (samples, tokens, C).
        grouped = h.reshape(samples, -1, h.shape[-1])
        index = index.to(h.device)
        low = torch.bmm(grouped, a[index].to(h.dtype))
        delta = torch.bmm(low, b[index].to(h.dtype)) * self.scale
        return delta.reshape(*h.shape[:-1], delta.shape[-1])

    def merged_linear(self) -> nn.Linear:
        """A plain Linear whose weight includes the (single) adapter; the inference form of this layer."""
        if self.num_experts != 1:
            raise ConfigError(f"only a single LoRA adapter can be merged into the weights, "
                              f"this layer has {self.num_experts} experts")
        dim_out = self.out_features // 3
        merged = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            weight = self.weight.detach().clone()
            weight[:dim_out] += self.scale * (self.lora_a_q[0] @ self.lora_b_q[0]).T
            weight[2 * dim_out:] += self.scale * (self.lora_a_v[0] @ self.lora_b_v[0]).T
            merged.weight.copy_(weight)
            if self.bias is not None:
                merged.bias.copy_(self.bias)
        merged.weight.requires_grad_(self.weight.requires_grad)
        if self.bias is not None:
            merged.bias.requires_grad_(self.bias.requires_grad)
        return merged


def apply_lora(trunk: nn.Module, rank: int, alpha: float, dropout: float = 0.0,
               num_experts: int = 1) -> ExpertSelection:
    """Wrap `attn.qkv` of every Hiera block of `trunk` in place; returns the trunk's expert selection handle."""
    if rank < 1 or num_experts < 1:
        raise ConfigError(f"LoRA needs rank >= 1 and num_experts >= 1, got rank={rank}, num_experts={num_experts}")
    blocks = getattr(trunk, "blocks", None)
    if blocks is None:
        raise ConfigError(f"LoRA expects a Hiera trunk with .blocks, got {type(trunk).__name__}")
    selection = ExpertSelection(num_experts)
    for block in blocks:
        qkv = block.attn.qkv
        if isinstance(qkv, LoRAQKV):
            raise ConfigError("LoRA is already applied to this trunk")
        block.attn.qkv = LoRAQKV(qkv, rank, alpha, dropout, selection)
    return selection


def lora_layers(module: nn.Module) -> Iterator[LoRAQKV]:
    return (m for m in module.modules() if isinstance(m, LoRAQKV))


def lora_parameters(module: nn.Module) -> Iterator[nn.Parameter]:
    return (p for name, p in module.named_parameters() if is_lora_name(name))


def is_lora_name(name: str) -> bool:
    return name.rsplit(".", 1)[-1].startswith(LORA_MARK)


def merge_lora(module: nn.Module) -> int:
    """Replace every single-adapter LoRA layer below `module` by its merged Linear; returns how many were merged."""
    targets = [(parent, child_name, child) for parent in module.modules()
               for child_name, child in parent.named_children() if isinstance(child, LoRAQKV)]
    for parent, child_name, child in targets:
        setattr(parent, child_name, child.merged_linear())
    return len(targets)
