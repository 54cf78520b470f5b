"""mmseg_ros: drop-tolerant multi-modal semantic segmentation (MLE-SAM, MemorySAM on SAM2) for ROS 2.

The core (modalities, msgs, sync, nn, engine, data, training, evaluation) imports no rclpy; only `node` and the
live tools do.
"""
import os

# OpenMP threads that busy-wait between torch ops starve everything else on a loaded CPU (DDS threads, the sensor
# drivers, other processes): on a 2-core machine with other work, a small model ran 30x slower (1.37 s vs 41 ms
# per 4-input frame). Must be set before torch loads its OpenMP runtime; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
