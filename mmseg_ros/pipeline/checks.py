"""Input checks of the pipeline: decoding an input message for the model (encoding, validity), the usual size of
each input, sizes against the anchor, stamps that go backwards, and a LiDAR cloud projected into the camera. Plain
Python and numpy.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from .. import modalities, msgs
from ..errors import MessageError


# -- input checks -------------------------------------------------------------------------------------------------


def decode_input(modality: str, msg, max_pixels: Optional[int] = None) -> np.ndarray:
    """An Image or CompressedImage for `modality` -> array for the engine (zero-copy view of a raw Image where the
    layout allows; a compressed one is decoded, its declared size capped at `max_pixels` before decoding).

    Rejects (MessageError) encodings the registry does not list for the modality (a mono16 image on the camera topic
    is decodable but means a wiring mistake; for a CompressedImage, the encoding its format names), malformed images
    (truncated data, zero size, bad step, a broken JPEG/PNG) and metric images without a single valid return.
    Non-finite or non-positive metric pixels (NaN depth) are "no return" and are fine: the engine treats them as
    absent pixels."""
    spec = modalities.get(modality)
    if msgs.is_compressed(msg):
        encoding = msgs.parse_format(msg.format).encoding
        if encoding is not None:  # (a legacy bare "jpeg"/"png" is named after decoding)
            _accepted(spec, encoding, "CompressedImage encoding")
        encoding, image = msgs.compressed_to_numpy(msg, max_pixels=max_pixels)
        _accepted(spec, encoding, "CompressedImage encoding")
    else:
        encoding = getattr(msg, "encoding", None)
        _accepted(spec, encoding, "Image.encoding")
        image = msgs.image_for_model(msg)
    if spec.value_range is not None and image.dtype.kind == "f" and not valid_returns(image):
        raise MessageError(f"{spec.name}: {image.shape[1]}x{image.shape[0]} {encoding} image holds no valid "
                           "return (every pixel NaN, inf or <= 0)")
    return image


def _accepted(spec, encoding, kind: str) -> None:
    if encoding not in spec.encodings:
        raise MessageError(f"{spec.name}: {kind} {encoding!r} is not accepted on {spec.topic}; "
                           f"accepted: {', '.join(spec.encodings)}")


# A LiDAR image is the camera z-depth of each return (what the synthetic rig, `mmseg sensors` and the shipped models
# use, so it compares 1:1 with the depth camera), not the range along the beam.
LIDAR_IMAGE_VALUE = "depth"


def lidar_image(points: np.ndarray, camera: Optional["msgs.Camera"], extrinsic: np.ndarray, source: str) -> np.ndarray:
    """A decoded PointCloud2 -> the LiDAR image the model takes, projected into the newest camera. The node and
    the offline replay both call this, so a cloud becomes the same image in both. `source` names the CameraInfo
    topic for the error when none has arrived yet (clouds may come first)."""
    if camera is None:
        raise MessageError(f"lidar: no CameraInfo received on {source} yet; cannot project the points")
    return msgs.project_points(msgs.pointcloud_xyz(points), camera, extrinsic, value=LIDAR_IMAGE_VALUE)


def lidar_projection(points: np.ndarray, camera: Optional["msgs.Camera"], extrinsic: np.ndarray,
                     source: str, footprint_deg: float = 0.0) -> "msgs.Projection":
    """`lidar_image` keeping where each point landed (to paint the cloud with the outputs) and which points the
    camera sees behind returns `footprint_deg` wide: its `image()` is the same LiDAR image."""
    if camera is None:
        raise MessageError(f"lidar: no CameraInfo received on {source} yet; cannot project the points")
    return msgs.project_cloud(msgs.cloud_xyz(points), camera, extrinsic, value=LIDAR_IMAGE_VALUE,
                              footprint_deg=footprint_deg)


def valid_returns(image: np.ndarray) -> bool:
    """Whether a metric float image has at least one finite positive pixel. Every 32nd, then every 8th row (every 8th
    column) first: a sensor that works has returns there, and a sampled row costs its whole width in memory reads;
    the full check (two full-size temporaries, ~0.6 ms at 1024 px) is left for images that look empty."""
    with np.errstate(invalid="ignore"):  # NaN compares False: no return
        for view in (image[::32, ::8], image[::8, ::8], image):
            if np.any((view > 0) & np.isfinite(view)):
                return True
    return False


def size_of(image: np.ndarray) -> Tuple[int, int]:
    return int(image.shape[0]), int(image.shape[1])


class SizeGuard:
    """Rejects an image whose size differs from what its input usually delivers (a half-size frame, a
    mis-configured driver). A new size becomes the usual one after `confirm` consecutive images of it, so a real
    resolution change costs a few frames, not the input."""

    def __init__(self, confirm: int = 3):
        self.confirm = confirm
        self._usual: Dict[str, Tuple[int, int]] = {}
        self._candidate: Dict[str, Tuple[Tuple[int, int], int]] = {}

    def usual(self, name: str) -> Tuple[int, int]:
        """The size `name` usually delivers, (0, 0) before its first image."""
        return self._usual.get(name, (0, 0))

    def check(self, name: str, image: np.ndarray) -> Optional[str]:
        size = size_of(image)
        usual = self._usual.setdefault(name, size)
        if size == usual:
            self._candidate.pop(name, None)
            return None
        candidate, seen = self._candidate.get(name, (size, 0))
        seen = seen + 1 if candidate == size else 1
        if seen >= self.confirm:
            self._usual[name] = size
            self._candidate.pop(name, None)
            return None
        self._candidate[name] = (size, seen)
        return (f"{name}: size {size[1]}x{size[0]} differs from the {usual[1]}x{usual[0]} this input delivers "
                f"(accepted after {self.confirm} in a row)")


def size_mismatch(modality: str, image: np.ndarray, anchor: str, anchor_size: Tuple[int, int]) -> Optional[str]:
    """Why an input cannot join a set whose anchor image has `anchor_size`, or None."""
    height, width = size_of(image)
    if (height, width) == tuple(anchor_size):
        return None
    return (f"{modality}: size {width}x{height} differs from the anchor {anchor}'s {anchor_size[1]}x{anchor_size[0]} "
            "(inputs must be registered to the camera; see inputs.allow_size_mismatch)")


class StampOrder:
    """Remembers each input's newest stamp to report stamps that go backwards (the synchronizer copes with them:
    small steps are reordered or dropped as late, big ones reset it; the user still needs to hear about it)."""

    def __init__(self):
        self._last: Dict[str, int] = {}

    def check(self, name: str, stamp_ns: int) -> Optional[str]:
        last = self._last.get(name)
        self._last[name] = stamp_ns
        if last is not None and stamp_ns < last:
            return f"{name}: stamp went backwards by {(last - stamp_ns) / 1e6:.1f} ms ({last} ns -> {stamp_ns} ns)"
        return None


