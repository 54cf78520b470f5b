"""Simulated sensor outages, one grammar for every tool that takes `--drop` (`mmseg sensors`, `mmseg replay`, the
demo): `SENSOR@T0-T1` leaves out SENSOR's messages in [T0, T1) seconds, `SENSOR@T0-` from T0 on, and the sensor
`all` stands for every input. SENSOR is a modality name or alias of the registry; a tool may narrow the names it
knows (the synthetic rig's sensors, a replay's inputs).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from . import modalities
from .errors import ConfigError

ALL = "all"
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_DROP = re.compile(rf"([A-Za-z_]+)@{_NUMBER}-{_NUMBER}?")


@dataclass(frozen=True)
class Drop:
    """`sensor`'s messages (every sensor's when it is ALL) with times in [start_s, end_s) are left out."""

    sensor: str
    start_s: float
    end_s: float = math.inf

    @property
    def label(self) -> str:
        return f"{self.sensor}@{self.start_s:g}-{'' if math.isinf(self.end_s) else f'{self.end_s:g}'}"

    def __str__(self) -> str:
        return self.label

    def during(self, time_s: float) -> bool:
        """Whether `time_s` lies in the window, whichever sensor."""
        return self.start_s <= time_s < self.end_s

    def applies_to(self, sensor: str) -> bool:
        return self.sensor in (ALL, sensor)

    def covers(self, sensor: str, time_s: float) -> bool:
        return self.applies_to(sensor) and self.during(time_s)


def sensor_name(text: str, known: Sequence[str], what: str, allow_all: bool = True) -> str:
    """The registry name of `text` if it is one of `known` (or ALL when allowed), else a ConfigError listing them."""
    if allow_all and text == ALL:
        return ALL
    try:
        name: Optional[str] = modalities.get(text).name
    except ConfigError:
        name = None
    if name not in known:
        listed = (*known, ALL) if allow_all else tuple(known)
        raise ConfigError(f"{what}: unknown sensor {text!r}; known: {', '.join(listed)}")
    return name


def parse_drop(text: str, known: Sequence[str]) -> Drop:
    """'depth@2-4' -> Drop('depth', 2.0, 4.0); 'all@3-' -> Drop('all', 3.0, inf)."""
    match = _DROP.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"--drop {text!r}: expected SENSOR@START-END or SENSOR@START- (seconds), e.g. depth@5-10")
    sensor = sensor_name(match.group(1), known, f"--drop {text!r}")
    start = float(match.group(2))
    end = float(match.group(3)) if match.group(3) else math.inf
    if end <= start:
        raise ConfigError(f"--drop {text!r}: the end ({end:g} s) must come after the start ({start:g} s)")
    return Drop(sensor, start, end)
