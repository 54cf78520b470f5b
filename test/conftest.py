"""Test-wide settings: isolate DDS traffic of this test run, keep torch on the machine's two cores."""
import atexit
import fcntl
import os
import random
import tempfile
import time
from pathlib import Path

import pytest

DOMAINS = range(1, 101)
DOMAIN_LOCKS = Path(tempfile.gettempdir()) / "mmseg_ros-test-domains"
# A run's node and sensor processes are stopped by its tests; this long after the run ended none is left, so its domain
# is quiet again. Until then the next run (make test runs Kilted, then Jazzy, back to back) takes another one.
QUIET_AFTER_S = 120.0


def _claim_domain() -> int:
    """A DDS domain that no other test run on this machine holds, preferring one that no run used recently.

    Held by an flock on a file per domain for the life of this process (the kernel drops it when the process ends,
    however it ends; children do not inherit it). The file holds the claiming pid; its mtime is the last claim or
    release."""
    try:
        DOMAIN_LOCKS.mkdir(mode=0o777, exist_ok=True)
    except OSError:
        return random.Random(os.getpid()).choice(DOMAINS)
    order = list(DOMAINS)
    random.Random(os.getpid()).shuffle(order)
    for need_quiet in (True, False):
        for domain in order:
            path = DOMAIN_LOCKS / f"{domain}.lock"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            info = os.fstat(fd)  # an empty file was just created: no run has used its domain
            if need_quiet and info.st_size and time.time() - info.st_mtime < QUIET_AFTER_S:
                os.close(fd)  # releases the lock
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            atexit.register(_release_domain, fd)
            return domain
    return random.Random(os.getpid()).choice(DOMAINS)


def _release_domain(fd: int) -> None:
    os.utime(fd)  # the domain stays "recently used" while this run's last processes wind down
    os.close(fd)


# Every test run gets its own DDS domain on loopback only, so parallel runs (and CI beside a developer session) and
# consecutive runs never see each other's topics. Set before any test imports rclpy; subprocesses inherit it.
if "ROS_DOMAIN_ID" not in os.environ:
    os.environ["ROS_DOMAIN_ID"] = str(_claim_domain())
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
