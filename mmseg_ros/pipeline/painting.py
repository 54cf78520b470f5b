"""Segmented LiDAR points: the cloud that went into a set, each point carrying the label and confidence of the output
pixel it was projected to (the same projection, z-buffer included, that built the model's LiDAR image).

The painted cloud keeps the input's fields, point order and count (when unlabeled points are kept), so a consumer
can index it against the input cloud; `label` (uint8, uint16 above 255 classes) and `confidence` (float32) are
appended after the input's point_step, `confidence` 4-byte aligned. Unlabeled points (behind the camera, outside the
image, NaN, hidden behind a nearer point at the same pixel, or, with a footprint, hidden behind a nearer return
near it: `msgs.project_cloud`'s occlusion test) get the label encoding's unlabeled value and
confidence 0.
"""
from __future__ import annotations

import numpy as np

from .. import msgs
from ..errors import MessageError

LABEL_FIELD, CONFIDENCE_FIELD = "label", "confidence"


def painted_dtype(points_dtype: np.dtype, num_classes: int) -> np.dtype:
    """The input record plus `label` and `confidence` after it."""
    clash = [name for name in (LABEL_FIELD, CONFIDENCE_FIELD) if name in (points_dtype.names or ())]
    if clash:
        raise MessageError(f"lidar: the cloud already has field(s) {clash}; painting would hide them")
    step = points_dtype.itemsize
    label = np.dtype(np.uint8 if msgs.label_encoding(num_classes)[1] == 255 else np.uint16)
    fields = {name: points_dtype.fields[name][:2] for name in points_dtype.names}
    confidence_at = (step + label.itemsize + 3) // 4 * 4
    return np.dtype({
        "names": [*fields, LABEL_FIELD, CONFIDENCE_FIELD],
        "formats": [f[0] for f in fields.values()] + [label, np.dtype("<f4")],
        "offsets": [f[1] for f in fields.values()] + [step, confidence_at],
        "itemsize": confidence_at + 4,
    })


def paint(points: np.ndarray, projection: "msgs.Projection", labels: np.ndarray, confidence: np.ndarray,
          num_classes: int, keep_unlabeled: bool = True) -> np.ndarray:
    """`points` (the decoded cloud) painted with the output images `labels` / `confidence`. The outputs may be at
    another resolution than the projection's camera (model-resolution outputs): pixels are scaled to them."""
    if len(points) != len(projection.rows):
        raise MessageError(f"lidar: {len(points)} points but a projection of {len(projection.rows)}")
    dtype = painted_dtype(points.dtype, num_classes)
    unlabeled = msgs.label_encoding(num_classes)[1]
    out = np.zeros(len(points), dtype=dtype)
    step = points.dtype.itemsize
    # The input records are copied as bytes (one memcpy), whatever their fields.
    out.view(np.uint8).reshape(len(points), dtype.itemsize)[:, :step] = \
        np.ascontiguousarray(points).view(np.uint8).reshape(len(points), step)
    visible = projection.seen
    rows, cols = projection.rows[visible], projection.cols[visible]
    height, width = labels.shape[:2]
    if (height, width) != (projection.height, projection.width):
        rows = rows * height // projection.height
        cols = cols * width // projection.width
    label = np.full(len(points), unlabeled, dtype=dtype[LABEL_FIELD])
    label[visible] = labels[rows, cols]
    score = np.zeros(len(points), dtype=np.float32)
    score[visible] = confidence[rows, cols]
    out[LABEL_FIELD] = label
    out[CONFIDENCE_FIELD] = score
    if keep_unlabeled:
        return out
    return out[np.sort(visible)]
