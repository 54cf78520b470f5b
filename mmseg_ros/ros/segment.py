"""The ROS side of segment_node: parameters -> NodeConfig, subscriptions -> `Pipeline.add`, one worker thread ->
`Pipeline.poll` / `process` -> publish, a timer -> DiagnosticArray. All the logic is in `mmseg_ros.pipeline`.

Callbacks only decode and hand over (through the pipeline); the sets the synchronizer emits go to a one-item mailbox
(latest wins: a set replaced before the worker took it is counted as dropped); the worker takes the newest set, runs
the pipeline and publishes, and polls the synchronizer every 10 ms so sets whose inputs stay away are emitted after
max_wait. Arrival times come from the node clock, so use_sim_time works.
"""
from __future__ import annotations

import json
import threading
import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .. import msgs
from ..errors import ConfigError, MMSegError
from ..pipeline import Pipeline, config as node_config, outputs
from ..pipeline.config import LIDAR, POINTS, NodeConfig
from ..pipeline.handoff import LatestSlot
from ..sync import SyncSet
from . import diagnostics, parameters

POLL_PERIOD_S = 0.01  # how often the worker lets the synchronizer emit sets whose max_wait ran out
JOIN_TIMEOUT_S = 1.0  # a forward pass still running at shutdown is abandoned after this (exit within 2 s)
LOG_THROTTLE_S = 5.0  # at most one bad-input log line per input in this time


class SegmentNodeCore:
    """Everything the node does, in lifecycle steps: declare (construction), configure, activate, deactivate,
    cleanup, stop. Used by the plain node (configure + activate at start) and the lifecycle node alike."""

    def __init__(self, node):
        self.node = node
        self.log = node.get_logger()
        self.config: Optional[NodeConfig] = None
        self.segmenter = None
        self.pipeline: Optional[Pipeline] = None
        self._active = False
        self._subscriptions: List[Any] = []
        self._publishers: Dict[str, Any] = {}
        self._topics: Dict[str, str] = {}
        self._timer = None
        self._worker: Optional[threading.Thread] = None
        self._slot: Optional[LatestSlot[SyncSet]] = None
        self._stop = threading.Event()
        self._input_loggers: Dict[str, Any] = {}
        parameters.declare(node)
        parameters.refuse_changes_once_configured(node, lambda: self.config is not None)

    # -- lifecycle --------------------------------------------------------------------------------------------------

    def configure(self) -> None:
        config = NodeConfig.from_values(parameters.read(self.node))  # before the heavy imports: fail fast
        import torch

        from ..engine import Segmenter

        device, note = node_config.choose_device(config.device, config.allow_cpu_fallback, torch.cuda.is_available())
        if note:
            self.log.warning(note)
        if config.cpu_threads and device == "cpu":
            torch.set_num_threads(config.cpu_threads)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            segmenter = Segmenter(config.card, checkpoint=config.checkpoint, device=device,
                                  precision=config.precision)
            height, width = config.card.input_size
            segmenter.segment({m: np.zeros((height, width), np.uint8) for m in config.modalities})  # warm-up
        for warning in caught:
            self.log.warning(str(warning.message))
        parameters.declare_class_names(self.node, segmenter.class_names)
        self.config, self.segmenter = config, segmenter
        self.log.info(f"model {config.card.name} on {segmenter.device} ({config.precision}), inputs "
                      f"{', '.join(config.modalities)}, anchor {config.anchor}, fallback {list(config.fallback)}")

    def activate(self) -> None:
        if self.config is None:
            raise ConfigError("activate before configure: no model loaded")
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
        from std_msgs.msg import String

        from .tf_lookup import tf_lookup

        cfg = self.config
        points = LIDAR in cfg.modalities and cfg.lidar_source == POINTS
        transforms = tf_lookup(self.node) if points and cfg.lidar_extrinsic is None else None
        if points and cfg.lidar_extrinsic is None and transforms is None:
            self.log.warning("inputs.lidar_extrinsic is not set and tf2_ros is not importable: clouds outside the "
                             "camera's frame cannot be projected (set the parameter)")
        self.pipeline = Pipeline(cfg, self.segmenter, on_bad_input=self._log_bad_input,
                                 camera_info_source=node_config.camera_info_topic(), transforms=transforms,
                                 on_warning=self.log.warning, started_ns=self._now(),
                                 output_buffers=msgs.MessageBuffers())  # _process publishes before the next set
        self._slot = LatestSlot()
        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=cfg.output_depth,
                             reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        def pub(kind, topic, qos):
            return self.node.create_publisher(kind, topic, qos, qos_overriding_options=_overridable())

        self._publishers = {"labels": pub(Image, "~/labels", out_qos)}
        if cfg.publish_confidence:
            self._publishers["confidence"] = pub(Image, "~/confidence", out_qos)
        if cfg.publish_color:
            self._publishers["color"] = pub(Image, "~/color", out_qos)
        if cfg.publish_points:
            self._publishers["points"] = pub(PointCloud2, "~/points", out_qos)
        model_resolution = cfg.output_resolution == node_config.RESOLUTION_MODEL
        if model_resolution:  # the camera's CameraInfo scaled to the outputs, beside them
            self._publishers["camera_info"] = pub(CameraInfo, "~/camera_info", out_qos)
        self._publishers["class_names"] = pub(String, "~/class_names", latched)
        self._publishers["diagnostics"] = pub(DiagnosticArray, "/diagnostics", 10)
        self._publishers["class_names"].publish(String(data=self._class_names_json()))

        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="segment_worker", daemon=True)
        self._worker.start()

        in_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=cfg.queue_depth,
                            reliability=(ReliabilityPolicy.BEST_EFFORT if cfg.qos == "sensor_data"
                                         else ReliabilityPolicy.RELIABLE),
                            durability=DurabilityPolicy.VOLATILE)
        topics = node_config.input_topics(cfg.modalities, cfg.lidar_source)
        for name, topic in topics.items():
            kind = PointCloud2 if name == LIDAR and cfg.lidar_source == POINTS else Image
            if kind is Image and cfg.transports[name] != node_config.RAW:
                # As image_transport does: the base topic is resolved (remaps apply to it), then the transport
                # appended, so `-r rgb/image:=/camera/image_raw` also moves rgb/image/compressed.
                kind, topic = CompressedImage, f"{self.node.resolve_topic_name(topic)}/{cfg.transports[name]}"
                topics[name] = topic  # (diagnostics name the topic subscribed to)
            self._subscriptions.append(self._subscribe(
                kind, topic, lambda msg, name=name: self._on_input(name, msg), in_qos,
                lambda info, name=name: self.pipeline.note_lost(name, info.total_count_change, self._now())))
        if (LIDAR in topics and cfg.lidar_source == POINTS) or model_resolution:
            self._subscriptions.append(self._subscribe(
                CameraInfo, node_config.camera_info_topic(), self._on_camera_info, in_qos))
        self._topics = {name: self.node.resolve_topic_name(topic) for name, topic in topics.items()}
        self._timer = self.node.create_timer(cfg.diagnostics_period, self._publish_diagnostics)
        self._active = True
        self.log.info("active: subscribed to " + ", ".join(self._topics.values()))

    def deactivate(self) -> None:
        self._active = False
        for sub in self._subscriptions:
            self.node.destroy_subscription(sub)
        self._subscriptions = []
        if self._timer is not None:
            self.node.destroy_timer(self._timer)
            self._timer = None
        self._join_worker()
        for publisher in self._publishers.values():
            self.node.destroy_publisher(publisher)
        self._publishers = {}

    def cleanup(self) -> None:
        if self._active:
            self.deactivate()
        self.config = self.segmenter = None

    def stop(self) -> None:
        """Shutdown path: stop the worker (bounded wait) so nothing publishes while the node is destroyed."""
        self._active = False
        self._join_worker()

    def _subscribe(self, kind, topic, callback, qos, on_lost=None):
        """A subscription with overridable QoS (qos_overrides.<topic>.subscription.*) that reports messages the
        middleware lost (large images without the shared-memory profile on the publisher's side)."""
        options = dict(qos_overriding_options=_overridable())
        events = _lost_message_events(on_lost)
        if events is not None:
            try:
                return self.node.create_subscription(kind, topic, callback, qos, event_callbacks=events, **options)
            except _unsupported_event_errors() as exc:  # an RMW without the event: no loss reports, say so once
                self.log.warning(f"{topic}: the middleware does not report lost messages ({exc})")
        return self.node.create_subscription(kind, topic, callback, qos, **options)

    def _class_names_json(self) -> str:
        card = self.config.card
        encoding, unlabeled = msgs.label_encoding(card.num_classes)
        return json.dumps({"names": list(card.class_names), "colors": [list(c) for c in card.class_set.colors],
                           "unlabeled": unlabeled, "encoding": encoding, "card": card.name})

    # -- inputs (executor thread) -----------------------------------------------------------------------------------

    def _now(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def _on_input(self, name: str, msg) -> None:
        self._slot_all(self.pipeline.add(name, msg, self._now()))

    def _on_camera_info(self, msg) -> None:
        self.pipeline.add_camera_info(msg, self._now())

    def _slot_all(self, ready: List[SyncSet]) -> None:
        for sset in ready:
            if self._slot.put(sset) is not None:
                self.pipeline.superseded += 1

    def _log_bad_input(self, name: str, reason: str, now_ns: int) -> None:
        logger = self._input_loggers.get(name)
        if logger is None:
            logger = self._input_loggers[name] = self.log.get_child(name)
        logger.warning(f"bad input: {reason}", throttle_duration_sec=LOG_THROTTLE_S)

    # -- worker -----------------------------------------------------------------------------------------------------

    def _join_worker(self) -> None:
        self._stop.set()
        if self._slot is not None:
            self._slot.close()
        worker, self._worker = self._worker, None
        if worker is not None and worker is not threading.current_thread():
            worker.join(JOIN_TIMEOUT_S)
            if worker.is_alive():
                self.log.warning(f"the worker is still inside the model after {JOIN_TIMEOUT_S} s; leaving it")

    def _work(self) -> None:
        slot, pipeline = self._slot, self.pipeline
        while not self._stop.is_set():
            sset = slot.take(POLL_PERIOD_S)
            try:
                if sset is None:
                    self._slot_all(pipeline.poll(self._now()))
                else:
                    self._process(sset)
            except MMSegError as exc:
                self.log.warning(f"set skipped: {exc}", throttle_duration_sec=LOG_THROTTLE_S)
            except Exception as exc:  # the node must keep running; the reason goes to the log
                if self._stop.is_set() or not self.node.context.ok():  # shutting down (e.g. SIGINT): just end
                    return
                self.log.error(f"set failed: {type(exc).__name__}: {exc}", throttle_duration_sec=LOG_THROTTLE_S)

    def _process(self, sset: SyncSet) -> None:
        unwatched = self._unwatched_outputs()
        output = self.pipeline.process(sset, self._now(), color=self.config.publish_color and "color" not in unwatched)
        if output is None or self._stop.is_set():
            return
        for kind in outputs.kinds(output, self.config):
            if kind not in unwatched:
                self._publishers[kind].publish(outputs.to_message(kind, output, self.config))
        self.pipeline.published(output, self._now(), skipped=unwatched)

    def _unwatched_outputs(self) -> Tuple[str, ...]:
        """The optional image outputs nobody subscribes to now (outputs.only_when_subscribed): not built. ~/labels,
        the node's heartbeat, is always published."""
        if not self.config.only_when_subscribed:
            return ()
        return tuple(kind for kind in outputs.OPTIONAL_IMAGE_OUTPUTS
                     if kind in self._publishers and self._publishers[kind].get_subscription_count() == 0)

    # -- diagnostics (executor thread) ------------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        publisher = self._publishers.get("diagnostics")
        if publisher is None:
            return
        for name, topic in self._topics.items():
            self.pipeline.note_publishers(name, self.node.count_publishers(topic))
        statuses = self.pipeline.report(self._now(), self.node.get_name(), self._topics,
                                        hardware_id=self.node.get_fully_qualified_name())
        publisher.publish(diagnostics.to_array(statuses, self.node.get_clock().now().to_msg()))


def _overridable():
    """QoS overridable by parameters (rclpy's qos_overrides.<topic>.<publisher|subscription>.<policy>)."""
    from rclpy.qos_overriding_options import QoSOverridingOptions

    return QoSOverridingOptions.with_default_policies()


def _lost_message_events(on_lost):
    """SubscriptionEventCallbacks reporting lost messages to `on_lost`, or None (no callback, or an rclpy without
    the event). The class moved from rclpy.qos_event (Humble) to rclpy.event_handler (Iron and later)."""
    if on_lost is None:
        return None
    try:
        from rclpy.event_handler import SubscriptionEventCallbacks
    except ImportError:  # pragma: no cover - Humble
        from rclpy.qos_event import SubscriptionEventCallbacks
    return SubscriptionEventCallbacks(message_lost=on_lost)


def _unsupported_event_errors():
    """The error rclpy raises for an event the RMW does not support (its home moved between distros)."""
    try:
        from rclpy._rclpy_pybind11 import UnsupportedEventTypeError
    except ImportError:  # pragma: no cover - other rclpy builds
        from rclpy.impl.implementation_singleton import rclpy_implementation

        UnsupportedEventTypeError = rclpy_implementation.UnsupportedEventTypeError
    return (UnsupportedEventTypeError,)
