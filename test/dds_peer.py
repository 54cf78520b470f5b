"""One side of the cross-process transport test (test_dds_transport.py): a real rclpy publisher or subscriber.

    dds_peer.py pub --frames N --rate HZ [--no-profile]   publish N rgb8 and N 32FC1 1024x1024 frames
    dds_peer.py sub [--no-profile] [--timeout S]          decode what arrives until "stop" on stdin

Both use sensor-data QoS (best effort). Each frame carries its counter in its pixels and a pattern derived from it,
so the subscriber checks every decoded pixel, not only that something arrived. Each process prints one JSON line
per event ({"event": "ready" | "sent" | "result", ...}) on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time
from functools import lru_cache

import numpy as np

from mmseg_ros import msgs
from mmseg_ros.ros import dds

SIZE = 1024
TOPICS = {"rgb8": "transport_check/rgb", "32FC1": "transport_check/range"}


@lru_cache(maxsize=None)
def _pattern(encoding: str, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    if encoding == "rgb8":
        return np.stack([(x + 3 * y) % 251, (2 * x + y) % 241, (x * y) % 239], axis=2).astype(np.uint8)
    return ((x + y * size) % 1000).astype(np.float32)


def frame(counter: int, encoding: str, size: int = SIZE) -> np.ndarray:
    """The image with counter `counter`: a pattern shifted by the counter, the counter itself in pixel (0, 0)."""
    if encoding == "rgb8":
        image = _pattern(encoding, size) + np.uint8(counter * 7 % 256)  # uint8 wraps: a new pattern per frame
        image[0, 0] = [counter & 255, (counter >> 8) & 255, (counter >> 16) & 255]
    else:
        image = _pattern(encoding, size) + np.float32(counter)
        image[0, 0] = counter
    return image


def counter_of(image: np.ndarray, encoding: str) -> int:
    if encoding == "rgb8":
        r, g, b = (int(v) for v in image[0, 0])
        return r | (g << 8) | (b << 16)
    return int(image[0, 0])


def _transport(no_profile: bool) -> str:
    # Must happen before rclpy.init(): Fast DDS reads its profile when the participant is created.
    if no_profile:
        for name in dds.PROFILE_VARIABLES:
            os.environ.pop(name, None)
        os.environ["SKIP_DEFAULT_XML_FILE"] = "1"  # nor a DEFAULT_FASTDDS_PROFILES.xml in the working directory
        return "fast dds built-in transports"
    return str(dds.configure_transport())


def _emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def publish(args) -> int:
    transport = _transport(args.no_profile)
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("transport_check_publisher")
    try:
        publishers = {
            enc: node.create_publisher(Image, topic, qos_profile_sensor_data) for enc, topic in TOPICS.items()
        }
        deadline = time.monotonic() + args.match_timeout
        while min(p.get_subscription_count() for p in publishers.values()) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        matched = min(p.get_subscription_count() for p in publishers.values()) >= 1
        if not matched:
            _emit("sent", matched=False, frames=0, transport=transport)
            return 2
        time.sleep(0.3)  # the reader side finishes matching this writer a moment after the writer sees it
        period = 1.0 / args.rate
        start = time.monotonic()
        for i in range(args.frames):
            for enc, pub in publishers.items():
                msg = msgs.numpy_to_image(frame(i, enc), enc)
                msg.header.stamp = node.get_clock().now().to_msg()
                pub.publish(msg)
            time.sleep(max(0.0, start + (i + 1) * period - time.monotonic()))
        time.sleep(0.3)  # let readers take the last samples before this participant goes away
        _emit("sent", matched=True, frames=args.frames, seconds=round(time.monotonic() - start, 3), transport=transport)
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def subscribe(args) -> int:
    transport = _transport(args.no_profile)
    import rclpy
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from mmseg_ros.ros.spin import SpinThread

    # Sensor-data QoS (best effort, volatile) with a history deep enough for a subscriber that the scheduler
    # starves for a while on a shared machine: what is measured is the transport, not this process' turn on a core.
    qos = QoSProfile(depth=max(args.depth, 1), history=qos_profile_sensor_data.history,
                     reliability=qos_profile_sensor_data.reliability, durability=qos_profile_sensor_data.durability)
    # The callback only keeps the message: checking 1024x1024 pixels there would make the subscriber, not the
    # transport, drop frames on a busy 2-core machine. Everything is decoded and checked after "stop".
    arrived = {enc: [] for enc in TOPICS}

    def on_image(msg, enc):
        arrived[enc].append((msg, node.get_clock().now().nanoseconds))

    rclpy.init()
    node = rclpy.create_node("transport_check_subscriber")
    for enc, topic in TOPICS.items():
        node.create_subscription(Image, topic, lambda m, e=enc: on_image(m, e), qos)
    spinner = SpinThread(node)
    try:
        _emit("ready", transport=transport)
        select.select([sys.stdin], [], [], args.timeout)  # "stop" (or EOF) from the test, bounded by the timeout
    finally:
        spinner.close()
    stats, errors = {}, []
    for enc, received in arrived.items():
        counters, latency = [], []
        for msg, arrival_ns in received:
            latency.append((arrival_ns - (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)) / 1e6)
            try:
                image = msgs.image_to_numpy(msg)
                counter = counter_of(image, enc)
                if msg.encoding == enc and np.array_equal(image, frame(counter, enc)):
                    counters.append(counter)
                else:
                    errors.append(f"{enc}: frame {counter} decoded to different pixels")
            except Exception as exc:  # reported; the test fails on valid < received
                errors.append(f"{enc}: {exc!r}")
        stats[enc] = {"received": len(received), "valid": len(counters), "counters": counters,
                      "latency_ms_median": round(float(np.median(latency)), 2) if latency else None}
    _emit("result", transport=transport, topics=stats, errors=errors[:5])
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("pub", "sub"))
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--no-profile", action="store_true", help="Fast DDS defaults instead of the shipped profile")
    parser.add_argument("--match-timeout", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=30.0, help="subscriber: give up waiting for 'stop'")
    parser.add_argument("--depth", type=int, default=50,
                        help="subscriber history depth (sensor-data QoS keeps 5)")
    args = parser.parse_args(argv)
    return publish(args) if args.role == "pub" else subscribe(args)


if __name__ == "__main__":
    sys.exit(main())
