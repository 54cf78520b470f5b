"""Datasets, transforms and the synthetic multi-sensor scene generator (no ROS, no heavy imports here).

Sub-modules are imported by name (`mmseg_ros.data.deliver`, `mmseg_ros.data.synthetic`, ...) so that importing this
package costs nothing.
"""
