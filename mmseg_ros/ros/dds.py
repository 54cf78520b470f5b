"""DDS transport set-up shared by every process that moves images: the node, the sensor publisher, tests, launch.

Fast DDS' built-in shared-memory segment is too small for camera-sized samples, so best-effort images above about
512 KB fall back to fragmented UDP and are lost between processes (measured: a 1024x1024 rgb8 image, 0 of 100
received). The shipped profile `config/fastdds_shm.xml` fixes that. Fast DDS reads the profile file named by an
environment variable when the first participant is created, so `configure_transport` must run before `rclpy.init()`;
child processes inherit it.

No rclpy import here: the launch file and tests call this without a ROS context.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import MutableMapping

from .. import resources
from ..errors import ConfigError

PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
PROFILE_FILE = "fastdds_shm.xml"


@dataclass(frozen=True)
class TransportSetup:
    """What `configure_transport` did: the variable, the value now in effect, and whether it was changed."""

    variable: str
    value: str
    changed: bool
    reason: str

    def __str__(self) -> str:
        return f"{self.variable}={self.value or '<empty>'} ({self.reason})"


def profile_path() -> Path:
    """The shipped Fast DDS shared-memory profile (checkout, pip install or colcon install)."""
    path = resources.share_dir() / "config" / PROFILE_FILE
    if not path.is_file():
        raise ConfigError(f"the Fast DDS profile {PROFILE_FILE} is missing from {path.parent}")
    return path


def configure_transport(environ: MutableMapping[str, str] = os.environ) -> TransportSetup:
    """Point Fast DDS at the shipped profile unless the user already chose one (their choice always wins,
    even an empty value, which some set on purpose to get Fast DDS' built-in defaults)."""
    if PROFILE_VARIABLE in environ:
        return TransportSetup(PROFILE_VARIABLE, environ[PROFILE_VARIABLE], False, "already set by the user; kept")
    value = str(profile_path())
    environ[PROFILE_VARIABLE] = value
    return TransportSetup(PROFILE_VARIABLE, value, True, "shipped shared-memory profile for large images")
