"""A transform tree without ROS, as tf2's BufferCore keeps one: static and time-stamped (dynamic) transforms between
named frames, each frame with one parent, looked up through the tree with interpolation at a stamp.

    tree = TransformTree()
    tree.add_message(tf_static_msg, static=True)      # tf2_msgs/TFMessage (rosbags, rclpy or anything alike)
    tree.add_message(tf_msg)                          # /tf: dynamic
    camera_from_lidar = tree.lookup("camera_front_optical", "lidar_top", stamp_ns)   # 4x4
    # time travel: the camera at its stamp <- the LiDAR at its own, through a frame fixed in the world
    moving = tree.lookup_full("camera_front_optical", camera_ns, "lidar_top", lidar_ns, ODOM_FRAME)

Conventions are tf2's: a TransformStamped with header.frame_id P and child_frame_id C maps points of C into P
(p_P = R p_C + t); `lookup(target, source, t)` returns the 4x4 that maps points of `source` into `target`; a leading
"/" in a frame id is ignored. A dynamic transform between two samples is interpolated (translation linear, rotation
slerp); a stamp outside its samples is an extrapolation error, as in tf2 (no tolerance). Stamp None means "the
newest time every dynamic transform on the chain knows". Every failure is a TransformError naming the frames.

`lookup_full` is tf2's lookupTransform with a fixed frame: target <- fixed at the target's time composed with
fixed <- source at the source's time. A sensor on a moving vehicle sees the world from where the vehicle was at its
own stamp; going through a frame that does not move with the vehicle (odometry's `odom`) carries its data to where
another sensor was at another stamp.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from .errors import MMSegError

NS_PER_S = 1_000_000_000
CACHE_NS = 10 * NS_PER_S  # tf2's default cache length: older dynamic samples are forgotten
# The fixed frame a vehicle's odometry publishes its motion in (odom -> base_link): the generator's bags record it,
# and the node's inputs.fixed_frame defaults to it.
ODOM_FRAME = "odom"


class TransformError(MMSegError):
    """A transform that cannot be looked up (unknown frame, no chain, extrapolation) or is malformed."""


def quaternion_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """3x3 rotation of a unit quaternion (x, y, z, w)."""
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_quaternion(rotation: np.ndarray) -> Tuple[float, float, float, float]:
    """(x, y, z, w) of a 3x3 rotation matrix (Shepperd's method: stable for every rotation)."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s)
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + m[i, i] - m[j, j] - m[k, k], 1e-300))
        q = [0.0] * 4
        q[i], q[j], q[k], q[3] = 0.25 * s, (m[j, i] + m[i, j]) / s, (m[k, i] + m[i, k]) / s, (m[k, j] - m[j, k]) / s
    return tuple(float(v) for v in q)


@dataclass(frozen=True)
class Transform:
    """One rigid transform: translation (3,) and unit quaternion (x, y, z, w)."""

    translation: Tuple[float, float, float]
    rotation: Tuple[float, float, float, float]

    def matrix(self) -> np.ndarray:
        out = np.eye(4)
        out[:3, :3] = quaternion_matrix(*self.rotation)
        out[:3, 3] = self.translation
        return out

    @classmethod
    def from_matrix(cls, matrix) -> "Transform":
        m = np.asarray(matrix, dtype=np.float64)
        return cls(tuple(float(v) for v in m[:3, 3]), matrix_quaternion(m[:3, :3]))


def interpolate(a: Transform, b: Transform, ratio: float) -> Transform:
    """Translation lerp, rotation slerp (shortest arc) at `ratio` in [0, 1]."""
    t = tuple(float(x + ratio * (y - x)) for x, y in zip(a.translation, b.translation))
    qa, qb = np.array(a.rotation), np.array(b.rotation)
    dot = float(qa @ qb)
    if dot < 0:  # q and -q are the same rotation: take the short way round
        qb, dot = -qb, -dot
    if dot > 0.9995:  # nearly equal: lerp is exact enough and avoids dividing by sin(~0)
        q = qa + ratio * (qb - qa)
    else:
        angle = math.acos(min(dot, 1.0))
        q = (math.sin((1 - ratio) * angle) * qa + math.sin(ratio * angle) * qb) / math.sin(angle)
    q = q / np.linalg.norm(q)
    return Transform(t, tuple(float(v) for v in q))


@dataclass
class _Edge:
    """The transform of a child frame into its parent: one static value or samples sorted by stamp."""

    parent: str
    static: Optional[Transform] = None
    stamps: List[int] = field(default_factory=list)
    samples: List[Transform] = field(default_factory=list)

    def at(self, stamp_ns: Optional[int], child: str) -> Transform:
        if self.static is not None:
            return self.static
        if stamp_ns is None:
            return self.samples[-1]
        first, last = self.stamps[0], self.stamps[-1]
        if stamp_ns < first or stamp_ns > last:
            direction = "past" if stamp_ns < first else "future"
            raise TransformError(
                f"lookup of {self.parent} <- {child} at {_seconds(stamp_ns)} would extrapolate into the {direction}: "
                f"known from {_seconds(first)} to {_seconds(last)} ({len(self.stamps)} samples)")
        i = bisect.bisect_left(self.stamps, stamp_ns)
        if self.stamps[i] == stamp_ns:
            return self.samples[i]
        before, after = self.stamps[i - 1], self.stamps[i]
        return interpolate(self.samples[i - 1], self.samples[i], (stamp_ns - before) / (after - before))


def _seconds(stamp_ns: int) -> str:
    return f"{stamp_ns / NS_PER_S:.3f} s"


def _frame(name, what: str) -> str:
    if not isinstance(name, str) or not name.strip("/"):
        raise TransformError(f"{what} must be a non-empty frame id, got {name!r}")
    return name.lstrip("/")


class TransformTree:
    """Static and dynamic transforms between frames; `lookup` through the tree. Not thread-safe: one writer."""

    def __init__(self, cache_ns: int = CACHE_NS):
        self.cache_ns = int(cache_ns)
        self._edges: Dict[str, _Edge] = {}  # child -> its edge to the parent

    @property
    def frames(self) -> Tuple[str, ...]:
        return tuple(sorted({*self._edges, *(e.parent for e in self._edges.values())}))

    def __bool__(self) -> bool:
        return bool(self._edges)

    def has_frame(self, name: str) -> bool:
        return isinstance(name, str) and name.lstrip("/") in self.frames

    # -- filling ----------------------------------------------------------------------------------------------------

    def set_transform(self, parent: str, child: str, transform: Transform, stamp_ns: int = 0,
                      static: bool = False) -> None:
        """Add one transform of `child` into `parent`. A frame has one parent: a new parent replaces the old edge."""
        parent, child = _frame(parent, "the parent frame"), _frame(child, "the child frame")
        if parent == child:
            raise TransformError(f"a transform from frame {child!r} to itself")
        values = (*transform.translation, *transform.rotation)
        if len(values) != 7 or not all(math.isfinite(v) for v in values):
            raise TransformError(f"transform {parent} <- {child} is not finite: {values}")
        norm = math.sqrt(sum(v * v for v in transform.rotation))
        if norm < 1e-6:
            raise TransformError(f"transform {parent} <- {child} has a zero quaternion")
        transform = Transform(tuple(transform.translation), tuple(v / norm for v in transform.rotation))
        edge = self._edges.get(child)
        if edge is None or edge.parent != parent or static != (edge.static is not None):
            edge = self._edges[child] = _Edge(parent)
        if static:
            edge.static = transform
            return
        i = bisect.bisect_left(edge.stamps, stamp_ns)
        if i < len(edge.stamps) and edge.stamps[i] == stamp_ns:
            edge.samples[i] = transform
        else:
            edge.stamps.insert(i, int(stamp_ns))
            edge.samples.insert(i, transform)
        horizon = edge.stamps[-1] - self.cache_ns
        old = bisect.bisect_left(edge.stamps, horizon)
        if old > 0:
            del edge.stamps[:old], edge.samples[:old]

    def add_message(self, msg, static: bool = False) -> int:
        """Every TransformStamped of a tf2_msgs/TFMessage (any object with its fields); returns how many."""
        transforms = getattr(msg, "transforms", None)
        if transforms is None:
            raise TransformError(f"not a TFMessage (no 'transforms' field): {type(msg).__name__}")
        for item in transforms:
            try:
                stamp = item.header.stamp
                t, q = item.transform.translation, item.transform.rotation
                value = Transform((float(t.x), float(t.y), float(t.z)),
                                  (float(q.x), float(q.y), float(q.z), float(q.w)))
                stamp_ns = int(stamp.sec) * NS_PER_S + int(stamp.nanosec)
                parent, child = item.header.frame_id, item.child_frame_id
            except (AttributeError, TypeError, ValueError) as exc:
                raise TransformError(f"malformed TransformStamped: {type(exc).__name__}: {exc}") from None
            self.set_transform(parent, child, value, stamp_ns, static)
        return len(transforms)

    # -- looking up -------------------------------------------------------------------------------------------------

    def lookup(self, target: str, source: str, stamp_ns: Optional[int] = None) -> np.ndarray:
        """4x4 mapping points of frame `source` into frame `target` at `stamp_ns` (None: newest common time)."""
        target, source = _frame(target, "the target frame"), _frame(source, "the source frame")
        if target == source:
            return np.eye(4)
        known = self.frames
        for name in (target, source):
            if name not in known:
                raise TransformError(f"frame {name!r} does not exist in the transform tree; frames: "
                                     f"{', '.join(known) or 'none'}")
        up_source, up_target = self._chain(source), self._chain(target)
        ancestors = {frame: i for i, (frame, _) in enumerate(up_target)}
        common = next((i for i, (frame, _) in enumerate(up_source) if frame in ancestors), None)
        if common is None:
            raise TransformError(
                f"frames {source!r} and {target!r} are not connected: {source!r} hangs under {up_source[-1][0]!r}, "
                f"{target!r} under {up_target[-1][0]!r} (a transform between the two trees is missing)")
        root = up_source[common][0]
        source_edges = [edge for _, edge in up_source[:common]]
        target_edges = [edge for _, edge in up_target[:ancestors[root]]]
        if stamp_ns is None:
            newest = [e.stamps[-1] for e in source_edges + target_edges if e.static is None]
            stamp_ns = min(newest) if newest else None
        root_from_source = self._compose(source_edges, up_source, stamp_ns)
        root_from_target = self._compose(target_edges, up_target, stamp_ns)
        return np.linalg.inv(root_from_target) @ root_from_source

    def lookup_full(self, target: str, target_ns: Optional[int], source: str, source_ns: Optional[int],
                    fixed: str) -> np.ndarray:
        """4x4 mapping points of `source` as it was at `source_ns` into `target` as it was at `target_ns`: target <-
        fixed at target_ns, composed with fixed <- source at source_ns (`fixed` is taken not to move between the two
        times). Each leg interpolates on its own and refuses to extrapolate, naming the leg."""
        fixed = _frame(fixed, "the fixed frame")
        legs = []
        for into, of, stamp in ((fixed, source, source_ns), (target, fixed, target_ns)):
            try:
                legs.append(self.lookup(into, of, stamp))
            except TransformError as exc:
                when = "newest" if stamp is None else _seconds(stamp)
                raise TransformError(f"{target} <- {source} through fixed frame {fixed}: leg {into} <- {of} at "
                                     f"{when}: {exc}") from None
        fixed_from_source, target_from_fixed = legs
        return target_from_fixed @ fixed_from_source

    def _chain(self, frame: str) -> List[Tuple[str, Optional[_Edge]]]:
        """[(frame, edge to its parent), (parent, ...), ..., (root, None)]."""
        chain, seen = [], set()
        while frame in self._edges:
            if frame in seen:
                raise TransformError(f"the transform tree has a loop through {frame!r}")
            seen.add(frame)
            edge = self._edges[frame]
            chain.append((frame, edge))
            frame = edge.parent
        chain.append((frame, None))
        return chain

    @staticmethod
    def _compose(edges: List[_Edge], chain, stamp_ns: Optional[int]) -> np.ndarray:
        out = np.eye(4)
        for (child, _), edge in zip(chain, edges):  # child first: root <- ... <- parent <- child
            out = edge.at(stamp_ns, child).matrix() @ out
        return out
