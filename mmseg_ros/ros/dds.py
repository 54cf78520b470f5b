"""DDS transport set-up for every process that moves images: the node, the sensor publisher, camera drivers, tests.

Fast DDS' built-in shared-memory segment is too small for camera-sized samples, so best-effort images above about
512 KB fall back to fragmented UDP and are lost between processes. The shipped profile `config/fastdds_shm.xml`
(a shared-memory transport with a 32 MB segment) fixes that, and it must be loaded by the PUBLISHING process:
measured between two processes, 1024x1024 rgb8 best effort, 40 sent, the profile on the subscriber only delivered
0 (Kilted) and 14 (Jazzy), on the publisher only 40 on both. So the node setting it for itself protects its own
outputs; a camera driver in another process needs it in its own environment: `mmseg dds env` prints the lines.

Fast DDS reads the profile file named by an environment variable when the first participant is created:
FASTRTPS_DEFAULT_PROFILES_FILE in Fast DDS 2.x (Humble, Jazzy), FASTDDS_DEFAULT_PROFILES_FILE in 3.x (Kilted and
later; 3.x still reads the old name but warns that it is deprecated at every start). `configure_transport` sets the
name of the installed generation (both when it cannot tell) unless the user set either, and must run before
`rclpy.init()`; child processes inherit it.

No rclpy import here: the launch file, `mmseg dds env` and tests use this without a ROS context.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, MutableMapping, Optional, Tuple

from .. import resources
from ..errors import ConfigError

PROFILE_FILE = "fastdds_shm.xml"
FASTDDS_3 = "FASTDDS_DEFAULT_PROFILES_FILE"
FASTDDS_2 = "FASTRTPS_DEFAULT_PROFILES_FILE"
PROFILE_VARIABLES = (FASTDDS_3, FASTDDS_2)  # 3.x name first: the distro this project is developed on reads it
VARIABLE_OF_GENERATION = {3: FASTDDS_3, 2: FASTDDS_2}
FIX_HINT = "run `mmseg dds env` and apply its lines in the publisher's (camera driver's) environment"
# The Fast DDS library each generation ships: libfastdds.so.3.x (3.x) and libfastrtps.so.2.x (2.x).
_LIBRARY = re.compile(r"lib(fastdds|fastrtps)\.so\.(\d+)")


@dataclass(frozen=True)
class TransportSetup:
    """What `configure_transport` did: the variables now in effect and whether it changed them."""

    values: Tuple[Tuple[str, str], ...]
    changed: bool
    reason: str

    @property
    def value(self) -> str:
        """The profile in effect for this process' Fast DDS (the 3.x name's value if both are set)."""
        return next((v for _, v in self.values), "")

    def __str__(self) -> str:
        shown = ", ".join(f"{name}={value or '<empty>'}" for name, value in self.values) or "no profile variable"
        return f"{shown} ({self.reason})"


def profile_path() -> Path:
    """The shipped Fast DDS shared-memory profile (checkout, pip install or colcon install)."""
    path = resources.share_dir() / "config" / PROFILE_FILE
    if not path.is_file():
        raise ConfigError(f"the Fast DDS profile {PROFILE_FILE} is missing from {path.parent}")
    return path


def configure_transport(environ: MutableMapping[str, str] = os.environ,
                        generation: Optional[int] = None) -> TransportSetup:
    """Point Fast DDS at the shipped profile unless the user already chose one: a user's setting of either name
    wins, even an empty value, which some set on purpose to get Fast DDS' built-in defaults. `generation` (2 or 3;
    default: the installed one) picks the variable; both are set when it is unknown."""
    chosen = chosen_profiles(environ)
    if chosen:
        return TransportSetup(chosen, False, "already set in the environment (by you or a launch file); kept")
    value = str(profile_path())
    names = profile_variables(fastdds_generation(environ) if generation is None else generation)
    for name in names:
        environ[name] = value
    return TransportSetup(tuple((name, value) for name in names), True,
                          "shipped shared-memory profile for large images")


def chosen_profiles(environ: Mapping[str, str] = os.environ) -> Tuple[Tuple[str, str], ...]:
    """The profile variables already set (by the user or a launch file): those are never overridden."""
    return tuple((name, environ[name]) for name in PROFILE_VARIABLES if name in environ)


def profile_variables(generation: Optional[int]) -> Tuple[str, ...]:
    """The variable(s) a Fast DDS generation reads its profile from: both names when the generation is unknown."""
    return (VARIABLE_OF_GENERATION[generation],) if generation in VARIABLE_OF_GENERATION else PROFILE_VARIABLES


def fastdds_generation(environ: Mapping[str, str] = os.environ,
                       search: Optional[Iterable[str]] = None) -> Optional[int]:
    """The major version of the Fast DDS library this environment loads (2 or 3), or None if none was found. Looks
    where a ROS install and the PyPI wheels put it: <prefix>/lib of AMENT_PREFIX_PATH, LD_LIBRARY_PATH, the
    environment's own lib/ and site-packages."""
    if search is None:
        folders = [Path(p) / "lib" for p in environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
        folders += [Path(p) for p in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
        folders += [Path(sys.prefix) / "lib"] + [Path(p) for p in sys.path if p.endswith("site-packages")]
        search = [str(f) for f in folders]
    found = set()
    for folder in search:
        path = Path(folder)
        if not path.is_dir():
            continue
        candidates = list(path.glob("libfast*.so.*"))
        if not candidates and path.name == "site-packages":  # wheels: <site-packages>/<distribution>/lib/
            candidates = list(path.glob("*/lib/libfast*.so.*")) + list(path.glob("*/*/lib/libfast*.so.*"))
        for candidate in candidates:
            match = _LIBRARY.match(candidate.name)
            if match:
                found.add(int(match.group(2)))
    return max(found) if found else None


def env_lines(generation: Optional[int], profile: Path, environ: Mapping[str, str] = os.environ) -> Tuple[str, ...]:
    """The shell lines a publishing process (a camera driver) needs: the variable its Fast DDS reads (both names
    when the generation is unknown), pointing at the shipped profile. A user's existing setting is mentioned."""
    names = profile_variables(generation)
    found = f"Fast DDS {generation}.x found" if generation else "Fast DDS not found here: both names"
    lines = [f"# mmseg_ros shared-memory profile for large images ({found}); apply it in the camera driver's shell"]
    for name in names:
        if name in environ and environ[name] != str(profile):
            lines.append(f"# note: {name} is already set here to {environ[name]!r}; the line below replaces it")
        lines.append(f"export {name}={profile}")
    return tuple(lines)


# -- `mmseg dds` ------------------------------------------------------------------------------------------------------


def configure(parser) -> None:
    parser.description = ("DDS set-up for processes that publish large images to segment_node (camera drivers): "
                          "`mmseg dds env` prints the environment lines their shell needs.")
    parser.add_argument("action", choices=("env",), help="env: print export lines for the installed Fast DDS")


def main(args) -> int:
    for line in env_lines(fastdds_generation(), profile_path()):
        print(line)
    return 0
