"""The shared sample transform pipeline: geometry on raw sensor arrays, photometry on the camera, modality dropout,
and finally `preprocess.to_unit` + per-modality normalisation (`ToModelInput`).

Every transform is a callable `(sample, rng) -> sample` on the raw sample dict of `data.common`; `Compose` owns the
numpy Generator and passes it on, so one seed fixes a whole pipeline. In DataLoader workers use
`worker_init_fn=seed_worker`: each worker then reseeds its copy from torch's per-worker seed, which the loader
derives from its `generator` (or `torch.manual_seed`), so runs repeat exactly for a given seed and worker count.

Geometry applies one affine map (scale, crop offset, flip) to every modality and the label. Each modality is
resampled as `preprocess.interpolation` says, the engine's own choice: nearest for metric images (a bilinear mix of
a LiDAR return and "no return" (0) is a range that was never measured), area averaging where the frame shrinks,
bilinear where it grows; labels are always nearest. An explicit `nearest` set overrides the nearest choice. Padding
is 255 (ignore) for labels and 0 (no signal / no return) for inputs.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from .. import modalities, preprocess
from ..classes import IGNORE_INDEX
from ..errors import ConfigError

CAMERA = modalities.get("rgb").name  # the modality photometric augmentation applies to by default


def default_nearest() -> frozenset:
    """Modalities resampled nearest at any scale (`preprocess.resample_nearest`: the metric ones)."""
    return frozenset(name for name in modalities.REGISTRY if preprocess.resample_nearest(name))


def _pair(size, what: str) -> Tuple[int, int]:
    height, width = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if int(height) <= 0 or int(width) <= 0:
        raise ConfigError(f"{what}: size must be positive, got {size!r}")
    return int(height), int(width)


def _need_rng(rng, what: str) -> np.random.Generator:
    if rng is None:
        raise ConfigError(f"{what} is random: call it through Compose (which owns the seeded generator)")
    return rng


# ---------------------------------------------------------------------------------------------------- pipeline
class Compose:
    """Apply transforms in order with one numpy Generator (`seed` None = fresh entropy)."""

    def __init__(self, transforms: Sequence[Callable], seed: Optional[int] = None):
        self.transforms = list(transforms)
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, sample: dict) -> dict:
        for transform in self.transforms:
            sample = transform(sample, self.rng)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: reseed every Compose reachable from the worker's dataset with its torch seed."""
    info = torch.utils.data.get_worker_info()
    if info is None:
        return
    pending = [info.dataset]
    while pending:
        dataset = pending.pop()
        transform = getattr(dataset, "transform", None)
        if hasattr(transform, "reseed"):
            transform.reseed(info.seed)
        pending.extend(getattr(dataset, "datasets", ()))
        if hasattr(dataset, "dataset"):
            pending.append(dataset.dataset)


# ---------------------------------------------------------------------------------------------------- geometry
def _warp(image: np.ndarray, scale: Tuple[float, float], offset: Tuple[int, int], out: Tuple[int, int],
          flip: bool, nearest: bool, fill, area: bool = False) -> np.ndarray:
    """Scale by (sy, sx), take the out-sized window whose top-left is `offset` in the scaled image (pixels outside
    the image get `fill`), optionally mirror it. Pixel centres are aligned as in cv2.resize. `area`: shrink by area
    averaging (`preprocess.area` to the scaled size, as the engine does), then cut the window."""
    (sy, sx), (y0, x0), (out_h, out_w) = scale, offset, out
    src_h, src_w = image.shape[:2]
    if area and (sy < 1 or sx < 1):  # the engine's average, then an exact crop
        scaled = preprocess.area(image, (max(1, round(src_h * sy)), max(1, round(src_w * sx))))
        if image.ndim == 3 and scaled.ndim == 2:
            scaled = scaled[:, :, None]
        return _warp(scaled, (1.0, 1.0), offset, out, flip, True, fill)  # a whole-pixel window: an exact crop
    cols = np.arange(out_w)
    if flip:
        cols = cols[::-1]
    if nearest:
        rows = np.floor((np.arange(out_h) + y0 + 0.5) / sy).astype(np.int64)
        cols = np.floor((cols + x0 + 0.5) / sx).astype(np.int64)
        row_ok = (rows >= 0) & (rows < src_h)
        col_ok = (cols >= 0) & (cols < src_w)
        result = image[np.clip(rows, 0, src_h - 1)[:, None], np.clip(cols, 0, src_w - 1)[None, :]]
        outside = ~(row_ok[:, None] & col_ok[None, :])
        if outside.any():
            result = result.copy()
            result[outside] = fill
        return result
    # dst = s * src + (0.5 s - 0.5 - offset): the same centre-aligned map as the nearest branch above.
    tx = 0.5 * sx - 0.5 - x0
    matrix = np.array([[sx, 0.0, tx], [0.0, sy, 0.5 * sy - 0.5 - y0]], dtype=np.float64)
    if flip:  # mirror the window: x' = out_w - 1 - x
        matrix[0] = [-sx, 0.0, out_w - 1 - tx]
    source = image.astype(np.float32) if image.dtype not in (np.uint8, np.uint16, np.float32) else image
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels > 4:  # cv2's warp takes at most four channels
        return np.stack([_warp(image[..., c], scale, offset, out, flip, False, fill) for c in range(channels)], -1)
    result = cv2.warpAffine(source, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(fill,) * 4)
    if image.ndim == 3 and result.ndim == 2:
        result = result[:, :, None]
    return result.astype(image.dtype, copy=False)


class _Geometric:
    """Shared by the geometric transforms: one map, applied to all inputs and to the label."""

    def __init__(self, nearest: Optional[Iterable[str]] = None):
        self.explicit = nearest is not None  # the caller's set decides nearest; else preprocess.interpolation
        self.nearest = default_nearest() if nearest is None else frozenset(modalities.get(n).name for n in nearest)

    def apply(self, sample: dict, scale, offset, out, flip: bool) -> dict:
        inputs = {name: self._warp_input(name, array, scale, offset, out, flip)
                  for name, array in sample["inputs"].items()}
        label = _warp(sample["label"], scale, offset, out, flip, True, IGNORE_INDEX)
        return {**sample, "inputs": inputs, "label": label}

    def _warp_input(self, name, array, scale, offset, out, flip) -> np.ndarray:
        height, width = array.shape[:2]
        scaled = (max(1, round(height * scale[0])), max(1, round(width * scale[1])))
        flag = preprocess.interpolation(name, (height, width), scaled)
        nearest = name in self.nearest if self.explicit else flag == cv2.INTER_NEAREST_EXACT
        return _warp(array, scale, offset, out, flip, nearest, 0, area=flag == cv2.INTER_AREA and not nearest)


class Resize(_Geometric):
    """Deterministic resize of every modality and the label to the model's input size (aspect not kept)."""

    def __init__(self, size, nearest: Optional[Iterable[str]] = None):
        super().__init__(nearest)
        self.size = _pair(size, "Resize")

    def __call__(self, sample: dict, rng=None) -> dict:
        height, width = sample["label"].shape[:2]
        out_h, out_w = self.size
        return self.apply(sample, (out_h / height, out_w / width), (0, 0), self.size, False)


class RandomResizedCrop(_Geometric):
    """Scale the frame by `ratio * s0`, where s0 makes it just cover `size` and ratio ~ U(scale), then cut a random
    `size` window (padded where the scaled frame is smaller). The usual segmentation scale augmentation."""

    def __init__(self, size, scale: Tuple[float, float] = (0.5, 2.0), nearest: Optional[Iterable[str]] = None):
        super().__init__(nearest)
        self.size = _pair(size, "RandomResizedCrop")
        if not 0 < scale[0] <= scale[1]:
            raise ConfigError(f"RandomResizedCrop: scale must be 0 < low <= high, got {scale!r}")
        self.scale = (float(scale[0]), float(scale[1]))

    def __call__(self, sample: dict, rng=None) -> dict:
        rng = _need_rng(rng, "RandomResizedCrop")
        height, width = sample["label"].shape[:2]
        out_h, out_w = self.size
        factor = rng.uniform(*self.scale) * max(out_h / height, out_w / width)
        scaled_h, scaled_w = max(1, round(height * factor)), max(1, round(width * factor))
        y0 = int(rng.integers(min(0, scaled_h - out_h), max(0, scaled_h - out_h) + 1))
        x0 = int(rng.integers(min(0, scaled_w - out_w), max(0, scaled_w - out_w) + 1))
        return self.apply(sample, (scaled_h / height, scaled_w / width), (y0, x0), self.size, False)


class RandomHorizontalFlip(_Geometric):
    def __init__(self, p: float = 0.5):
        super().__init__(nearest=())  # a mirror moves whole pixels; interpolation never happens
        self.p = float(p)

    def __call__(self, sample: dict, rng=None) -> dict:
        if _need_rng(rng, "RandomHorizontalFlip").random() >= self.p:
            return sample
        height, width = sample["label"].shape[:2]
        return self.apply(sample, (1.0, 1.0), (0, 0), (height, width), True)


# ---------------------------------------------------------------------------------------------------- photometry
class _Photometric:
    """Base of camera-only transforms: they work on the unit float image and store it back as float [0, 1]
    (a valid raw camera representation, see preprocess.to_unit)."""

    def __init__(self, p: float, modality: str):
        spec = modalities.get(modality)
        if spec.value_range is not None:
            raise ConfigError(f"{type(self).__name__}: {spec.name!r} is metric; photometric changes would fake ranges")
        self.p, self.modality = float(p), spec.name

    def __call__(self, sample: dict, rng=None) -> dict:
        rng = _need_rng(rng, type(self).__name__)
        if self.modality not in sample["inputs"] or rng.random() >= self.p:
            return sample
        unit = preprocess.to_unit(self.modality, sample["inputs"][self.modality])
        changed = np.clip(self.change(unit, rng), 0.0, 1.0).astype(np.float32)
        return {**sample, "inputs": {**sample["inputs"], self.modality: changed}}

    def change(self, unit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


JITTER_ORDERS = ("random", "fixed")


class ColorJitter(_Photometric):
    """Random brightness, contrast and saturation factors in [1 - x, 1 + x].

    `order="random"`: the three in random order, clipped to [0, 1] once at the end. `order="fixed"`: brightness,
    contrast, saturation in that order, each clipped to [0, 1], which is what CMNeXt's `RandomColorJitter` does with
    torchvision's `adjust_*` functions (factors U(0.5, 1.5) there, i.e. x = 0.5, with p = 0.2)."""

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, p: float = 0.8,
                 modality: str = CAMERA, order: str = "random"):
        super().__init__(p, modality)
        if order not in JITTER_ORDERS:
            raise ConfigError(f"ColorJitter: order must be one of {list(JITTER_ORDERS)}, got {order!r}")
        self.strength = {"brightness": brightness, "contrast": contrast, "saturation": saturation}
        self.order = order

    def change(self, unit, rng):
        gray_weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        fixed = self.order == "fixed"
        for kind in (list(self.strength) if fixed else rng.permutation(list(self.strength))):
            amount = self.strength[kind]
            factor = np.float32(rng.uniform(max(0.0, 1.0 - amount), 1.0 + amount))
            if kind == "brightness":
                unit = unit * factor
            elif kind == "contrast":
                mean = np.float32((unit @ gray_weights).mean())
                unit = (unit - mean) * factor + mean
            else:
                gray = (unit @ gray_weights)[:, :, None]
                unit = (unit - gray) * factor + gray
            if fixed:
                unit = np.clip(unit, 0.0, 1.0)
        return unit


class GaussianBlur(_Photometric):
    """Blur with sigma ~ U(sigma), or, given `kernel`, a fixed k x k kernel whose sigma follows from its size as in
    torchvision's `gaussian_blur` (0.3 * ((k - 1) / 2 - 1) + 0.8: 0.8 for CMNeXt's 3 x 3); reflected borders in
    both libraries."""

    def __init__(self, sigma: Tuple[float, float] = (0.1, 2.0), p: float = 0.5, modality: str = CAMERA,
                 kernel: Optional[int] = None):
        super().__init__(p, modality)
        if kernel is not None and (int(kernel) < 1 or int(kernel) % 2 == 0):
            raise ConfigError(f"GaussianBlur: kernel must be an odd size >= 1, got {kernel!r}")
        self.sigma = (float(sigma[0]), float(sigma[1]))
        self.kernel = None if kernel is None else int(kernel)

    def change(self, unit, rng):
        if self.kernel is not None:
            # torchvision's sigma for the size; cv2's own (sigma 0) uses fixed [1, 2, 1] / 4 taps for a 3 x 3 kernel
            sigma = 0.3 * ((self.kernel - 1) * 0.5 - 1) + 0.8
            return cv2.GaussianBlur(unit, (self.kernel, self.kernel), sigma)
        return cv2.GaussianBlur(unit, (0, 0), float(rng.uniform(*self.sigma)))


# ---------------------------------------------------------------------------------------------------- dropout
class ModalityDropout:
    """With probability p, remove a random non-empty subset of the sample's modalities, never all of them.

    Subsets are drawn uniformly among the allowed ones: non-empty subsets of the present `droppable` modalities
    (all when None), excluding the one that would leave nothing. The dropped names go to meta["dropped"]; the
    collate turns absence into zeros plus a False in `present`.
    """

    def __init__(self, p: float = 0.5, droppable: Optional[Iterable[str]] = None):
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"ModalityDropout: p must be in [0, 1], got {p!r}")
        self.p = float(p)
        self.droppable = None if droppable is None else frozenset(modalities.get(n).name for n in droppable)

    def __call__(self, sample: dict, rng=None) -> dict:
        rng = _need_rng(rng, "ModalityDropout")
        present = list(sample["inputs"])
        candidates = [m for m in present if self.droppable is None or m in self.droppable]
        if len(present) < 2 or not candidates or rng.random() >= self.p:
            return sample
        subsets = 2 ** len(candidates) - (1 if len(candidates) == len(present) else 0)  # minus "drop everything"
        mask = int(rng.integers(1, subsets))
        dropped = tuple(name for bit, name in enumerate(candidates) if mask >> bit & 1)
        inputs = {name: array for name, array in sample["inputs"].items() if name not in dropped}
        return {**sample, "inputs": inputs, "meta": {**sample.get("meta", {}), "dropped": dropped}}


# ---------------------------------------------------------------------------------------------------- to model
Normalization = Mapping[str, Tuple[Sequence[float], Sequence[float]]]


class ToModelInput:
    """Raw arrays -> float tensors (3, H, W) via preprocess.to_unit and (x - mean) / std; label -> LongTensor.

    `normalization` maps modality -> (mean, std), e.g. {m: card.normalization(m) for m in card.modalities}, or
    `ToModelInput.registry_normalization(names)` without a card.
    """

    def __init__(self, normalization: Normalization):
        self.normalization = {}
        for name, (mean, std) in normalization.items():
            mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
            if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
                raise ConfigError(f"normalization of {name!r}: need 3 means and 3 positive stds, got {mean}, {std}")
            self.normalization[modalities.get(name).name] = (mean, std)

    @staticmethod
    def registry_normalization(names: Iterable[str]) -> dict:
        return {spec.name: (spec.mean, spec.std) for spec in map(modalities.get, names)}

    def __call__(self, sample: dict, rng=None) -> dict:
        inputs = {}
        for name, array in sample["inputs"].items():
            if name not in self.normalization:
                raise ConfigError(f"no normalization for modality {name!r}; have {list(self.normalization)}")
            unit = torch.from_numpy(np.ascontiguousarray(preprocess.to_unit(name, array).transpose(2, 0, 1)))
            inputs[name] = preprocess.normalize_chw(unit, *self.normalization[name])
        label = torch.from_numpy(np.asarray(sample["label"]).astype(np.int64))
        return {**sample, "inputs": inputs, "label": label}


# ---------------------------------------------------------------------------------------------------- recipes
def train_pipeline(size, normalization: Normalization, *, scale=(0.5, 2.0), flip: float = 0.5,
                   jitter: float = 0.4, jitter_p: float = 0.8, jitter_order: str = "random", blur_p: float = 0.5,
                   blur_sigma=(0.1, 2.0), blur_kernel: Optional[int] = None, photometric_first: bool = False,
                   modality_dropout: float = 0.0, droppable: Optional[Iterable[str]] = None,
                   nearest: Optional[Iterable[str]] = None, seed: Optional[int] = None) -> Compose:
    """Dropout -> random resized crop -> flip -> camera jitter/blur -> model input. Zero probabilities skip steps.

    `photometric_first` gives CMNeXt's order instead (jitter -> flip -> blur -> random resized crop): the blur
    kernel then acts on source pixels, before the crop's rescaling, and jitter statistics are those of the whole
    frame without the crop's zero padding. CMNeXt's settings, which the DELIVER, MUSES and MCubeS recipes use:
    `jitter: 0.5, jitter_p: 0.2, jitter_order: fixed, blur_p: 0.2, blur_kernel: 3, photometric_first: true`."""
    jitter_step = None
    if jitter > 0 and jitter_p > 0:
        jitter_step = ColorJitter(jitter, jitter, jitter, jitter_p, order=jitter_order)
    blur_step = GaussianBlur(blur_sigma, blur_p, kernel=blur_kernel) if blur_p > 0 else None
    flip_step = RandomHorizontalFlip(flip) if flip > 0 else None
    crop_step = RandomResizedCrop(size, scale, nearest)
    if photometric_first:
        ordered = [jitter_step, flip_step, blur_step, crop_step]
    else:
        ordered = [crop_step, flip_step, jitter_step, blur_step]
    steps = [ModalityDropout(modality_dropout, droppable)] if modality_dropout > 0 else []
    steps += [step for step in ordered if step is not None]
    steps.append(ToModelInput(normalization))
    return Compose(steps, seed)


def eval_pipeline(size, normalization: Normalization, nearest: Optional[Iterable[str]] = None) -> Compose:
    """Resize to the model's input size, then model input. Deterministic."""
    return Compose([Resize(size, nearest), ToModelInput(normalization)], seed=0)
