"""Learning-rate schedule of both papers: linear warm-up from `warmup_ratio` over the first epochs, then poly decay.

Stepped once per optimiser step (not per epoch), like the DELIVER/CMNeXt `WarmupPolyLR` the papers train with:

    warm-up  (i < W):  f(i) = ratio + (1 - ratio) * i / W
    poly     (i >= W): f(i) = (1 - (i - W) / (T - W)) ** power

with T the total number of optimiser steps, so the rate reaches ~0 at the last step. The factor is a pure function
of the step; the scheduler's state is only its step counter, which makes resuming exact.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import ScheduleConfig


@dataclass(frozen=True)
class WarmupPoly:
    """lr multiplier for optimiser step i (a picklable callable for torch's LambdaLR)."""

    total_steps: int
    warmup_steps: int
    warmup_ratio: float
    power: float

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_ratio + (1.0 - self.warmup_ratio) * step / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return (1.0 - progress) ** self.power


def warmup_poly(cfg: ScheduleConfig, steps_per_epoch: int) -> WarmupPoly:
    total = cfg.epochs * steps_per_epoch
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1)
    return WarmupPoly(total, warmup, cfg.warmup_ratio, cfg.power)


def build(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int):
    """A LambdaLR applying `warmup_poly` to every parameter group's base lr; call .step() after each optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_poly(cfg, steps_per_epoch))
