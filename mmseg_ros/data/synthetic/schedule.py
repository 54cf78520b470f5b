"""The schedule of a synthetic drive published live (`mmseg sensors`): the command-line rules for bad messages,
the messages of one pass over the pre-rendered frames with their stamp and publish times, and their bad variants.
No rclpy here: the messages are built with the codecs, so the schedule is unit-tested without DDS."""
from __future__ import annotations

import dataclasses
import re
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from ... import drops
from ...errors import ConfigError
from .bag import ENCODINGS  # the wire encodings: one table for bags and live topics

BAD_ENCODING = "mmseg_unknown"
BAD_KINDS = ("encoding", "truncated", "size", "nan", "stamp")
METRIC = ("depth", "lidar")  # float metres; `nan` applies to these
STAMP_BACKWARDS_NS = 1_000_000_000


# ---------------------------------------------------------------------------------------------------------------------
# Command-line rules (pure; unit-tested without ROS).


def sensors() -> tuple:
    """The synthetic rig's sensors (the names `--drop` and `--bad` accept)."""
    from . import bag

    return tuple(bag.LATENCY_S)


def parse_drop(text: str) -> drops.Drop:
    return drops.parse_drop(text, sensors())


@dataclasses.dataclass(frozen=True)
class BadMessage:
    """Replace the first image of `sensor` with stamp time >= `at` by a bad message of `kind`."""

    sensor: str
    kind: str
    at: float

    def __str__(self):
        return f"{self.sensor}:{self.kind}@{self.at:g}"


_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_BAD = re.compile(rf"([A-Za-z_]+):([a-z]+)@{_NUMBER}")


def parse_bad(text: str) -> BadMessage:
    match = _BAD.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"--bad {text!r}: expected SENSOR:KIND@SECONDS, e.g. depth:nan@3; "
                          f"kinds: {', '.join(BAD_KINDS)}")
    sensor = drops.sensor_name(match.group(1), sensors(), f"--bad {text!r}", allow_all=False)
    kind = match.group(2)
    if kind not in BAD_KINDS:
        raise ConfigError(f"--bad {text!r}: unknown kind {kind!r}; kinds: {', '.join(BAD_KINDS)}")
    if kind == "nan" and sensor not in METRIC:
        raise ConfigError(f"--bad {text!r}: kind 'nan' needs a float image sensor ({', '.join(METRIC)}), "
                          f"not {sensor!r}")
    return BadMessage(sensor, kind, float(match.group(3)))


# ---------------------------------------------------------------------------------------------------------------------
# The schedule of one pass over the pre-rendered frames.


@dataclasses.dataclass
class Slot:
    """One message of the loop: when it is stamped and published, on which topic, and the prebuilt message."""

    stamp_s: float  # stamp time within one pass (seconds after the pass starts)
    publish_s: float  # stamp time + the sensor's transport latency
    sensor: str  # drop group (rgb, depth, event, lidar) or "" for ground truth, which is never dropped
    key: str  # topic key of the bag writer's TOPICS table
    message: object
    source: Optional[np.ndarray] = None  # the image array, for building a bad variant


def topics() -> Dict[str, str]:
    """Topic key -> relative topic name (the bag writer's absolute names without the leading slash)."""
    from . import bag

    return {key: name.lstrip("/") for key, (name, _) in bag.TOPICS.items()}


def build_schedule(frames: Sequence[dict], rate_scale: float, points: bool, gt: bool, ros: bool | None = None):
    """(slots sorted by publish time, loop period s, the LiDAR->camera extrinsic) for frames rendered with
    `render_frame(i, all_events=True)`; indices must be consecutive so the loop keeps the sensors' cadence."""
    from ... import msgs
    from . import bag
    from .encode import metres

    if not frames:
        raise ConfigError("at least one frame is needed")
    stamps = [f["meta"]["stamps"] for f in frames]
    base_ns = min(min(s["event"] + [s["rgb"], s["depth"], s["lidar"]]) for s in stamps)
    camera_period = frames[1]["meta"]["time"] - frames[0]["meta"]["time"] if len(frames) > 1 else None
    slots: List[Slot] = []

    def add(sensor: str, key: str, stamp_ns: int, message, source=None, latency_of: str | None = None):
        stamp_s = (stamp_ns - base_ns) / 1e9 / rate_scale
        latency = bag.LATENCY_S[latency_of or sensor]
        slots.append(Slot(stamp_s, stamp_s + latency, sensor, key, message, source))

    def image(array, key, frame_id):
        array = np.ascontiguousarray(array)
        return msgs.numpy_to_image(array, ENCODINGS[key], msgs.Header(frame_id=frame_id), ros=ros), array

    for frame in frames:
        meta, stamp = frame["meta"], frame["meta"]["stamps"]
        ids = meta["frame_ids"]
        add("rgb", "rgb", stamp["rgb"], *image(frame["rgb"], "rgb", ids["rgb"]))
        if points:
            h, w = frame["rgb"].shape[:2]
            info = msgs.numpy_to_camera_info(meta["intrinsics"], w, h, header=msgs.Header(frame_id=ids["rgb"]), ros=ros)
            add("rgb", "camera_info", stamp["rgb"], info)
        if gt:
            add("", "labels", stamp["labels"], *image(frame["labels"], "labels", ids["rgb"]), latency_of="rgb")
        add("depth", "depth", stamp["depth"], *image(metres(frame["depth"]), "depth", ids["depth"]))
        add("lidar", "lidar", stamp["lidar"], *image(metres(frame["lidar"]), "lidar", ids["lidar"]))
        if points:
            cloud = bag.cloud_records(frame["lidar_points"], frame.get("lidar_point_labels"))
            add("lidar", "points", stamp["lidar"],
                msgs.numpy_to_pointcloud(cloud, msgs.Header(frame_id=ids["lidar_points"]), ros=ros))
        events = frame.get("events") or [(meta["time"], frame["event"])]
        for event_stamp, (_, event) in zip(stamp["event"][-len(events):], events):
            add("event", "event", event_stamp, *image(event, "event", ids["event"]))
    slots.sort(key=lambda s: s.publish_s)
    if camera_period is None:
        camera_period = 1.0 / _camera_hz()
    period = camera_period * len(frames) / rate_scale
    return slots, period, np.asarray(frames[0]["meta"]["camera_from_lidar"])


def _camera_hz() -> float:
    from . import config

    return float(config.load().rig.rates.camera_hz)


def bad_variant(slot: Slot, kind: str, previous_stamp_ns: Optional[int], stamp_ns: int, ros: bool | None = None):
    """(bad message, its header stamp in ns) replacing `slot`'s image (see BAD_KINDS in the module doc)."""
    from ... import msgs

    encoding = slot.message.encoding
    header = msgs.Header(frame_id=slot.message.header.frame_id)
    source = slot.source
    if kind == "size":
        source = np.ascontiguousarray(source[::2, ::2])
    elif kind == "nan":
        source = np.full(source.shape, np.nan, np.float32)
    message = msgs.numpy_to_image(source, encoding, header, ros=ros)
    if kind == "encoding":
        message.encoding = BAD_ENCODING
    elif kind == "truncated":
        message.data = message.data[: len(message.data) // 2]
    elif kind == "stamp":
        stamp_ns = (stamp_ns if previous_stamp_ns is None else previous_stamp_ns) - STAMP_BACKWARDS_NS
    return message, stamp_ns


def render(size: int, seed: int, condition: str, failure: str | None, count: int, log, stop=None) -> List[dict]:
    from .generator import SceneGenerator

    generator = SceneGenerator(seed, size, condition, failure)
    started = time.monotonic()
    frames = []
    for i in range(count):
        if stop is not None and stop.is_set():
            break
        frames.append(generator.render_frame(i, all_events=True))
        log(f"rendered frame {i + 1}/{count} ({time.monotonic() - started:.1f} s)", progress=True)
    return frames


