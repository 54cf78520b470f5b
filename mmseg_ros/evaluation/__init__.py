"""Offline evaluation: confusion-matrix metrics (DELIVER convention), paper-shaped tables, noise, plots, `mmseg eval`.

Sub-modules are imported by name (`from mmseg_ros.evaluation import metrics`); nothing here imports torch or rclpy at
package import time.
"""
