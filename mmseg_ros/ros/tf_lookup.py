"""The LiDAR extrinsic from TF in the node: tf2_ros' Buffer + TransformListener behind the pipeline's transform
interface (that of mmseg_ros.transforms.TransformTree: `lookup`, `lookup_full`, `has_frame`), where tf2_ros can be
imported (a ROS install; there are no tf2_ros wheels on PyPI). Without it the node has no TF: inputs.lidar_extrinsic
must then be set, and an unset one makes every cloud bad input with that reason (see Pipeline._extrinsic)."""
from __future__ import annotations

import importlib.util
from typing import Optional

import numpy as np

from ..transforms import Transform, TransformError


def tf_available() -> bool:
    return importlib.util.find_spec("tf2_ros") is not None


class Tf2Lookup:
    """Transforms of a tf2_ros Buffer (thread-safe: the worker looks up, the executor fills the buffer). `errors`
    are the exceptions a failed lookup raises (tf2's lookup, connectivity and extrapolation errors); `listener`, the
    TransformListener feeding the buffer, is kept alive with it."""

    def __init__(self, buffer, errors: tuple, listener=None):
        self.buffer, self._errors, self.listener = buffer, errors, listener
        self._seen_frames: set = set()  # frames found once: the pipeline asks for the fixed frame every cloud

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        return self._matrix(self.buffer.lookup_transform, target, source, _time(stamp_ns))

    def lookup_full(self, target: str, target_ns: int, source: str, source_ns: int, fixed: str) -> np.ndarray:
        """tf2's time travel: target at target_ns <- fixed <- source at source_ns."""
        return self._matrix(self.buffer.lookup_transform_full, target, _time(target_ns), source, _time(source_ns),
                            fixed)

    def has_frame(self, name: str) -> bool:
        import yaml

        name = name.lstrip("/")
        if name in self._seen_frames:
            return True
        # The buffer's frames as YAML: each child frame with its parent (a root frame appears only as a parent).
        frames = yaml.safe_load(self.buffer.all_frames_as_yaml()) or {}
        known = set(frames) | {str(entry.get("parent", "")) for entry in frames.values() if isinstance(entry, dict)}
        self._seen_frames |= known
        return name in known

    def _matrix(self, lookup, *args) -> np.ndarray:
        try:
            stamped = lookup(*args)
        except self._errors as exc:
            raise TransformError(f"{type(exc).__name__}: {exc}") from None
        t, q = stamped.transform.translation, stamped.transform.rotation
        return Transform((t.x, t.y, t.z), (q.x, q.y, q.z, q.w)).matrix()


def _time(stamp_ns: int):
    from rclpy.time import Time

    return Time(nanoseconds=int(stamp_ns))


def tf_lookup(node) -> Optional[Tf2Lookup]:
    """A lookup over the node's /tf and /tf_static through tf2_ros, or None where tf2_ros is not importable."""
    if not tf_available():
        return None
    import tf2_ros

    buffer = tf2_ros.Buffer()
    errors = (tf2_ros.LookupException, tf2_ros.ConnectivityException, tf2_ros.ExtrapolationException)
    return Tf2Lookup(buffer, errors, tf2_ros.TransformListener(buffer, node))
