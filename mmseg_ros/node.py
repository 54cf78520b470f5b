"""segment_node: live, drop-tolerant multi-modal segmentation over DDS. A thin rclpy adapter around the engine.

    segment_node [--lifecycle] --ros-args --params-file config/segment.yaml -p model.card:=mle_sam_hiera_t
    mmseg node   [--lifecycle] --ros-args ...

Data flow: subscription callbacks only decode (zero-copy views, checks in node_core) and hand each message to the
synchronizer; the sets it emits go to a one-item mailbox (latest wins: a set replaced before the worker took it is
counted as dropped); one worker thread takes the newest set, runs the engine and publishes. The worker also polls the
synchronizer every 10 ms so sets whose inputs stay away are emitted after max_wait. Callbacks never wait for the
model. Arrival times come from the node clock, so use_sim_time works. Parameters: node_config.PARAMETERS;
diagnostics: node_diagnostics.

Plain mode configures (loads the model) and activates (subscribes, publishes) at start; `--lifecycle` makes a
managed node: configure loads the model, activate starts subscriptions/publishers/worker, deactivate and cleanup
undo that. SIGINT/SIGTERM end the node with exit code 0; a bad configuration logs one error line and exits 1.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, NoReturn, Optional

import numpy as np

from . import dds, msgs, node_config, node_core
from . import node_diagnostics as diag
from .errors import ConfigError, MessageError, MMSegError
from .node_config import CAMERA, LIDAR, NODE_NAME, NodeConfig
from .sync import NS_PER_S, SyncConfig, SyncSet, Synchronizer, stamp_to_ns

POLL_PERIOD_S = 0.01  # how often the worker lets the synchronizer emit sets whose max_wait ran out
JOIN_TIMEOUT_S = 1.0  # a forward pass still running at shutdown is abandoned after this (exit within 2 s)
LOG_THROTTLE_S = 5.0  # at most one bad-input log line per input in this time


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lifecycle", action="store_true",
                        help="run as a managed (lifecycle) node: configure loads the model, activate subscribes")
    parser.epilog = "ROS arguments follow --ros-args, e.g. --ros-args --params-file config/segment.yaml"
    parser.set_defaults(_accepts_extra=True)  # `mmseg node` passes --ros-args ... through to rclpy


def main(args=None) -> NoReturn:
    """`segment_node` (args None: sys.argv) and `mmseg node` (args: the parsed namespace). Ends the process."""
    if isinstance(args, argparse.Namespace):
        lifecycle, ros_argv = args.lifecycle, ["mmseg node", *args.extra]
    else:
        argv = list(sys.argv if args is None else args)
        cut = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
        parser = argparse.ArgumentParser(prog=NODE_NAME, description=__doc__.splitlines()[0])
        configure(parser)
        lifecycle, ros_argv = parser.parse_args(argv[1:cut]).lifecycle, [argv[0] if argv else NODE_NAME, *argv[cut:]]
    try:
        code = run(lifecycle, ros_argv)
    except KeyboardInterrupt:  # SIGINT before rclpy took over the signal
        code = 0
    _exit(code)


def _exit(code: int) -> None:
    """Leave right after the orderly ROS shutdown in `run`: exit handlers run (logs flushed), but Python's
    finalisation of torch and the DDS libraries, which takes seconds on a busy machine, is skipped."""
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


def run(lifecycle: bool, ros_argv: List[str]) -> int:
    """Start, spin until SIGINT/SIGTERM (or a fatal configuration error), shut down cleanly. Returns the exit code."""
    transport = dds.configure_transport()  # before the first DDS participant exists
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    try:
        from rclpy._rclpy_pybind11 import RCLError
    except ImportError:  # pragma: no cover - other rclpy builds
        RCLError = RuntimeError

    try:
        rclpy.init(args=ros_argv)
    except RCLError as exc:
        print(f"{NODE_NAME}: error: invalid ROS arguments: {exc}", file=sys.stderr)
        return 1
    node = executor = None
    code = 0
    try:
        node = _node_class(lifecycle)()
        node.get_logger().info(f"DDS transport: {transport}")
        if not lifecycle:
            node.pipeline.configure()
            node.pipeline.activate()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except MMSegError as exc:
        _fatal(node, exc)
        code = 1
    except RCLError as exc:
        if rclpy.ok():  # a real failure, not the context going away under a signal
            _fatal(node, exc)
            code = 1
    finally:
        if node is not None:
            node.pipeline.stop()
        if executor is not None:
            executor.shutdown()
        rclpy.try_shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


def _fatal(node, exc: Exception) -> None:
    if node is not None:
        node.get_logger().fatal(f"{type(exc).__name__}: {exc}")
    else:
        print(f"{NODE_NAME}: error: {exc}", file=sys.stderr)


def _node_class(lifecycle: bool):
    from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
    from rclpy.node import Node

    if not lifecycle:
        class SegmentNode(Node):
            def __init__(self):
                super().__init__(NODE_NAME)
                self.pipeline = SegmentPipeline(self)

        return SegmentNode

    class LifecycleSegmentNode(LifecycleNode):
        def __init__(self):
            super().__init__(NODE_NAME)
            self.pipeline = SegmentPipeline(self)

        def _step(self, action, undo=None):
            try:
                action()
            except MMSegError as exc:
                self.get_logger().error(f"{type(exc).__name__}: {exc}")
                if undo is not None:
                    undo()
                return TransitionCallbackReturn.FAILURE
            return TransitionCallbackReturn.SUCCESS

        def on_configure(self, state):
            return self._step(self.pipeline.configure, self.pipeline.cleanup)

        def on_activate(self, state):
            return self._step(self.pipeline.activate, self.pipeline.deactivate)

        def on_deactivate(self, state):
            return self._step(self.pipeline.deactivate)

        def on_cleanup(self, state):
            return self._step(self.pipeline.cleanup)

        def on_shutdown(self, state):
            return self._step(self.pipeline.stop)

        def on_error(self, state):
            self.pipeline.stop()
            return TransitionCallbackReturn.SUCCESS

    return LifecycleSegmentNode


# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """What a callback hands to the synchronizer: the message header and the decoded image, or for a LiDAR cloud its
    points (projected only if its set is processed: superseded sets cost nothing)."""

    header: Any
    image: Optional[np.ndarray] = None
    points: Optional[np.ndarray] = None


class SegmentPipeline:
    """Everything the node does, in lifecycle steps: declare (construction), configure, activate, deactivate,
    cleanup, stop. Used by the plain node (configure + activate at start) and the lifecycle node alike."""

    def __init__(self, node):
        self.node = node
        self.log = node.get_logger()
        self.config: Optional[NodeConfig] = None
        self.segmenter = None
        self.device = ""
        self._active = False
        self._subscriptions: List[Any] = []
        self._publishers: Dict[str, Any] = {}
        self._timer = None
        self._worker: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._input_loggers: Dict[str, Any] = {}
        _declare_parameters(node)
        node.add_on_set_parameters_callback(self._on_set_parameters)

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def configure(self) -> None:
        config = NodeConfig.from_values(_read_parameters(self.node))  # before the heavy imports: fail fast
        import torch

        from .engine import Segmenter

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
        self._declare_class_names(segmenter.class_names)
        self.config, self.segmenter, self.device = config, segmenter, str(segmenter.device)
        self.log.info(f"model {config.card.name} on {self.device} ({config.precision}), inputs "
                      f"{', '.join(config.modalities)}, anchor {config.anchor}, fallback {list(config.fallback)}")

    def activate(self) -> None:
        if self.config is None:
            raise ConfigError("activate before configure: no model loaded")
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from std_msgs.msg import String

        cfg = self.config
        self._reset_state()
        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=cfg.output_depth,
                             reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        pub = self.node.create_publisher
        self._publishers = {"labels": pub(Image, "~/labels", out_qos)}
        if cfg.publish_confidence:
            self._publishers["confidence"] = pub(Image, "~/confidence", out_qos)
        if cfg.publish_color:
            self._publishers["color"] = pub(Image, "~/color", out_qos)
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
            if name == LIDAR and cfg.lidar_source == "points":
                callback, kind = self._on_points, PointCloud2
            else:
                callback, kind = (lambda msg, name=name: self._on_image(name, msg)), Image
            self._subscriptions.append(self.node.create_subscription(kind, topic, callback, in_qos))
        if LIDAR in topics and cfg.lidar_source == "points":
            self._subscriptions.append(self.node.create_subscription(
                CameraInfo, node_config.camera_info_topic(), self._on_camera_info, in_qos))
        self._topics = topics
        self._timer = self.node.create_timer(cfg.diagnostics_period, self._publish_diagnostics)
        self._active = True
        self.log.info("active: subscribed to " + ", ".join(
            self.node.resolve_topic_name(t) for t in topics.values()))

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

    # -- parameters -----------------------------------------------------------------------------------------------

    def _on_set_parameters(self, params):
        from rcl_interfaces.msg import SetParametersResult

        changed = [p.name for p in params if p.name in node_config.PARAMETER_NAMES]
        if changed and self.config is not None:
            return SetParametersResult(successful=False, reason=(
                f"{changed} are read when the node is configured; restart it (or cleanup and configure the "
                "lifecycle node) to change them"))
        return SetParametersResult(successful=True)

    def _declare_class_names(self, names) -> None:
        from rcl_interfaces.msg import ParameterDescriptor, ParameterType

        param = node_config.CLASS_NAMES_PARAMETER
        if self.node.has_parameter(param):
            if tuple(self.node.get_parameter(param).value) != tuple(names):
                raise ConfigError(f"the model's classes differ from the read-only parameter {param} declared at the "
                                  "first configure; restart the node to switch class sets")
            return
        self.node.declare_parameter(param, list(names), ParameterDescriptor(
            type=ParameterType.PARAMETER_STRING_ARRAY, read_only=True,
            description="class id -> name of ~/labels (also latched on ~/class_names)"), ignore_override=True)

    def _class_names_json(self) -> str:
        card = self.config.card
        encoding, unlabeled = msgs.label_encoding(card.num_classes)
        return json.dumps({"names": list(card.class_names), "colors": [list(c) for c in card.class_set.colors],
                           "unlabeled": unlabeled, "encoding": encoding, "card": card.name})

    # -- inputs (executor thread) ---------------------------------------------------------------------------------

    def _now(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def _reset_state(self) -> None:
        cfg = self.config
        self._sync = Synchronizer(SyncConfig.from_seconds(
            cfg.modalities, anchor=cfg.anchor, fallback=cfg.fallback, slop=cfg.slop, max_wait=cfg.max_wait,
            silence_timeout=cfg.anchor_timeout, min_modalities=cfg.min_modalities))
        self._slot: node_core.LatestSlot[SyncSet] = node_core.LatestSlot()
        self._health = node_core.InputHealth(cfg.modalities)
        self._order = node_core.StampOrder()
        self._sizes = node_core.SizeGuard()
        self._rate_in, self._rate_out = node_core.RateMeter(), node_core.RateMeter()
        self._latency, self._wait, self._model_ms = (node_core.LatencyWindow() for _ in range(3))
        self._camera: Optional[msgs.Camera] = None
        self._published = self._below_min = 0
        self._last_used: tuple = ()
        self._last_output_ns: Optional[int] = None
        self._router: Dict[str, float] = {}

    def _on_image(self, name: str, msg) -> None:
        now = self._now()
        try:
            stamp = stamp_to_ns(msg.header.stamp)
            image = node_core.decode_input(name, msg)
            wrong_size = self._sizes.check(name, image)
            if wrong_size:
                raise MessageError(wrong_size)
            frame = Frame(msg.header, image=image)
        except MessageError as exc:
            self._bad_input(name, str(exc), now)
            return
        self._hand_over(name, stamp, frame, now)

    def _on_points(self, msg) -> None:
        now = self._now()
        try:
            stamp = stamp_to_ns(msg.header.stamp)
            frame = Frame(msg.header, points=msgs.pointcloud_to_numpy(msg))  # checked now, projected if used
        except MessageError as exc:
            self._bad_input(LIDAR, str(exc), now)
            return
        self._hand_over(LIDAR, stamp, frame, now)

    def _on_camera_info(self, msg) -> None:
        try:
            self._camera = msgs.camera_from_info(msg)
        except MessageError as exc:
            self._bad_input(LIDAR, f"CameraInfo on {node_config.camera_info_topic()}: {exc}", self._now())

    def _hand_over(self, name: str, stamp: int, frame: Frame, now: int) -> None:
        backwards = self._order.check(name, stamp)
        if backwards:
            self._bad_input(name, backwards, now)  # still given to the synchronizer: it sorts, drops or resets
        try:
            self._offer(self._sync.add(name, stamp, frame, now), now)
        except MMSegError as exc:
            self._bad_input(name, str(exc), now)

    def _offer(self, ready: List[SyncSet], now: int) -> None:
        for sset in ready:
            self._rate_in.tick(now)
            self._slot.put(sset)

    def _bad_input(self, name: str, reason: str, now: int) -> None:
        self._health.record(name, reason, now)
        logger = self._input_loggers.get(name)
        if logger is None:
            logger = self._input_loggers[name] = self.log.get_child(name)
        logger.warning(f"bad input: {reason}", throttle_duration_sec=LOG_THROTTLE_S)

    # -- worker ---------------------------------------------------------------------------------------------------

    def _join_worker(self) -> None:
        self._stop.set()
        slot = getattr(self, "_slot", None)
        if slot is not None:
            slot.close()
        worker, self._worker = self._worker, None
        if worker is not None and worker is not threading.current_thread():
            worker.join(JOIN_TIMEOUT_S)
            if worker.is_alive():
                self.log.warning(f"the worker is still inside the model after {JOIN_TIMEOUT_S} s; leaving it")

    def _work(self) -> None:
        slot, sync = self._slot, self._sync
        while not self._stop.is_set():
            sset = slot.take(POLL_PERIOD_S)
            try:
                if sset is None:
                    self._offer(sync.poll(self._now()), self._now())
                else:
                    self._process(sset)
            except MMSegError as exc:
                self.log.warning(f"set skipped: {exc}", throttle_duration_sec=LOG_THROTTLE_S)
            except Exception as exc:  # the node must keep running; the reason goes to the log
                if self._stop.is_set() or not self.node.context.ok():  # shutting down (e.g. SIGINT): just end
                    return
                self.log.error(f"set failed: {type(exc).__name__}: {exc}", throttle_duration_sec=LOG_THROTTLE_S)

    def _process(self, sset: SyncSet) -> None:
        cfg = self.config
        now = self._now()
        images: Dict[str, np.ndarray] = {}
        anchor_size = None
        for name in (sset.anchor, *(n for n in sset.messages if n != sset.anchor)):  # anchor first: it sets the size
            frame: Frame = sset.messages[name].payload
            try:
                image = frame.image if frame.image is not None else self._project(frame.points)
                if anchor_size is None:
                    anchor_size = node_core.size_of(image)
                elif not cfg.allow_size_mismatch:
                    reason = node_core.size_mismatch(name, image, sset.anchor, anchor_size)
                    if reason:
                        raise MessageError(reason)
            except MessageError as exc:
                self._bad_input(name, str(exc), now)
                if anchor_size is None:
                    self._below_min += 1
                    return
                continue
            images[name] = image
        if len(images) < cfg.min_modalities:
            self._below_min += 1
            return
        self._wait.add((self._now() - sset.messages[sset.anchor].arrival_ns) / 1e6)
        result = self.segmenter.segment(images, output_size=anchor_size)
        if self._stop.is_set():
            return
        header = sset.messages[sset.anchor].payload.header
        self._publishers["labels"].publish(msgs.labels_to_image(result.labels, cfg.card.num_classes, header))
        if "confidence" in self._publishers:
            self._publishers["confidence"].publish(msgs.confidence_to_image(result.confidence, header))
        if "color" in self._publishers:
            color = node_core.overlay(cfg.card.class_set.colorize(result.labels), images.get(CAMERA), cfg.color_alpha)
            self._publishers["color"].publish(msgs.color_to_image(color, header))
        done = self._now()
        self._published += 1
        self._rate_out.tick(done)
        self._latency.add((done - sset.stamp_ns) / 1e6)
        self._model_ms.add(result.timing["total"])
        self._last_used, self._last_output_ns = result.modalities, done
        self._router = node_core.router_summary(result.router_weights)

    def _project(self, points: np.ndarray) -> np.ndarray:
        return node_core.lidar_image(points, self._camera, self.config.lidar_extrinsic,
                                     node_config.camera_info_topic())

    # -- diagnostics (executor thread) ----------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        publisher = self._publishers.get("diagnostics")
        if publisher is None:
            return
        now = self._now()
        cfg = self.config
        status, stats = self._sync.status(now), self._sync.stats()
        inputs = []
        for name in cfg.modalities:
            errors = self._health.get(name)
            inputs.append(diag.InputReport(
                name=name, topic=self.node.resolve_topic_name(self._topics[name]), status=status[name],
                counts=stats.inputs[name], recent_error=self._health.recent(name, now, cfg.error_hold),
                bad_messages=errors.count, last_error=errors.last_error,
                used_in_last_output=name in self._last_used))
        report = diag.NodeReport(
            card=cfg.card.name, device=self.device, anchor=self._sync.anchor,
            rate_in_hz=self._rate_in.rate(now), rate_out_hz=self._rate_out.rate(now), published=self._published,
            sets_emitted=stats.sets_emitted, dropped_superseded=self._slot.superseded,
            dropped_below_min=stats.sets_below_min + self._below_min, latency_ms=self._latency.percentiles(),
            wait_ms=self._wait.percentiles(), model_ms=self._model_ms.percentiles(), modalities_used=tuple(self._last_used),
            last_output_age_s=None if self._last_output_ns is None else (now - self._last_output_ns) / NS_PER_S,
            extra=self._router)
        array = DiagnosticArray()
        array.header.stamp = self.node.get_clock().now().to_msg()
        for s in diag.statuses(self.node.get_fully_qualified_name(), report, inputs, now, cfg.diagnostics_period):
            array.status.append(DiagnosticStatus(
                level=bytes([s.level]), name=s.name, message=s.message, hardware_id=s.hardware_id,
                values=[KeyValue(key=k, value=v) for k, v in s.values]))
        publisher.publish(array)


# -- parameter declaration ----------------------------------------------------------------------------------------


def _declare_parameters(node) -> None:
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
    from rclpy.exceptions import ParameterException
    from rclpy.parameter import Parameter

    types = {
        node_config.STRING: (ParameterType.PARAMETER_STRING, Parameter.Type.STRING),
        node_config.BOOL: (ParameterType.PARAMETER_BOOL, Parameter.Type.BOOL),
        node_config.INTEGER: (ParameterType.PARAMETER_INTEGER, Parameter.Type.INTEGER),
        node_config.DOUBLE: (ParameterType.PARAMETER_DOUBLE, Parameter.Type.DOUBLE),
        node_config.STRING_ARRAY: (ParameterType.PARAMETER_STRING_ARRAY, Parameter.Type.STRING_ARRAY),
        node_config.DOUBLE_ARRAY: (ParameterType.PARAMETER_DOUBLE_ARRAY, Parameter.Type.DOUBLE_ARRAY),
    }
    for p in node_config.PARAMETERS:
        wire_type, value_type = types[p.type]
        descriptor = ParameterDescriptor(name=p.name, type=wire_type, description=p.description)
        if p.choices:
            descriptor.additional_constraints = "one of: " + ", ".join(p.choices)
        if p.type == node_config.INTEGER and p.low is not None:
            descriptor.integer_range = [IntegerRange(from_value=int(p.low), to_value=int(p.high),
                                                     step=int(p.step or 0))]
        elif p.type == node_config.DOUBLE and p.low is not None:
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(p.low), to_value=float(p.high),
                                                                  step=0.0)]
        try:
            # A default of None declares the type only (rcl cannot hold an empty list): unset reads as [].
            node.declare_parameter(p.name, value_type if p.default is None else p.default, descriptor)
        except ParameterException as exc:
            raise ConfigError(f"parameter {p.name}: {exc}") from None


def _read_parameters(node) -> Dict[str, Any]:
    from rclpy.exceptions import ParameterUninitializedException

    values = {}
    for name in node_config.PARAMETER_NAMES:
        try:
            values[name] = node.get_parameter(name).value
        except ParameterUninitializedException:
            values[name] = None
    return values


if __name__ == "__main__":
    sys.exit(main())
