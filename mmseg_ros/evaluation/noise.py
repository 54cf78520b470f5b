"""Sensor-noise corruptions of MLE-SAM's robustness study (Table VIII), on the raw 0..255 scale of a modality.

The paper draws Gaussian noise as a standard normal scaled by 50 and "random" noise uniformly in [-100, 100], adds it
directly to the image data of ONE modality (8-bit pixel values) and clips to [0, 255]; the other modalities stay clean.
Here that happens on the unit representation `preprocess.to_unit` makes from a raw array, scaled by 255, before the
per-modality mean/std normalisation:

* 8-bit images (rgb, DELIVER's event/lidar/HHA PNGs): unit * 255 is exactly the pixel value, so this is the paper's
  operation verbatim;
* metric modalities (depth, LiDAR range in metres, registry `value_range` [lo, hi]): the 0..255 scale is
  255 * (metres - lo) / (hi - lo), so sigma 50 means 50/255 of the range (15.7 m for 0..80 m), and clipping keeps
  values inside the range. As in the paper, every pixel is corrupted, including pixels without a return (0), so a
  sparse LiDAR image becomes dense noise.

Noise is drawn independently per element of the (3, H, W) model input (a 1-channel sensor repeated to 3 channels gets
three independent draws, as with the paper's 3-channel inputs) and is not rounded to integers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from .. import preprocess
from ..errors import ConfigError

PIXEL_MAX = 255.0


@dataclass(frozen=True)
class NoiseSpec:
    """One kind of additive pixel noise, in 0..255 units."""

    kind: str  # 'gaussian' | 'uniform'
    scale: float  # Gaussian sigma, or the half-width of the uniform interval [-scale, scale]

    @property
    def title(self) -> str:
        """Name used in the tables (the paper calls the uniform noise 'Random')."""
        if self.kind == "gaussian":
            return f"Gaussian (sigma {self.scale:g})"
        return f"Uniform [-{self.scale:g}, {self.scale:g}]"

    def sample(self, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
        """float32 noise of `shape` in 0..255 units."""
        if self.kind == "gaussian":
            return (rng.standard_normal(shape, dtype=np.float32) * np.float32(self.scale))
        return rng.uniform(-self.scale, self.scale, size=shape).astype(np.float32)


# The paper's two settings (MLE-SAM Sec. IV-A): N(0, 1) * 50 and U[-100, 100].
PAPER_NOISES: Dict[str, NoiseSpec] = {
    "gaussian": NoiseSpec("gaussian", 50.0),
    "uniform": NoiseSpec("uniform", 100.0),
}


def make(kind: str, scale: Optional[float] = None) -> NoiseSpec:
    """A NoiseSpec by kind, with the paper's scale unless one is given."""
    if kind not in PAPER_NOISES:
        raise ConfigError(f"noise kind {kind!r} unknown; known: {', '.join(PAPER_NOISES)}")
    if scale is None:
        return PAPER_NOISES[kind]
    if not float(scale) > 0:
        raise ConfigError(f"noise scale must be > 0, got {scale!r}")
    return NoiseSpec(kind, float(scale))


def corrupt_unit(unit, spec: NoiseSpec, rng: np.random.Generator):
    """Add `spec` noise to a unit-scale image (numpy array or torch tensor, any shape, values in [0, 1]).

    Returns the same type, clipped to [0, 1]; the input is not modified."""
    noise = spec.sample(tuple(unit.shape), rng)
    if hasattr(unit, "new_tensor"):  # torch: keep device and dtype
        import torch

        noise_t = torch.from_numpy(noise).to(device=unit.device, dtype=unit.dtype)
        return ((unit * PIXEL_MAX + noise_t).clamp_(0.0, PIXEL_MAX)) / PIXEL_MAX
    pixels = np.asarray(unit, dtype=np.float32) * np.float32(PIXEL_MAX) + noise
    return np.clip(pixels, 0.0, PIXEL_MAX) / np.float32(PIXEL_MAX)


def corrupt_raw(modality: str, raw: np.ndarray, spec: NoiseSpec, rng: np.random.Generator) -> np.ndarray:
    """A raw sensor array (any dtype preprocess accepts) -> noisy float32 (H, W, 3) unit image."""
    return corrupt_unit(preprocess.to_unit(modality, raw), spec, rng)


def corrupt_one(inputs: Mapping[str, object], modality: str, spec: NoiseSpec, rng: np.random.Generator) -> dict:
    """A copy of `inputs` (modality -> unit image/batch) with only `modality` corrupted; the rest are the same
    objects."""
    if modality not in inputs:
        raise ConfigError(f"cannot add noise to {modality!r}: inputs have {list(inputs)}")
    out = dict(inputs)
    out[modality] = corrupt_unit(inputs[modality], spec, rng)
    return out
