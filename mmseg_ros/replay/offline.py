"""The node's data path driven by bag time: same checks, same synchronizer, same engine, every set processed.

Each input message is decoded and checked with node_core's helpers (encoding, size, stamp order), exactly as
segment_node's callbacks do, and given to a `Synchronizer` built from the node's parameter table (NodeConfig), with
the record's log time as arrival time and its header stamp as stamp. Before every message the synchronizer is polled
at that message's log time, which is what the node's 10 ms worker poll does at infinite resolution; after the last
message it is polled once more max_wait later, so the sets still waiting are emitted as a running node would. Each
set is handled as the node's worker handles it (anchor first, size checks, min_modalities, engine, outputs on the
anchor's header), but nothing is skipped: offline, the model is never "still busy". The same bag therefore always
gives the same outputs.

`--drop MOD@T0-T1` removes MOD's messages whose log time lies in [T0, T1) seconds after the bag's first record, before
decoding: to the synchronizer the sensor simply went quiet.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from .. import modalities, msgs, node_core
from ..errors import ConfigError, DataError, MessageError
from ..node_config import CAMERA, LIDAR, POINTS, NodeConfig
from ..sync import NS_PER_S, SyncConfig, SyncSet, Synchronizer, stamp_to_ns

# An input whose first messages are all rejected is a wiring problem (wrong topic, unsupported encoding), not a
# few bad frames: stop with its reason instead of replaying the whole bag without it.
REJECTS_BEFORE_FAILING = 3
LABEL_ENCODINGS = ("mono8", "8UC1", "mono16", "16UC1")


@dataclass(frozen=True)
class Drop:
    """A simulated sensor outage: `modality`'s messages logged in [start_s, end_s) after the bag start are removed."""

    modality: str
    start_s: float
    end_s: float

    @property
    def label(self) -> str:
        return f"{self.modality}@{self.start_s:g}-{self.end_s:g}"

    def covers(self, time_s: float) -> bool:
        return self.start_s <= time_s < self.end_s


def parse_drop(text: str) -> Drop:
    """'depth@2-4' -> Drop('depth', 2.0, 4.0); the modality may be any registry name or alias."""
    try:
        name, window = text.split("@")
        start, end = (float(v) for v in window.split("-"))
    except ValueError:
        raise ConfigError(f"--drop expects MOD@T0-T1 in seconds from the bag start (e.g. depth@2-4), got {text!r}") \
            from None
    if not (0 <= start < end):
        raise ConfigError(f"--drop {text!r}: need 0 <= T0 < T1")
    return Drop(modalities.get(name).name, start, end)


@dataclass
class Frame:
    """One processed set: what went in and what came out."""

    index: int
    stamp_ns: int  # the anchor's header stamp: the stamp of the outputs
    log_ns: int  # the anchor's log (arrival) time
    time_s: float  # log_ns - bag start, seconds
    anchor: str
    used: Optional[Tuple[str, ...]]  # modalities the engine received (card order); None: unknown (live outputs)
    missing: Dict[str, str]  # absent modality -> reason (sync's Missing, or 'rejected')
    timing: Dict[str, float]  # ms per stage
    header: object
    labels: np.ndarray
    confidence: np.ndarray
    color: Optional[np.ndarray] = None
    images: Optional[Dict[str, np.ndarray]] = None  # the engine's inputs (views of the messages)


@dataclass
class Counters:
    messages: Dict[str, int] = field(default_factory=dict)  # read per input
    dropped: Dict[str, int] = field(default_factory=dict)  # removed by --drop
    rejected: Dict[str, int] = field(default_factory=dict)  # failed the node's checks
    accepted: Dict[str, int] = field(default_factory=dict)
    backwards: Dict[str, int] = field(default_factory=dict)  # stamps going back (still synchronized)
    below_min: int = 0
    decode_ms: List[float] = field(default_factory=list)
    wait_ms: List[float] = field(default_factory=list)  # anchor arrival -> set emitted, bag time


class OfflineReplay:
    """Feed input messages in log-time order with `add`, then `finish`; every processed set goes to `on_frame`."""

    def __init__(self, segmenter, config: NodeConfig, start_ns: int, drops: Iterable[Drop] = (),
                 output_size: Optional[Tuple[int, int]] = None, color: bool = True,
                 on_frame: Optional[Callable[[Frame], None]] = None):
        self.segmenter = segmenter
        self.config = config
        self.start_ns = int(start_ns)
        self.drops = tuple(drops)
        unknown = [d.label for d in self.drops if d.modality not in config.modalities]
        if unknown:
            raise ConfigError(f"--drop {', '.join(unknown)}: not an input of this replay {list(config.modalities)}")
        self.output_size = output_size
        self.color = color
        self.on_frame = on_frame or (lambda frame: None)
        self.sync = Synchronizer(SyncConfig.from_seconds(
            config.modalities, anchor=config.anchor, fallback=config.fallback, slop=config.slop,
            max_wait=config.max_wait, silence_timeout=config.anchor_timeout, min_modalities=config.min_modalities))
        self.health = node_core.InputHealth(config.modalities)
        self.order = node_core.StampOrder()
        self.sizes = node_core.SizeGuard()
        self.counters = Counters(**{key: {m: 0 for m in config.modalities}
                                    for key in ("messages", "dropped", "rejected", "accepted", "backwards")})
        self._points = config.lidar_source == POINTS
        self._camera = None  # msgs.Camera from the newest CameraInfo
        self.frames = 0
        self.anchor_counts = {m: 0 for m in config.modalities}  # processed sets per anchor
        self.used_counts = {m: 0 for m in config.modalities}  # processed sets each modality went into
        self._last_ns: Optional[int] = None

    def seconds(self, log_ns: int) -> float:
        return (log_ns - self.start_ns) / NS_PER_S

    # -- input ----------------------------------------------------------------------------------------------------

    def add(self, modality: str, log_ns: int, msg) -> None:
        """One input message (what the node's image callback gets), at its log time."""
        self._process_all(self.sync.poll(log_ns))
        self._last_ns = log_ns
        c = self.counters
        c.messages[modality] += 1
        if any(d.modality == modality and d.covers(self.seconds(log_ns)) for d in self.drops):
            c.dropped[modality] += 1
            return
        begin = time.perf_counter()
        image = points = None
        try:
            stamp = stamp_to_ns(msg.header.stamp)
            if modality == LIDAR and self._points:
                points = msgs.pointcloud_to_numpy(msg)  # checked now, projected if its set is processed
            else:
                image = node_core.decode_input(modality, msg)
                wrong_size = self.sizes.check(modality, image)
                if wrong_size:
                    raise MessageError(wrong_size)
        except MessageError as exc:
            self._reject(modality, str(exc), log_ns)
            return
        c.decode_ms.append(1e3 * (time.perf_counter() - begin))
        c.accepted[modality] += 1
        if self.order.check(modality, stamp):
            c.backwards[modality] += 1
        self._process_all(self.sync.add(modality, stamp, (msg.header, image, points), log_ns))

    def camera_info(self, log_ns: int, msg) -> None:
        """A CameraInfo of the camera the LiDAR points are projected into (the newest one is used)."""
        try:
            self._camera = msgs.camera_from_info(msg)
        except MessageError as exc:
            self._reject(LIDAR, f"CameraInfo: {exc}", log_ns)

    def finish(self) -> None:
        """The bag ended: let the sets still waiting run out their max_wait, as a running node would."""
        if self._last_ns is not None:
            self._process_all(self.sync.poll(self._last_ns + self.sync.config.max_wait_ns + 1))

    def _project(self, points: np.ndarray) -> np.ndarray:
        return node_core.lidar_image(points, self._camera, self.config.lidar_extrinsic, "the bag's camera_info")

    def _reject(self, modality: str, reason: str, log_ns: int) -> None:
        self.counters.rejected[modality] += 1
        self.health.record(modality, reason, log_ns)
        if self.counters.accepted[modality] == 0 and self.counters.rejected[modality] >= REJECTS_BEFORE_FAILING:
            raise DataError(f"input {modality}: its first {self.counters.rejected[modality]} messages were all "
                            f"rejected; last reason: {reason}")

    # -- sets -----------------------------------------------------------------------------------------------------

    def _process_all(self, ready: List[SyncSet]) -> None:
        for sset in ready:
            self._process(sset)

    def _process(self, sset: SyncSet) -> None:
        """What the node's worker does with a set (node.SegmentPipeline._process), minus the publishing."""
        cfg = self.config
        images: Dict[str, np.ndarray] = {}
        missing = {name: reason.value for name, reason in sset.missing.items()}
        anchor_size = None
        for name in (sset.anchor, *(n for n in sset.messages if n != sset.anchor)):  # anchor first: it sets the size
            header, image, points = sset.messages[name].payload
            if image is None:
                try:
                    image = self._project(points)
                except MessageError as exc:
                    self._reject(name, str(exc), sset.emitted_ns)
                    if anchor_size is None:  # the anchor itself is unusable: the node gives the set up
                        self.counters.below_min += 1
                        return
                    missing[name] = "rejected"
                    continue
            if anchor_size is None:
                anchor_size = node_core.size_of(image)
            elif not cfg.allow_size_mismatch:
                reason = node_core.size_mismatch(name, image, sset.anchor, anchor_size)
                if reason:
                    self._reject(name, reason, sset.emitted_ns)
                    missing[name] = "rejected"
                    continue
            images[name] = image
        if len(images) < cfg.min_modalities:
            self.counters.below_min += 1
            return
        anchor = sset.messages[sset.anchor]
        self.counters.wait_ms.append((sset.emitted_ns - anchor.arrival_ns) / 1e6)
        result = self.segmenter.segment(images, output_size=self.output_size or anchor_size)
        color = None
        if self.color:
            color = node_core.overlay(cfg.card.class_set.colorize(result.labels), images.get(CAMERA), cfg.color_alpha)
        frame = Frame(
            index=self.frames, stamp_ns=sset.stamp_ns, log_ns=anchor.arrival_ns, time_s=self.seconds(anchor.arrival_ns),
            anchor=sset.anchor, used=tuple(result.modalities), missing=missing, timing=dict(result.timing),
            header=anchor.payload[0], labels=result.labels, confidence=result.confidence, color=color, images=images)
        self.frames += 1
        self.anchor_counts[frame.anchor] += 1
        for name in frame.used:
            self.used_counts[name] += 1
        self.on_frame(frame)


def decode_labels(msg) -> np.ndarray:
    """A ground-truth label Image (mono8 / mono16 class ids, 255 or 65535 = ignore) -> (H, W) array."""
    encoding = getattr(msg, "encoding", None)
    if encoding not in LABEL_ENCODINGS:
        raise DataError(f"ground-truth labels must be one of {', '.join(LABEL_ENCODINGS)}, got {encoding!r}")
    try:
        return msgs.image_to_numpy(msg)
    except MessageError as exc:
        raise DataError(f"ground-truth label image: {exc}") from None
