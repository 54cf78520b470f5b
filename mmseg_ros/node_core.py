"""The ROS-free working parts of segment_node: input checks, the worker's latest-wins hand-off, rates, latency
windows, per-input health and the colour overlay. node.py wires them to rclpy; everything here is plain Python and
numpy, so it is unit-tested without DDS.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, Generic, Iterable, Optional, Tuple, TypeVar

import numpy as np

from . import modalities, msgs, preprocess
from .bench.timing import percentile
from .errors import MessageError
from .node_config import CAMERA
from .sync import NS_PER_S

T = TypeVar("T")


# -- input checks -------------------------------------------------------------------------------------------------


def decode_input(modality: str, msg) -> np.ndarray:
    """An Image for `modality` -> array for the engine (zero-copy view where the layout allows).

    Rejects (MessageError) encodings the registry does not list for the modality (a mono16 image on the camera topic
    is decodable but means a wiring mistake), malformed images (truncated data, zero size, bad step) and metric
    images without a single valid return. Non-finite or non-positive metric pixels (NaN depth) are "no return" and
    are fine: the engine treats them as absent pixels."""
    spec = modalities.get(modality)
    encoding = getattr(msg, "encoding", None)
    if encoding not in spec.encodings:
        raise MessageError(f"{spec.name}: Image.encoding {encoding!r} is not accepted on {spec.topic}; "
                           f"accepted: {', '.join(spec.encodings)}")
    image = msgs.image_for_model(msg)
    if spec.value_range is not None and image.dtype.kind == "f" and not valid_returns(image):
        raise MessageError(f"{spec.name}: {image.shape[1]}x{image.shape[0]} {encoding} image holds no valid "
                           "return (every pixel NaN, inf or <= 0)")
    return image


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


def valid_returns(image: np.ndarray) -> bool:
    """Whether a metric float image has at least one finite positive pixel."""
    with np.errstate(invalid="ignore"):  # NaN compares False: no return
        return bool(np.any((image > 0) & np.isfinite(image)))


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


# -- worker hand-off ----------------------------------------------------------------------------------------------


class LatestSlot(Generic[T]):
    """A one-item mailbox: `put` replaces what is waiting (latest wins; the replaced item is counted as superseded),
    `take` waits for an item. Thread-safe."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item: Optional[T] = None
        self._closed = False
        self.put_count = 0
        self.taken = 0
        self.superseded = 0

    def put(self, item: T) -> Optional[T]:
        """Offer an item; returns the one it replaced (already counted) or None."""
        with self._cond:
            replaced, self._item = self._item, item
            self.put_count += 1
            if replaced is not None:
                self.superseded += 1
            self._cond.notify()
            return replaced

    def put_all(self, items: Iterable[T]) -> None:
        for item in items:
            self.put(item)

    def take(self, timeout: float) -> Optional[T]:
        """The waiting item (then the slot is empty), or None after `timeout` s or once closed."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            if item is not None:
                self.taken += 1
            return item

    def close(self) -> None:
        """Wake every waiter; later `take` calls return at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def waiting(self) -> int:
        with self._cond:
            return int(self._item is not None)


# -- statistics ---------------------------------------------------------------------------------------------------


class RateMeter:
    """Events per second over the last `window` events (None until two were seen or once `stale_s` passed)."""

    def __init__(self, window: int = 20, stale_s: float = 2.0):
        self._times: Deque[int] = deque(maxlen=window)
        self._stale_ns = int(stale_s * NS_PER_S)
        self._lock = threading.Lock()
        self.count = 0

    def tick(self, now_ns: int) -> None:
        with self._lock:
            self._times.append(now_ns)
            self.count += 1

    def rate(self, now_ns: int) -> Optional[float]:
        with self._lock:
            if len(self._times) < 2 or now_ns - self._times[-1] > self._stale_ns:
                return None
            span = self._times[-1] - self._times[0]
            return (len(self._times) - 1) * NS_PER_S / span if span > 0 else None


class LatencyWindow:
    """The last `size` samples (ms) and their p50 / p95."""

    def __init__(self, size: int = 200):
        self._samples: Deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, ms: float) -> None:
        with self._lock:
            self._samples.append(float(ms))

    def percentiles(self) -> Optional[Tuple[float, float]]:
        with self._lock:
            samples = list(self._samples)
        if not samples:
            return None
        return percentile(samples, 50), percentile(samples, 95)


@dataclass
class InputErrors:
    count: int = 0
    last_error: str = ""
    last_error_ns: Optional[int] = None


class InputHealth:
    """Bad-input bookkeeping per input: how many, the last reason and when. Thread-safe."""

    def __init__(self, names: Iterable[str]):
        self._lock = threading.Lock()
        self._errors: Dict[str, InputErrors] = {name: InputErrors() for name in names}

    def record(self, name: str, reason: str, now_ns: int) -> None:
        with self._lock:
            entry = self._errors.setdefault(name, InputErrors())
            entry.count += 1
            entry.last_error, entry.last_error_ns = reason, now_ns

    def get(self, name: str) -> InputErrors:
        with self._lock:
            entry = self._errors.get(name, InputErrors())
            return InputErrors(entry.count, entry.last_error, entry.last_error_ns)

    def recent(self, name: str, now_ns: int, hold_s: float) -> Optional[str]:
        """The last error of `name` if it happened within `hold_s`, else None."""
        entry = self.get(name)
        if entry.last_error_ns is None or now_ns - entry.last_error_ns > hold_s * NS_PER_S:
            return None
        return entry.last_error


# -- output -------------------------------------------------------------------------------------------------------


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
