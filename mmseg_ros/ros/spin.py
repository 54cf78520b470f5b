"""rclpy plumbing shared by the live tools (node, sensor publisher, benchmarks, test peers).

Spinning an executor in a thread and tearing it down in the wrong order aborts the process ("terminate called
without an active exception", exit 134). `SpinThread` owns that order so nobody re-types it.
"""
from __future__ import annotations

import threading

JOIN_TIMEOUT_S = 5.0


def try_shutdown(context=None) -> None:
    """`rclpy.try_shutdown` that tolerates losing the race with rclpy's own signal handler: on SIGINT that handler
    shuts the context down from its own thread, between try_shutdown's "still ok?" check and its shutdown, which then
    raises "rcl_shutdown already called" (seen on Jazzy). Down is what was wanted; any other failure still raises."""
    import rclpy
    from rclpy._rclpy_pybind11 import RCLError

    try:
        rclpy.try_shutdown(context=context)
    except RCLError:
        if rclpy.ok(context=context):
            raise


class SpinThread:
    """Spin `node` on its own executor in a daemon thread until `close()` (or the end of a `with` block).

    Teardown order: stop the executor and the context (which wakes `spin`), join the thread, destroy the node,
    then `try_shutdown` (a no-op if already down)."""

    def __init__(self, node, context=None, executor=None):
        from rclpy.executors import SingleThreadedExecutor

        self.node = node
        self.context = context
        self.executor = executor if executor is not None else SingleThreadedExecutor(context=context)
        self.executor.add_node(node)
        self.thread = threading.Thread(target=self.executor.spin, name=f"spin-{node.get_name()}", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.executor.shutdown()
        try_shutdown(self.context)
        self.thread.join(timeout=JOIN_TIMEOUT_S)
        self.node.destroy_node()
        try_shutdown(self.context)

    def __enter__(self) -> "SpinThread":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
