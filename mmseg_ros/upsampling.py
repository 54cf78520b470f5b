"""The argmax and max of bilinearly upsampled class probabilities, without upsampling K maps.

Each output pixel blends the 2x2 source pixels of its cell (the bilinear taps of cv2.resize and of
F.interpolate(align_corners=False)). Where the four share their argmax class c, the blend keeps c the argmax (a convex
combination keeps the dominance) and its value is the blend of the max-probability map, so one upsampled map gives
label and confidence. Where they disagree (class boundaries: 4% of the cells of the shipped model's 128 px output)
only the (at most four) classes that win a source can win the blend, unless another class exceeds them somewhere
among the four sources: the candidates are blended per pixel, and so are the cell's few rivals (classes with a source
value above the least the best candidate can blend to). Labels equal those of the full upsampling except where two
classes tie to rounding; confidence agrees within float32 rounding.

The per-pixel work runs in numba kernels, on one core: on this 2-core machine a parallel kernel's threads wait for a
core another process (or the node's executor, or torch's and OpenCV's thread pools) holds, and ran 1.3-3x slower
than the serial one whenever the machine was not idle. Their machine code is cached beside this file after the
first call.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

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


@functools.lru_cache(maxsize=64)  # a node sees one or two sizes: building the plan cost ~0.2 ms a set
def axis_plan(n_out: int, n_in: int) -> Tuple[np.ndarray, ...]:
    """Along one axis: the bilinear taps (first source index, its weight, the next one's weight), the next source
    index of each source (clamped at the edge: the kernels' `below` / `right`) and [start, end) of the output
    indices whose first tap is each source index (the taps are monotonic, so a cell's output pixels are a run of
    rows times a run of columns; empty when shrinking skips the source). Read-only: every caller shares them."""
    first, weight_first, weight_next = bilinear_taps(n_out, n_in)
    following = np.minimum(np.arange(n_in) + 1, n_in - 1)
    counts = np.bincount(first, minlength=n_in)
    end = np.cumsum(counts)
    plan = first, weight_first, weight_next, following, end - counts, end
    for values in plan:
        values.flags.writeable = False
    return plan


@numba.njit(cache=True, nogil=True)
def _source_cells(probabilities, below, right, best, peak, mixed):  # pragma: no cover - compiled
    """Per source pixel its argmax (the first of equal maxima, as numpy's) and max; per cell (the pixel and its right,
    lower and lower-right neighbours, clamped at the edges) whether its four argmaxes differ. The class loop is the
    outer one and the compare a select, so the pass over each class map vectorises."""
    classes, h, w = probabilities.shape
    maps = probabilities.reshape(classes, h * w)
    winners, values = best.reshape(h * w), peak.reshape(h * w)
    for p in range(h * w):
        winners[p], values[p] = 0, maps[0, p]
    for k in range(1, classes):
        scores = maps[k]
        for p in range(h * w):
            value, top = scores[p], values[p]
            winners[p] = k if value > top else winners[p]
            values[p] = max(value, top)
    for i in range(h):
        for j in range(w):
            c = best[i, j]
            mixed[i, j] = best[i, right[j]] != c or best[below[i], j] != c or best[below[i], right[j]] != c


@numba.njit(cache=True, nogil=True)
def _fill_cells(best, row_start, row_end, col_start, col_end, labels):  # pragma: no cover - compiled
    """Every output pixel gets its cell's top-left argmax (right wherever the cell agrees; mixed cells are
    overwritten by `_blend_mixed`). The output rows of one source row are equal: the first is filled, the others
    copied from it (an element loop: numba's slice assignment was 5x slower)."""
    h, w = best.shape
    width = labels.shape[1]
    for cy in range(h):
        first = row_start[cy]
        if first == row_end[cy]:
            continue
        row = labels[first]
        for cx in range(w):
            value = best[cy, cx]
            for ox in range(col_start[cx], col_end[cx]):
                row[ox] = value
        for oy in range(first + 1, row_end[cy]):
            target = labels[oy]
            for x in range(width):
                target[x] = row[x]


@numba.njit(cache=True, inline="always")
def _blend(probabilities, k, r0, c0, r1, c1, a0, a1, b0, b1):  # pragma: no cover - compiled
    """Class k's bilinear blend of the cell's four sources, in cv2's order: along x, then along y."""
    return ((probabilities[k, r0, c0] * a0 + probabilities[k, r0, c1] * a1) * b0
            + (probabilities[k, r1, c0] * a0 + probabilities[k, r1, c1] * a1) * b1)


# A class outside a cell's candidates whose largest source value is below this fraction of the candidates' floor
# cannot win any pixel of the cell: its blend exceeds its largest source by a few float32 ulps at most (~4e-7), the
# winning candidate's blend undercuts its smallest source by as little.
RIVAL_MARGIN = np.float32(1.0 - 2e-6)


@numba.njit(cache=True, nogil=True)
def _blend_mixed(probabilities, best, cell_y, cell_x, below, right, row_start, row_end, col_start, col_end,
                 wy0, wy1, wx0, wx1, labels, confidence):  # pragma: no cover - compiled
    """Label and confidence of every output pixel of the mixed cells: the best of the cell's candidate classes and of
    its rivals. A cell's distinct candidates (ascending, so equal blends go to the lower class id, as argmax does)
    and their four source values are gathered once per cell, and so are its rivals: the other classes that could
    beat the best candidate somewhere in the cell (a source value above the candidates' floor, the largest of their
    smallest source values). Most cells have none; testing every class at every pixel where one might win instead
    took most of this kernel's time."""
    classes = probabilities.shape[0]
    candidates = np.empty(4, np.int64)
    sources = np.empty((4, 4), np.float32)  # per candidate: top-left, top-right, bottom-left, bottom-right
    rivals = np.empty(classes, np.int64)
    for n in range(cell_y.shape[0]):
        r0, c0 = cell_y[n], cell_x[n]
        r1, c1 = below[r0], right[c0]
        candidates[0], candidates[1] = best[r0, c0], best[r0, c1]
        candidates[2], candidates[3] = best[r1, c0], best[r1, c1]
        candidates.sort()
        distinct = 0
        floor = np.float32(-1.0)  # every pixel's best candidate blends to at least this (to rounding)
        for q in range(4):
            if q == 0 or candidates[q] != candidates[q - 1]:
                k = candidates[q]
                candidates[distinct] = k
                a, b = probabilities[k, r0, c0], probabilities[k, r0, c1]
                c, d = probabilities[k, r1, c0], probabilities[k, r1, c1]
                sources[distinct, 0], sources[distinct, 1], sources[distinct, 2], sources[distinct, 3] = a, b, c, d
                floor = max(floor, min(a, b, c, d))
                distinct += 1
        floor *= RIVAL_MARGIN
        count = 0
        for k in range(classes):
            other = True
            for q in range(distinct):
                other = other and k != candidates[q]
            if other and max(probabilities[k, r0, c0], probabilities[k, r0, c1], probabilities[k, r1, c0],
                             probabilities[k, r1, c1]) >= floor:
                rivals[count] = k
                count += 1
        for oy in range(row_start[r0], row_end[r0]):
            b0, b1 = wy0[oy], wy1[oy]
            label_row, confidence_row = labels[oy], confidence[oy]
            for ox in range(col_start[c0], col_end[c0]):
                a0, a1 = wx0[ox], wx1[ox]
                winner, top = candidates[0], np.float32(-1.0)
                for q in range(distinct):  # cv2's order: along x, then along y
                    v = ((sources[q, 0] * a0 + sources[q, 1] * a1) * b0
                         + (sources[q, 2] * a0 + sources[q, 3] * a1) * b1)
                    if v > top:
                        winner, top = candidates[q], v
                for i in range(count):
                    k = rivals[i]
                    v = _blend(probabilities, k, r0, c0, r1, c1, a0, a1, b0, b1)
                    if v > top or (v == top and k < winner):
                        winner, top = k, v
                label_row[ox] = winner
                confidence_row[ox] = top


def upsample_argmax(probabilities: np.ndarray, size: Tuple[int, int], dtype=np.uint8,
                    out: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(K, h, w) class probabilities (torch's layout) -> (labels (H, W) `dtype`, confidence (H, W) float32): the
    argmax and max of their bilinear upsampling (or shrinking) to `size`. `out`: (labels, confidence) arrays of
    that shape and dtype to write them into (message buffers), returned."""
    probabilities = np.ascontiguousarray(probabilities, dtype=np.float32)
    _, h, w = probabilities.shape
    height, width = int(size[0]), int(size[1])
    labels, confidence = out if out is not None else (np.empty((height, width), dtype),
                                                      np.empty((height, width), np.float32))
    if labels.shape != (height, width) or labels.dtype != dtype or confidence.shape != (height, width) \
            or confidence.dtype != np.float32:
        raise ValueError(f"upsample_argmax: out must be ({height}, {width}) {np.dtype(dtype).name} labels and "
                         f"float32 confidence, got {labels.shape} {labels.dtype} and {confidence.shape} "
                         f"{confidence.dtype}")
    _, wy0, wy1, below, row_start, row_end = axis_plan(height, h)
    _, wx0, wx1, right, col_start, col_end = axis_plan(width, w)
    best, peak, mixed = np.empty((h, w), np.int32), np.empty((h, w), np.float32), np.empty((h, w), np.bool_)
    _source_cells(probabilities, below, right, best, peak, mixed)
    if (h, w) == (height, width):
        labels[...], confidence[...] = best, peak
        return labels, confidence
    cv2.resize(peak, (width, height), dst=confidence, interpolation=cv2.INTER_LINEAR)
    _fill_cells(best, row_start, row_end, col_start, col_end, labels)
    cell_y, cell_x = np.nonzero(mixed)
    if cell_y.size:
        _blend_mixed(probabilities, best, cell_y, cell_x, below, right, row_start, row_end, col_start, col_end,
                     wy0, wy1, wx0, wx1, labels, confidence)
    return labels, confidence
