"""`mmseg bench node`: the segment node's overhead (everything but the model forward) beside the bare DDS transport
of the same input images, measured in one run.

Two processes, both real rclpy over the shipped Fast DDS shared-memory profile:
  * a publisher process (this module with `--role publisher`) sends sets of the card's inputs (the synthetic
    scene's camera, depth, event and LiDAR images, scaled to each size) at `--rate`, every image of a set stamped
    with the clock at the start of the set; it also subscribes to the outputs, so they are published to a real peer;
  * this process receives them (sensor-data reliability, a deep history so a busy core does not count as transport
    loss): transport of a set = arrival of its last image in the subscriber callback - the set's stamp (serialise,
    SHM hand-over, deserialise into Python messages, executor wake-up).
Then (with --live: as each set completes, in a worker thread, as segment_node's worker takes it), per
complete set, it runs the node's own pipeline (mmseg_ros.pipeline.Pipeline, the object segment_node's
callbacks and worker drive) with the node's default settings, fed the recorded arrival times, and times its stages:
decode (Pipeline.decode: encoding, validity and size checks), sync (Pipeline.offer: stamp order and the
synchronizer, plus the set's anchor-first size checks), preprocess and postprocess (the engine's stages inside
Pipeline.process: unit scaling, resize to the card's input, normalisation; upsampling to the image size, softmax,
argmax), encode (the palette overlay and the output Images) and publish (the three outputs with the node's output QoS
to the peer). The forward runs for real on every set and is reported beside, not in, the node overhead. Stage times
are per set (all inputs); the node overhead is their per-set sum. The first set of each size is a warm-up.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Optional

from .. import precision as precisions
from ..errors import ConfigError
from .peers import emit, read_event

ROLE_PUBLISHER = "publisher"
PUBLISHER = "bench node: the publisher process"
PREFIX = "mmseg_bench_node"  # private topic namespace: a node running in the same domain is not disturbed
OUTPUTS = ("labels", "confidence", "color")
STAGES = ("decode", "sync", "preprocess", "postprocess", "encode", "publish")
SOURCE_SIZE = 256  # the synthetic scene is rendered once at this size and scaled (nearest) to each benchmark size
DEFAULT_SIZES = ("1024", "1920x1200")  # a square frame and a real automotive camera (also 1920x1080, 2048x1536)


def image_size(text: str) -> tuple:
    """'1024' (square) or 'WIDTHxHEIGHT' (as cameras are named, e.g. 1920x1200) -> (width, height)."""
    parts = str(text).lower().split("x")
    try:
        values = tuple(int(v) for v in parts)
    except ValueError:
        values = ()
    if len(values) not in (1, 2):
        raise ConfigError(f"bench node: image size {text!r} must be N or WIDTHxHEIGHT, e.g. 1024 or 1920x1200")
    return values * 2 if len(values) == 1 else values


def size_label(size: tuple) -> str:
    return f"{size[0]}x{size[1]}"


def add_size_arguments(parser) -> None:
    """--sizes (camera sizes, default DEFAULT_SIZES) and --card, as the node benchmarks take them."""
    parser.add_argument("--sizes", type=image_size, nargs="+", default=[image_size(s) for s in DEFAULT_SIZES],
                        help=f"image sizes: N (square) or WIDTHxHEIGHT (default {' '.join(DEFAULT_SIZES)})")
    parser.add_argument("--card", default=None, help="model card (default: the node's default card)")


def configure(parser):
    add_size_arguments(parser)
    parser.add_argument("--sets", type=int, default=20, help="input sets per size (default 20)")
    parser.add_argument("--rate", type=float, default=4.0, help="sets per second sent by the publisher (default 4)")
    parser.add_argument("--forward", action="store_true",
                        help="kept for old command lines: the forward now always runs and has its own column")
    parser.add_argument("--device", default="auto", help="the engine's device: auto, cpu or cuda[:N]")
    parser.add_argument("--precision", default="fp32", choices=precisions.NAMES,
                        help="autocast precision of the engine (half precisions on CUDA only)")
    parser.add_argument("--resolution", default=None, choices=("camera", "model"),
                        help="outputs.resolution (default: the node's default)")
    parser.add_argument("--outputs", nargs="+", default=list(OUTPUTS), choices=OUTPUTS,
                        help="outputs built and published (default all; the node builds confidence and color only "
                             "while subscribed: `--outputs labels` is a node whose consumers take the labels alone)")
    parser.add_argument("--live", action="store_true",
                        help="run the node's stages on each set as soon as its last input arrives, in a worker thread "
                             "as segment_node does (default: after every set has arrived, so the transport is timed "
                             "undisturbed)")
    parser.add_argument("--role", default="bench", choices=("bench", ROLE_PUBLISHER), help="internal: process role")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")


def _topic(name: str) -> str:
    return f"{PREFIX}/{name}"


def _card_name(args) -> str:
    from ..pipeline import config as node_config

    return args.card or node_config.parameter("model.card").default


# ---------------------------------------------------------------------------------------------------------------------
# Publisher process.


def _input_arrays(card, size: tuple) -> dict:
    import cv2

    from ..data.synthetic.encode import metres
    from ..data.synthetic.generator import SceneGenerator
    from ..errors import ConfigError
    from ..data.synthetic.schedule import ENCODINGS, METRIC

    frame = SceneGenerator(0, SOURCE_SIZE).render_frame(0)
    out = {}
    for name in card.modalities:
        if name not in ENCODINGS:
            raise ConfigError(f"bench node: the synthetic rig has no {name!r} sensor (card {card.name})")
        image = metres(frame[name]) if name in METRIC else frame[name]
        out[name] = cv2.resize(image, tuple(size), interpolation=cv2.INTER_NEAREST)  # (width, height)
    return out


def _publisher(args) -> int:
    from .. import cards, msgs
    from ..data.synthetic.schedule import ENCODINGS
    from ..ros import dds
    from ..ros.spin import try_shutdown

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
        emit("sent", sets=args.sets, sizes=[size_label(s) for s in args.sizes])
        # Keep the output subscriptions alive while the other process publishes to them; spin so they take data.
        import select

        while not select.select([sys.stdin], [], [], 0.0)[0] and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        drain = time.monotonic() + 0.5  # outputs published just before "stop" are still on their way
        while time.monotonic() < drain:
            rclpy.spin_once(node, timeout_sec=0.05)
        emit("outputs", received=received)
        return 0
    finally:
        node.destroy_node()
        try_shutdown()


# ---------------------------------------------------------------------------------------------------------------------
# The node's stages.


class NodeStages:
    """The node's pipeline on one set, stage by stage, with the node's default parameters and output QoS."""

    def __init__(self, node, card_name: str, device: str = "auto", precision: str = "fp32",
                 resolution: Optional[str] = None, built=OUTPUTS):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from ..engine import Segmenter
        from ..msgs import MessageBuffers
        from ..pipeline import NodeConfig, Pipeline

        values = {"model.card": card_name, "model.precision": precision}
        if resolution is not None:
            values["outputs.resolution"] = resolution
        self.config = cfg = NodeConfig.from_values(values)
        self.segmenter = Segmenter(cfg.card, checkpoint=cfg.checkpoint, device=device, precision=cfg.precision)
        self._pipeline_class, self._buffers_class = Pipeline, MessageBuffers  # as segment_node builds it
        self.restart()
        qos = QoSProfile(depth=cfg.output_depth, reliability=ReliabilityPolicy.RELIABLE)
        self.built = tuple(name for name in OUTPUTS if name in built)
        self.publishers = {name: node.create_publisher(Image, _topic(f"out/{name}"), qos) for name in self.built}

    def restart(self) -> None:
        """A fresh pipeline (synchronizer, size guard, statistics) with the same model: a node restarted for a
        camera of another resolution, where the running one would reject the new size as bad input."""
        self.pipeline = self._pipeline_class(self.config, self.segmenter, output_buffers=self._buffers_class())

    def run(self, messages: dict) -> dict:
        """Stage times (s) for one set {modality: (received Image, arrival ns)} in arrival order; the arrival times
        are the pipeline's clock, as in the node. None when the synchronizer did not emit the set whole (its first
        set: inputs it has not heard from yet count as missing). Besides the stages: each output's encode
        ('encode.<output>', the colour one with its overlay), the forward, and the synchronizer's own wait
        ('sync_wait': from the set's last arrival to its emission, in the recorded clock)."""
        from ..pipeline import outputs

        pipeline, clock = self.pipeline, time.perf_counter
        t0 = clock()
        items = {name: (pipeline.decode(name, m, arrival), arrival) for name, (m, arrival) in messages.items()}
        t1 = clock()
        ready = []
        for name, (item, arrival) in items.items():
            if item is None:
                raise RuntimeError(f"the pipeline rejected the {name} image: {pipeline.health.get(name).last_error}")
            ready += pipeline.offer(name, item, arrival)
        t2 = clock()
        whole = [s for s in ready if len(s.messages) == len(messages)]
        if not whole:
            return None
        sset = whole[-1]
        output = pipeline.process(sset, sset.emitted_ns, color="color" in self.built)
        if output is None or len(output.used) != len(messages):
            raise RuntimeError(f"the pipeline did not segment the whole set: missing {output and output.missing}")
        ms = output.timing
        encode = {f"encode.{kind}": 0.0 for kind in OUTPUTS}
        encode["encode.color"] = ms["overlay"] / 1e3
        out = {}
        for kind in (k for k in outputs.kinds(output, self.config) if k in self.built):
            t3 = clock()
            out[kind] = outputs.to_message(kind, output, self.config)
            encode[f"encode.{kind}"] = encode.get(f"encode.{kind}", 0.0) + clock() - t3
        published = {f"publish.{kind}": 0.0 for kind in OUTPUTS}
        t4 = clock()
        for name, msg in out.items():
            t = clock()
            self.publishers[name].publish(msg)
            published[f"publish.{name}"] = clock() - t
        t5 = clock()
        last = max(m.arrival_ns for m in sset.messages.values())
        return {"decode": t1 - t0, "sync": t2 - t1 + ms["checks"] / 1e3, "preprocess": ms["preprocess"] / 1e3,
                "postprocess": ms["postprocess"] / 1e3, "encode": sum(encode.values()), "publish": t5 - t4,
                **encode, **published, "forward": ms["forward"] / 1e3, "sync_wait": (sset.emitted_ns - last) / 1e9}


class LiveRunner:
    """`--live`: each set goes to a worker thread the moment its last input arrives (the executor thread hands it
    over, as segment_node's callbacks hand sets to its worker), so the stages read inputs just deserialised rather
    than recorded ones. The first set of each size warms up (and restarts the pipeline for the new size)."""

    def __init__(self, stages: NodeStages, names):
        import queue
        import threading

        self.stages, self.names = stages, tuple(names)
        self.results = {}  # set stamp (ns) -> stage times, or None when the synchronizer did not emit it whole
        self._pending = {}  # stamp -> {modality: (message, arrival ns)}
        self._queue = queue.Queue()
        self._size = None
        self._thread = threading.Thread(target=self._work, name="bench-node-live", daemon=True)
        self._thread.start()

    def add(self, name: str, msg, arrival_ns: int) -> None:
        """An input arrived (executor thread)."""
        from ..sync import stamp_to_ns

        stamp = stamp_to_ns(msg.header.stamp)
        entry = self._pending.setdefault(stamp, {})
        entry[name] = (msg, arrival_ns)
        if len(entry) == len(self.names):
            self._queue.put((stamp, self._pending.pop(stamp)))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            stamp, messages = item
            first = next(iter(messages.values()))[0]
            if (first.width, first.height) != self._size:
                self._size = (first.width, first.height)
                self.stages.restart()
                self.stages.run(messages)  # warm-up
                continue
            self.results[stamp] = self.stages.run(messages)


# ---------------------------------------------------------------------------------------------------------------------
# The benchmark process.


def main(args) -> int:
    if args.role == ROLE_PUBLISHER:
        return _publisher(args)
    from ..errors import ConfigError

    if args.sets < 2 or args.rate <= 0 or any(min(s) < 32 for s in args.sizes):
        raise ConfigError(f"need --sets >= 2, --rate > 0 and sizes >= 32; got {args.sets}, {args.rate}, {args.sizes}")
    return _bench(args)


def _bench(args) -> int:
    import subprocess
    import threading

    from .. import cards
    from ..ros import dds

    load_before = os.getloadavg()[0]  # the caption gives it: on a shared CPU it moves both columns
    transport = dds.configure_transport()
    import rclpy
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from ..ros.spin import SpinThread

    card = cards.load(_card_name(args))
    arrivals = []  # (modality, message, arrival ns)
    collecting = threading.Event()
    collecting.set()
    rclpy.init()
    node = rclpy.create_node("mmseg_bench_node")
    qos = QoSProfile(depth=50, history=qos_profile_sensor_data.history,
                     reliability=qos_profile_sensor_data.reliability, durability=qos_profile_sensor_data.durability)
    live = None

    def arrived(msg, name):
        if collecting.is_set():
            arrivals.append((name, msg, time.time_ns()))
            if live is not None:
                live.add(name, msg, arrivals[-1][2])

    for name in card.modalities:
        node.create_subscription(Image, _topic(f"in/{name}"), lambda m, n=name: arrived(m, n), qos)
    spinner = SpinThread(node)
    peer = None
    try:
        print(f"bench node: card {card.name}, inputs {', '.join(card.modalities)}, sizes {args.sizes}, "
              f"{args.sets} sets each at {args.rate:g}/s; {transport}", file=sys.stderr, flush=True)
        if "labels" not in args.outputs:
            raise ConfigError("bench node: --outputs must include labels (the node always publishes them)")
        stages = NodeStages(node, card.name, args.device, args.precision, args.resolution,  # while the peer starts
                            args.outputs)
        if args.live:
            live = LiveRunner(stages, card.modalities)
        command = [sys.executable, "-m", "mmseg_ros.cli", "bench", "node", "--role", ROLE_PUBLISHER,
                   "--sets", str(args.sets), "--rate", str(args.rate), "--card", card.name,
                   "--timeout", str(args.timeout), "--sizes", *map(size_label, args.sizes)]
        peer = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = read_event(peer, "sent", args.timeout, PUBLISHER)
        time.sleep(0.3)
        collecting.clear()
        if live is not None:
            live.close()
        sets = _complete_sets(arrivals, card.modalities)
        deadline = time.monotonic() + 10
        while min(p.get_subscription_count() for p in stages.publishers.values()) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the peer's readers finish matching a moment after the writers see them
        rows = []
        for size in args.sizes:
            group = [s for s in sets if s["size"] == size]
            if not group:
                raise ConfigError(f"bench node: no complete set of {size_label(size)} arrived ({line})")
            if live is not None:
                timed = [(s, live.results[s["stamp"]]) for s in group[1:] if live.results.get(s["stamp"]) is not None]
            else:
                stages.restart()
                stages.run(group[0]["messages"])  # warm-up (first allocations at this size; the synchronizer's first)
                timed = [(s, t) for s, t in ((s, stages.run(s["messages"])) for s in group[1:]) if t is not None]
            if not timed:
                raise ConfigError(f"bench node: the synchronizer emitted no whole set of {size_label(size)}")
            rows.append(_row(size, len(card.modalities), group, timed, args.sets))
        peer.stdin.write("stop\n")
        peer.stdin.flush()
        outputs = read_event(peer, "outputs", 20, PUBLISHER)
    finally:
        spinner.close()
        if peer is not None and peer.poll() is None:
            try:
                peer.wait(timeout=10)
            except subprocess.TimeoutExpired:
                peer.kill()
    _print_table(rows, card, outputs, stages, (load_before, os.getloadavg()[0]), live=args.live)
    return 0


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
            first = entry["messages"][names[0]][0]
            size = (first.width, first.height)
            sets.append({"size": size, "messages": entry["messages"], "transport": (entry["last"] - stamp) / 1e9,
                         "stamp": stamp})
    return sets


def _row(size, inputs, group, timed, sent) -> list:
    """One table row: transport over every set of the size that arrived, the node's stages over the timed sets (all
    but the warm-up), and their end-to-end latency: transport + the synchronizer's wait + overhead + forward."""
    from ..reporting import median_ms, percentile

    transport = [s["transport"] for s in group]
    timings = [t for _, t in timed]
    overhead = [sum(t[stage] for stage in STAGES) for t in timings]
    latency = [s["transport"] + t["sync_wait"] + o + t["forward"] for (s, t), o in zip(timed, overhead)]
    return [size_label(size), inputs, f"{len(group)}/{sent}", median_ms(transport), 1e3 * percentile(transport, 95),
            *(median_ms([t[stage] for t in timings]) for stage in STAGES),
            *(median_ms([t[f"encode.{kind}"] for t in timings]) for kind in OUTPUTS),
            *(median_ms([t[f"publish.{kind}"] for t in timings]) for kind in OUTPUTS),
            median_ms(overhead), 1e3 * percentile(overhead, 95), median_ms(overhead) / median_ms(transport),
            median_ms([t["forward"] for t in timings]), median_ms([t["sync_wait"] for t in timings]),
            median_ms(latency), median_ms(latency) - median_ms([t["forward"] for t in timings])]


def _print_table(rows, card, outputs, stages, load: tuple, live: bool = False) -> None:
    import torch

    from ..reporting import markdown_table

    header = ["size", "inputs", "sets", "DDS transport p50 ms", "p95", *(f"{s} p50" for s in STAGES),
              *(f"encode {kind} p50" for kind in OUTPUTS), *(f"publish {kind} p50" for kind in OUTPUTS),
              "node overhead p50 ms", "p95", "overhead / transport",
              "forward p50 ms (excluded)", "sync wait p50", "latency p50 ms", "latency - forward"]
    print(markdown_table(header, rows))
    cfg = stages.config
    caption = (
        f"Card {card.name} ({card.num_classes} classes, model input {card.input_size[0]} px), torch threads "
        f"{torch.get_num_threads()}, device {stages.pipeline.segmenter.device}, precision {cfg.precision}, outputs at "
        f"{cfg.output_resolution} resolution, built and published: {', '.join(stages.built)}. Transport: one set of "
        "all inputs from the publisher process (stamp at the start of the set) to the last image's arrival in this "
        "process' callback, shipped SHM profile; it includes rclpy's conversion into Python messages, which the node "
        "process pays too. Node overhead: per-set sum of the pipeline's stages (the Pipeline segment_node drives), "
        + ("run in a worker thread as each set's last input arrived (--live), "
           if live else "run after every set had arrived, ")
        + "medians over the sets but the first (warm-up); the forward is excluded. Encode per output: building its "
        "Image (the colour one with its overlay); their sum is the encode column; publish per output likewise. "
        "Sync wait: the synchronizer's own delay after the set's last input arrived. Latency: anchor stamp to the "
        "outputs published, per set (transport + sync wait + node overhead + forward), as a node with an idle "
        "worker would see it. Outputs "
        f"received by the peer: {outputs.get('received')}. Load average (1 min) {load[0]:.2f} before / "
        f"{load[1]:.2f} after, {os.cpu_count()} CPUs.")
    print("\n" + caption)
