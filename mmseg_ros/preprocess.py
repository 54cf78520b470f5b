"""Raw sensor arrays -> model-ready 3-channel images. Used by the engine, the datasets and replay alike.

Training and inference must see a modality in the same representation, so there is exactly one conversion:

* metric modalities (the registry gives them a `value_range`, e.g. depth and LiDAR range in metres):
  float arrays are metres; uint16 arrays are millimetres (REP 118, 16UC1); uint8 arrays are already-rendered
  images (e.g. DELIVER's 8-bit PNGs) and are scaled by 1/255. Non-finite or non-positive values mean "no return"
  and become 0.
* other modalities: uint8 / 255, uint16 / 65535, float assumed already in [0, 1] (clipped).
* channels: 1 -> repeated to 3, 2 (e.g. event pos/neg counts) -> a zero third channel, 4 -> first 3.

`to_unit` returns float32 (H, W, 3) in [0, 1]; `normalize_chw` applies the card's per-modality mean/std.
"""
from __future__ import annotations

import numpy as np

from . import modalities
from .errors import ConfigError


def to_unit(modality: str, image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) array of any supported dtype -> float32 (H, W, 3) in [0, 1]."""
    spec = modalities.get(modality)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ConfigError(f"{spec.name}: expected an (H, W) or (H, W, C) image, got shape {np.shape(image)}")
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
    else:
        raise ConfigError(f"{spec.name}: unsupported image dtype {arr.dtype} (use uint8, uint16 or float)")
    return _three_channels(unit, spec.name)


def resample_nearest(modality: str) -> bool:
    """Whether resizing this modality must use nearest neighbour: metric images (blending a return with a
    "no return" 0 invents a range) and sparse ones (event counts, LiDAR). Training transforms and the engine both
    ask here, so the model sees the same resampling in both."""
    spec = modalities.get(modality)
    return spec.value_range is not None or spec.sparse


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
    return (unit_chw - mean) / std
