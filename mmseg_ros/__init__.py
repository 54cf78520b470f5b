"""mmseg_ros: drop-tolerant multi-modal semantic segmentation (MLE-SAM, MemorySAM on SAM2) for ROS 2.

The core (modalities, msgs, sync, nn, engine, data, training, evaluation) imports no rclpy; only `node` and the
live tools do.
"""

__version__ = "0.1.0"
