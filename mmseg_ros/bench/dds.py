"""`mmseg bench dds`: large images between processes with and without the shipped Fast DDS profile, and how many
camera frames segment_node answers when its publisher is set up the way `mmseg dds env` says.

Part 1, bare transport: a publisher process and a subscriber process (this module with `--role`), best-effort
(sensor-data QoS) rgb8 images of `--size`, `--frames` at `--rate`; the shipped profile on neither side, the
subscriber only, the publisher only, or both. Prints received / sent per placement.

Part 2, the node: `segment_node` (`--card`) and `mmseg sensors --size S` (all four inputs at their nominal rates for
`--seconds`), the sensors' environment being the parent's without any profile variable plus exactly the lines
`mmseg dds env` prints; the node sets its own. Prints camera frames sent and outputs received (stamps matched).

Run it with each distro's environment (e.g. the Kilted and the Jazzy venv) to fill BENCHMARKS.md's DDS table.
"""
from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import ConfigError
from .peers import emit, read_event

PLACEMENTS = {"neither": (False, False), "subscriber only": (False, True), "publisher only": (True, False),
              "both": (True, True)}
TOPIC = "mmseg_bench_dds/image"
NAMESPACE = "/mmseg_bench_dds"
PEER = "bench dds: a peer process"
NS = 1_000_000_000


def configure(parser):
    parser.add_argument("--size", type=int, default=1024, help="image size in px (default 1024)")
    parser.add_argument("--frames", type=int, default=40, help="images per placement (default 40)")
    parser.add_argument("--rate", type=float, default=10.0, help="images per second (default 10)")
    parser.add_argument("--seconds", type=float, default=5.0, help="node part: seconds of sensor data (default 5)")
    parser.add_argument("--card", default=None, help="node part: model card (default: the node's default)")
    parser.add_argument("--skip-node", action="store_true", help="only the bare transport part")
    parser.add_argument("--role", default="bench", choices=("bench", "pub", "sub"), help="internal: process role")
    parser.add_argument("--profile", action="store_true", help="internal: load the shipped profile")


def _environment(profile: bool) -> dict:
    """This process' environment without any profile variable, plus the shipped profile when asked (exactly the
    lines `mmseg dds env` prints)."""
    from ..ros import dds

    env = {k: v for k, v in os.environ.items() if k not in dds.PROFILE_VARIABLES}
    env["SKIP_DEFAULT_XML_FILE"] = "1"  # no DEFAULT_FASTDDS_PROFILES.xml from the working directory either
    if profile:
        for line in dds.env_lines(dds.fastdds_generation(), dds.profile_path()):
            if line.startswith("export "):
                name, value = line[len("export "):].split("=", 1)
                env[name] = value
    return env


def _peer(args) -> int:
    import numpy as np
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from .. import msgs
    from ..ros.spin import try_shutdown

    rclpy.init()
    node = rclpy.create_node(f"mmseg_bench_dds_{args.role}")
    try:
        if args.role == "pub":
            pub = node.create_publisher(Image, TOPIC, qos_profile_sensor_data)
            deadline = time.monotonic() + 20
            while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # the reader finishes matching a moment after the writer sees it
            msg = msgs.numpy_to_image(np.zeros((args.size, args.size, 3), np.uint8), "rgb8")
            for i in range(args.frames):
                msg.header.frame_id = str(i)
                pub.publish(msg)
                time.sleep(1.0 / args.rate)
            time.sleep(0.5)
            emit("sent", sent=args.frames)
            return 0
        received = set()
        node.create_subscription(Image, TOPIC, lambda m: received.add(m.header.frame_id), qos_profile_sensor_data)
        emit("ready")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not select.select([sys.stdin], [], [], 0)[0]:
            rclpy.spin_once(node, timeout_sec=0.05)
        emit("received", received=len(received))
        return 0
    finally:
        node.destroy_node()
        try_shutdown()


def _transport(args, pub_profile: bool, sub_profile: bool) -> tuple:
    command = [sys.executable, "-m", "mmseg_ros.cli", "bench", "dds", "--size", str(args.size),
               "--frames", str(args.frames), "--rate", str(args.rate)]
    sub = subprocess.Popen(command + ["--role", "sub"], env=_environment(sub_profile), text=True,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    pub = None
    try:
        read_event(sub, "ready", 60, PEER)
        pub = subprocess.Popen(command + ["--role", "pub"], env=_environment(pub_profile), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        sent = read_event(pub, "sent", 60 + args.frames / args.rate, PEER)["sent"]
        time.sleep(0.3)
        sub.stdin.write("stop\n")
        sub.stdin.flush()
        received = read_event(sub, "received", 20, PEER)["received"]
    finally:
        for proc in (pub, sub):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    return sent, received


def _node(args, log_dir: Path) -> tuple:
    """(camera frames sent, outputs answering them) with the sensors set up by `mmseg dds env`."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from .. import resources
    from ..pipeline import config as node_config
    from ..ros import dds
    from ..ros.spin import SpinThread

    from rclpy.qos import qos_profile_sensor_data

    dds.configure_transport()
    card = args.card or node_config.parameter("model.card").default
    outputs, camera = set(), set()
    rclpy.init()
    listener = rclpy.create_node("mmseg_bench_dds_listener")
    listener.create_subscription(Image, f"{NAMESPACE}/segment_node/labels",
                                 lambda m: outputs.add(m.header.stamp.sec * NS + m.header.stamp.nanosec),
                                 QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    # The camera frames as sent (this process has the profile too): an output answers one when stamped within the
    # synchronizer's slop of it (a depth-anchored set at a cold start is stamped a few ms off).
    camera_topic = node_config.input_topics([node_config.CAMERA])[node_config.CAMERA]
    listener.create_subscription(Image, f"{NAMESPACE}/{camera_topic}",
                                 lambda m: camera.add(m.header.stamp.sec * NS + m.header.stamp.nanosec),
                                 qos_profile_sensor_data)
    spinner = SpinThread(listener)
    node_log, sensors_log = log_dir / "node.log", log_dir / "sensors.log"
    node = sensors = None
    try:
        node = subprocess.Popen([sys.executable, "-m", "mmseg_ros.ros.node", "--ros-args", "-r",
                                 f"__ns:={NAMESPACE}", "--params-file", str(resources.resolve("config/segment.yaml")),
                                 "-p", f"model.card:={card}"], stdout=node_log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while "active: subscribed" not in node_log.read_text(errors="replace"):
            if time.monotonic() > deadline or node.poll() is not None:
                raise ConfigError(f"bench dds: the node did not start; see {node_log}")
            time.sleep(0.2)
        sensors = subprocess.Popen([sys.executable, "-m", "mmseg_ros.ros.sensors", "--size", str(args.size),
                                    "--duration", str(args.seconds), "--frames", "4", "--ros-args", "-r",
                                    f"__ns:={NAMESPACE}"], env=_environment(True), stdout=sensors_log.open("w"),
                                   stderr=subprocess.STDOUT)
        sensors.wait(timeout=args.seconds + 180)
        time.sleep(2.0)  # the last outputs are on their way
    finally:
        for proc in (sensors, node):
            if proc is not None and proc.poll() is None:
                proc.send_signal(2)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        spinner.close()
    text = sensors_log.read_text(errors="replace")
    match = re.search(r"sent .*?rgb (\d+)", text)
    if not match:
        raise ConfigError(f"bench dds: the sensors did not report what they sent; see {sensors_log}")
    slop = int(node_config.parameter("sync.slop").default * NS)
    answered = sum(any(abs(stamp - out) <= slop for out in outputs) for stamp in camera)
    return int(match.group(1)), len(camera), answered, card


def main(args) -> int:
    if args.role != "bench":
        return _peer(args)
    if args.frames < 1 or args.rate <= 0 or args.size < 32:
        raise ConfigError(f"need --frames >= 1, --rate > 0, --size >= 32; got {args.frames}, {args.rate}, {args.size}")
    from ..reporting import markdown_table
    from ..ros import dds

    generation = dds.fastdds_generation()
    rows = []
    for placement, (pub_profile, sub_profile) in PLACEMENTS.items():
        sent, received = _transport(args, pub_profile, sub_profile)
        rows.append((placement, f"{received}/{sent}"))
        print(f"bench dds: profile on {placement}: {received}/{sent}", file=sys.stderr, flush=True)
    print(f"## {args.size}x{args.size} rgb8, best effort, {args.rate:g} Hz between two processes "
          f"(Fast DDS {generation}.x)\n")
    print(markdown_table(["shipped profile on", "received / sent"], rows))
    if not args.skip_node:
        log_dir = Path(tempfile.mkdtemp(prefix="mmseg_bench_dds_"))
        sent, seen, answered, card = _node(args, log_dir)
        print(f"\n## segment_node ({card}) fed {args.size}x{args.size} four-input sets at the sensors' rates for "
              f"{args.seconds:g} s by `mmseg sensors` set up with `mmseg dds env` (logs: {log_dir})\n")
        print(markdown_table(["camera frames sent", "received here", "answered by an output", "answered"],
                             [(sent, seen, answered, f"{100.0 * answered / max(sent, 1):.0f}%")]))
    return 0
