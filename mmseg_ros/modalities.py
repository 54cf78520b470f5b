"""The one registry of sensor modalities.

Every other module takes modality names, topics, channel counts and default normalisation from here (or from a
model card that names modalities defined here); nothing else spells them out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple

from .errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Modality:
    """What the package knows about one kind of sensor input."""

    name: str
    code: str  # letter(s) in paper-style set names such as R-D-E-L
    description: str
    topic: str  # default input topic, relative so namespaces and remaps apply
    encodings: Tuple[str, ...]  # sensor_msgs/Image encodings accepted on that topic
    # Model input: every modality becomes 3 channels scaled to [0, 1], then (x - mean) / std.
    mean: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    # How raw physical values map to [0, 1] before normalisation (e.g. metres for depth); None for 8-bit images.
    value_range: Tuple[float, float] | None = None
    # Sparse images (event counts, projected LiDAR) are resampled with nearest neighbour so isolated returns are
    # neither smeared nor invented; metric modalities are always treated that way.
    sparse: bool = False
    aliases: Tuple[str, ...] = field(default=())


REGISTRY: Dict[str, Modality] = {
    m.name: m
    for m in (
        Modality(
            "rgb", "R", "colour camera", "rgb/image", ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC3", "8UC1"),
            mean=IMAGENET_MEAN, std=IMAGENET_STD, aliases=("img", "camera", "image"),
        ),
        Modality(
            "depth", "D", "depth image (metres or millimetres)", "depth/image",
            ("32FC1", "16UC1", "mono16", "mono8", "8UC3", "rgb8"),
            value_range=(0.0, 80.0), aliases=("hha",),
        ),
        Modality(
            "event", "E", "event-camera frame (pos/neg counts)", "event/image",
            ("mono8", "rgb8", "8UC1", "8UC2", "8UC3", "16UC1"),
            sparse=True, aliases=("events",),
        ),
        Modality(
            "lidar", "L", "LiDAR range projected into the camera", "lidar/image",
            ("32FC1", "16UC1", "mono16", "mono8", "rgb8", "8UC3"),
            value_range=(0.0, 80.0), sparse=True,
        ),
        Modality("aolp", "A", "angle of linear polarisation", "aolp/image", ("rgb8", "8UC3", "mono8", "32FC1")),
        Modality("dolp", "Dp", "degree of linear polarisation", "dolp/image", ("rgb8", "8UC3", "mono8", "32FC1")),
        Modality("nir", "N", "near infrared", "nir/image", ("mono8", "rgb8", "8UC3", "8UC1")),
    )
}

_ALIASES = {alias: m.name for m in REGISTRY.values() for alias in (m.name, *m.aliases)}


def get(name: str) -> Modality:
    """Look a modality up by name or alias; unknown names fail with the list of known ones."""
    try:
        return REGISTRY[_ALIASES[name]]
    except KeyError:
        raise ConfigError(f"unknown modality {name!r}; known: {', '.join(REGISTRY)}") from None


def canonical(names) -> Tuple[str, ...]:
    """Canonical names for a sequence of names/aliases, order kept, duplicates rejected."""
    out = tuple(get(n).name for n in names)
    if len(set(out)) != len(out):
        raise ConfigError(f"modality listed twice in {list(names)}")
    if not out:
        raise ConfigError("at least one modality is required")
    return out


def short_code(names) -> str:
    """Paper-style set code, e.g. ('rgb','depth','event','lidar') -> 'R-D-E-L'."""
    return "-".join(get(n).code for n in names)
