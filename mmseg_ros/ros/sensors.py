"""`mmseg sensors`: publish a synthetic drive live over DDS on the node's input topics, at the sensors' own rates.

For demos, for the node's end-to-end tests, and for users checking their wiring. The drive comes from the scene
generator (mmseg_ros.data.synthetic); its rig settings give the rates, the LiDAR's offset after the camera and the
stamp jitter, and the rosbag2 writer's table gives the topics and each sensor's transport latency, so a live run and
a recorded bag carry the same messages. `--frames N` frames are rendered before publishing starts and then looped,
so the publish loop only stamps and publishes pre-built messages.

Topics (relative, so `--ros-args -r __ns:=/car` and remaps apply) and encodings:

    rgb/image          sensor_msgs/Image rgb8            camera rate (10 Hz)
    depth/image        sensor_msgs/Image 32FC1 metres    with the camera; 0 = no value
    event/image        sensor_msgs/Image rgb8            event rate (20 Hz); ch 0 positive, ch 1 negative counts
    lidar/image        sensor_msgs/Image 32FC1 metres    LiDAR rate (10 Hz, 25 ms after the camera); 0 = no return
    lidar/points       sensor_msgs/PointCloud2           --points: x, y, z, intensity float32, gt_label uint8
    rgb/camera_info    sensor_msgs/CameraInfo            --points: with every rgb image
    gt/labels          sensor_msgs/Image mono8           --gt: DELIVER train ids, 255 = ignore

Timing: every message has a scheduled time in seconds since the start of publishing (its "stamp time", the
generator's nominal time + jitter, divided by --rate-scale); it is published at stamp time + the sensor's latency,
on a monotonic schedule (no drift), and its header stamp is the node clock at start (`t0`, printed) + stamp time.
A message more than LATE_SKIP_S behind schedule (a stalled machine) is skipped and counted rather than sent in a
burst. `--clock` publishes /clock (simulated time, CLOCK_HZ) and stamps in it: simulated time runs --rate-scale
times as fast as the wall clock, so a slow model under use_sim_time sees nominal sensor rates; stamp = t0 + stamp
time x rate-scale. Drop and bad times are always seconds of the schedule (wall clock since the start).

Drop windows `--drop SENSOR@A-B` (repeatable; `B` may be left out for "until the end"; SENSOR is rgb, depth, event,
lidar or `all`): messages whose stamp time lies in [A, B) are not published. Dropping rgb also drops its
camera_info, dropping lidar also drops lidar/points; gt/labels is never dropped.

Bad messages `--bad SENSOR:KIND@T` (repeatable): the first image of SENSOR whose stamp time is >= T (and that is not
dropped) is replaced by one bad message; the rest of the stream is unchanged. Kinds (BAD_KINDS):

    encoding   the same pixels, encoding set to BAD_ENCODING (no codec knows it)
    truncated  `data` cut to half its bytes; height, width, step unchanged
    size       a valid image of half the height and width (every other pixel)
    nan        depth/lidar only: every pixel NaN (32FC1)
    stamp      the same image, header stamp 1 s before the previous stamp published on that topic

Each injection prints a line `bad SENSOR:KIND t=... stamp=SEC.NSEC`. Exit code 0 after `--duration` seconds or on
SIGINT/SIGTERM.
"""
from __future__ import annotations

import math
import signal
import sys
import threading
import time
from typing import Dict, List, Optional

import numpy as np

from ..data.synthetic.schedule import (BAD_ENCODING, BAD_KINDS, ENCODINGS, BadMessage, Slot, bad_variant,
                                       build_schedule, parse_bad, parse_drop, render, topics)
from ..errors import ConfigError
from .spin import try_shutdown

QOS_CHOICES = ("sensor_data", "reliable")
QUEUE_DEPTH = 5
STATUS_PERIOD_S = 1.0
LATE_SKIP_S = 0.5  # a message this far behind schedule (the machine stalled) is skipped, as a real sensor would
CLOCK_HZ = 100.0
SETTLE_S = 0.3


# ---------------------------------------------------------------------------------------------------------------------
# The command.


def configure(parser):
    from ..data.synthetic import config

    parser.add_argument("--size", type=int, default=256, help="image height and width in px (default 256)")
    parser.add_argument("--rate-scale", type=float, default=1.0,
                        help="multiply every sensor rate (0.5 = half speed; stamps follow the wall clock unless "
                             "--clock)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    parser.add_argument("--condition", default="sun", choices=config.CONDITIONS)
    parser.add_argument("--failure", default=None, choices=config.FAILURES, help="a sensor failure case")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="stop after this many seconds of publishing (default 0 = until SIGINT/SIGTERM)")
    parser.add_argument("--frames", type=int, default=10,
                        help="frames rendered before publishing and then looped (default 10 = 1 s of drive)")
    parser.add_argument("--drop", action="append", default=[], metavar="SENSOR@A-B",
                        help="publish nothing from SENSOR (rgb|depth|event|lidar|all) for stamp times in [A, B) s; "
                             "B may be left out; repeatable")
    parser.add_argument("--bad", action="append", default=[], metavar="SENSOR:KIND@T",
                        help=f"replace SENSOR's first image at/after T s by a bad one; KIND: {', '.join(BAD_KINDS)}; "
                             "repeatable")
    parser.add_argument("--points", action="store_true", help="also publish lidar/points and rgb/camera_info")
    parser.add_argument("--gt", action="store_true", help="also publish the ground-truth gt/labels")
    parser.add_argument("--qos", default="sensor_data", choices=QOS_CHOICES,
                        help="sensor_data (best effort, default) or reliable; history depth %d" % QUEUE_DEPTH)
    parser.add_argument("--clock", action="store_true",
                        help="publish /clock (simulated time) and stamp in it: with --rate-scale below 1 the sensors "
                             "keep their nominal rates in simulated time, for nodes run with use_sim_time")
    parser.add_argument("--wait-subscribers", type=float, default=0.0, metavar="S",
                        help="before publishing, wait up to S seconds until every topic has a subscriber "
                             "(default 0 = start at once)")
    parser.add_argument("--quiet", action="store_true", help="no progress or status lines (errors still printed)")
    parser.add_argument("--node-name", default="mmseg_sensors")
    parser.set_defaults(_accepts_extra=True)  # --ros-args ... (namespace, remaps)
    parser.epilog = (
        "Bad kinds: encoding = same pixels, encoding '%s'; truncated = data cut to half; size = half height and "
        "width; nan = every pixel NaN (depth, lidar); stamp = stamp 1 s before the previous one on that topic. "
        "Times are seconds since publishing started; the stamp of time 0 is printed as t0=SEC.NSEC and each "
        "injection as 'bad SENSOR:KIND@T t=... stamp=SEC.NSEC'. ROS arguments (namespace, remaps) go after "
        "--ros-args." % BAD_ENCODING)


def _check(args) -> None:
    if args.frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {args.frames}")
    if not (args.rate_scale > 0 and math.isfinite(args.rate_scale)):
        raise ConfigError(f"--rate-scale must be a positive number, got {args.rate_scale}")
    if args.duration < 0:
        raise ConfigError(f"--duration must be >= 0, got {args.duration}")
    if args.wait_subscribers < 0:
        raise ConfigError(f"--wait-subscribers must be >= 0, got {args.wait_subscribers}")
    extra = list(getattr(args, "extra", []) or [])
    if extra and extra[0] != "--ros-args":
        raise ConfigError(f"unrecognized arguments: {' '.join(extra)} (ROS arguments go after --ros-args)")


class _Log:
    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __call__(self, text: str, progress: bool = False):
        if not self.quiet:
            print(f"mmseg sensors: {text}", flush=True)


def main(args) -> int:
    _check(args)
    drops = [parse_drop(d) for d in args.drop]
    bads = sorted((parse_bad(b) for b in args.bad), key=lambda b: b.at)
    log = _Log(args.quiet)

    from . import dds

    transport = dds.configure_transport()  # before rclpy.init: Fast DDS reads its profile at participant creation
    import rclpy
    from rclpy.serialization import serialize_message
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    # rclpy's own handlers would raise inside the publish loop; ours only ask the loop to end.
    rclpy.init(args=["mmseg_sensors", *(args.extra or [])], signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = rclpy.create_node(args.node_name)
        # Publishers first: discovery with the subscribers runs while the frames render.
        publishers = create_publishers(node, used_keys(args.points, args.gt), args.qos)
        log(f"{transport}")
        log("topics: " + ", ".join(f"{p.topic_name} ({ENCODINGS.get(k) or p.msg_type.__name__})"
                                   for k, p in publishers.items()))
        frames = render(args.size, args.seed, args.condition, args.failure, args.frames, log, stop)
        if stop.is_set():
            return 0
        slots, period, extrinsic = build_schedule(frames, args.rate_scale, args.points, args.gt, ros=True)
        del frames
        for key in publishers:  # the first serialisation of a type is slow (~40 ms): not inside the schedule
            serialize_message(next(s.message for s in slots if s.key == key))
        if args.wait_subscribers and not _wait_for_subscribers(publishers, args.wait_subscribers, stop, log):
            return 0
        if args.points:
            log("lidar -> camera extrinsic (row-major, node parameter inputs.lidar_extrinsic): "
                + str([round(float(v), 6) for v in extrinsic.ravel()]))
        return _Player(node, publishers, slots, period, drops, bads, args, stop, log).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if node is not None:
            node.destroy_node()
        try_shutdown()


def _wait_for_subscribers(publishers: dict, timeout: float, stop, log) -> bool:
    """Wait until every publisher has matched a subscriber (or `timeout` s); False if stopped meanwhile."""
    deadline = time.monotonic() + timeout
    missing = list(publishers)
    while missing and time.monotonic() < deadline and not stop.is_set():
        missing = [k for k, p in publishers.items() if p.get_subscription_count() < 1]
        stop.wait(0.05)
    if missing:
        log(f"no subscriber after {timeout:g} s on: {', '.join(publishers[k].topic_name for k in missing)}")
    # The subscriber side finishes matching this writer a moment after the writer sees it.
    return not stop.wait(SETTLE_S)


def used_keys(points: bool, gt: bool) -> tuple:
    """Topic keys (of the bag writer's TOPICS) published for these options."""
    keys = ["rgb", "depth", "event", "lidar"]
    keys += ["camera_info", "points"] if points else []
    keys += ["labels"] if gt else []
    return tuple(keys)


def create_publishers(node, keys, qos_name: str) -> dict:
    import importlib

    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    from ..data.synthetic import bag

    if qos_name not in QOS_CHOICES:
        raise ConfigError(f"qos must be one of {QOS_CHOICES}, got {qos_name!r}")
    if qos_name == "reliable":
        qos = QoSProfile(depth=QUEUE_DEPTH, reliability=ReliabilityPolicy.RELIABLE)
    else:
        qos = qos_profile_sensor_data
    names = topics()
    publishers = {}
    for key in keys:
        package, _, type_name = bag.TOPICS[key][1].split("/")  # e.g. sensor_msgs/msg/Image
        msg_type = getattr(importlib.import_module(f"{package}.msg"), type_name)
        publishers[key] = node.create_publisher(msg_type, names[key], qos)
    return publishers


class _Player:
    """Publishes the slots on their monotonic schedule, loop after loop, applying drop windows and bad messages."""

    def __init__(self, node, publishers, slots, period, drops, bads, args, stop, log):
        self.node, self.publishers, self.slots, self.period = node, publishers, slots, period
        self.drops, self.pending, self.args, self.stop, self.log = drops, list(bads), args, stop, log
        self.sent = {key: 0 for key in publishers}
        self.dropped = dict.fromkeys(publishers, 0)
        self.skipped = dict.fromkeys(publishers, 0)  # more than LATE_SKIP_S behind schedule: left out, not bursted
        self.last_stamp: Dict[str, int] = {}
        self.late_ms: List[float] = []
        # With --clock, stamps and /clock run in simulated time: nominal sensor rates whatever --rate-scale is.
        self.time_scale = args.rate_scale if args.clock else 1.0
        self.clock_publisher = None
        if args.clock:
            from rosgraph_msgs.msg import Clock

            self.clock_publisher = node.create_publisher(Clock, "/clock", 10)
        self.origin_ns = node.get_clock().now().nanoseconds
        self.start = time.monotonic()

    def stamp_ns(self, t: float) -> int:
        return self.origin_ns + int(round(t * self.time_scale * 1e9))

    def run(self) -> int:
        args = self.args
        self.log(f"publishing; t0={_seconds(self.origin_ns)} (stamp of schedule time 0); loop of {self.period:.2f} s"
                 + (f"; drops {', '.join(map(str, self.drops))}" if self.drops else "")
                 + (f"; bad {', '.join(map(str, self.pending))}" if self.pending else "")
                 + ("; /clock at %g Hz, %g x real time" % (CLOCK_HZ, self.time_scale) if args.clock else ""))
        clock = threading.Thread(target=self._clock, daemon=True) if args.clock else None
        if clock is not None:
            clock.start()
        try:
            self._loop()
        finally:
            self.stop.set()
            if clock is not None:
                clock.join()
        self.log(f"stopped after {time.monotonic() - self.start:.1f} s; sent {_counts(self.sent)}"
                 + (f"; dropped {_counts(self.dropped)}" if any(self.dropped.values()) else "")
                 + (f"; skipped late {_counts(self.skipped)}" if any(self.skipped.values()) else ""))
        return 0

    def _loop(self) -> None:
        next_status, before = STATUS_PERIOD_S, dict(self.sent)
        loop = 0
        while True:
            for slot in self.slots:
                due = loop * self.period + slot.publish_s
                if self.args.duration and due >= self.args.duration:
                    return
                while due >= next_status:  # status lines fall between messages, on their own schedule
                    if self.stop.wait(max(0.0, self.start + next_status - time.monotonic())):
                        return
                    if not self.args.quiet:
                        self._status(next_status, before)
                    before, self.late_ms = dict(self.sent), []
                    next_status += STATUS_PERIOD_S
                if self.stop.wait(max(0.0, self.start + due - time.monotonic())):
                    return
                self._publish(slot, loop * self.period + slot.stamp_s, due)
            loop += 1

    def _publish(self, slot: Slot, t: float, due: float) -> None:
        if slot.sensor and any(d.covers(slot.sensor, t) for d in self.drops):
            self.dropped[slot.key] += 1
            return
        if time.monotonic() - self.start - due > LATE_SKIP_S:
            self.skipped[slot.key] += 1
            return
        stamp_ns = self.stamp_ns(t)
        message = slot.message
        bad = self._take_bad(slot, t)
        if bad is not None:
            message, stamp_ns = bad_variant(slot, bad.kind, self.last_stamp.get(slot.key), stamp_ns, ros=True)
            print(f"mmseg sensors: bad {bad} t={t:.3f} stamp={_seconds(stamp_ns)}", flush=True)
        message.header.stamp.sec, message.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        self.publishers[slot.key].publish(message)
        self.late_ms.append((time.monotonic() - self.start - due) * 1e3)
        self.last_stamp[slot.key] = stamp_ns
        self.sent[slot.key] += 1

    def _take_bad(self, slot: Slot, t: float) -> Optional[BadMessage]:
        if not self.pending or slot.key != slot.sensor or self.pending[0].at > t:  # pending is sorted by time
            return None
        bad = next((b for b in self.pending if b.sensor == slot.sensor and b.at <= t), None)
        if bad is not None:
            self.pending.remove(bad)
        return bad

    def _clock(self) -> None:
        from rosgraph_msgs.msg import Clock

        message = Clock()
        while not self.stop.wait(1.0 / CLOCK_HZ):
            elapsed = time.monotonic() - self.start
            message.clock.sec, message.clock.nanosec = divmod(self.stamp_ns(elapsed), 10**9)
            self.clock_publisher.publish(message)

    def _status(self, t: float, before: dict) -> None:
        rates = ", ".join(f"{k} {(self.sent[k] - before[k]) / STATUS_PERIOD_S:.0f}/s" for k in self.sent)
        active = sorted({d.sensor for d in self.drops if d.during(t)})
        late = (f"late p50 {np.median(self.late_ms):.1f} max {max(self.late_ms):.1f} ms" if self.late_ms
                else "nothing sent")
        self.log(f"t={t:.0f}s {rates}; {late}" + (f"; dropping {', '.join(active)}" if active else ""))


def _seconds(ns: int) -> str:
    return f"{ns // 10**9}.{ns % 10**9:09d}"


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v)


if __name__ == "__main__":  # python -m mmseg_ros.ros.sensors ...
    from ..cli import main as cli_main

    sys.exit(cli_main(["sensors", *sys.argv[1:]]))
