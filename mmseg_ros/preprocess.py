"""Raw sensor arrays -> model-ready 3-channel images. Used by the engine, the datasets and replay alike.

Training and inference must see a modality in the same representation, so there is exactly one conversion:

* metric modalities (the registry gives them a `value_range`, e.g. depth and LiDAR range in metres):
  float arrays are metres; uint16 arrays are millimetres (REP 118, 16UC1); uint8 arrays are already-rendered
  images (e.g. DELIVER's 8-bit PNGs) and are scaled by 1/255. Non-finite or non-positive values mean "no return"
  and become 0.
* other modalities: uint8 / 255, uint16 / 65535, float assumed already in [0, 1] (clipped).
* channels: 1 -> repeated to 3, 2 (e.g. event pos/neg counts) -> a zero third channel, 4 -> first 3.

`to_unit` returns float32 (H, W, 3) in [0, 1]; `normalize_chw` applies the card's per-modality mean/std.
`model_input` is the two in one pass for the engine's small images (the same float32 operations, so the same values
to the bit; a test holds it to that), where a few whole-array numpy steps per input cost more than the arithmetic.
"""
from __future__ import annotations

import cv2
import numba
import numpy as np

from . import area_average, modalities
from .errors import ConfigError


def to_unit(modality: str, image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) array of any supported dtype -> float32 (H, W, 3) in [0, 1]."""
    spec = modalities.get(modality)
    arr = _checked(spec, image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.dtype == np.uint8:
        unit = arr.astype(np.float32) * (1.0 / 255.0)
    elif arr.dtype == np.uint16 and spec.value_range is not None:
        unit = _metric(arr.astype(np.float32) * 1e-3, spec.value_range)
    elif arr.dtype == np.uint16:
        unit = arr.astype(np.float32) * (1.0 / 65535.0)
    elif np.issubdtype(arr.dtype, np.floating):
        if spec.value_range is not None:
            unit = _metric(arr.astype(np.float32, copy=False), spec.value_range)
        else:
            unit = np.clip(np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    return _three_channels(unit, spec.name)


def _checked(spec, image) -> np.ndarray:
    """The image as an array of a supported shape and dtype, else a ConfigError naming the modality."""
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ConfigError(f"{spec.name}: expected an (H, W) or (H, W, C) image, got shape {np.shape(image)}")
    if arr.dtype not in (np.uint8, np.uint16) and not np.issubdtype(arr.dtype, np.floating):
        raise ConfigError(f"{spec.name}: unsupported image dtype {arr.dtype} (use uint8, uint16 or float)")
    return arr


def resample_nearest(modality: str) -> bool:
    """Whether resizing this modality must use nearest neighbour: metric images (blending a return with a
    "no return" 0 invents a range). Training transforms and the engine both ask `interpolation`, which asks here."""
    return modalities.get(modality).value_range is not None


def interpolation(modality: str, source_hw, target_hw) -> int:
    """The cv2 interpolation that resizes this modality from `source_hw` to `target_hw` (H, W), for the engine and
    the training transforms alike, so the model sees one resampling:

    * metric images: nearest (pixel centres aligned, cv2.INTER_NEAREST_EXACT), so "no return" stays 0;
    * shrinking in both directions: area averaging (cv2.INTER_AREA). Bilinear from 1920 to 128 px reads 4 of every
      ~200 pixels and aliases, and picking one pixel of a sparse event image in ~200 drops most events; the
      average is what training at a 2x reduction sees (there bilinear, half-pixel aligned, is the 2x2 average);
    * enlarging: bilinear, or nearest for sparse images (event counts are not smeared into neighbours)."""
    spec = modalities.get(modality)
    if resample_nearest(modality):
        return cv2.INTER_NEAREST_EXACT
    if target_hw[0] <= source_hw[0] and target_hw[1] <= source_hw[1]:
        return cv2.INTER_AREA
    return cv2.INTER_NEAREST_EXACT if spec.sparse else cv2.INTER_LINEAR


def resize(modality: str, image: np.ndarray, target_hw) -> np.ndarray:
    """A raw sensor array (as `to_unit` takes it) resized to `target_hw` with `interpolation`: resampling first and
    converting the small image does the per-pixel work on the model's pixels, not the camera's. The raw dtype is
    kept: nearest commutes with the conversion exactly, bilinear and area (`area`) round to the raw dtype's step as
    the training transforms do. Float non-metric images are converted first: a NaN would spread over its
    neighbours."""
    arr = _checked(modalities.get(modality), image)
    height, width = int(target_hw[0]), int(target_hw[1])
    if arr.shape[:2] == (height, width):
        return arr
    flag = interpolation(modality, arr.shape[:2], (height, width))
    if np.issubdtype(arr.dtype, np.floating) and flag != cv2.INTER_NEAREST_EXACT:
        arr = to_unit(modality, arr)
    elif arr.ndim == 3 and arr.strides[2] < 0:  # an RGB view of a BGR message: cv2 would copy the whole frame
        return resize(modality, arr[:, :, ::-1], target_hw)[:, :, ::-1]
    if arr.dtype.kind == "f" and arr.dtype.itemsize < 4:  # cv2 resizes 32- and 64-bit floats only
        arr = arr.astype(np.float32)
    if flag == cv2.INTER_AREA:
        return area(arr, (height, width))
    return cv2.resize(arr, (width, height), interpolation=flag)


def area(image: np.ndarray, target_hw) -> np.ndarray:
    """Area average of an image, in its own dtype (integer images rounded to their step: within half a step of the
    exact average). Shrinking along both axes takes `area_average.shrink` (one core; 2-5x faster than cv2's
    INTER_AREA at camera sizes); an axis that grows (the training transforms' random scales) leaves it to
    cv2.INTER_AREA."""
    height, width = int(target_hw[0]), int(target_hw[1])
    if height > image.shape[0] or width > image.shape[1]:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    averaged = area_average.shrink(image, (height, width))
    if image.dtype.kind == "f":
        return averaged.astype(image.dtype, copy=False)
    return np.rint(averaged).astype(image.dtype)


def _metric(metres: np.ndarray, value_range) -> np.ndarray:
    lo, hi = value_range
    valid = np.isfinite(metres) & (metres > 0)
    scaled = np.where(valid, (metres - lo) / (hi - lo), 0.0)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32, copy=False)


def _three_channels(unit: np.ndarray, name: str) -> np.ndarray:
    channels = unit.shape[2]
    if channels == 3:
        return unit
    if channels == 1:
        return np.repeat(unit, 3, axis=2)
    if channels == 2:
        return np.concatenate([unit, np.zeros_like(unit[:, :, :1])], axis=2)
    if channels == 4:
        return unit[:, :, :3]
    raise ConfigError(f"{name}: cannot make 3 channels from {channels}")


def normalize_chw(unit_chw, mean, std):
    """(…, 3, H, W) tensor or array in [0, 1] -> (x - mean) / std per channel."""
    mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    if hasattr(unit_chw, "new_tensor"):  # torch tensor: keep device and dtype
        return (unit_chw - unit_chw.new_tensor(mean)) / unit_chw.new_tensor(std)
    # A C-ordered result even from a transposed (H, W, 3) view, divided in place: one new array, not three.
    out = np.subtract(unit_chw, mean, order="C", dtype=np.result_type(unit_chw, mean))
    out /= std
    return out


# `model_input`'s conversions, as `to_unit` picks them by dtype and modality.
_SCALED, _METRIC, _CLIPPED = 0, 1, 2


def model_input(modality: str, image: np.ndarray, mean, std) -> np.ndarray:
    """`normalize_chw(to_unit(modality, image).transpose(2, 0, 1), mean, std)`, bit for bit, in one pass: float32
    (3, H, W), C order."""
    spec = modalities.get(modality)
    arr = _checked(spec, image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] not in (1, 2, 3, 4):
        return normalize_chw(to_unit(modality, arr).transpose(2, 0, 1), mean, std)  # its error names the channels
    lo, hi = spec.value_range if spec.value_range is not None else (0.0, 1.0)
    if arr.dtype == np.uint8:
        kind, scale = _SCALED, 1.0 / 255.0
    elif arr.dtype == np.uint16:
        kind, scale = (_METRIC, 1e-3) if spec.value_range is not None else (_SCALED, 1.0 / 65535.0)
    else:
        kind, scale = (_METRIC, 1.0) if spec.value_range is not None else (_CLIPPED, 1.0)
        if arr.dtype != np.float32:
            arr = arr.astype(np.float32)  # to_unit converts first, too
    out = np.empty((3, *arr.shape[:2]), np.float32)
    _convert(arr, kind, np.float32(scale), np.float32(lo), np.float32(hi - lo),
             np.asarray(mean, np.float32).reshape(3), np.asarray(std, np.float32).reshape(3), out)
    return out


@numba.njit(cache=True, nogil=True)
def _convert(image, kind, scale, lo, span, mean, std, out):  # pragma: no cover - compiled
    """Per output channel and row: `to_unit`'s value of the channel `_three_channels` takes (1: repeated, 2: a zero
    third) - scaled; metric: scaled to metres, then (m - lo) / span where finite and positive, else 0, clipped to
    [0, 1]; clipped: NaN 0, clipped to [0, 1] - then (value - mean) / std. One branch-free loop per kind, so each
    row vectorises."""
    height, width, channels = image.shape
    zero, one = np.float32(0.0), np.float32(1.0)
    for c in range(3):
        source = c if c < channels else 0
        average, spread = mean[c], std[c]
        for y in range(height):
            row, target = image[y], out[c, y]
            if channels == 2 and c == 2:
                for x in range(width):
                    target[x] = (zero - average) / spread
            elif kind == _SCALED:
                for x in range(width):
                    target[x] = (np.float32(row[x, source]) * scale - average) / spread
            elif kind == _METRIC:
                for x in range(width):
                    metres = np.float32(row[x, source]) * scale
                    inside = min(max((metres - lo) / span, zero), one)
                    value = inside if metres > zero and metres < np.float32(np.inf) else zero
                    target[x] = (value - average) / spread
            else:
                for x in range(width):
                    value = np.float32(row[x, source])
                    value = zero if value != value else min(max(value, zero), one)
                    target[x] = (value - average) / spread
