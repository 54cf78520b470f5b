"""`mmseg sensors`: command-line rules and the schedule in-process, then the real publisher process over real DDS
(its own ROS_DOMAIN_ID from conftest) received by a real rclpy subscriber in this process."""
from __future__ import annotations

import importlib
import importlib.util
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mmseg_ros import msgs
from mmseg_ros.data.synthetic import schedule as sensors
from mmseg_ros.drops import Drop
from mmseg_ros.ros import sensors as ros_sensors
from mmseg_ros.data.synthetic import bag, config
from mmseg_ros.data.synthetic.generator import SceneGenerator
from mmseg_ros.errors import ConfigError, MessageError

RIG = config.load().rig
RATES_HZ = {"rgb": RIG.rates.camera_hz, "depth": RIG.rates.camera_hz, "lidar": RIG.rates.lidar_hz,
            "event": RIG.rates.event_hz, "labels": RIG.rates.camera_hz, "camera_info": RIG.rates.camera_hz,
            "points": RIG.rates.lidar_hz}
FRAME_IDS = {"rgb": RIG.camera.frame_id, "depth": RIG.depth.frame_id, "event": RIG.event.frame_id,
             "lidar": RIG.camera.frame_id, "labels": RIG.camera.frame_id, "camera_info": RIG.camera.frame_id,
             "points": RIG.lidar.frame_id}


# ---- command-line rules -----------------------------------------------------------------------------------------


def test_drop_windows_parse_and_cover():
    window = sensors.parse_drop("depth@5-10")
    assert window == Drop("depth", 5.0, 10.0)
    assert window.covers("depth", 5.0) and window.covers("depth", 9.99)
    assert not window.covers("depth", 10.0) and not window.covers("rgb", 7.0)
    everything = sensors.parse_drop("all@1.5-")
    assert everything.covers("lidar", 1e6) and everything.covers("rgb", 1.5) and not everything.covers("rgb", 1.4)
    assert sensors.parse_drop("camera@0-1").sensor == "rgb"  # modality aliases are accepted


@pytest.mark.parametrize("text", ["depth@10-5", "depth@5", "radar@1-2", "depth5-10", "depth@-1-2", "all@"])
def test_bad_drop_windows_are_rejected(text):
    with pytest.raises(ConfigError, match="--drop"):
        sensors.parse_drop(text)


def test_bad_message_rules_parse():
    assert sensors.parse_bad("depth:nan@3") == sensors.BadMessage("depth", "nan", 3.0)
    assert sensors.parse_bad("rgb:stamp@0.5") == sensors.BadMessage("rgb", "stamp", 0.5)


@pytest.mark.parametrize("text", ["rgb:nan@1", "depth:garbage@1", "all:size@1", "depth@3", "depth:nan"])
def test_bad_message_rules_are_checked(text):
    with pytest.raises(ConfigError, match="--bad"):
        sensors.parse_bad(text)


# ---- the schedule and the bad variants (plain messages, no ROS) ------------------------------------------------------


@pytest.fixture(scope="module")
def frames():
    generator = SceneGenerator(seed=3, size=32)
    return [generator.render_frame(i, all_events=True) for i in range(2)]


def _times(slots, key, field="stamp_s"):
    return np.array([getattr(s, field) for s in slots if s.key == key])


@pytest.mark.parametrize("rate_scale", [1.0, 0.5])
def test_schedule_follows_the_rig(frames, rate_scale):
    slots, period, extrinsic = sensors.build_schedule(frames, rate_scale, points=True, gt=True, ros=False)
    camera_period = 1.0 / RIG.rates.camera_hz / rate_scale
    assert period == pytest.approx(len(frames) * camera_period)
    assert extrinsic.shape == (4, 4)
    counts = {key: int((_times(slots, key) >= 0).sum()) for key in RATES_HZ}
    assert counts == {key: round(len(frames) * hz / RIG.rates.camera_hz) for key, hz in RATES_HZ.items()}
    jitter = 2 * RIG.rates.stamp_jitter_s / rate_scale + 1e-9
    assert min(s.stamp_s for s in slots) == 0.0 and max(s.stamp_s for s in slots) < period
    assert np.diff(_times(slots, "event")) == pytest.approx(1 / RIG.rates.event_hz / rate_scale, abs=jitter)
    assert np.diff(_times(slots, "rgb")) == pytest.approx(camera_period, abs=jitter)
    offset = _times(slots, "lidar") - _times(slots, "rgb")
    assert offset == pytest.approx(RIG.rates.lidar_offset_s / rate_scale, abs=jitter)
    publish = [s.publish_s for s in slots]
    assert publish == sorted(publish)
    for s in slots:
        assert s.publish_s - s.stamp_s == pytest.approx(bag.LATENCY_S[s.sensor or "rgb"])
        if s.key in sensors.ENCODINGS:
            assert s.message.encoding == sensors.ENCODINGS[s.key] and s.message.header.frame_id == FRAME_IDS[s.key]
            assert msgs.image_to_numpy(s.message).shape[:2] == (32, 32)


def test_bad_variants_are_what_the_doc_says(frames):
    slots, _, _ = sensors.build_schedule(frames, 1.0, points=False, gt=False, ros=False)
    depth = next(s for s in slots if s.key == "depth")
    rgb = next(s for s in slots if s.key == "rgb")
    good = msgs.image_to_numpy(rgb.message)

    message, stamp = sensors.bad_variant(rgb, "encoding", None, 10**9)
    assert message.encoding == sensors.BAD_ENCODING and stamp == 10**9 and bytes(message.data) == good.tobytes()
    with pytest.raises(MessageError, match="encoding"):
        msgs.image_to_numpy(message)
    message, _ = sensors.bad_variant(rgb, "truncated", None, 10**9)
    assert len(message.data) == good.nbytes // 2 and message.step * message.height == good.nbytes
    with pytest.raises(MessageError):
        msgs.image_to_numpy(message)
    message, _ = sensors.bad_variant(rgb, "size", None, 10**9)
    np.testing.assert_array_equal(msgs.image_to_numpy(message), good[::2, ::2])
    message, _ = sensors.bad_variant(depth, "nan", None, 10**9)
    assert message.encoding == "32FC1" and np.isnan(msgs.image_to_numpy(message)).all()
    message, stamp = sensors.bad_variant(rgb, "stamp", 5 * 10**9, 6 * 10**9)
    assert stamp == 4 * 10**9 and bytes(message.data) == good.tobytes()
    assert rgb.message.encoding == "rgb8"  # the looped original is untouched


# ---- the real process over DDS ---------------------------------------------------------------------------------------


class Listener:
    """A real rclpy subscriber on every sensors topic, in its own context, spinning in a thread."""

    def __init__(self, keys, reliable: bool, clock: bool = False):
        import rclpy
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from mmseg_ros.ros import dds
        from mmseg_ros.ros.spin import SpinThread

        dds.configure_transport()
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("sensors_test_listener", context=self.context)
        reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
        qos = QoSProfile(depth=200, reliability=reliability)
        names = sensors.topics()
        self.received = {key: [] for key in keys}
        self.arrivals = {key: [] for key in keys}  # time.monotonic() at each callback
        for key in keys:
            package, _, type_name = bag.TOPICS[key][1].split("/")
            msg_type = getattr(importlib.import_module(f"{package}.msg"), type_name)
            self.node.create_subscription(msg_type, names[key], lambda m, k=key: self._take(k, m), qos)
        self.clock = []  # (/clock ns, time.monotonic())
        if clock:
            from rosgraph_msgs.msg import Clock

            self.node.create_subscription(
                Clock, "/clock", lambda m: self.clock.append((_stamp_ns(m.clock), time.monotonic())), 10)
        self.spinner = SpinThread(self.node, context=self.context)

    def _take(self, key, msg):
        self.received[key].append(msg)
        self.arrivals[key].append(time.monotonic())

    def close(self):
        self.spinner.close()


def _start(*options) -> subprocess.Popen:
    command = [sys.executable, "-m", "mmseg_ros.cli", "sensors", "--size", "64", *options]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stamp_ns(msg_or_time) -> int:
    stamp = getattr(msg_or_time, "header", None)
    stamp = stamp.stamp if stamp is not None else msg_or_time
    return stamp.sec * 10**9 + stamp.nanosec


def _seconds(text: str) -> int:
    sec, nsec = text.split(".")
    return int(sec) * 10**9 + int(nsec)


@pytest.mark.ros
def test_publishes_rates_encodings_drops_and_bad_messages():
    keys = ros_sensors.used_keys(points=True, gt=True)
    listener = Listener(keys, reliable=True)
    duration = 3.5
    try:
        proc = _start("--frames", "3", "--duration", str(duration), "--qos", "reliable", "--points", "--gt",
                      "--wait-subscribers", "20",
                      "--drop", "depth@1-2", "--bad", "rgb:encoding@0.5", "--bad", "event:truncated@0.5",
                      "--bad", "lidar:size@0.5", "--bad", "depth:nan@0.5", "--bad", "rgb:stamp@2.5")
        out, _ = proc.communicate(timeout=60)
        time.sleep(0.3)  # the last samples are still being taken
    finally:
        listener.close()
    assert proc.returncode == 0, out
    t0 = _seconds(re.search(r"t0=(\d+\.\d+)", out).group(1))
    printed = {m.group(1): _seconds(m.group(2)) for m in re.finditer(r"bad (\w+:\w+)@\S+ t=\S+ stamp=(\S+)", out)}
    assert sorted(printed) == ["depth:nan", "event:truncated", "lidar:size", "rgb:encoding", "rgb:stamp"], out
    got = listener.received

    for key, hz in RATES_HZ.items():
        stamps = np.array([_stamp_ns(m) for m in got[key]])
        t = (stamps - t0) / 1e9
        expected = duration * hz * (0.75 if key == "depth" else 1.0)  # 1 of 3.5 s dropped
        assert 0.9 * expected <= len(t) <= expected + 2, f"{key}: {len(t)} messages, ~{expected:.0f} expected"
        assert t.min() >= 0.0 and t.max() < duration, f"{key}: stamps outside the run: {t.min()}..{t.max()}"
        steps = np.diff(t)
        assert np.median(steps) == pytest.approx(1 / hz, rel=0.05), key
        assert {m.header.frame_id for m in got[key]} == {FRAME_IDS[key]}, key
        backwards = np.flatnonzero(steps <= 0)
        if key == "rgb":  # exactly the injected stamp, exactly 1 s behind its predecessor
            assert len(backwards) == 1 and stamps[backwards[0] + 1] == stamps[backwards[0]] - 10**9, steps
            assert stamps[backwards[0] + 1] == printed["rgb:stamp"]
            assert 2.5 - 1.1 / hz <= t[backwards[0]] < 2.5  # it replaced the first image at or after 2.5 s
        else:
            assert len(backwards) == 0, f"{key}: stamps not increasing"
        if key in sensors.ENCODINGS:
            kinds = [(m.encoding, m.height, m.width, len(m.data) == m.step * m.height) for m in got[key]]
            normal = (sensors.ENCODINGS[key], 64, 64, True)
            odd = [(i, k) for i, k in enumerate(kinds) if k != normal]
            kind, bad = {"rgb": ("encoding", (sensors.BAD_ENCODING, 64, 64, True)),
                         "event": ("truncated", (normal[0], 64, 64, False)),
                         "lidar": ("size", (normal[0], 32, 32, True))}.get(key, (None, None))
            assert [k for _, k in odd] == ([bad] if bad else []), f"{key}: {odd}"
            if bad:
                assert _stamp_ns(got[key][odd[0][0]]) == printed[f"{key}:{kind}"]
                assert 0.5 <= t[odd[0][0]] < 0.7

    depth_t = np.array([(_stamp_ns(m) - t0) / 1e9 for m in got["depth"]])
    assert not ((depth_t >= 1.0) & (depth_t < 2.0)).any(), "depth published inside its drop window"
    assert (depth_t < 1.0).sum() >= 8 and (depth_t >= 2.0).sum() >= 13
    nan = [i for i, m in enumerate(got["depth"]) if np.isnan(msgs.image_to_numpy(m)).any()]
    assert len(nan) == 1 and np.isnan(msgs.image_to_numpy(got["depth"][nan[0]])).all()
    assert _stamp_ns(got["depth"][nan[0]]) == printed["depth:nan"] and 0.5 <= depth_t[nan[0]] < 0.7

    info = got["camera_info"][0]
    assert (info.width, info.height) == (64, 64) and info.k[2] == pytest.approx(32.0)
    cloud = msgs.pointcloud_to_numpy(got["points"][0])
    assert cloud.dtype.names == ("x", "y", "z", "intensity", "gt_label") and cloud.size > 100
    labels = msgs.image_to_numpy(got["labels"][0])
    assert labels.dtype == np.uint8 and ((labels < 25) | (labels == 255)).all()


@pytest.mark.ros
def test_sigint_ends_the_default_best_effort_publisher_with_exit_0_within_2_s_and_clock_runs_scaled():
    listener = Listener(ros_sensors.used_keys(points=False, gt=False), reliable=False, clock=True)
    rate_scale = 0.5
    try:
        proc = _start("--frames", "1", "--clock", "--rate-scale", str(rate_scale))
        deadline = time.monotonic() + 45
        while len(listener.received["rgb"]) < 8 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(listener.received["rgb"]) >= 8, "nothing arrived over sensor-data QoS"
        assert all(listener.received[k] for k in listener.received), {k: len(v) for k, v in listener.received.items()}
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        try:
            out, _ = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        elapsed = time.monotonic() - sent
    finally:
        listener.close()
    assert proc.returncode == 0, out
    assert elapsed < 2.0, f"took {elapsed:.2f} s to exit"
    assert "stopped after" in out and "Traceback" not in out

    # --clock: simulated time runs at rate_scale x the wall clock; stamps keep the nominal camera period in it,
    # while messages arrive rate_scale times slower in wall time.
    clock = np.array(listener.clock, dtype=np.float64)
    assert len(clock) > 50 and (np.diff(clock[:, 0]) >= 0).all()
    speed = (clock[-1, 0] - clock[0, 0]) / 1e9 / (clock[-1, 1] - clock[0, 1])
    assert speed == pytest.approx(rate_scale, rel=0.1)
    stamps = np.array([_stamp_ns(m) for m in listener.received["rgb"]]) / 1e9
    assert np.median(np.diff(stamps)) == pytest.approx(1 / RIG.rates.camera_hz, rel=0.05)
    wall = np.diff(listener.arrivals["rgb"])
    assert np.median(wall) == pytest.approx(1 / RIG.rates.camera_hz / rate_scale, rel=0.25)
    assert stamps.max() * 1e9 <= clock[:, 0].max() + 0.1e9  # stamps are simulated time, not wall time
