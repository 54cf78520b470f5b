"""segment_node: live, drop-tolerant multi-modal segmentation over DDS. A thin rclpy adapter around the engine.

    segment_node [--lifecycle] --ros-args --params-file config/segment.yaml -p model.card:=mle_sam_hiera_t
    mmseg node   [--lifecycle] --ros-args ...

This module is the process: arguments, rclpy start-up and shutdown, plain or lifecycle node. The wiring (topics,
worker, publishing) is `segment.SegmentNodeCore`; the data path is `mmseg_ros.pipeline`. Parameters:
pipeline.config.PARAMETERS; diagnostics: pipeline.diagnostics.

Plain mode configures (loads the model) and activates (subscribes, publishes) at start; `--lifecycle` makes a
managed node: configure loads the model, activate starts subscriptions/publishers/worker, deactivate and cleanup
undo that. SIGINT/SIGTERM end the node with exit code 0; a bad configuration logs one error line and exits 1.
"""
from __future__ import annotations

import argparse
import atexit
import os
import sys
from typing import List, NoReturn

from ..errors import MMSegError
from ..pipeline.config import NODE_NAME
from . import dds
from .segment import SegmentNodeCore
from .spin import try_shutdown


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
            node.core.configure()
            node.core.activate()
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
            node.core.stop()
        if executor is not None:
            executor.shutdown()
        try_shutdown()
        if node is not None:
            node.destroy_node()
        try_shutdown()
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
                self.core = SegmentNodeCore(self)

        return SegmentNode

    class LifecycleSegmentNode(LifecycleNode):
        def __init__(self):
            super().__init__(NODE_NAME)
            self.core = SegmentNodeCore(self)

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
            return self._step(self.core.configure, self.core.cleanup)

        def on_activate(self, state):
            return self._step(self.core.activate, self.core.deactivate)

        def on_deactivate(self, state):
            return self._step(self.core.deactivate)

        def on_cleanup(self, state):
            return self._step(self.core.cleanup)

        def on_shutdown(self, state):
            return self._step(self.core.stop)

        def on_error(self, state):
            self.core.stop()
            return TransitionCallbackReturn.SUCCESS

    return LifecycleSegmentNode


if __name__ == "__main__":
    sys.exit(main())
