"""The colour overlay in one pass: each pixel's palette colour blended with the camera's, in 8.8 fixed point.

cv2's way (grey to three channels, a per-byte lookup table, then addWeighted) writes and reads the frame three times;
at 1920x1200 on one core it took 8.8 ms against 2.0 ms here (`mmseg bench kernels`). Per row, the label colours are
gathered into a row of pre-weighted palette values (only where the label differs from the row above), and the blend
then runs over contiguous bytes (the loop vectorises). The camera weight is alpha rounded to 1/256 and the palette's
is its complement, so a pixel is within one level of the float blend and the sum never leaves 16 bits
(255 * 256 + 128).
"""
from __future__ import annotations

import numba
import numpy as np

FIXED_ONE = 256  # 8.8 fixed point: weights in 1/256


def weights(lut: np.ndarray, alpha: float):
    """(palette term per label id and channel, uint16: colour * palette weight + rounding half; camera weight)."""
    camera_weight = int(round(min(max(float(alpha), 0.0), 1.0) * FIXED_ONE))
    tinted = lut.astype(np.uint16) * np.uint16(FIXED_ONE - camera_weight) + np.uint16(FIXED_ONE // 2)
    return tinted, np.uint16(camera_weight)


@numba.njit(cache=True, nogil=True)
def _blend_rows(labels, camera, tinted, camera_weight, out):  # pragma: no cover - compiled
    """out[y, 3x + k] = (tinted[labels[y, x], k] + camera_weight * camera[y, 3x + k]) >> 8 for RGB rows. The row of
    palette terms carries over from the row above and is looked up again only where the label changed (a
    segmentation's rows mostly repeat the one above: half the time of a lookup per pixel)."""
    height, width = labels.shape
    row = np.empty(3 * width, np.uint16)
    above = np.empty(width, labels.dtype)
    for y in range(height):
        ids, source, target = labels[y], camera[y], out[y]
        for x in range(width):
            c = ids[x]
            if y == 0 or c != above[x]:
                row[3 * x], row[3 * x + 1], row[3 * x + 2] = tinted[c, 0], tinted[c, 1], tinted[c, 2]
        for x in range(width):
            above[x] = ids[x]
        for i in range(3 * width):
            target[i] = (row[i] + camera_weight * np.uint16(source[i])) >> 8


def blend(labels: np.ndarray, camera_rgb: np.ndarray, lut: np.ndarray, alpha: float,
          out: np.ndarray | None = None) -> np.ndarray:
    """(H, W) uint8 label ids, (H, W, 3) uint8 RGB camera image, (256, 3) uint8 palette -> (H, W, 3) uint8 overlay
    (`out` when given: written in place)."""
    height, width = labels.shape
    if labels.dtype != np.uint8 or camera_rgb.dtype != np.uint8 or camera_rgb.shape != (height, width, 3):
        raise ValueError(f"overlay.blend: uint8 labels and an (H, W, 3) uint8 camera of the same size, got "
                         f"{labels.dtype} {labels.shape} and {camera_rgb.dtype} {camera_rgb.shape}")
    if out is None:
        out = np.empty((height, width, 3), np.uint8)
    elif out.shape != (height, width, 3) or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"overlay.blend: out must be a contiguous ({height}, {width}, 3) uint8 array")
    tinted, camera_weight = weights(lut, alpha)
    _blend_rows(np.ascontiguousarray(labels), np.ascontiguousarray(camera_rgb).reshape(height, -1), tinted,
                camera_weight, out.reshape(height, -1))
    return out
