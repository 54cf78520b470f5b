"""Data order and per-sample randomness that a resumed run can reproduce exactly.

Two things decide what a training step sees: which samples form its batch, and the random choices the transforms
make for each sample (crops, flips, modality dropout). Both are made pure functions of (seed, epoch, position):

* `epoch_batches` shards a DistributedSampler permutation (seeded by seed + epoch) into this process's micro-batches,
  so a run resumed at step k of an epoch simply skips the first k steps' batches — no data is re-read.
* `SeededSamples` runs each `dataset[i]` with its transform pipelines reseeded (anything with `reseed(seed)`, like
  data.transforms.Compose, which owns the generator its crops, flips and modality dropout draw from) and the
  python/numpy/torch global RNGs seeded from (seed, epoch, i), putting the global states back afterwards. So the
  same sample in the same epoch gets the same random choices whether the run was resumed or not, in the main
  process or in any DataLoader worker, and the training loop's own RNG stream (dropout) is never disturbed.
"""
from __future__ import annotations

import random
from typing import List, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from ..errors import ConfigError


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample in one epoch (numpy's SeedSequence mixes the three well)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0]) >> 1


class SeededSamples(Dataset):
    """`dataset[i]` under RNGs seeded from (seed, epoch, i); call `set_epoch` before each epoch's loader."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = 0
        self.pipelines = _reseedable(dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        seed = sample_seed(self.seed, self.epoch, int(index))
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed % (2**32))
            torch.manual_seed(seed)
            for pipeline in self.pipelines:
                pipeline.reseed(seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


def _reseedable(dataset) -> list:
    """Transform pipelines with their own generator, in the dataset and any datasets it wraps or concatenates."""
    found, pending, seen = [], [dataset], set()
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        transform = getattr(node, "transform", None)
        if callable(getattr(transform, "reseed", None)):
            found.append(transform)
        pending.extend(getattr(node, "datasets", ()))
        if getattr(node, "dataset", None) is not None:
            pending.append(node.dataset)
    return found


def epoch_batches(
    num_samples: int, epoch: int, seed: int, rank: int, world_size: int, micro_batch: int, accumulate: int
) -> List[List[int]]:
    """This process's micro-batches (lists of sample indices) for one training epoch, in order.

    The epoch's permutation is DistributedSampler's (shuffle, drop_last), so every process gets an equal shard;
    micro-batches that would not fill a whole optimiser step are dropped, so every step has the same sample count."""
    sampler = DistributedSampler(
        range(num_samples), num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
    )
    sampler.set_epoch(epoch)
    shard = list(sampler)
    steps = len(shard) // (micro_batch * accumulate)
    return [shard[i * micro_batch : (i + 1) * micro_batch] for i in range(steps * accumulate)]


def steps_per_epoch(num_samples: int, world_size: int, micro_batch: int, accumulate: int) -> int:
    steps = (num_samples // world_size) // (micro_batch * accumulate)
    if steps < 1:
        raise ConfigError(
            f"train.batch_size: the training set has {num_samples} samples, fewer than one optimiser step of "
            f"{micro_batch * accumulate * world_size} ({world_size} process(es) x {accumulate} x {micro_batch})"
        )
    return steps


def shard(indices: Sequence[int], rank: int, world_size: int) -> List[int]:
    """Every `world_size`-th index from `rank` (validation: no sample counted twice, none padded in)."""
    return list(indices)[rank::world_size]
