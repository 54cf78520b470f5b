"""Model cards: one YAML file per model in models/, loaded and validated into a frozen `ModelCard`.

A card says which SAM2 to build (config name, hydra overrides, optional official checkpoint), which architecture
sits on it, which modalities and classes it handles, the input size, normalisation, LoRA settings, the
architecture's own block, the loss, which parts train, and optionally a project checkpoint with trained tensors.
Every rejected value raises ConfigError naming the card, the key and the value. Architecture blocks
(`mle_sam:`, `memory_sam:`) are only checked to be mappings here; each model reads its own keys with
`read_options`, which rejects unknown ones.

Relative file paths in a card are relative to the card's folder; `~` and `$VARS` are expanded.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Dict, Mapping, Optional, Tuple

import yaml

from . import classes, modalities
from .errors import ConfigError
from .resources import resolve

ARCHITECTURES = ("mle_sam", "memory_sam")
TRAINABLE_SETTINGS = ("paper", "from_scratch")
INPUT_MULTIPLE = 32  # Hiera downsamples by 32 in total
TOP_LEVEL_KEYS = (
    "name", "architecture", "sam2", "modalities", "classes", "input_size", "normalization", "lora",
    *ARCHITECTURES, "loss", "trainable", "checkpoint", "description", "reference",
)
SAM2_KEYS = ("config", "overrides", "checkpoint")
LORA_KEYS = ("rank", "alpha", "dropout")


@dataclass(frozen=True)
class ModelCard:
    name: str
    architecture: str
    sam2_config: str
    sam2_overrides: Tuple[str, ...]
    sam2_checkpoint: Optional[Path]
    modalities: Tuple[str, ...]
    class_set: classes.ClassSet
    input_size: Tuple[int, int]
    lora_rank: int
    lora_alpha: float
    lora_dropout: float
    arch: Mapping[str, Any]
    loss: Mapping[str, Any]
    trainable: str
    checkpoint: Optional[Path]
    path: Optional[Path] = None
    description: str = ""
    # Published figures to compare with (free-form), e.g. {trainable_params_m: 20.79, source: "..."};
    # used by `mmseg info`.
    reference: Mapping[str, Any] = field(default_factory=dict)
    _normalization: Mapping[str, Tuple[Tuple[float, ...], Tuple[float, ...]]] = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return self.class_set.num_classes

    @property
    def class_names(self) -> Tuple[str, ...]:
        return self.class_set.names

    def normalization(self, modality: str) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        """(mean, std), three values each, for a modality of this card: the card's own or the registry default."""
        name = modalities.get(modality).name
        if name not in self.modalities:
            raise ConfigError(f"card {self.name!r}: modality {modality!r} is not one of {list(self.modalities)}")
        if name in self._normalization:
            return self._normalization[name]
        spec = modalities.get(name)
        return tuple(spec.mean), tuple(spec.std)

    def canonical_inputs(self, keys) -> Tuple[str, ...]:
        """Canonical names for input keys (aliases allowed), order kept; unknown modalities, modalities this card
        does not take and duplicates fail with a ConfigError naming the key and the card's modalities."""
        names = []
        for key in keys:
            try:
                name = modalities.get(key).name
            except ConfigError:
                raise ConfigError(f"unknown modality {key!r}; "
                                  f"model {self.name!r} takes {list(self.modalities)}") from None
            if name not in self.modalities:
                raise ConfigError(f"modality {key!r} is not one of model {self.name!r}'s {list(self.modalities)}")
            if name in names:
                raise ConfigError(f"modality {name!r} given twice (as {key!r})")
            names.append(name)
        return tuple(names)

    def to_dict(self) -> Dict[str, Any]:
        """A self-contained card dict (classes inline, paths absolute) that `from_dict` turns back into this card."""
        return {
            "name": self.name,
            "description": self.description,
            "architecture": self.architecture,
            "sam2": {
                "config": self.sam2_config,
                "overrides": list(self.sam2_overrides),
                "checkpoint": None if self.sam2_checkpoint is None else str(self.sam2_checkpoint),
            },
            "modalities": list(self.modalities),
            "classes": {
                "name": self.class_set.name,
                "classes": [{"name": n, "color": list(c)} for n, c in zip(self.class_set.names, self.class_set.colors)],
            },
            "input_size": list(self.input_size),
            "normalization": {m: {"mean": list(ms[0]), "std": list(ms[1])} for m, ms in self._normalization.items()},
            "lora": {"rank": self.lora_rank, "alpha": self.lora_alpha, "dropout": self.lora_dropout},
            self.architecture: _plain(self.arch),
            "loss": _plain(self.loss),
            "trainable": self.trainable,
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "reference": _plain(self.reference),
        }


def load(name_or_path) -> ModelCard:
    """Load a card by path, or by name from the models/ folder ('mle_sam_hiera_t' or 'mle_sam_hiera_t.yaml')."""
    ref = str(name_or_path)
    if not ref.endswith((".yaml", ".yml")):
        ref += ".yaml"
    path = resolve(ref, "models").resolve()
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    except OSError as exc:  # permission denied, a folder, an I/O error: the user must see which file
        raise ConfigError(f"{path}: cannot read model card ({exc.strerror or exc})") from None
    return from_dict(data, source=str(path), base_dir=path.parent, path=path)


def from_dict(data, source: str = "<card>", base_dir=None, path=None) -> ModelCard:
    """Validate a card mapping. Relative paths in it are taken relative to `base_dir` (default: working dir)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a model card must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; allowed: {list(TOP_LEVEL_KEYS)}")
    base = Path(base_dir) if base_dir is not None else Path.cwd()

    name = _required(data, "name", source)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{source}: 'name' must be a non-empty string, got {name!r}")
    where = f"{source} (card {name!r})"

    architecture = _required(data, "architecture", where)
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"{where}: 'architecture' must be one of {list(ARCHITECTURES)}, got {architecture!r}")

    sam2 = _mapping(_required(data, "sam2", where), "sam2", where, SAM2_KEYS)
    sam2_config = _required(sam2, "config", where, "sam2.config")
    _check_sam2_config(sam2_config, where)
    overrides = sam2.get("overrides") or []
    if not isinstance(overrides, (list, tuple)) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"{where}: 'sam2.overrides' must be a list of hydra override strings, got {overrides!r}")

    try:
        mods = modalities.canonical(_required(data, "modalities", where))
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{where}: 'modalities': {exc}") from None

    class_ref = _required(data, "classes", where)
    if isinstance(class_ref, Mapping):
        class_set = classes.from_dict(class_ref, f"{where} 'classes'")
    elif isinstance(class_ref, str):
        beside_card = base / class_ref
        is_file_beside = class_ref.endswith((".yaml", ".yml")) and beside_card.is_file()
        class_set = classes.load(str(beside_card) if is_file_beside else class_ref)
    else:
        raise ConfigError(f"{where}: 'classes' must be a class-set name, a path or an inline set, got {class_ref!r}")

    input_size = _input_size(_required(data, "input_size", where), architecture, where)
    normalization = _normalization(data.get("normalization") or {}, mods, where)

    lora = _mapping(data.get("lora") or {}, "lora", where, LORA_KEYS)
    rank = lora.get("rank", 4)
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ConfigError(f"{where}: 'lora.rank' must be an integer >= 1, got {rank!r}")
    alpha = _number(lora.get("alpha", rank), "lora.alpha", where, low=0.0, low_open=True)
    dropout = _number(lora.get("dropout", 0.0), "lora.dropout", where, low=0.0, high=1.0, high_open=True)

    for other in ARCHITECTURES:
        if other != architecture and data.get(other) is not None:
            raise ConfigError(f"{where}: block '{other}' given for architecture {architecture!r}")
    arch = _mapping(data.get(architecture) or {}, architecture, where)
    loss = _mapping(data.get("loss") or {}, "loss", where)
    if "ohem_thresh" in loss:
        _number(loss["ohem_thresh"], "loss.ohem_thresh", where, low=0.0, high=1.0, low_open=True)
    if "weights" in loss:
        w = loss["weights"]
        if not isinstance(w, (list, tuple)) or not w or not all(_is_number(v) and v >= 0 for v in w):
            raise ConfigError(f"{where}: 'loss.weights' must be a non-empty list of numbers >= 0, got {w!r}")

    trainable = data.get("trainable", "paper")
    if trainable not in TRAINABLE_SETTINGS:
        raise ConfigError(f"{where}: 'trainable' must be one of {list(TRAINABLE_SETTINGS)}, got {trainable!r}")

    description = data.get("description") or ""
    reference = _mapping(data.get("reference") or {}, "reference", where)
    return ModelCard(
        name=name.strip(),
        architecture=architecture,
        sam2_config=sam2_config,
        sam2_overrides=tuple(overrides),
        sam2_checkpoint=_file(sam2.get("checkpoint"), base, "sam2.checkpoint", where),
        modalities=mods,
        class_set=class_set,
        input_size=input_size,
        lora_rank=rank,
        lora_alpha=float(alpha),
        lora_dropout=float(dropout),
        arch=_frozen(arch),
        loss=_frozen(loss),
        trainable=trainable,
        checkpoint=_file(data.get("checkpoint"), base, "checkpoint", where),
        path=None if path is None else Path(path),
        description=str(description),
        reference=_frozen(reference),
        _normalization=MappingProxyType(normalization),
    )


def derive(card: ModelCard, source: str | None = None, **changes) -> ModelCard:
    """A new card from `card` with top-level keys replaced; mapping values are merged one level deep, e.g.
    `derive(card, input_size=[512, 512], lora={"rank": 8})`."""
    data = card.to_dict()
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(data.get(key), Mapping):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    base = card.path.parent if card.path is not None else None
    return from_dict(data, source=source or f"{card.name} (derived)", base_dir=base, path=card.path)


def read_options(block: Mapping[str, Any], defaults: Mapping[str, Any], where: str) -> Dict[str, Any]:
    """An architecture block merged over its defaults; keys not in `defaults` are rejected (typos fail loudly)."""
    unknown = sorted(set(block) - set(defaults))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(defaults)}")
    return {**defaults, **dict(block)}


# -- helpers ------------------------------------------------------------------------------------------------------


def _required(data: Mapping, key: str, where: str, label: str | None = None):
    if key not in data or data[key] is None:
        raise ConfigError(f"{where}: missing required key '{label or key}'")
    return data[key]


def _mapping(value, key: str, where: str, allowed=None) -> Dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: '{key}' must be a mapping, got {value!r}")
    if allowed is not None:
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown} in '{key}'; allowed: {list(allowed)}")
    return dict(value)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number(v, key, where, low=None, high=None, low_open=False, high_open=False) -> float:
    ok = _is_number(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        raise ConfigError(f"{where}: '{key}' must be a number {lo}{' and ' if lo and hi else ''}{hi}, got {v!r}")
    return float(v)


def _check_sam2_config(config: str, where: str) -> None:
    """The config must be one the sam2 package ships (found without importing sam2, which starts hydra)."""
    if not isinstance(config, str):
        raise ConfigError(f"{where}: 'sam2.config' must be a string, got {config!r}")
    spec = importlib.util.find_spec("sam2")
    if spec is None or not spec.submodule_search_locations:
        return  # sam2 missing: building the model will say so
    root = Path(list(spec.submodule_search_locations)[0])
    if not (root / config).is_file():
        known = sorted(str(p.relative_to(root)) for p in root.glob("configs/**/*.yaml"))
        raise ConfigError(f"{where}: 'sam2.config' {config!r} is not a sam2 config; known: {known}")


def _input_size(value, architecture: str, where: str) -> Tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (
        not isinstance(value, (list, tuple)) or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 and v % INPUT_MULTIPLE == 0 for v in value)
    ):
        raise ConfigError(f"{where}: 'input_size' must be [H, W], positive multiples of {INPUT_MULTIPLE}, "
                          f"got {value!r}")
    if architecture == "memory_sam" and value[0] != value[1]:
        raise ConfigError(f"{where}: 'input_size' must be square for memory_sam (RoPE needs square maps), "
                          f"got {value!r}")
    return int(value[0]), int(value[1])


def _normalization(data, mods, where: str):
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: 'normalization' must be a mapping modality -> {{mean, std}}, got {data!r}")
    out = {}
    for key, entry in data.items():
        try:
            mod = modalities.get(key).name
        except ConfigError as exc:
            raise ConfigError(f"{where}: 'normalization': {exc}") from None
        if mod not in mods:
            raise ConfigError(f"{where}: 'normalization.{key}' names a modality not in {list(mods)}")
        entry = _mapping(entry, f"normalization.{key}", where, ("mean", "std"))
        vectors = []
        for part in ("mean", "std"):
            v = entry.get(part)
            if not isinstance(v, (list, tuple)) or len(v) != 3 or not all(_is_number(x) for x in v):
                raise ConfigError(f"{where}: 'normalization.{key}.{part}' must be 3 numbers, got {v!r}")
            if part == "std" and not all(x > 0 for x in v):
                raise ConfigError(f"{where}: 'normalization.{key}.std' must be > 0, got {v!r}")
            vectors.append(tuple(float(x) for x in v))
        out[mod] = (vectors[0], vectors[1])
    return out


def _file(value, base: Path, key: str, where: str) -> Optional[Path]:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ConfigError(f"{where}: '{key}' must be a file path or null, got {value!r}")
    p = Path(os.path.expandvars(os.path.expanduser(str(value))))
    return p if p.is_absolute() else (base / p).resolve()


def _frozen(d: Mapping) -> Mapping:
    return MappingProxyType({k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _plain(d: Mapping) -> Dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
