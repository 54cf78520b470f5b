"""The per-set data path of segment_node without ROS: decode and check each input message, synchronize, run the model
on whatever subset arrived, build the outputs, and keep every counter the diagnostics report.

Time is always an argument (int nanoseconds), never read from a clock: the node passes its clock's time, the offline
replay the bag's log time, so a replay is deterministic. The same object serves the node (callbacks call `add`, one
worker calls `poll` and `process`, a timer calls `report`), the offline replay, the node benchmark and the demo.

    pipeline = Pipeline(config, segmenter, on_bad_input=log)
    ready = pipeline.add("rgb", image_msg, now)           # decode + checks + synchronizer -> sets ready now
    ready += pipeline.poll(now)                            # sets whose max_wait ran out
    for sset in ready:
        output = pipeline.process(sset, now)               # SegmentedSet, or None (below min_modalities)
        ...publish or write output...
        pipeline.published(output, now_after)              # latency, rates, last output
    statuses = pipeline.report(now, "segment_node", topics)  # plain diagnostics statuses

Thread safety: `add` from one thread (the callbacks), `poll`/`process`/`published` from one worker, `report` from
any; the synchronizer and the statistics lock themselves, and each counter has a single writer.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from .. import msgs
from ..errors import MessageError, MMSegError
from ..sync import NS_PER_S, SyncConfig, SyncSet, Synchronizer, stamp_to_ns
from . import checks, diagnostics, outputs, painting
from .config import CAMERA, LIDAR, POINTS, RESOLUTION_MODEL, NodeConfig
from .stats import InputHealth, LatencyWindow, LostMessages, RateMeter

BadInputHandler = Callable[[str, str, int], None]  # (input name, reason, now ns)
# A compressed image may declare up to this many times the pixels its input usually delivers (a resolution change is
# then still decoded and judged by the size checks); beyond that it is refused before decoding (a bomb).
MAX_GROWTH = 4


@dataclass(frozen=True)
class InputMessage:
    """An accepted input message as the synchronizer holds it: its header and the decoded image, or for a LiDAR
    cloud its points (projected only when its set is processed, so superseded sets cost nothing)."""

    header: Any
    image: Optional[np.ndarray] = None
    points: Optional[np.ndarray] = None


@dataclass
class SegmentedSet:
    """One processed set: what went in and what came out. `used` None means not known (outputs read back from a
    running node do not say which inputs went in)."""

    index: int
    stamp_ns: int  # the anchor's header stamp: the stamp of the outputs
    arrival_ns: int  # when the anchor message arrived (node clock or bag log time)
    anchor: str
    used: Optional[Tuple[str, ...]]  # modalities the engine received, card order
    missing: Dict[str, str]  # absent modality -> reason (the synchronizer's Missing, or 'rejected')
    timing: Dict[str, float]  # ms per stage: checks, preprocess, forward, postprocess, total (engine), overlay
    header: Any  # the header the outputs carry
    labels: Optional[np.ndarray]
    confidence: Optional[np.ndarray]
    color: Optional[np.ndarray] = None
    images: Optional[Dict[str, np.ndarray]] = None  # the engine's inputs (views of the messages)
    router: Dict[str, Any] = field(default_factory=dict)  # router.<level>.<modality> -> weight (MLE-SAM)
    points: Optional[np.ndarray] = None  # the set's LiDAR cloud painted with the outputs (outputs.points)
    points_header: Any = None  # that cloud's own header (its frame and stamp)
    camera_info: Any = None  # the camera's newest CameraInfo, for ~/camera_info at outputs.resolution=model


@dataclass
class InputCounters:
    """Per input: messages handed to `add`, accepted (given to the synchronizer), rejected by a check, and stamps
    that went backwards (reported, still synchronized)."""

    received: int = 0
    accepted: int = 0
    rejected: int = 0
    backwards: int = 0


class Pipeline:
    def __init__(self, config: NodeConfig, segmenter, *, color: Optional[bool] = None,
                 output_size: Optional[Tuple[int, int]] = None, on_bad_input: Optional[BadInputHandler] = None,
                 camera_info_source: str = "camera_info", keep_all_samples: bool = False, transforms=None,
                 on_warning: Optional[Callable[[str], None]] = None, started_ns: Optional[int] = None,
                 output_buffers: Optional[msgs.MessageBuffers] = None):
        """`color` (default: config.publish_color) builds the overlay; `output_size` (default: the anchor image's,
        or the model's input size with outputs.resolution=model) sizes the outputs; `on_bad_input` hears every
        rejection (the node logs it, the replay may give up); `keep_all_samples` keeps every timing sample instead of
        the last 200 (a replay reports them all); `transforms` (a TransformTree or anything with its `lookup`,
        `lookup_full` and `has_frame`) gives the LiDAR extrinsic when inputs.lidar_extrinsic is not set; `on_warning`
        hears one-time configuration warnings; `started_ns` (activation) is when the wait for the first output
        begins; `output_buffers` (a publisher done with each message when publish returns: the node) receives the
        labels, confidence and overlay, so their messages carry them without a copy (a set's arrays are then
        reused a few sets later)."""
        self.config = config
        self.segmenter = segmenter
        self.color = config.publish_color if color is None else bool(color)
        self.output_size = output_size
        self.on_bad_input = on_bad_input
        self.camera_info_source = camera_info_source
        self.sync = Synchronizer(SyncConfig.from_seconds(
            config.modalities, anchor=config.anchor, fallback=config.fallback, slop=config.slop,
            max_wait=config.max_wait, silence_timeout=config.anchor_timeout, min_modalities=config.min_modalities))
        self.health = InputHealth(config.modalities)
        self.inputs = {name: InputCounters() for name in config.modalities}
        self._order = checks.StampOrder()
        self._sizes = checks.SizeGuard()
        self._points = config.lidar_source == POINTS
        self._camera: Optional[msgs.Camera] = None
        self.transforms = transforms
        self.on_warning = on_warning or logging.getLogger("mmseg_ros").warning
        self._warned: set = set()
        self._skipped_outputs: Tuple[str, ...] = ()
        self._camera_info = None  # the message behind self._camera: scaled for ~/camera_info
        self._palette = outputs.palette_lut(config.card.class_set)
        self.output_buffers = output_buffers
        outputs.labels_overlay(np.zeros((1, 1), np.uint8), np.zeros((1, 1, 3), np.uint8), config.card.class_set,
                               0.5, self._palette)  # compile (or load) the overlay kernel now, not in the first set
        window = None if keep_all_samples else 200
        self.decode_ms, self.wait_ms, self.model_ms, self.latency_ms, self.anchor_wait_ms = (
            LatencyWindow(window) for _ in range(5))
        self.rate_in, self.rate_out = RateMeter(), RateMeter()
        self.processed = 0  # sets segmented
        self.published_count = 0
        self.below_min = 0  # sets given up after the synchronizer: unusable anchor, or too few usable inputs
        self.superseded = 0  # sets replaced before they were processed (the node's latest-wins hand-off)
        self.unpainted = 0  # processed sets without a usable cloud to paint (outputs.points)
        # Clouds projected from TF with and without ego-motion compensation (inputs.fixed_frame)
        self.compensated = self.uncompensated = 0
        self.anchor_counts = {m: 0 for m in config.modalities}  # processed sets per anchor
        self.used_counts = {m: 0 for m in config.modalities}  # processed sets each modality went into
        self._last_used: Tuple[str, ...] = ()
        self._last_output_ns: Optional[int] = None
        self._started_ns = started_ns
        self._router: Dict[str, Any] = {}
        self._camera_frame = ""  # the camera's frame_id (its images or CameraInfo): the frame of every output
        self._publishers: Dict[str, int] = {}
        self._lost: Dict[str, LostMessages] = {name: LostMessages() for name in config.modalities}

    # -- inputs -----------------------------------------------------------------------------------------------------

    def add(self, name: str, msg, now_ns: int) -> List[SyncSet]:
        """One input message at its arrival time: decoded, checked and given to the synchronizer. Returns the sets
        ready now (oldest first); a rejected message is counted, reported to `on_bad_input` and returns []."""
        item = self.decode(name, msg, now_ns)
        if item is None:
            return []
        return self.offer(name, item, now_ns)

    def decode(self, name: str, msg, now_ns: int) -> Optional[InputMessage]:
        """The checks of `add` before the synchronizer: an InputMessage, or None when rejected (counted)."""
        counters = self.inputs[name]
        counters.received += 1
        begin = time.perf_counter()
        try:
            stamp_to_ns(msg.header.stamp)  # a malformed stamp is this message's fault: reject it here
            if name == LIDAR and self._points:
                item = InputMessage(msg.header, points=msgs.pointcloud_to_numpy(msg))
            else:
                image = checks.decode_input(name, msg, self._max_pixels(name))
                wrong_size = self._sizes.check(name, image)
                if wrong_size:
                    raise MessageError(wrong_size)
                item = InputMessage(msg.header, image=image)
                if name == CAMERA:
                    self._camera_frame = str(getattr(msg.header, "frame_id", "") or self._camera_frame)
        except MessageError as exc:
            self.reject(name, str(exc), now_ns)
            return None
        self.decode_ms.add(1e3 * (time.perf_counter() - begin))
        return item

    def _max_pixels(self, name: str) -> Optional[int]:
        """The most pixels a compressed image of `name` may declare: a few times its usual size or the camera's."""
        height, width = self._sizes.usual(name)
        known = height * width
        if self._camera is not None:
            known = max(known, self._camera.height * self._camera.width)
        return MAX_GROWTH * known if known else None

    def offer(self, name: str, item: InputMessage, now_ns: int) -> List[SyncSet]:
        """A decoded message to the synchronizer (stamp order checked: a backwards stamp is reported, still given)."""
        counters = self.inputs[name]
        stamp = stamp_to_ns(item.header.stamp)
        backwards = self._order.check(name, stamp)
        if backwards:
            counters.backwards += 1
            self._bad_input(name, backwards, now_ns)
        try:
            ready = self.sync.add(name, stamp, item, now_ns)
        except MMSegError as exc:
            self.reject(name, str(exc), now_ns)
            return []
        counters.accepted += 1
        return self._ready(ready, now_ns)

    def add_camera_info(self, msg, now_ns: int) -> None:
        """A CameraInfo of the camera LiDAR points are projected into (the newest one is used)."""
        try:
            self._camera = msgs.camera_from_info(msg, self.config.camera_model)
        except MessageError as exc:
            # Reported against the input it serves: the LiDAR's points, else the camera whose outputs it describes.
            owner = LIDAR if self._points and LIDAR in self.inputs else CAMERA
            if owner in self.inputs:
                self._bad_input(owner, f"CameraInfo on {self.camera_info_source}: {exc}", now_ns)
            return
        self._camera_info = msg
        self._camera_frame = str(getattr(msg.header, "frame_id", "") or self._camera_frame)

    def note_publishers(self, name: str, count: int) -> None:
        """How many publishers the input's topic has (the node asks the ROS graph): with publishers present but
        nothing arriving, the diagnostics can say the transport loses the messages."""
        self._publishers[name] = int(count)

    def note_lost(self, name: str, count: int, now_ns: int) -> None:
        """The middleware reported `count` more messages of `name` lost (e.g. a large best-effort image whose
        fragments did not all arrive)."""
        self._lost[name].add(count, now_ns)

    def poll(self, now_ns: int) -> List[SyncSet]:
        """Sets whose max_wait ran out by `now_ns` (the node polls every 10 ms; a replay before each message)."""
        return self._ready(self.sync.poll(now_ns), now_ns)

    def reject(self, name: str, reason: str, now_ns: int) -> None:
        """Count a rejected message of `name` and report it."""
        self.inputs[name].rejected += 1
        self._bad_input(name, reason, now_ns)

    def _bad_input(self, name: str, reason: str, now_ns: int) -> None:
        self.health.record(name, reason, now_ns)
        if self.on_bad_input is not None:
            self.on_bad_input(name, reason, now_ns)

    def _ready(self, ready: List[SyncSet], now_ns: int) -> List[SyncSet]:
        for _ in ready:
            self.rate_in.tick(now_ns)
        return ready

    # -- sets -------------------------------------------------------------------------------------------------------

    def process(self, sset: SyncSet, now_ns: int, color: Optional[bool] = None) -> Optional[SegmentedSet]:
        """Segment one set: the anchor first (it sets the size), the other inputs checked against it, at least
        min_modalities usable, then the engine and the overlay (`color`, default: the pipeline's setting; the node
        skips it while ~/color has no subscriber). None when the set is given up (counted)."""
        cfg = self.config
        begin = time.perf_counter()
        images: Dict[str, np.ndarray] = {}
        missing = {name: reason.value for name, reason in sset.missing.items()}
        anchor_size = None
        cloud = None  # (points message, projection) of the set's LiDAR cloud when it is painted
        for name in (sset.anchor, *(n for n in sset.messages if n != sset.anchor)):
            item: InputMessage = sset.messages[name].payload
            projection = None
            try:
                image, projection = ((item.image, None) if item.image is not None
                                     else self._project(item, sset.stamp_ns))
                if anchor_size is None:
                    anchor_size = checks.size_of(image)
                elif not cfg.allow_size_mismatch:
                    reason = checks.size_mismatch(name, image, sset.anchor, anchor_size)
                    if reason:
                        raise MessageError(reason)
            except MessageError as exc:
                self.reject(name, str(exc), now_ns)
                if anchor_size is None:  # the anchor itself is unusable: the set has no size to segment at
                    self.below_min += 1
                    return None
                missing[name] = "rejected"
                continue
            images[name] = image
            if projection is not None:
                cloud = (item, projection)
        if len(images) < cfg.min_modalities:
            self.below_min += 1
            return None
        anchor = sset.messages[sset.anchor]
        # The wait the node adds: from the set's last input to its processing (the synchronizer settling, the hand-off
        # to the worker). The inputs' own spread (a LiDAR scanning 25 ms after the camera) is the sensors' timing.
        self.wait_ms.add((now_ns - max(m.arrival_ns for m in sset.messages.values())) / 1e6)
        self.anchor_wait_ms.add((now_ns - anchor.arrival_ns) / 1e6)  # ... and including that spread
        checked = time.perf_counter()
        size = self.output_size or (cfg.card.input_size if cfg.output_resolution == RESOLUTION_MODEL else anchor_size)
        buffers = self.output_buffers
        into = None if buffers is None else (buffers.take("labels", size, self.segmenter.label_dtype),
                                             buffers.take("confidence", size, np.float32))
        result = self.segmenter.segment(images, output_size=size, out=into)
        segmented = time.perf_counter()
        overlay_wanted = self.color if color is None else color
        color = None
        if overlay_wanted:
            camera = images.get(CAMERA)
            if cfg.output_resolution == RESOLUTION_MODEL:  # the camera at the outputs' size, as the model saw it
                camera = result.resized.get(CAMERA, camera)
                camera = outputs.resize_for_overlay(camera, result.labels.shape[:2])  # output_size overridden
            color = outputs.labels_overlay(result.labels, camera, cfg.card.class_set, cfg.color_alpha, self._palette,
                                           None if buffers is None else buffers.take("color", (*size, 3), np.uint8))
        overlaid = time.perf_counter()
        timing = {"checks": 1e3 * (checked - begin), **result.timing, "overlay": 1e3 * (overlaid - segmented)}
        painted = self._paint(cloud, result, now_ns) if cfg.publish_points else None
        if painted is not None:
            timing["paint"] = 1e3 * (time.perf_counter() - overlaid)
        output = SegmentedSet(
            index=self.processed, stamp_ns=sset.stamp_ns, arrival_ns=anchor.arrival_ns, anchor=sset.anchor,
            used=tuple(result.modalities), missing=missing, timing=timing, header=self._output_header(sset),
            labels=result.labels, confidence=result.confidence, color=color, images=images,
            router=outputs.router_summary(result.router_weights), points=painted,
            points_header=cloud[0].header if painted is not None else None, camera_info=self._camera_info)
        self.processed += 1
        self.anchor_counts[output.anchor] += 1
        for name in output.used:
            self.used_counts[name] += 1
        self.model_ms.add(result.timing["total"])
        return output

    def published(self, output: SegmentedSet, now_ns: int, skipped: Tuple[str, ...] = ()) -> None:
        """`output` went out at `now_ns`: rates, anchor-stamp-to-publish latency, what the last output used, which
        outputs were not built for want of a subscriber (`skipped`)."""
        self._skipped_outputs = tuple(skipped)
        self.published_count += 1
        self.rate_out.tick(now_ns)
        self.latency_ms.add((now_ns - output.stamp_ns) / 1e6)
        self._last_used, self._last_output_ns, self._router = tuple(output.used or ()), now_ns, output.router

    def _output_header(self, sset: SyncSet):
        """The anchor's stamp with the camera's frame: output pixels are on the camera grid whichever input anchors
        the set (a LiDAR cloud's frame would be wrong). outputs.frame_id overrides; the anchor's own frame is the
        last resort (nothing from the camera seen yet)."""
        header = sset.messages[sset.anchor].payload.header
        frame = self.config.output_frame_id or (header.frame_id if sset.anchor == CAMERA else self._camera_frame)
        if not frame or frame == header.frame_id:
            return header
        return msgs.Header(stamp=header.stamp, frame_id=frame)

    def _project(self, item: InputMessage, camera_stamp_ns: int):
        """(LiDAR image, projection): the projection (per-point pixels) only when the cloud is to be painted. The
        same transform serves both, so the points are painted through the pixels the model saw them at."""
        extrinsic = self._extrinsic(item.header, camera_stamp_ns) if self._camera is not None else None
        if not self.config.publish_points:
            return checks.lidar_image(item.points, self._camera, extrinsic, self.camera_info_source), None
        projection = checks.lidar_projection(item.points, self._camera, extrinsic, self.camera_info_source,
                                             self.config.points_occlusion_deg)
        return projection.image(), projection

    def _paint(self, cloud, result, now_ns: int) -> Optional[np.ndarray]:
        """The set's cloud (not a newer one: labels and geometry of the same instant) painted with its outputs;
        None, counted, when the set had no usable cloud (LiDAR dropped or rejected)."""
        if cloud is None:
            self.unpainted += 1
            return None
        item, projection = cloud
        try:
            return painting.paint(item.points, projection, result.labels, result.confidence,
                                  self.config.card.num_classes, self.config.points_keep_unlabeled)
        except MessageError as exc:
            self.unpainted += 1
            self.reject(LIDAR, str(exc), now_ns)
            return None

    def _extrinsic(self, header, camera_stamp_ns: int) -> np.ndarray:
        """Camera optical frame <- cloud frame: the parameter when set, else from TF. From TF, through
        inputs.fixed_frame when TF has it: the camera as it was at `camera_stamp_ns` (the outputs' stamp) <- the
        cloud as it was at its own stamp, so the ego's motion between the two is compensated (the LiDAR scans after
        the camera); without that frame, the static transform at the cloud's stamp (warned once). Never a silent
        identity: no tree, an unknown frame or a missing transform is bad LiDAR input."""
        cloud, camera = str(header.frame_id).lstrip("/"), self._camera_frame.lstrip("/")
        fixed = self.config.lidar_extrinsic
        if fixed is not None:
            differ = cloud and camera and cloud != camera
            if differ and np.array_equal(fixed, np.eye(4)) and "identity" not in self._warned:
                self._warned.add("identity")
                self.on_warning(f"inputs.lidar_extrinsic is the identity, but the clouds are in frame {cloud!r} and "
                                f"the camera in {camera!r}: really no rotation between them? (leave it empty for TF)")
            return np.asarray(fixed)
        if cloud == camera and cloud and self.transforms is None:
            return np.eye(4)  # the cloud is already in the camera's frame and no TF tells the ego's motion
        if not cloud or not camera:
            raise MessageError(f"lidar: inputs.lidar_extrinsic is not set and the {'cloud' if not cloud else 'camera'}"
                               " has no frame_id to look a transform up with")
        if self.transforms is None:
            raise MessageError(f"lidar: inputs.lidar_extrinsic is not set and no TF is available to look up {camera} "
                               f"<- {cloud}; set the parameter (4x4) or provide TF")
        cloud_ns, fixed_frame = stamp_to_ns(header.stamp), self.config.fixed_frame
        has_fixed_frame = bool(fixed_frame) and self.transforms.has_frame(fixed_frame)
        if has_fixed_frame:
            try:
                matrix = self.transforms.lookup_full(camera, camera_stamp_ns, cloud, cloud_ns, fixed_frame)
                self.compensated += 1
                return matrix
            except MMSegError as exc:
                # Odometry that does not reach a stamp (late, or a gap) costs this cloud its compensation, not the
                # LiDAR input: the static transform below, counted as uncompensated and said once.
                if "odometry gap" not in self._warned:
                    self._warned.add("odometry gap")
                    self.on_warning(f"a LiDAR cloud could not be compensated for the ego's motion through "
                                    f"{fixed_frame!r} ({exc}); such clouds are projected with the static transform "
                                    f"{camera} <- {cloud} (diagnostics: lidar_clouds_uncompensated)")
        try:
            if fixed_frame and not has_fixed_frame and "no fixed frame" not in self._warned:
                self._warned.add("no fixed frame")
                self.on_warning(f"TF has no frame {fixed_frame!r} (inputs.fixed_frame): LiDAR clouds are projected "
                                f"with the static transform {camera} <- {cloud} at the cloud's stamp, not compensated "
                                "for the ego's motion between the cloud's and the camera's stamps")
            matrix = np.eye(4) if cloud == camera else self.transforms.lookup(camera, cloud, cloud_ns)
            self.uncompensated += 1
            return matrix
        except MMSegError as exc:
            raise MessageError(f"lidar: no transform {camera} <- {cloud}: {exc}") from None

    # -- diagnostics ------------------------------------------------------------------------------------------------

    def report(self, now_ns: int, node_name: str, topics: Mapping[str, str],
               hardware_id: str = "") -> List[diagnostics.Status]:
        """The node's status, then one per input, as plain data (`diagnostics.statuses`). `node_name` names the
        statuses (diagnostic_updater's `<node name>: <task>`), `hardware_id` tells instances apart."""
        cfg = self.config
        status, stats = self.sync.status(now_ns), self.sync.stats()
        inputs = []
        for name in cfg.modalities:
            errors = self.health.get(name)
            inputs.append(diagnostics.InputReport(
                name=name, topic=topics.get(name, ""), status=status[name], counts=stats.inputs[name],
                recent_error=self.health.recent(name, now_ns, cfg.error_hold), bad_messages=errors.count,
                last_error=errors.last_error, used_in_last_output=name in self._last_used,
                publishers=self._publishers.get(name), lost_recent=self._lost[name].recent(now_ns, cfg.error_hold),
                lost_total=self._lost[name].total))
        last = self._last_output_ns if self._last_output_ns is not None else self._started_ns
        report = diagnostics.NodeReport(
            card=cfg.card.name, device=str(self.segmenter.device), anchor=self.sync.anchor,
            rate_in_hz=self.rate_in.rate(now_ns), rate_out_hz=self.rate_out.rate(now_ns),
            published=self.published_count, sets_emitted=stats.sets_emitted, dropped_superseded=self.superseded,
            dropped_below_min=stats.sets_below_min + self.below_min, latency_ms=self.latency_ms.percentiles(),
            wait_ms=self.wait_ms.percentiles(), anchor_wait_ms=self.anchor_wait_ms.percentiles(),
            model_ms=self.model_ms.percentiles(),
            modalities_used=self._last_used, last_output_age_s=None if last is None else (now_ns - last) / NS_PER_S,
            output_timeout_s=cfg.output_timeout, hardware_id=hardware_id,
            extra={**self._router, **({"unpainted_sets": self.unpainted} if cfg.publish_points else {}),
                   **({"outputs_without_subscribers": ", ".join(self._skipped_outputs) or "none"}
                      if cfg.only_when_subscribed else {}),
                   **({"lidar_clouds_motion_compensated": self.compensated,
                       "lidar_clouds_uncompensated": self.uncompensated} if self.transforms is not None else {})})
        return diagnostics.statuses(node_name, report, inputs, now_ns, cfg.diagnostics_period)
