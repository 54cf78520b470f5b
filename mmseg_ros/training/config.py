"""Training recipes: a YAML file in train/ -> a validated, frozen `Recipe`.

A recipe says what to train (a model card, by reference or inline), on what data, and how (optimiser, schedule,
batch, precision, checkpoints, logs). Every key is checked here, before anything heavy is built, so a typo fails in
a second with a ConfigError naming the dotted key (e.g. `schedule.warmup_ratio`) instead of hours into a run.
`--set key=value` overrides are applied to the raw YAML first, so they are validated the same way.
"""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, Union

import yaml

from .. import precision as precisions
from ..errors import ConfigError
from ..resources import resolve

# train.amp: "none" (fp32) or a half precision of the one precision policy
AMP_PRECISION = {"none": precisions.FP32, **{n: n for n in precisions.NAMES if n != precisions.FP32}}
AMP_MODES = tuple(AMP_PRECISION)


@dataclass(frozen=True)
class DataConfig:
    dataset: str  # a loader name (deliver, muses, mcubes, synthetic) or "package.module:function" for your own
    root: Optional[str] = None  # dataset folder; relative paths are taken from the working directory
    train_split: str = "train"
    val_split: Optional[str] = "val"  # null: no validation
    modality_dropout: float = 0.0  # probability that a training sample loses a random non-empty modality subset
    num_workers: int = 2
    augment: Dict[str, Any] = field(default_factory=dict)  # keyword arguments of data.transforms.train_pipeline
    options: Dict[str, Any] = field(default_factory=dict)  # keyword arguments of the dataset class


@dataclass(frozen=True)
class OptimizerConfig:
    lr: float
    weight_decay: float = 0.01
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    # false: 1-D parameters (biases, norm weights) get weight decay 0, as the DELIVER/CMNeXt optimiser both papers
    # train with (`p.dim() == 1` in its own group); true decays them too (how the shipped synthetic models trained).
    decay_1d: bool = False


@dataclass(frozen=True)
class ScheduleConfig:
    epochs: int
    warmup_epochs: float = 10
    warmup_ratio: float = 0.1  # lr factor at the first iteration; rises linearly to 1 over the warm-up
    power: float = 0.9  # poly decay exponent after the warm-up


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int  # the effective batch: samples per optimiser step, over all processes and accumulation steps
    accumulate: int = 1  # micro-batches per optimiser step (per process)
    # Samples per process (one process per GPU) per forward pass. When set, `accumulate` is not: it follows from
    # batch_size / (processes x per_gpu_batch), so the recipe keeps its effective batch on fewer GPUs.
    per_gpu_batch: Optional[int] = None
    clip_grad_norm: Optional[float] = None
    amp: str = "none"  # none | bf16 | fp16; CUDA only (ignored on CPU)
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower; exact resume on GPU needs it)
    find_unused_parameters: bool = True  # DDP: experts of modalities absent from a batch get no gradient


@dataclass(frozen=True)
class ValConfig:
    every_epochs: int = 1
    batch_size: int = 1


@dataclass(frozen=True)
class CheckpointConfig:
    every_iters: int = 500  # latest.pt is rewritten every N optimiser steps (and at every epoch end)
    keep_every_epochs: int = 0  # also keep epoch_NNNN.pt every N epochs; 0 = never


@dataclass(frozen=True)
class LogConfig:
    every_iters: int = 10
    progress: bool = True  # tqdm bar on rank 0
    plots: bool = True


@dataclass(frozen=True)
class Recipe:
    name: str
    model: Union[str, Dict[str, Any]]  # card name/path, or an inline card mapping
    data: DataConfig
    optimizer: OptimizerConfig
    schedule: ScheduleConfig
    train: TrainConfig
    seed: int = 0
    # A project checkpoint (what `mmseg train` exports, e.g. models/mle_sam_synth.pt) whose trained tensors start
    # this run: fine-tuning a shipped model on your own sensors. Only the weights; the optimiser and schedule start
    # fresh. Ignored on --resume, which restores the run's own state. Relative paths: working directory, then models/.
    init_from: Optional[str] = None
    val: ValConfig = field(default_factory=ValConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    source: Optional[str] = None  # the file it came from, for messages and relative paths

    def to_dict(self) -> dict:
        """Plain data (stored in checkpoints; `from_dict(r.to_dict())` gives an equal recipe)."""
        out = dataclasses.asdict(self)
        out.pop("source")
        return _plain(out)


_SECTIONS = {
    "data": DataConfig,
    "optimizer": OptimizerConfig,
    "schedule": ScheduleConfig,
    "train": TrainConfig,
    "val": ValConfig,
    "checkpoint": CheckpointConfig,
    "log": LogConfig,
}


def load(path, overrides=()) -> Recipe:
    """Read a recipe by path (or by name in the package's train/ folder) and apply `key=value` overrides."""
    ref = str(path) if str(path).endswith((".yaml", ".yml")) else f"{path}.yaml"
    file = resolve(ref, "train")
    try:
        with open(file) as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides)
    return from_dict(raw, source=str(file))


def apply_overrides(raw: dict, overrides) -> dict:
    """`["schedule.epochs=2", "train.amp=bf16"]` -> a copy of `raw` with those keys set (values parsed as YAML)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot parse value {text!r} ({exc})") from None
        set_dotted(out, key.strip(), value, "--set ")
    return out


def set_dotted(tree: dict, key: str, value, what: str = "") -> None:
    """tree["a"]["b"] = value for key "a.b", creating missing sections."""
    *parents, leaf = key.split(".")
    node = tree
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{what}{key}: {'.'.join(parents[: i + 1])} is not a section")
        node = child
    node[leaf] = value


def from_dict(raw: dict, source: Optional[str] = None) -> Recipe:
    where = f"{source}: " if source else ""
    try:
        values = _fields(Recipe, raw, "", skip=("source",))
        for name, cls in _SECTIONS.items():
            if name in values:
                section = values[name]
                if not isinstance(section, dict):
                    raise ConfigError(f"{name}: expected a mapping, got {section!r}")
                values[name] = cls(**_fields(cls, section, name + "."))
        recipe = Recipe(**values, source=source)
        _check(recipe)
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None
    return recipe


def _fields(cls, raw: dict, prefix: str, skip=()) -> dict:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (known in this section: {', '.join(known)})")
    out = {}
    for name, f in known.items():
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing required key {prefix}{name}")
            continue
        section = _SECTIONS.get(name) if not prefix else None
        out[name] = raw[name] if section else _coerce(raw[name], hints[name], prefix + name)
    return out


def _coerce(value, hint, key: str):
    """Check `value` against a field's annotation; ints are accepted for floats, lists for tuples."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: invalid value {value!r}")
    if hint is Any:
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: expected a non-empty string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported value {value!r}")


def _check(r: Recipe) -> None:
    """Ranges and relations that types alone do not catch."""

    def need(ok: bool, key: str, value, rule: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {rule}, got {value!r}")

    need(isinstance(r.model, (str, dict)) and bool(r.model), "model", r.model,
         "expected a card name/path or an inline card")
    need(r.seed >= 0, "seed", r.seed, "must be >= 0")
    need(r.optimizer.lr > 0, "optimizer.lr", r.optimizer.lr, "must be > 0")
    need(r.optimizer.weight_decay >= 0, "optimizer.weight_decay", r.optimizer.weight_decay, "must be >= 0")
    for i, beta in enumerate(r.optimizer.betas):
        need(0 <= beta < 1, f"optimizer.betas[{i}]", beta, "must be in [0, 1)")
    need(r.optimizer.eps > 0, "optimizer.eps", r.optimizer.eps, "must be > 0")
    need(r.schedule.epochs >= 1, "schedule.epochs", r.schedule.epochs, "must be >= 1")
    need(0 <= r.schedule.warmup_epochs < r.schedule.epochs or r.schedule.warmup_epochs == 0,
         "schedule.warmup_epochs", r.schedule.warmup_epochs, f"must be in [0, schedule.epochs={r.schedule.epochs})")
    need(0 < r.schedule.warmup_ratio <= 1, "schedule.warmup_ratio", r.schedule.warmup_ratio, "must be in (0, 1]")
    need(r.schedule.power > 0, "schedule.power", r.schedule.power, "must be > 0")
    need(r.train.batch_size >= 1, "train.batch_size", r.train.batch_size, "must be >= 1")
    need(r.train.accumulate >= 1, "train.accumulate", r.train.accumulate, "must be >= 1")
    per_gpu = r.train.per_gpu_batch
    need(per_gpu is None or 1 <= per_gpu <= r.train.batch_size, "train.per_gpu_batch", per_gpu,
         f"must be in [1, train.batch_size={r.train.batch_size}] or null")
    need(per_gpu is None or r.train.accumulate == 1, "train.accumulate", r.train.accumulate,
         "follows from train.per_gpu_batch when that is set; set one of the two")
    need(r.train.clip_grad_norm is None or r.train.clip_grad_norm > 0, "train.clip_grad_norm",
         r.train.clip_grad_norm, "must be > 0 or null")
    need(r.train.amp in AMP_MODES, "train.amp", r.train.amp, f"must be one of {', '.join(AMP_MODES)}")
    need(0 <= r.data.modality_dropout < 1, "data.modality_dropout", r.data.modality_dropout, "must be in [0, 1)")
    need(r.data.num_workers >= 0, "data.num_workers", r.data.num_workers, "must be >= 0")
    need(r.val.every_epochs >= 1, "val.every_epochs", r.val.every_epochs, "must be >= 1")
    need(r.val.batch_size >= 1, "val.batch_size", r.val.batch_size, "must be >= 1")
    need(r.checkpoint.every_iters >= 1, "checkpoint.every_iters", r.checkpoint.every_iters, "must be >= 1")
    need(r.checkpoint.keep_every_epochs >= 0, "checkpoint.keep_every_epochs", r.checkpoint.keep_every_epochs,
         "must be >= 0")
    need(r.log.every_iters >= 1, "log.every_iters", r.log.every_iters, "must be >= 1")


def accumulation(recipe: Recipe, world_size: int) -> int:
    """Micro-batches per optimiser step and process: `train.accumulate`, or batch_size / (processes x
    per_gpu_batch) when `train.per_gpu_batch` is set."""
    per_gpu = recipe.train.per_gpu_batch
    if per_gpu is None:
        return recipe.train.accumulate
    return _split_batch(recipe, world_size, "train.per_gpu_batch", per_gpu)


def micro_batch(recipe: Recipe, world_size: int) -> int:
    """Samples per process per forward pass: batch_size / (processes x accumulation steps), exactly."""
    return _split_batch(recipe, world_size, "train.accumulate", accumulation(recipe, world_size))


def _split_batch(recipe: Recipe, world_size: int, key: str, factor: int) -> int:
    """batch_size / (world_size x factor), which must be whole."""
    parts = world_size * factor
    if recipe.train.batch_size % parts:
        raise ConfigError(f"train.batch_size: {recipe.train.batch_size} does not split over {world_size} "
                          f"process(es) x {key}={factor}; make it a multiple of {parts} or change {key}")
    return recipe.train.batch_size // parts


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
