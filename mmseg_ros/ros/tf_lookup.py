"""The LiDAR extrinsic from TF in the node: tf2_ros' Buffer + TransformListener behind the pipeline's lookup
interface (`lookup(target, source, stamp_ns) -> 4x4`), where tf2_ros can be imported (a ROS install; there are no
tf2_ros wheels on PyPI). Without it the node has no TF: inputs.lidar_extrinsic must then be set, and an unset one
makes every cloud bad input with that reason (see Pipeline._extrinsic)."""
from __future__ import annotations

import importlib.util
from typing import Optional

import numpy as np

from ..transforms import Transform, TransformError


def tf_available() -> bool:
    return importlib.util.find_spec("tf2_ros") is not None


class Tf2Lookup:
    """Transforms of the node's /tf and /tf_static through tf2_ros (thread-safe: the worker looks up, the executor
    fills the buffer)."""

    def __init__(self, node):
        import tf2_ros

        self._tf2 = tf2_ros
        self.buffer = tf2_ros.Buffer()
        self.listener = tf2_ros.TransformListener(self.buffer, node)

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        from rclpy.time import Time

        tf2 = self._tf2
        try:
            stamped = self.buffer.lookup_transform(target, source, Time(nanoseconds=int(stamp_ns)))
        except (tf2.LookupException, tf2.ConnectivityException, tf2.ExtrapolationException) as exc:
            raise TransformError(f"{type(exc).__name__}: {exc}") from None
        t, q = stamped.transform.translation, stamped.transform.rotation
        return Transform((t.x, t.y, t.z), (q.x, q.y, q.z, q.w)).matrix()


def tf_lookup(node) -> Optional[Tf2Lookup]:
    """A tf2_ros-backed lookup for `node`, or None where tf2_ros is not importable."""
    return Tf2Lookup(node) if tf_available() else None
