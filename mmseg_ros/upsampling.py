"""The argmax and max of bilinearly upsampled class probabilities, without upsampling K maps.

Each output pixel blends the 2x2 source pixels of its cell (the bilinear taps of cv2.resize and of
F.interpolate(align_corners=False)). Where the four share their argmax class c, the blend keeps c the argmax (a convex
combination keeps the dominance) and its value is the blend of the max-probability map, so one upsampled map gives
label and confidence. Where they disagree (class boundaries: 4% of the cells of the shipped model's 128 px output)
only the (at most four) classes that win a source can win the blend unless another class exceeds the winner somewhere
among the four sources: the candidates are blended per pixel, and pixels where the best candidate does not beat every
other class's largest source value get all K classes. Labels equal those of the full upsampling except where two
classes tie to rounding; confidence agrees within float32 rounding.

The per-pixel work runs in numba kernels, on one core: on this 2-core machine a parallel kernel's threads wait for a
core another process (or the node's executor, or torch's and OpenCV's thread pools) holds, and ran 1.3-3x slower
than the serial one whenever the machine was not idle. Their machine code is cached beside this file after the
first call.
"""
from __future__ import annotations

from typing import Tuple

import cv2
import numba
import numpy as np


def bilinear_taps(n_out: int, n_in: int):
    """Bilinear taps along one axis: for each output index its first source index and the float32 weights of the
    first and the second (source position clamped at 0; the second index is the next one, clamped at the edge: the
    kernels' `below` / `right`)."""
    position = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    first = np.minimum(np.floor(position).astype(np.intp), n_in - 1)
    weight = (position - first).astype(np.float32)
    return first, np.float32(1.0) - weight, weight


def _runs(first: np.ndarray, n_in: int) -> Tuple[np.ndarray, np.ndarray]:
    """[start, end) of the output indices whose first tap is each source index: the taps are monotonic, so a cell's
    output pixels are a run of rows times a run of columns (empty when shrinking skips the source)."""
    counts = np.bincount(first, minlength=n_in)
    end = np.cumsum(counts)
    return end - counts, end


@numba.njit(cache=True)
def _source_cells(probabilities, below, right, best, peak, mixed):  # pragma: no cover - compiled
    """Per source pixel its argmax (the first of equal maxima, as numpy's) and max; per cell (the pixel and its right,
    lower and lower-right neighbours, clamped at the edges) whether its four argmaxes differ."""
    h, w, classes = probabilities.shape
    for i in range(h):
        for j in range(w):
            winner, top = 0, probabilities[i, j, 0]
            for k in range(1, classes):
                if probabilities[i, j, k] > top:
                    winner, top = k, probabilities[i, j, k]
            best[i, j], peak[i, j] = winner, top
    for i in range(h):
        for j in range(w):
            c = best[i, j]
            mixed[i, j] = best[i, right[j]] != c or best[below[i], j] != c or best[below[i], right[j]] != c


@numba.njit(cache=True)
def _fill_cells(best, row_start, row_end, col_start, col_end, labels):  # pragma: no cover - compiled
    """Every output pixel gets its cell's top-left argmax (right wherever the cell agrees; mixed cells are
    overwritten by `_blend_mixed`)."""
    h, w = best.shape
    for cy in range(h):
        for oy in range(row_start[cy], row_end[cy]):
            for cx in range(w):
                value = best[cy, cx]
                for ox in range(col_start[cx], col_end[cx]):
                    labels[oy, ox] = value


@numba.njit(cache=True, inline="always")
def _blend(probabilities, k, r0, c0, r1, c1, a0, a1, b0, b1):  # pragma: no cover - compiled
    """Class k's bilinear blend of the cell's four sources, in cv2's order: along x, then along y."""
    return ((probabilities[r0, c0, k] * a0 + probabilities[r0, c1, k] * a1) * b0
            + (probabilities[r1, c0, k] * a0 + probabilities[r1, c1, k] * a1) * b1)


@numba.njit(cache=True)
def _blend_mixed(probabilities, best, cell_y, cell_x, below, right, row_start, row_end, col_start, col_end,
                 wy0, wy1, wx0, wx1, labels, confidence):  # pragma: no cover - compiled
    """Label and confidence of every output pixel of the mixed cells: the best of the cell's candidate classes, or of
    all classes where another class could win."""
    classes = probabilities.shape[2]
    for n in range(cell_y.shape[0]):
        r0, c0 = cell_y[n], cell_x[n]
        r1, c1 = below[r0], right[c0]
        candidates = np.empty(4, np.int64)
        candidates[0], candidates[1] = best[r0, c0], best[r0, c1]
        candidates[2], candidates[3] = best[r1, c0], best[r1, c1]
        candidates.sort()  # equal blends go to the lower class id, as argmax does
        bound = np.float32(-1.0)  # the largest source value of any class that is not a candidate
        for k in range(classes):
            if k != candidates[0] and k != candidates[1] and k != candidates[2] and k != candidates[3]:
                bound = max(bound, probabilities[r0, c0, k], probabilities[r0, c1, k], probabilities[r1, c0, k],
                            probabilities[r1, c1, k])
        for oy in range(row_start[r0], row_end[r0]):
            b0, b1 = wy0[oy], wy1[oy]
            for ox in range(col_start[c0], col_end[c0]):
                a0, a1 = wx0[ox], wx1[ox]
                winner, top = candidates[0], np.float32(-1.0)
                for q in range(4):
                    v = _blend(probabilities, candidates[q], r0, c0, r1, c1, a0, a1, b0, b1)
                    if v > top:
                        winner, top = candidates[q], v
                if top <= bound:
                    for k in range(classes):
                        v = _blend(probabilities, k, r0, c0, r1, c1, a0, a1, b0, b1)
                        if v > top or (v == top and k < winner):
                            winner, top = k, v
                labels[oy, ox] = winner
                confidence[oy, ox] = top


def upsample_argmax(probabilities: np.ndarray, size: Tuple[int, int], dtype=np.uint8) -> Tuple[np.ndarray, np.ndarray]:
    """(h, w, K) class probabilities -> (labels (H, W) `dtype`, confidence (H, W) float32): the argmax and max of
    their bilinear upsampling (or shrinking) to `size`."""
    probabilities = np.ascontiguousarray(probabilities, dtype=np.float32)
    h, w, _ = probabilities.shape
    height, width = int(size[0]), int(size[1])
    below, right = np.minimum(np.arange(h) + 1, h - 1), np.minimum(np.arange(w) + 1, w - 1)
    best, peak, mixed = np.empty((h, w), np.int32), np.empty((h, w), np.float32), np.empty((h, w), np.bool_)
    _source_cells(probabilities, below, right, best, peak, mixed)
    if (h, w) == (height, width):
        return best.astype(dtype), peak
    confidence = cv2.resize(peak, (width, height), interpolation=cv2.INTER_LINEAR)
    labels = np.empty((height, width), dtype)
    y0, wy0, wy1 = bilinear_taps(height, h)
    x0, wx0, wx1 = bilinear_taps(width, w)
    row_start, row_end = _runs(y0, h)
    col_start, col_end = _runs(x0, w)
    _fill_cells(best, row_start, row_end, col_start, col_end, labels)
    cell_y, cell_x = np.nonzero(mixed)
    if cell_y.size:
        _blend_mixed(probabilities, best, cell_y, cell_x, below, right, row_start, row_end, col_start, col_end,
                     wy0, wy1, wx0, wx1, labels, confidence)
    return labels, confidence
