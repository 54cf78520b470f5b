"""rclpy plumbing shared by the live tools (node, sensor publisher, benchmarks, test peers).

Spinning an executor in a thread and tearing it down in the wrong order aborts the process ("terminate called
without an active exception", exit 134). `SpinThread` owns that order so nobody re-types it.
"""
from __future__ import annotations

import threading

JOIN_TIMEOUT_S = 5.0


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
        import rclpy

        self.executor.shutdown()
        rclpy.try_shutdown(context=self.context)
        self.thread.join(timeout=JOIN_TIMEOUT_S)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def __enter__(self) -> "SpinThread":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
