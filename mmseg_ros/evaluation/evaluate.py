"""The evaluation loop: a model and a data set -> confusion matrices per modality subset, condition and noise setting.

Samples come from the data set in *unit* form — `preprocess.to_unit` of the raw sensor arrays, resized to the model
input size exactly as the training/validation pipeline resizes them (`unit_pipeline`: E2's `eval_pipeline` with an
identity normalisation). The loop then, per batch:

1. runs the model once per requested modality subset, feeding only that subset's tensors (absent = not given);
2. for each noise setting and each trained modality, corrupts that modality on the 0..255 scale (`noise.py`), keeps
   the others clean, and runs the full set;
3. normalises with the card's per-modality mean/std right before each forward, so the noise is applied to raw
   values and never to normalised ones.

Labels are scored at the model input resolution (as DELIVER's evaluation scores its resized labels); logits of
another size are resized bilinearly first. Noise is seeded per (seed, noise kind, modality, sample index), so the
numbers do not depend on batch size, worker count or DDP sharding. Under torch.distributed every rank scores a shard
and `EvalResult.all_reduce` sums the matrices.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .. import modalities as modality_registry
from .. import precision as precisions
from ..errors import ConfigError, DataError
from . import noise as noise_lib
from .metrics import ConfusionMatrix
from .subsets import modality_subsets

ALL = "all"  # the group holding every sample
UNIT_NORMALIZATION = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # (x - 0) / 1: leaves the unit image exactly as it is


def unit_pipeline(size, modalities: Iterable[str]):
    """The validation transform with an identity normalisation: raw arrays -> unit (3, H, W) tensors at `size`."""
    from ..data import transforms

    return transforms.eval_pipeline(size, {m: UNIT_NORMALIZATION for m in modalities})


def group_order(groups: Iterable[Tuple[str, str]]) -> List[str]:
    """Conditions, then failure cases, each in DELIVER's order where known, unknown names after, alphabetically."""
    from ..data.deliver import CONDITIONS, FAILURES

    known = {"condition": CONDITIONS, "case": FAILURES}

    def key(item):
        name, kind = item
        order = known.get(kind, ())
        return (kind != "condition", order.index(name) if name in order else len(order), name)

    return [name for name, _ in sorted(set(groups), key=key)]


@dataclass
class EvalResult:
    """Confusion matrices of one evaluation. clean[subset][group]; noisy[(NoiseSpec, modality)] (full set)."""

    num_classes: int
    subsets: List[Tuple[str, ...]]
    noise_settings: List[Tuple[noise_lib.NoiseSpec, str]]
    clean: Dict[Tuple[str, ...], Dict[str, ConfusionMatrix]] = field(default_factory=dict)
    noisy: Dict[Tuple[noise_lib.NoiseSpec, str], ConfusionMatrix] = field(default_factory=dict)
    group_kinds: Dict[str, str] = field(default_factory=dict)  # group -> "condition" | "case"
    group_samples: Dict[str, int] = field(default_factory=dict)
    samples: int = 0

    def __post_init__(self):
        for subset in self.subsets:
            self.clean.setdefault(subset, {ALL: ConfusionMatrix(self.num_classes)})
        for setting in self.noise_settings:
            self.noisy.setdefault(setting, ConfusionMatrix(self.num_classes))

    def add_group(self, name: str, kind: str) -> None:
        if self.group_kinds.setdefault(name, kind) != kind:
            raise DataError(f"group {name!r} is both a {self.group_kinds[name]} and a {kind}")
        self.group_samples.setdefault(name, 0)
        for per_group in self.clean.values():
            per_group.setdefault(name, ConfusionMatrix(self.num_classes))

    def ordered_groups(self) -> List[str]:
        return group_order(self.group_kinds.items())

    def all_reduce(self) -> "EvalResult":
        """Sum over the ranks of torch.distributed (no-op without a process group). Every rank must call it."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self
        gathered: List = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, sorted(self.group_kinds.items()))
        for groups in gathered:  # a rank whose shard lacks a condition still needs its (empty) matrix
            for name, kind in groups:
                self.add_group(name, kind)
        for subset in self.subsets:
            for group in sorted(self.clean[subset]):
                self.clean[subset][group].all_reduce()
        for setting in self.noise_settings:
            self.noisy[setting].all_reduce()
        names = sorted(self.group_samples)
        counts = torch.tensor([self.samples] + [self.group_samples[n] for n in names], dtype=torch.int64)
        if dist.get_backend() == "nccl":
            counts = counts.cuda()
        dist.all_reduce(counts)
        counts = counts.cpu().tolist()
        self.samples = counts[0]
        self.group_samples = dict(zip(names, counts[1:]))
        return self


class Predictor:
    """Unit inputs -> class ids: normalise per modality, forward, resize logits to the label size, argmax."""

    def __init__(self, model: torch.nn.Module, normalization: Mapping[str, Tuple[Sequence[float], Sequence[float]]],
                 device="cpu", precision: str = "fp32"):
        self.precision = precisions.check(precision)
        self.model = model
        self.device = torch.device(device)
        self.stats = {m: (torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1),
                          torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1))
                      for m, (mean, std) in normalization.items()}

    @torch.no_grad()
    def __call__(self, unit_inputs: Mapping[str, torch.Tensor], out_size: Tuple[int, int]) -> torch.Tensor:
        inputs = {}
        for name, unit in unit_inputs.items():
            mean, std = self.stats[name]
            inputs[name] = (unit.to(self.device, non_blocking=True) - mean) / std
        with precisions.autocast(self.device, self.precision):
            logits = self.model(inputs)["logits"]
        if tuple(logits.shape[-2:]) != tuple(out_size):
            logits = F.interpolate(logits.float(), size=tuple(out_size), mode="bilinear", align_corners=False)
        return logits.argmax(dim=1)


def _noisy_batch(unit: torch.Tensor, spec, seed: int, setting: int, modality: int, indices: Sequence[int]):
    """Corrupt each sample with its own generator, so noise depends on the sample, not on the batch it is in."""
    return torch.stack([
        noise_lib.corrupt_unit(unit[row], spec, np.random.default_rng([seed, setting, modality, int(index)]))
        for row, index in enumerate(indices)
    ])


def _shard(length: int) -> List[int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return list(range(dist.get_rank(), length, dist.get_world_size()))
    return list(range(length))


def evaluate(
    model: torch.nn.Module,
    dataset,
    *,
    modalities: Sequence[str],
    normalization: Mapping[str, Tuple[Sequence[float], Sequence[float]]],
    num_classes: int,
    subsets: Optional[Sequence[Tuple[str, ...]]] = None,
    noises: Sequence[noise_lib.NoiseSpec] = (),
    noise_on: Optional[Sequence[str]] = None,
    conditions: bool = False,
    batch_size: int = 4,
    num_workers: int = 0,
    device="cpu",
    precision: str = "fp32",
    seed: int = 0,
    progress: bool = True,
    max_samples: Optional[int] = None,
) -> EvalResult:
    """Score `model` on `dataset` (model samples with UNIT inputs, e.g. built with `unit_pipeline`).

    subsets: modality subsets to run clean (default: only the full trained set; `modality_subsets(modalities)` for
    the missing-modality table). noises: NoiseSpecs, each applied in turn to every modality of `noise_on`
    (default: all trained ones) while the others stay clean.
    conditions: also split every clean subset by meta "condition" and "case"."""
    from torch.utils.data import DataLoader, Subset

    from ..data.common import Collate

    trained = modality_registry.canonical(modalities)
    noises = list(noises)
    subsets = [tuple(s) for s in (subsets or [trained])]
    for subset in subsets:
        if not subset or any(m not in trained for m in subset):
            raise ConfigError(f"subset {list(subset)} is not a non-empty subset of the trained {list(trained)}")
    if noises and trained not in subsets:
        subsets.append(trained)  # the noise table's reference row
    corrupted = trained if noise_on is None else modality_registry.canonical(noise_on)
    if any(m not in trained for m in corrupted):
        raise ConfigError(f"noise_on {list(corrupted)}: only trained modalities {list(trained)} can be corrupted")
    settings = [(spec, m) for spec in noises for m in corrupted]
    result = EvalResult(num_classes, subsets, settings)
    predictor = Predictor(model, {m: normalization[m] for m in trained}, device, precision)

    if len(dataset) == 0:
        raise DataError("the evaluation data set is empty")
    indices = _shard(len(dataset) if max_samples is None else min(len(dataset), max_samples))
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=Collate(trained), pin_memory=torch.device(device).type == "cuda")
    bar = _progress(len(indices), progress, forwards=len(subsets) + len(settings))
    was_training = model.training
    model.eval()
    position = 0
    try:
        for batch in loader:
            batch_indices = indices[position:position + len(batch["meta"])]
            position += len(batch["meta"])
            missing = ~batch["present"].all(dim=0)
            if bool(missing.any()):
                lacking = [m for m, gone in zip(batch["modalities"], missing.tolist()) if gone]
                raise DataError(f"samples {batch_indices} lack trained modalities {lacking}")
            label = batch["label"].to(predictor.device, non_blocking=True)
            out_size = tuple(label.shape[-2:])
            groups = _sample_groups(batch["meta"]) if conditions else [[] for _ in batch["meta"]]
            for sample_groups in groups:
                for name, kind in sample_groups:
                    result.add_group(name, kind)
                    result.group_samples[name] += 1
            for subset in subsets:
                prediction = predictor({m: batch["inputs"][m] for m in subset}, out_size)
                result.clean[subset][ALL].update(prediction, label)
                for row, sample_groups in enumerate(groups):
                    for name, _ in sample_groups:
                        result.clean[subset][name].update(prediction[row], label[row])
            for spec, modality in settings:
                noisy = dict(batch["inputs"])
                noisy[modality] = _noisy_batch(batch["inputs"][modality], spec, seed, noises.index(spec),
                                               trained.index(modality), batch_indices)
                result.noisy[(spec, modality)].update(predictor(noisy, out_size), label)
            result.samples += len(batch_indices)
            bar.update(len(batch_indices))
    finally:
        bar.close()
        model.train(was_training)
    return result.all_reduce()


def _sample_groups(metas: Sequence[Mapping]) -> List[List[Tuple[str, str]]]:
    """Per sample: [(condition, 'condition'), (case, 'case')] for the meta fields that are set."""
    out = []
    for meta in metas:
        groups = []
        if meta.get("condition"):
            groups.append((str(meta["condition"]), "condition"))
        if meta.get("case"):
            groups.append((str(meta["case"]), "case"))
        out.append(groups)
    return out


def _progress(total: int, enabled: bool, forwards: int):
    from tqdm import tqdm

    import torch.distributed as dist

    rank0 = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    return tqdm(total=total, disable=not (enabled and rank0), unit="img", dynamic_ncols=True,
                desc=f"eval ({forwards} forward{'s' if forwards != 1 else ''}/batch)")


def to_report(result: EvalResult, class_names: Sequence[str], trained: Sequence[str], *, seed: Optional[int] = None,
              model: Optional[Dict] = None, data: Optional[Dict] = None) -> Dict:
    """The results document (tables.py) of an evaluation."""
    from . import tables
    from .subsets import subset_code

    codes = {s: subset_code(s) for s in modality_subsets(trained)}
    groups = result.ordered_groups()
    return tables.build_report(
        class_names=class_names, trained=tuple(trained), subset_codes=codes,
        clean={s: result.clean[s] for s in codes if s in result.clean},
        group_kinds={g: result.group_kinds[g] for g in groups}, group_samples=result.group_samples,
        noisy=result.noisy or None, noise_seed=seed if result.noisy else None,
        model=model, data={"samples": result.samples, **(data or {})},
    )


__all__ = ["evaluate", "to_report", "EvalResult", "Predictor", "unit_pipeline", "modality_subsets", "group_order",
           "ALL"]
