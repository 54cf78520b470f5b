"""What becomes of a segmented set: the colour overlay, the router weights as diagnostics values, and the output
images (labels, confidence, colour) built with the message codecs."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from .. import msgs, preprocess
from .config import CAMERA
from .checks import size_of


def overlay(color: np.ndarray, camera: Optional[np.ndarray], alpha: float) -> np.ndarray:
    """Palette image blended with the camera image (weight `alpha`); the palette alone without a usable camera
    image (absent, or another size)."""
    if camera is None or alpha <= 0.0 or size_of(camera) != size_of(color):
        return color
    camera_rgb = preprocess.to_unit(CAMERA, camera)  # mono or 16-bit cameras become RGB too
    blended = (1.0 - alpha) * color.astype(np.float32) + (alpha * 255.0) * camera_rgb
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def router_summary(weights: Optional[Dict[str, Dict[str, float]]]) -> Dict[str, Any]:
    """{'router.<level>.<modality>': weight} for diagnostics."""
    if not weights:
        return {}
    return {f"router.{level}.{name}": round(w, 4) for level, per in weights.items() for name, w in per.items()}


def to_messages(output, config, *, ros: Optional[bool] = None) -> Dict[str, Any]:
    """A SegmentedSet's output messages, stamped with its header: 'labels' always, 'confidence' when
    outputs.confidence is on, 'color' when the overlay was built, 'points' (PointCloud2) when its cloud was painted.
    `ros` as in the codecs (real sensor_msgs when importable by default; False for plain messages, e.g. a bag
    writer)."""
    out = {"labels": msgs.labels_to_image(output.labels, config.card.num_classes, output.header, ros=ros)}
    if config.publish_confidence:
        out["confidence"] = msgs.confidence_to_image(output.confidence, output.header, ros=ros)
    if output.color is not None:
        out["color"] = msgs.color_to_image(output.color, output.header, ros=ros)
    if output.points is not None:  # in the cloud's own frame and stamp: its points are unmoved
        out["points"] = msgs.numpy_to_pointcloud(output.points, output.points_header, ros=ros)
    return out
