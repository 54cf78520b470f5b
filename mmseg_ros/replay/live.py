"""`mmseg replay --live`: play a bag over DDS into a running segment_node, record what it publishes, score it.

The real node end to end: its subscriptions, QoS, synchronizer on its own clock, worker, latest-wins hand-off and
publishers. Input messages are published at their recorded pace (log-time spacing, divided by --rate) with their
recorded header stamps; --drop windows leave messages out as in the offline mode. Unless --node-running, a
segment_node is started as a child process with the replay's card, checkpoint and --param values and stopped at the
end. Its labels, confidence and color outputs are recorded (into the output bag, log time = arrival) and the labels
are scored against the bag's ground truth exactly as offline (the same Scorer); the report adds how many camera
frames were answered. Which inputs went into each output is not on the wire, so the live report has no per-subset
rows.

This module imports rclpy; nothing else in the replay package does.
"""
from __future__ import annotations

import array
import bisect
import contextlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .. import msgs
from ..ros import dds
from ..atomic import atomic_open
from ..drops import Drop
from ..errors import ConfigError, DataError
from ..evaluation.metrics import NAN_POLICY
from ..evaluation.tables import save_json
from ..pipeline import SegmentedSet
from ..pipeline import config as node_config
from ..pipeline.config import CAMERA, NODE_NAME, NodeConfig
from ..sync import stamp_to_ns
from . import report as report_lib
from .bagio import InputBag, OutputBag
from .offline import decode_labels
from . import topics as topics_lib
from .bagio import COMPRESSED_TYPE
from .run import IMAGE_OUTPUTS, OUTPUT_BAG, OUTPUT_TOPICS, REPORT_JSON, REPORT_MD, _path_or_none, closed_drops
from .scoring import Scorer

START_TIMEOUT_S = 180.0  # node start-up: torch, SAM2, model build and warm-up on a busy 2-core machine
SETTLE_S = 0.5  # after the publishers see the node's subscriptions, the other side finishes matching
QUIET_S = 3.0  # after the last input, outputs are awaited until none came for this long
PUBLISH_DEPTH = 10


def replay_live(bag_path, config: NodeConfig, *, drops: Sequence[Drop] = (), out=None, rate: float = 1.0,
                node_running: bool = False, params: Sequence[str] = (), labels_topic: Optional[str] = None,
                write_bag: bool = True, progress: bool = True, log=print,
                remaps: Optional[Dict[str, str]] = None) -> Dict:
    if rate <= 0:
        raise ConfigError(f"--rate must be > 0, got {rate}")
    dds.configure_transport()  # before the first participant, here and in the node we start
    with InputBag(bag_path) as bag:
        drops = closed_drops(drops, bag)
        inputs = topics_lib.resolve(bag, config, remaps or {}, labels_topic)
        config, topics, labels_topic = inputs.config, inputs.topics, inputs.labels
        if config.lidar_source != "image":
            raise ConfigError("--live publishes image topics only: a LiDAR PointCloud2 replays offline")
        # Published on the node's own topic names (base topic, + /<transport> for a CompressedImage), as recorded
        node_topics = {m: "/" + t for m, t in node_config.input_topics(config.modalities, config.lidar_source,
                                                                     config.transports).items()}
        compressed = {m for m, kind in inputs.types.items() if kind == COMPRESSED_TYPE}
        node = None if node_running else _start_node(config, params, out, log)
        output = None
        if write_bag and out is not None:
            storage = bag.storage if bag.storage in ("mcap", "sqlite3") else "mcap"
            output = OutputBag(Path(out) / OUTPUT_BAG, storage, IMAGE_OUTPUTS.values(), custom_data={
                "mmseg.replay_of": str(bag.path), "mmseg.mode": "live", "mmseg.card": config.card.name})
        try:
            with _Peer(node_topics, compressed) as peer, (output if output is not None else contextlib.nullcontext()):
                peer.wait_ready(node, START_TIMEOUT_S)
                scorer = Scorer(config.card.num_classes, config.modalities, drops,
                                condition=bag.custom_data.get("mmseg.condition"), slop_ns=int(config.slop * 1e9))
                outputs = _Outputs(peer, scorer, bag.start_ns, output)
                played = _play(bag, peer, topics, labels_topic, drops, rate, outputs, progress)
                peer.wait_quiet(max(played["anchor_stamps"], default=None), QUIET_S)
                outputs.drain()
        finally:
            if node is not None:
                _stop(node)
        doc = _report(bag, config, topics, labels_topic, drops, rate, scorer, played, outputs, output)
    if out is not None:
        save_json(doc, Path(out) / REPORT_JSON)
        with atomic_open(Path(out) / REPORT_MD, "w") as f:
            f.write(report_lib.to_markdown(doc))
    return doc


# -- the node -------------------------------------------------------------------------------------------------------

def _start_node(config: NodeConfig, params: Sequence[str], out, log) -> subprocess.Popen:
    card = config.card.path or config.card.name
    cmd = [sys.executable, "-m", "mmseg_ros.ros.node", "--ros-args", "-p", f"model.card:={card}",
           "-p", f"model.device:={config.device}"]
    if config.checkpoint:
        cmd += ["-p", f"model.checkpoint:={config.checkpoint}"]
    for pair in params:
        name, _, value = pair.partition("=")
        cmd += ["-p", f"{name.strip()}:={value}"]
    for name, transport in config.transports.items():  # the transports the bag recorded (unless --param set them)
        if transport != node_config.RAW and not any(p.startswith(node_config.TRANSPORT_PREFIX + name) for p in params):
            cmd += ["-p", f"{node_config.TRANSPORT_PREFIX}{name}:={transport}"]
    log_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="mmseg-replay-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "segment_node.log"
    log(f"mmseg replay: starting {NODE_NAME} ({card}); its log: {log_path}")
    proc = subprocess.Popen(cmd, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    proc.log_path = log_path
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)


def _tail(path, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- our DDS participant --------------------------------------------------------------------------------------------

class _Peer:
    """Publishers for the inputs, recorders for the node's outputs, spun in a thread."""

    def __init__(self, topics: Dict[str, str], compressed=()):
        import rclpy
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import String

        from ..ros.spin import SpinThread

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("mmseg_replay", context=self.context)
        reliable = QoSProfile(depth=PUBLISH_DEPTH, reliability=ReliabilityPolicy.RELIABLE)
        self.publishers = {m: self.node.create_publisher(CompressedImage if m in compressed else Image, t, reliable)
                           for m, t in topics.items()}
        self.lock = threading.Lock()
        self.outputs: Dict[str, List] = {kind: [] for kind in IMAGE_OUTPUTS}  # (arrival ns, message), not yet taken
        self.last_output = time.monotonic()
        self.newest_labels_ns: Optional[int] = None
        for kind, topic in IMAGE_OUTPUTS.items():
            self.node.create_subscription(Image, topic, lambda msg, kind=kind: self._record(kind, msg),
                                          QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.class_names: List[str] = []
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(String, f"/{NODE_NAME}/class_names",
                                      lambda msg: self.class_names.append(msg.data), latched)
        self.spinner = SpinThread(self.node, context=self.context)

    def __enter__(self) -> "_Peer":
        return self

    def __exit__(self, *exc) -> None:
        self.spinner.close()

    def _record(self, kind: str, msg) -> None:
        with self.lock:
            self.outputs[kind].append((time.time_ns(), msg))
            self.last_output = time.monotonic()
            if kind == "labels":
                stamp = stamp_to_ns(msg.header.stamp)
                self.newest_labels_ns = max(stamp, self.newest_labels_ns or stamp)

    def take(self) -> Dict[str, List]:
        """The outputs received since the last call."""
        with self.lock:
            taken, self.outputs = self.outputs, {kind: [] for kind in IMAGE_OUTPUTS}
        return taken

    def wait_ready(self, proc: Optional[subprocess.Popen], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise ConfigError(f"{NODE_NAME} ended with exit code {proc.returncode} before it was ready:\n"
                                  + _tail(proc.log_path))
            if self.class_names and all(p.get_subscription_count() > 0 for p in self.publishers.values()):
                time.sleep(SETTLE_S)
                return
            time.sleep(0.05)
        where = f"; its log:\n{_tail(proc.log_path)}" if proc is not None else " (is it running, same ROS_DOMAIN_ID?)"
        raise DataError(f"{NODE_NAME} was not ready (active, subscribed to every input) within {timeout:g} s{where}")

    def wait_quiet(self, newest_anchor: Optional[int], quiet_s: float) -> None:
        """Until the newest camera frame has its output, or nothing came for quiet_s."""
        while True:
            with self.lock:
                done = newest_anchor is not None and (self.newest_labels_ns or 0) >= newest_anchor
                idle = time.monotonic() - self.last_output
            if done or idle > quiet_s:
                time.sleep(0.2)  # the confidence and color messages of that frame follow its labels
                return
            time.sleep(0.05)


def _to_ros_image(msg):
    """A bag's Image or CompressedImage (rosbags class) -> the sensor_msgs message, as recorded."""
    from sensor_msgs.msg import CompressedImage, Image

    compressed = msgs.is_compressed(msg)
    image = CompressedImage() if compressed else Image()
    image.header.stamp.sec, image.header.stamp.nanosec = int(msg.header.stamp.sec), int(msg.header.stamp.nanosec)
    image.header.frame_id = str(msg.header.frame_id)
    if compressed:
        image.format = str(msg.format)
    else:
        image.height, image.width, image.encoding = int(msg.height), int(msg.width), str(msg.encoding)
        image.is_bigendian, image.step = int(msg.is_bigendian), int(msg.step)
    payload = array.array("B")
    payload.frombytes(np.ascontiguousarray(msg.data).tobytes())  # array('B') skips rclpy's per-element checks
    image.data = payload
    return image


class _Outputs:
    """The node's outputs as they come in: labels scored while the ground truth of their time is still held, all of
    them written to the output bag (log time = arrival), nothing kept beyond the stamps."""

    def __init__(self, peer: _Peer, scorer: Scorer, start_ns: int, output: Optional[OutputBag]):
        self.peer, self.scorer, self.start_ns, self.output = peer, scorer, start_ns, output
        self.log_of_stamp: Dict[int, int] = {}  # input stamp -> log time: places outputs in the drop-out windows
        self.label_stamps: List[int] = []

    def drain(self) -> None:
        taken = self.peer.take()
        for _, msg in taken["labels"]:
            stamp = stamp_to_ns(msg.header.stamp)
            log_ns = self.log_of_stamp.get(stamp, stamp)
            self.scorer.add_frame(SegmentedSet(
                index=len(self.label_stamps), stamp_ns=stamp, arrival_ns=log_ns, anchor="", used=None, missing={},
                timing={}, header=msg.header, labels=np.array(msgs.image_to_numpy(msg)), confidence=None),
                (log_ns - self.start_ns) / 1e9)
            self.label_stamps.append(stamp)
        if self.output is not None:
            records = [(arrival, kind, m) for kind, items in taken.items() for arrival, m in items]
            for arrival, kind, m in sorted(records, key=lambda r: r[0]):
                self.output.write(OUTPUT_TOPICS[kind], arrival, m)


def _play(bag: InputBag, peer: _Peer, topics, labels_topic, drops, rate, outputs: _Outputs, progress) -> Dict:
    """Publish the inputs on their recorded schedule; ground truth goes straight to the scorer, outputs as they
    come back."""
    from tqdm import tqdm

    modality_of = {t: m for m, t in topics.items()}
    read = list(topics.values()) + ([labels_topic] if labels_topic else [])
    sent = {m: 0 for m in topics}
    dropped = {m: 0 for m in topics}
    log_of_stamp = outputs.log_of_stamp
    anchor_stamps = set()
    late_ms: List[float] = []
    begin = time.monotonic()
    total = sum(bag.message_count(t) for t in read)
    with tqdm(total=total, unit="msg", desc="live", disable=not progress, leave=False) as bar:
        for topic, log_ns, msg in bag.messages(read):
            bar.update(1)
            if topic == labels_topic:
                outputs.scorer.add_truth(stamp_to_ns(msg.header.stamp), decode_labels(msg))
                outputs.drain()
                continue
            modality = modality_of[topic]
            seconds = (log_ns - bag.start_ns) / 1e9
            if any(d.covers(modality, seconds) for d in drops):
                dropped[modality] += 1
                continue
            image = _to_ros_image(msg)
            delay = begin + seconds / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            late_ms.append(max(0.0, -delay) * 1e3)
            peer.publishers[modality].publish(image)
            sent[modality] += 1
            stamp = stamp_to_ns(msg.header.stamp)
            log_of_stamp.setdefault(stamp, log_ns)
            if modality == CAMERA:
                anchor_stamps.add(stamp)
    return {"sent": sent, "dropped": dropped, "anchor_stamps": anchor_stamps,
            "wall_s": time.monotonic() - begin, "late_ms": late_ms}


def _answered(anchors: List[int], outputs: List[int], slop_ns: int) -> int:
    count = 0
    for stamp in anchors:
        at = bisect.bisect_left(outputs, stamp - slop_ns)
        count += at < len(outputs) and outputs[at] <= stamp + slop_ns
    return count


def _report(bag, config, topics, labels_topic, drops, rate, scorer: Scorer, played, outputs: _Outputs,
            output: Optional[OutputBag]) -> Dict:
    answered = set(outputs.label_stamps)
    anchors = sorted(played["anchor_stamps"])
    # A camera frame is answered by an output stamped within slop of it: at a cold start the node may anchor the
    # first instant on an input that arrived before the camera (its synchronizer has been waiting since activation).
    answered_anchors = _answered(anchors, sorted(answered), int(config.slop * 1e9))
    duration = (bag.end_ns - bag.start_ns) / 1e9
    doc = {
        "schema": report_lib.SCHEMA, "units": "percent", "metric_note": NAN_POLICY, "mode": "live",
        "model": {"name": config.card.name, "checkpoint": _path_or_none(config.checkpoint or config.card.checkpoint),
                  "input_size": list(config.card.input_size), "modalities": list(config.modalities),
                  "device": "segment_node"},
        "bag": {"path": str(bag.path), "storage": bag.storage, "duration_s": duration,
                "condition": bag.custom_data.get("mmseg.condition"), "failure": bag.custom_data.get("mmseg.failure"),
                "topics": topics, "labels_topic": labels_topic},
        "settings": {"score_size": "input", "drops": [d.label for d in drops], "rate": rate},
        "classes": list(config.card.class_names),
        "frames": {"anchor_messages": len(anchors), "processed": len(outputs.label_stamps), "scored": scorer.scored,
                   "unscored": scorer.unscored, "labels": scorer.labels_seen,
                   "answered": answered_anchors, "unanswered": len(anchors) - answered_anchors},
        "inputs": {m: {"topic": topics[m], "messages": played["sent"][m] + played["dropped"][m],
                       "dropped": played["dropped"][m], "rejected": 0, "last_error": ""} for m in topics},
    }
    doc.update(report_lib.scores_section(scorer, config.card.class_names))
    doc.update(report_lib.windows_section(scorer))
    doc["latency_ms"] = {"publish_late": report_lib.latency_entry(played["late_ms"])}
    wall = max(played["wall_s"], 1e-9)
    doc["speed"] = {"wall_s": played["wall_s"], "frames_per_s": len(outputs.label_stamps) / wall,
                    "realtime_factor": duration / wall}
    if output is not None:
        doc["output_bag"] = {"path": str(output.path), "storage": output.storage, "counts": dict(output.counts)}
    return doc
