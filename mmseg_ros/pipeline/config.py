"""segment_node's parameters: the one table of names, types, defaults and ranges, and their validation.

No rclpy here: the node declares every entry of PARAMETERS (with its description and range), the launch-file test
checks the launch file and config/segment.yaml against the same table, and `NodeConfig.from_values` turns a
{name: value} mapping into a validated configuration (ConfigError naming the parameter and the value otherwise).

Parameters are read when the node starts (plain mode) or at the lifecycle `configure` transition; changing one
later has no effect, so the node rejects such changes with that reason.
"""
from __future__ import annotations

import math
import posixpath
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from .. import cards, modalities
from .. import precision as precisions
from ..errors import ConfigError
from ..msgs.projection import OCCLUSION_MARGIN_M, OCCLUSION_MARGIN_RELATIVE
from ..transforms import ODOM_FRAME

NODE_NAME = "segment_node"
CLASS_NAMES_PARAMETER = "class_names"  # read-only, declared once the model is loaded

# Value types, named like rcl_interfaces/ParameterType; the node maps them to its descriptors.
STRING, BOOL, INTEGER, DOUBLE, STRING_ARRAY, DOUBLE_ARRAY = (
    "string", "bool", "integer", "double", "string_array", "double_array")

# The colour camera (its CameraInfo projects LiDAR points; its image tints ~/color) and the LiDAR, which may arrive
# as a PointCloud2 on a sibling topic of its image topic.
CAMERA = modalities.get("rgb").name
LIDAR = modalities.get("lidar").name
CAMERA_INFO = "camera_info"  # ROS convention: beside the image topic
POINTS = "points"

IDENTITY_4X4 = (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
DEVICES = ("auto", "cpu", "cuda")  # 'cuda:N' picks a GPU

INPUT_QOS = ("sensor_data", "reliable")
RESOLUTION_CAMERA, RESOLUTION_MODEL = "camera", "model"
RESOLUTIONS = (RESOLUTION_CAMERA, RESOLUTION_MODEL)
LIDAR_SOURCES = ("image", "points")
# image_transport's transports: the node subscribes to the base topic (raw Image) or base + "/<transport>"
# (CompressedImage). compressedDepth carries single-channel 16-bit or 32FC1 images only.
RAW = "raw"
TRANSPORTS = (RAW, "compressed", "compressedDepth")
DEPTH_TRANSPORT = "compressedDepth"
TRANSPORT_PREFIX = "inputs.transport."
# Which CameraInfo model projects LiDAR points: raw = K + D (the image as the camera delivers it), rectified = P
# (an image_rect); auto = raw when D has a non-zero coefficient, else rectified.
CAMERA_MODELS = ("auto", "raw", "rectified")


@dataclass(frozen=True)
class Param:
    """One node parameter. `default` None means "declared without a value" (rcl cannot hold an empty list); the
    node then reads it as an empty list. `low`/`high`/`step` become the descriptor's range."""

    name: str
    type: str
    default: Any
    description: str
    choices: Tuple[str, ...] = ()
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None


PARAMETERS: Tuple[Param, ...] = (
    Param("model.card", STRING, "default",
          "model card: a name in the package's models/ folder or a path to a card YAML"),
    Param("model.checkpoint", STRING, "", "project checkpoint file; empty = the one the card names (if any)"),
    Param("model.device", STRING, "auto", "auto (CUDA when available) | cpu | cuda | cuda:N", choices=DEVICES),
    Param("model.allow_cpu_fallback", BOOL, True,
          "when a CUDA device is requested but none is available, run on the CPU with a warning instead of failing"),
    Param("model.precision", STRING, "fp32", "fp32 | fp16 | bf16 (half precisions on CUDA only)",
          choices=precisions.NAMES),
    Param("model.input_size", INTEGER, 0, "square model input in px (multiple of 32); 0 = the card's input size",
          low=0, high=4096, step=32),
    Param("model.cpu_threads", INTEGER, 1,
          "torch intra-op threads on the CPU; 0 = torch's default. 1 by default: the small shipped model runs faster "
          "on one thread than on two, and it leaves a core to DDS and the drivers; raise it for large cards on CPU",
          low=0, high=256, step=1),
    Param("modalities", STRING_ARRAY, None,
          "modalities to subscribe to, a subset of the card's; empty = all of the card's. Topics are the registry's "
          "relative defaults (e.g. rgb/image); remap them"),
    Param("inputs.qos", STRING, "sensor_data",
          "input QoS: sensor_data (best effort, matches any publisher) | reliable", choices=INPUT_QOS),
    Param("inputs.queue_depth", INTEGER, 5, "history depth of every input subscription", low=1, high=1000, step=1),
    Param("inputs.lidar_source", STRING, "image",
          "image = projected range image on lidar/image; points = PointCloud2 on lidar/points, projected into the "
          "camera of rgb/camera_info with inputs.lidar_extrinsic", choices=LIDAR_SOURCES),
    Param("inputs.lidar_extrinsic", DOUBLE_ARRAY, None,
          "LiDAR -> camera optical frame, 4x4 row-major rigid transform (16 numbers, last row 0 0 0 1); empty = "
          "from TF (the cloud's frame -> the CameraInfo's frame at the cloud's stamp)"),
    Param("inputs.fixed_frame", STRING, ODOM_FRAME,
          "with the extrinsic from TF: a frame fixed in the world (odometry's) through which each LiDAR cloud goes "
          "from the ego's pose at the cloud's stamp to the camera's at the image's stamp (ego-motion compensation); "
          "a TF without this frame gives the static transform at the cloud's stamp (warned once); empty = never "
          "compensate"),
    Param("inputs.camera_model", STRING, "auto",
          "camera model for projecting LiDAR points: raw = K + D (distorted image), rectified = P (image_rect); "
          "auto = raw when CameraInfo.d is non-zero, else rectified", choices=CAMERA_MODELS),
    *(Param(f"{TRANSPORT_PREFIX}{m.name}", STRING, RAW,
            f"how {m.topic} arrives: raw (sensor_msgs/Image on {m.topic}) | compressed (CompressedImage on "
            f"{m.topic}/compressed) | compressedDepth (on {m.topic}/compressedDepth; 16-bit / 32FC1 images)",
            choices=TRANSPORTS) for m in modalities.REGISTRY.values()),
    Param("inputs.allow_size_mismatch", BOOL, False,
          "accept inputs whose resolution differs from the anchor image's (resampled to the model input); by "
          "default they are rejected as bad input, since every input is expected registered to the camera"),
    Param("sync.anchor", STRING, "", "modality whose stamps define the output rate; empty = the first modality"),
    Param("sync.fallback_order", STRING_ARRAY, None,
          "anchor succession when the anchor falls silent; empty = the other modalities in card order"),
    Param("sync.slop", DOUBLE, 0.05, "s; largest stamp difference between the anchor and a matched input",
          low=0.0, high=10.0),
    Param("sync.max_wait", DOUBLE, 0.1, "s after the anchor arrived; inputs later than that are left out of its set",
          low=0.0, high=10.0),
    Param("sync.anchor_timeout", DOUBLE, 0.5,
          "s of silence after which an input counts as missing (and the anchor role passes on)", low=0.001, high=60.0),
    Param("sync.min_modalities", INTEGER, 1, "sets with fewer inputs present are dropped (and counted)",
          low=1, high=64, step=1),
    Param("outputs.confidence", BOOL, True, "publish ~/confidence (32FC1 max softmax probability)"),
    Param("outputs.color", BOOL, True, "publish ~/color (rgb8 palette, blended with the camera image)"),
    Param("outputs.only_when_subscribed", BOOL, True,
          "~/confidence and ~/color are built and published only while something subscribes to them (rosbag record, "
          "RViz and ros2 topic echo do); false builds them for every set"),
    Param("outputs.color_alpha", DOUBLE, 0.5, "weight of the camera image in ~/color: 0 = palette only",
          low=0.0, high=1.0),
    Param("outputs.resolution", STRING, RESOLUTION_CAMERA,
          "camera = outputs at the anchor image's size; model = at the model's input size (no upsampling, small "
          "messages), with the camera's CameraInfo (rgb/camera_info) scaled to it on ~/camera_info",
          choices=RESOLUTIONS),
    Param("outputs.queue_depth", INTEGER, 2, "history depth of the (reliable) output publishers", low=1, high=100,
          step=1),
    Param("outputs.points", BOOL, False,
          "publish ~/points: the LiDAR cloud of each set with label and confidence per point (inputs.lidar_source: "
          "points)"),
    Param("outputs.points_keep_unlabeled", BOOL, True,
          "~/points keeps every input point (order and count as the input; unlabeled = 255, or 65535 above 255 "
          "classes); false drops points behind the camera, outside the image or hidden from it (see "
          "outputs.points_occlusion_deg)"),
    Param("outputs.points_occlusion_deg", DOUBLE, 1.5,
          "~/points: angular size of each LiDAR return's footprint in the camera image; a point behind a nearer "
          f"return's footprint (farther by more than max({OCCLUSION_MARGIN_M:g} m, {OCCLUSION_MARGIN_RELATIVE:.0%})) "
          "is hidden from the camera and unlabeled. "
          "0 = only a nearer point at the same pixel hides it. The model's LiDAR image does not change",
          low=0.0, high=10.0),
    Param("outputs.frame_id", STRING, "",
          "frame_id of the outputs (their pixels are on the camera grid); empty = the camera's, from its images or "
          "CameraInfo, whichever input anchors the set"),
    Param("diagnostics.period", DOUBLE, 1.0, "s between /diagnostics messages", low=0.05, high=60.0),
    Param("diagnostics.error_hold", DOUBLE, 5.0, "s an input stays in ERROR after its last bad message",
          low=0.0, high=3600.0),
    Param("diagnostics.output_timeout", DOUBLE, 3.0,
          "s without an output (since the last one, or since activation) after which the node reports ERROR",
          low=0.1, high=3600.0),
)
PARAMETER_NAMES = tuple(p.name for p in PARAMETERS)
_BY_NAME = {p.name: p for p in PARAMETERS}


def parameter(name: str) -> Param:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ConfigError(f"{NODE_NAME} has no parameter {name!r}; parameters: {', '.join(PARAMETER_NAMES)}") from None


def defaults() -> Dict[str, Any]:
    return {p.name: ([] if p.default is None else p.default) for p in PARAMETERS}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested parameter YAML (as under ros__parameters) -> {'model.card': ..., ...}."""
    out: Dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


@dataclass(frozen=True)
class NodeConfig:
    """Validated parameters (times in seconds as given; the node converts them for the synchronizer)."""

    card: cards.ModelCard
    checkpoint: Optional[str]
    device: str
    allow_cpu_fallback: bool
    precision: str
    cpu_threads: int
    modalities: Tuple[str, ...]
    qos: str
    queue_depth: int
    lidar_source: str
    lidar_extrinsic: Optional[Tuple[Tuple[float, ...], ...]]  # None: from TF
    fixed_frame: str  # "" = no ego-motion compensation
    camera_model: str
    transports: Dict[str, str]  # subscribed modality -> raw | compressed | compressedDepth
    allow_size_mismatch: bool
    anchor: str
    fallback: Tuple[str, ...]
    slop: float
    max_wait: float
    anchor_timeout: float
    min_modalities: int
    publish_confidence: bool
    publish_color: bool
    only_when_subscribed: bool
    color_alpha: float
    output_resolution: str
    output_depth: int
    diagnostics_period: float
    error_hold: float
    output_timeout: float
    output_frame_id: str
    publish_points: bool
    points_keep_unlabeled: bool
    points_occlusion_deg: float

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "NodeConfig":
        unknown = sorted(set(values) - set(PARAMETER_NAMES))
        if unknown:
            raise ConfigError(f"unknown parameter(s) {unknown}; {NODE_NAME} declares {list(PARAMETER_NAMES)}")
        v = {**defaults(), **{k: ([] if val is None else val) for k, val in values.items()}}
        for p in PARAMETERS:
            v[p.name] = _checked(p, v[p.name])

        card = cards.load(v["model.card"])
        if v["model.input_size"]:
            size = v["model.input_size"]
            card = cards.derive(card, source=f"{card.name} (model.input_size={size})", input_size=[size, size])

        mods = _modalities(v["modalities"], card)
        anchor = _member("sync.anchor", v["sync.anchor"] or mods[0], mods)
        fallback = tuple(_member("sync.fallback_order", m, mods) for m in v["sync.fallback_order"])
        if anchor in fallback or len(set(fallback)) != len(fallback):
            raise ConfigError(f"parameter sync.fallback_order={list(fallback)} must list distinct modalities other "
                              f"than the anchor {anchor!r}")
        if not fallback:
            fallback = tuple(m for m in mods if m != anchor)
        if v["outputs.points"] and (v["inputs.lidar_source"] != POINTS or LIDAR not in mods):
            raise ConfigError("parameter outputs.points=true paints the LiDAR cloud: it needs inputs.lidar_source="
                              f"points and the lidar input (modalities {list(mods)}, lidar_source "
                              f"{v['inputs.lidar_source']!r})")
        if v["sync.min_modalities"] > len(mods):
            raise ConfigError(f"parameter sync.min_modalities={v['sync.min_modalities']} exceeds the "
                              f"{len(mods)} subscribed modalities {list(mods)}")
        return cls(
            card=card,
            checkpoint=v["model.checkpoint"] or None,
            device=v["model.device"],
            allow_cpu_fallback=v["model.allow_cpu_fallback"],
            precision=v["model.precision"],
            cpu_threads=v["model.cpu_threads"],
            modalities=mods,
            qos=v["inputs.qos"],
            queue_depth=v["inputs.queue_depth"],
            lidar_source=v["inputs.lidar_source"],
            lidar_extrinsic=_extrinsic(v["inputs.lidar_extrinsic"]) if v["inputs.lidar_extrinsic"] else None,
            fixed_frame=v["inputs.fixed_frame"].strip().lstrip("/"),
            camera_model=v["inputs.camera_model"],
            transports=_transports(v, mods),
            allow_size_mismatch=v["inputs.allow_size_mismatch"],
            anchor=anchor,
            fallback=fallback,
            slop=v["sync.slop"],
            max_wait=v["sync.max_wait"],
            anchor_timeout=v["sync.anchor_timeout"],
            min_modalities=v["sync.min_modalities"],
            publish_confidence=v["outputs.confidence"],
            publish_color=v["outputs.color"],
            only_when_subscribed=v["outputs.only_when_subscribed"],
            color_alpha=v["outputs.color_alpha"],
            output_resolution=v["outputs.resolution"],
            output_depth=v["outputs.queue_depth"],
            diagnostics_period=v["diagnostics.period"],
            error_hold=v["diagnostics.error_hold"],
            output_timeout=v["diagnostics.output_timeout"],
            output_frame_id=v["outputs.frame_id"],
            publish_points=v["outputs.points"],
            points_keep_unlabeled=v["outputs.points_keep_unlabeled"],
            points_occlusion_deg=v["outputs.points_occlusion_deg"],
        )


def input_topics(names: Sequence[str], lidar_source: str = "image",
                 transports: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Modality -> the relative topic the node subscribes to: the registry's (the base topic), + "/<transport>"
    for a compressed transport (image_transport's naming); a PointCloud2 beside the LiDAR image."""
    topics = {name: modalities.get(name).topic for name in names}
    for name, transport in (transports or {}).items():
        if name in topics and transport != RAW:
            topics[name] = posixpath.join(topics[name], transport)
    if lidar_source == "points" and LIDAR in topics:
        topics[LIDAR] = posixpath.join(posixpath.dirname(modalities.get(LIDAR).topic), POINTS)
    return topics


def camera_info_topic() -> str:
    return posixpath.join(posixpath.dirname(modalities.get(CAMERA).topic), CAMERA_INFO)


def choose_device(requested: str, allow_cpu_fallback: bool, cuda_available: bool) -> Tuple[str, Optional[str]]:
    """(device for the engine, warning or None). A CUDA request without CUDA falls back to the CPU only when allowed."""
    if requested == "auto":
        return ("cuda" if cuda_available else "cpu"), None
    if requested.startswith("cuda") and not cuda_available:
        if not allow_cpu_fallback:
            raise ConfigError(f"parameter model.device={requested!r} but CUDA is not available and "
                              "model.allow_cpu_fallback is false")
        return "cpu", f"model.device={requested!r} but CUDA is not available: running on the CPU"
    return requested, None


# -- checks -----------------------------------------------------------------------------------------------------------


def _checked(p: Param, value: Any) -> Any:
    where = f"parameter {p.name}={value!r}"
    if p.type == STRING:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string")
        if p.choices and value not in p.choices and not (p.name == "model.device" and _is_cuda_index(value)):
            raise ConfigError(f"{where} must be one of {list(p.choices)}" +
                              (" or 'cuda:N'" if p.name == "model.device" else ""))
        return value
    if p.type == BOOL:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value
    if p.type in (INTEGER, DOUBLE):
        numeric = isinstance(value, int) if p.type == INTEGER else isinstance(value, (int, float))
        if isinstance(value, bool) or not numeric or not math.isfinite(value):
            raise ConfigError(f"{where} must be {'an integer' if p.type == INTEGER else 'a number'}")
        if (p.low is not None and value < p.low) or (p.high is not None and value > p.high):
            raise ConfigError(f"{where} must be in [{p.low}, {p.high}]")
        if p.type == INTEGER and p.step and p.step > 1 and (value - p.low) % p.step:
            raise ConfigError(f"{where} must be a multiple of {p.step:g}")
        return value if p.type == INTEGER else float(value)
    if p.type == STRING_ARRAY:
        if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
            raise ConfigError(f"{where} must be a list of strings")
        return tuple(value)
    if p.type == DOUBLE_ARRAY:
        if not isinstance(value, (list, tuple)) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
            raise ConfigError(f"{where} must be a list of numbers")
        return tuple(float(x) for x in value)
    raise ConfigError(f"parameter {p.name} has an unknown type {p.type!r}")  # a bug in the table


def _is_cuda_index(value: str) -> bool:
    head, _, index = value.partition(":")
    return head == "cuda" and index.isdigit()


def _modalities(names: Sequence[str], card: cards.ModelCard) -> Tuple[str, ...]:
    if not names:
        return card.modalities
    try:
        chosen = modalities.canonical(names)
    except ConfigError as exc:
        raise ConfigError(f"parameter modalities={list(names)}: {exc}") from None
    extra = [m for m in chosen if m not in card.modalities]
    if extra:
        raise ConfigError(f"parameter modalities={list(names)}: {extra} not handled by model {card.name!r} "
                          f"(it takes {list(card.modalities)})")
    return tuple(m for m in card.modalities if m in chosen)  # card order: the engine's order


def _member(parameter_name: str, name: str, allowed: Tuple[str, ...]) -> str:
    try:
        canonical = modalities.get(name).name
    except ConfigError as exc:
        raise ConfigError(f"parameter {parameter_name}: {exc}") from None
    if canonical not in allowed:
        raise ConfigError(f"parameter {parameter_name}={name!r} is not one of the subscribed modalities "
                          f"{list(allowed)}")
    return canonical


def _transports(values: Mapping[str, Any], mods: Sequence[str]) -> Dict[str, str]:
    out = {}
    for name in mods:
        transport = values[TRANSPORT_PREFIX + name]
        spec = modalities.get(name)
        if transport == DEPTH_TRANSPORT and not {"16UC1", "mono16", "32FC1"} & set(spec.encodings):
            raise ConfigError(f"parameter {TRANSPORT_PREFIX}{name}={transport!r}: compressedDepth carries 16-bit or "
                              f"32FC1 images, and {spec.topic} takes {list(spec.encodings)}")
        if name == LIDAR and transport != RAW and values["inputs.lidar_source"] == POINTS:
            raise ConfigError(f"parameter {TRANSPORT_PREFIX}{name}={transport!r}: with inputs.lidar_source=points "
                              "the LiDAR is a PointCloud2, which has no image transport (use raw)")
        out[name] = transport
    return out


def _extrinsic(values: Tuple[float, ...]) -> Tuple[Tuple[float, ...], ...]:
    where = f"parameter inputs.lidar_extrinsic={list(values)}"
    if len(values) != 16 or not all(math.isfinite(x) for x in values):
        raise ConfigError(f"{where} must be 16 finite numbers (a 4x4 row-major transform)")
    rows = tuple(tuple(values[4 * r:4 * r + 4]) for r in range(4))
    if rows[3] != (0.0, 0.0, 0.0, 1.0):
        raise ConfigError(f"{where}: the last row must be 0 0 0 1")
    return rows
