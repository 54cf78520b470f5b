"""The segmentation pipeline without ROS: what segment_node does with its inputs, reusable by the offline replay, the
benchmarks and the demo.

`config` (the node's parameter table and NodeConfig), `checks` (input checks), `core` (Pipeline), `outputs`
(overlay and output images), `diagnostics` (statuses as plain data), `stats` (rates and latency windows), `handoff`
(the worker's latest-wins mailbox). Nothing here imports rclpy; `mmseg_ros.ros` wires it to ROS.
"""
from .config import NodeConfig
from .core import InputMessage, Pipeline, SegmentedSet

__all__ = ["InputMessage", "NodeConfig", "Pipeline", "SegmentedSet"]
