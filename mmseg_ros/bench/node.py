"""`mmseg bench node`: the segment node's overhead (everything but the model forward) beside the bare DDS transport
of the same input images, measured in one run.

Two processes, both real rclpy over the shipped Fast DDS shared-memory profile:
  * a publisher process (this module with `--role publisher`) sends sets of the card's inputs (the synthetic
    scene's camera, depth, event and LiDAR images, scaled to each size) at `--rate`, every image of a set stamped
    with the clock at the start of the set; it also subscribes to the outputs, so they are published to a real peer;
  * this process receives them (sensor-data reliability, a deep history so a busy core does not count as transport
    loss): transport of a set = arrival of its last image in the subscriber callback - the set's stamp (serialise,
    SHM hand-over, deserialise into Python messages, executor wake-up).
Then, per complete set, it times the node's own stages by calling the functions segment_node calls, in its order
(mmseg_ros/node.py, SegmentPipeline._on_image/_process): decode (node_core.decode_input), sync
(Synchronizer.add with the node's default settings, fed the recorded arrival times), preprocess
(Segmenter.preprocess: unit scaling, resize to the card's input, normalisation, tensors), postprocess
(Segmenter.postprocess on logits of the card's shape: upsampling to the image size, softmax, argmax), encode
(labels, confidence, palette overlay -> Images) and publish (the three outputs with the node's output QoS to the
peer). The forward itself is excluded; `--forward` runs it once for real logits and shows its time for scale. Stage
times are per set (all inputs); the node overhead is their per-set sum. The first set of each size is a warm-up.
"""
from __future__ import annotations

import json
import sys
import time

from ..errors import ConfigError

ROLE_PUBLISHER = "publisher"
PREFIX = "mmseg_bench_node"  # private topic namespace: a node running in the same domain is not disturbed
OUTPUTS = ("labels", "confidence", "color")
STAGES = ("decode", "sync", "preprocess", "postprocess", "encode", "publish")
SOURCE_SIZE = 256  # the synthetic scene is rendered once at this size and scaled (nearest) to each benchmark size


def configure(parser):
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="square image sizes (px)")
    parser.add_argument("--sets", type=int, default=20, help="input sets per size (default 20)")
    parser.add_argument("--rate", type=float, default=4.0, help="sets per second sent by the publisher (default 4)")
    parser.add_argument("--card", default=None, help="model card (default: the node's default card)")
    parser.add_argument("--forward", action="store_true",
                        help="run the model (after a warm-up) for real logits and show its time (default: random "
                             "logits)")
    parser.add_argument("--role", default="bench", choices=("bench", ROLE_PUBLISHER), help="internal: process role")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")


def _topic(name: str) -> str:
    return f"{PREFIX}/{name}"


def _emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def _card_name(args) -> str:
    from .. import node_config

    return args.card or node_config.parameter("model.card").default


# ---------------------------------------------------------------------------------------------------------------------
# Publisher process.


def _input_arrays(card, size: int) -> dict:
    import cv2

    from ..data.synthetic.encode import metres
    from ..data.synthetic.generator import SceneGenerator
    from ..errors import ConfigError
    from ..sensors import ENCODINGS, METRIC

    frame = SceneGenerator(0, SOURCE_SIZE).render_frame(0)
    out = {}
    for name in card.modalities:
        if name not in ENCODINGS:
            raise ConfigError(f"bench node: the synthetic rig has no {name!r} sensor (card {card.name})")
        image = metres(frame[name]) if name in METRIC else frame[name]
        out[name] = cv2.resize(image, (size, size), interpolation=cv2.INTER_NEAREST)
    return out


def _publisher(args) -> int:
    from .. import cards, dds, msgs
    from ..sensors import ENCODINGS

    dds.configure_transport()
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    card = cards.load(_card_name(args))
    rclpy.init()
    node = rclpy.create_node("mmseg_bench_publisher")
    try:
        pubs = {m: node.create_publisher(Image, _topic(f"in/{m}"), qos_profile_sensor_data) for m in card.modalities}
        out_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        received = {name: 0 for name in OUTPUTS}
        for name in OUTPUTS:
            node.create_subscription(Image, _topic(f"out/{name}"),
                                     lambda _m, n=name: received.__setitem__(n, received[n] + 1), out_qos)
        messages = {size: {m: msgs.numpy_to_image(a, ENCODINGS[m]) for m, a in _input_arrays(card, size).items()}
                    for size in args.sizes}
        deadline = time.monotonic() + args.timeout
        while min(p.get_subscription_count() for p in pubs.values()) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the reader finishes matching a moment after the writer sees it
        for size in args.sizes:
            start = time.monotonic()
            for i in range(args.sets):
                stamp = node.get_clock().now().to_msg()
                for name, msg in messages[size].items():
                    msg.header.stamp = stamp
                    pubs[name].publish(msg)
                time.sleep(max(0.0, start + (i + 1) / args.rate - time.monotonic()))
            time.sleep(0.5)
        _emit("sent", sets=args.sets, sizes=args.sizes)
        # Keep the output subscriptions alive while the other process publishes to them; spin so they take data.
        import select

        while not select.select([sys.stdin], [], [], 0.0)[0] and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        drain = time.monotonic() + 0.5  # outputs published just before "stop" are still on their way
        while time.monotonic() < drain:
            rclpy.spin_once(node, timeout_sec=0.05)
        _emit("outputs", received=received)
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


# ---------------------------------------------------------------------------------------------------------------------
# The node's stages.


class NodeStages:
    """The work segment_node does on one set, stage by stage, with its default parameters and output QoS."""

    def __init__(self, node, card_name: str):
        import torch
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from ..engine import Segmenter
        from ..node_config import NodeConfig
        from ..sync import SyncConfig, Synchronizer

        self.config = cfg = NodeConfig.from_values({"model.card": card_name})
        self.segmenter = Segmenter(cfg.card, checkpoint=cfg.checkpoint, device="auto", precision=cfg.precision)
        self.sync = Synchronizer(SyncConfig.from_seconds(
            cfg.modalities, anchor=cfg.anchor, fallback=cfg.fallback, slop=cfg.slop, max_wait=cfg.max_wait,
            silence_timeout=cfg.anchor_timeout, min_modalities=cfg.min_modalities))
        qos = QoSProfile(depth=cfg.output_depth, reliability=ReliabilityPolicy.RELIABLE)
        self.publishers = {name: node.create_publisher(Image, _topic(f"out/{name}"), qos) for name in OUTPUTS}
        self.logits = None
        self.forward_ms = None
        self._torch = torch

    def prepare_logits(self, images: dict, size, forward: bool) -> None:
        """Logits for postprocess: the model's own from one forward (timed, for scale) when `forward`, else random
        ones of the card's shape (K classes at the model input size; postprocess costs the same for any values)."""
        torch = self._torch
        if not forward:
            card = self.config.card
            self.logits = torch.randn(1, card.num_classes, *card.input_size, device=self.segmenter.device)
            return
        _, inputs, _ = self.segmenter.preprocess(images, size)
        with torch.inference_mode():
            self.segmenter.model(inputs)  # warm-up, as the node does when it is configured
            start = time.perf_counter()
            self.logits = self.segmenter.model(inputs)["logits"]
            self.forward_ms = 1e3 * (time.perf_counter() - start)

    def run(self, messages: dict) -> dict:
        """Stage times (s) for one set {modality: (received Image, arrival ns)} in arrival order; the arrival times
        are the synchronizer's clock, as in the node. None when the synchronizer did not emit the set whole (its
        first set: inputs it has not heard from yet count as missing)."""
        from .. import msgs, node_core
        from ..node import Frame
        from ..node_config import CAMERA
        from ..sync import stamp_to_ns

        cfg, clock = self.config, time.perf_counter
        t0 = clock()
        frames = {name: (stamp_to_ns(m.header.stamp), Frame(m.header, image=node_core.decode_input(name, m)), arrival)
                  for name, (m, arrival) in messages.items()}
        t1 = clock()
        ready = []
        for name, (stamp, frame, arrival) in frames.items():
            ready += self.sync.add(name, stamp, frame, arrival)
        t2 = clock()
        whole = [s for s in ready if len(s.messages) == len(messages)]
        if not whole:
            return None
        sset = whole[-1]
        anchor = sset.messages[sset.anchor].payload
        images = {name: m.payload.image for name, m in sset.messages.items()}
        size = node_core.size_of(anchor.image)
        for name, image in images.items():  # the node rejects inputs whose size differs from the anchor's
            if node_core.size_mismatch(name, image, sset.anchor, size):
                raise RuntimeError(f"{name} differs in size from the anchor")
        t3 = clock()
        self.segmenter.preprocess(images, size)
        t4 = clock()
        labels, confidence = self.segmenter.postprocess(self.logits, size)
        t5 = clock()
        header = anchor.header
        out = {"labels": msgs.labels_to_image(labels, cfg.card.num_classes, header),
               "confidence": msgs.confidence_to_image(confidence, header)}
        color = node_core.overlay(cfg.card.class_set.colorize(labels), images.get(CAMERA), cfg.color_alpha)
        out["color"] = msgs.color_to_image(color, header)
        t6 = clock()
        for name, msg in out.items():
            self.publishers[name].publish(msg)
        t7 = clock()
        return {"decode": t1 - t0, "sync": t2 - t1 + t3 - t2, "preprocess": t4 - t3, "postprocess": t5 - t4,
                "encode": t6 - t5, "publish": t7 - t6}


# ---------------------------------------------------------------------------------------------------------------------
# The benchmark process.


def main(args) -> int:
    if args.role == ROLE_PUBLISHER:
        return _publisher(args)
    from ..errors import ConfigError

    if args.sets < 2 or args.rate <= 0 or any(s < 32 for s in args.sizes):
        raise ConfigError(f"need --sets >= 2, --rate > 0 and sizes >= 32; got {args.sets}, {args.rate}, {args.sizes}")
    return _bench(args)


def _bench(args) -> int:
    import subprocess
    import threading

    from .. import cards, dds

    transport = dds.configure_transport()
    import rclpy
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from ..rosutil import SpinThread

    card = cards.load(_card_name(args))
    arrivals = []  # (modality, message, arrival ns)
    collecting = threading.Event()
    collecting.set()
    rclpy.init()
    node = rclpy.create_node("mmseg_bench_node")
    qos = QoSProfile(depth=50, history=qos_profile_sensor_data.history,
                     reliability=qos_profile_sensor_data.reliability, durability=qos_profile_sensor_data.durability)
    for name in card.modalities:
        node.create_subscription(Image, _topic(f"in/{name}"),
                                 lambda m, n=name: collecting.is_set() and arrivals.append((n, m, time.time_ns())), qos)
    spinner = SpinThread(node)
    peer = None
    try:
        print(f"bench node: card {card.name}, inputs {', '.join(card.modalities)}, sizes {args.sizes}, "
              f"{args.sets} sets each at {args.rate:g}/s; {transport}", file=sys.stderr, flush=True)
        stages = NodeStages(node, card.name)  # builds the model while the publisher starts
        command = [sys.executable, "-m", "mmseg_ros.cli", "bench", "node", "--role", ROLE_PUBLISHER,
                   "--sets", str(args.sets), "--rate", str(args.rate), "--card", card.name,
                   "--timeout", str(args.timeout), "--sizes", *map(str, args.sizes)]
        peer = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = _read_event(peer, "sent", args.timeout)
        time.sleep(0.3)
        collecting.clear()
        sets = _complete_sets(arrivals, card.modalities)
        deadline = time.monotonic() + 10
        while min(p.get_subscription_count() for p in stages.publishers.values()) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the peer's readers finish matching a moment after the writers see them
        rows = []
        for size in args.sizes:
            group = [s for s in sets if s["size"] == size]
            if not group:
                raise ConfigError(f"bench node: no complete set of {size} px arrived ({line})")
            if stages.logits is None:  # the model input size does not depend on the image size
                stages.prepare_logits({n: _image(m) for n, (m, _) in group[0]["messages"].items()}, (size, size),
                                      args.forward)
            stages.run(group[0]["messages"])  # warm-up (first allocations at this size; the synchronizer's first set)
            timings = [t for t in (stages.run(s["messages"]) for s in group[1:]) if t is not None]
            if not timings:
                raise ConfigError(f"bench node: the synchronizer emitted no whole set of {size} px")
            rows.append(_row(size, len(card.modalities), group, timings, args.sets, stages.forward_ms))
        peer.stdin.write("stop\n")
        peer.stdin.flush()
        outputs = _read_event(peer, "outputs", 20)
    finally:
        spinner.close()
        if peer is not None and peer.poll() is None:
            try:
                peer.wait(timeout=10)
            except subprocess.TimeoutExpired:
                peer.kill()
    _print_table(rows, card, outputs)
    return 0


def _image(msg):
    from .. import msgs

    return msgs.image_for_model(msg)


def _read_event(peer, event: str, timeout: float) -> dict:
    import select

    from ..errors import ConfigError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([peer.stdout], [], [], 0.1)[0]:
            line = peer.stdout.readline()
            if not line:
                break
            if line.startswith("{") and json.loads(line).get("event") == event:
                return json.loads(line)
    raise ConfigError(f"bench node: the publisher process did not report {event!r} (exit code {peer.poll()})")


def _complete_sets(arrivals, names) -> list:
    """Sets (same stamp) in which every input arrived: messages, size, transport = last arrival - stamp."""
    from ..sync import stamp_to_ns

    by_stamp = {}
    for name, msg, arrival in arrivals:
        entry = by_stamp.setdefault(stamp_to_ns(msg.header.stamp), {"messages": {}, "last": 0})
        entry["messages"][name] = (msg, arrival)  # arrivals are appended in order: the dict keeps arrival order
        entry["last"] = max(entry["last"], arrival)
    sets = []
    for stamp, entry in sorted(by_stamp.items()):
        if set(entry["messages"]) == set(names):
            size = entry["messages"][names[0]][0].width
            sets.append({"size": size, "messages": entry["messages"], "transport": (entry["last"] - stamp) / 1e9})
    return sets


def _row(size, inputs, group, timings, sent, forward_ms) -> list:
    from .timing import median_ms, percentile

    transport = [s["transport"] for s in group]
    overhead = [sum(t.values()) for t in timings]
    row = [f"{size}x{size}", inputs, f"{len(group)}/{sent}", median_ms(transport), 1e3 * percentile(transport, 95),
           *(median_ms([t[stage] for t in timings]) for stage in STAGES),
           median_ms(overhead), 1e3 * percentile(overhead, 95)]
    return row + ([forward_ms] if forward_ms is not None else [])


def _print_table(rows, card, outputs) -> None:
    import torch

    from .timing import markdown_table

    header = ["size", "inputs", "sets", "DDS transport p50 ms", "p95", *(f"{s} p50" for s in STAGES),
              "node overhead p50 ms", "p95"] + (["forward ms (excluded, 1 run)"] if len(rows[0]) > 13 else [])
    print(markdown_table(header, rows))
    print(f"\nCard {card.name} ({card.num_classes} classes, model input {card.input_size[0]} px), torch threads "
          f"{torch.get_num_threads()}, device cpu unless CUDA. Transport: one set of all inputs from the publisher "
          "process (stamp at the start of the set) to the last image's arrival in this process' callback, shipped "
          "SHM profile; it includes rclpy's conversion into Python messages, which the node process pays too. "
          "Node overhead: per-set sum of the node's stages called directly (the functions segment_node "
          "calls), medians over the sets; the forward is excluded. Outputs received by the peer: "
          f"{outputs.get('received')}.")
