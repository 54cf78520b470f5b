"""Test-wide settings: isolate DDS traffic of this test run, keep torch on the machine's two cores."""
import os
import random

import pytest

# Every test run gets its own DDS domain on loopback only, so parallel runs (and CI beside a developer session)
# never see each other's topics. Set before any test imports rclpy; subprocesses inherit it.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
# Before any test module imports torch (mmseg_ros sets it too, but a test may import torch first): see
# mmseg_ros/__init__.py for why busy-waiting OpenMP threads must not run on a shared CPU.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    try:
        import torch
    except ImportError:  # codec/sync tests need no torch
        yield
        return
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
