"""Which bag topic feeds which input of the replay: the node's topic names, `--remap name:=topic` as ros2 spells it,
and the message types the bag recorded (Image = raw transport, CompressedImage = compressed or compressedDepth,
PointCloud2 = LiDAR points), plus the LiDAR extrinsic's source (parameter, the bag's TF, or a generator bag's
metadata).

    mmseg replay BAG --remap rgb/image:=/sensing/camera/front/image_raw/compressed \\
                     --remap lidar/points:=/sensing/lidar/top/pointcloud --remap rgb/camera_info:=/sensing/.../info

A remap names the node's relative topic (the base topic of an image input, whatever its transport; `lidar/points`;
`rgb/camera_info`) and the bag's absolute topic. Mapping `lidar/points`, or a bag with /lidar/points but no
/lidar/image, makes the LiDAR a PointCloud2 input.
"""
from __future__ import annotations

import dataclasses
import json
import posixpath
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Tuple

import numpy as np

from .. import modalities, msgs
from ..data.synthetic.bag import LABELS_TOPIC
from ..errors import ConfigError, DataError, MMSegError
from ..pipeline import config as node_config
from ..pipeline.config import LIDAR, POINTS, RAW, NodeConfig
from ..transforms import TransformTree
from .bagio import CAMERA_INFO_TYPE, COMPRESSED_TYPE, IMAGE_TYPE, POINTS_TYPE, TF_TYPE, InputBag

TF_TOPICS = {"/tf_static": True, "/tf": False}  # topic -> static
EXTRINSIC_METADATA = "mmseg.camera_from_lidar"  # generator bags before TF: the matrix in the bag's metadata


def parse_remaps(texts: Iterable[str]) -> Dict[str, str]:
    """['rgb/image:=/a/b', ...] -> {'rgb/image': '/a/b'} (names relative, topics absolute)."""
    out: Dict[str, str] = {}
    for text in texts:
        name, sep, topic = text.partition(":=")
        name, topic = name.strip().strip("/"), topic.strip()
        if not sep or not name or not topic:
            raise ConfigError(f"--remap expects NAME:=TOPIC (ros2's spelling), got {text!r}")
        if name in out:
            raise ConfigError(f"--remap {name} given twice")
        out[name] = "/" + topic.lstrip("/")
    return out


@dataclass(frozen=True)
class BagInputs:
    """What the replay reads: the config adjusted to the bag (lidar_source, transports), the bag topic of each
    input, the CameraInfo topic (for points), the ground truth, and the TF topics present."""

    config: NodeConfig
    topics: Dict[str, str]  # modality -> bag topic
    types: Dict[str, str]  # modality -> message type in the bag
    camera_info: Optional[str]
    labels: Optional[str]
    tf: Tuple[str, ...]


def resolve(bag: InputBag, config: NodeConfig, remaps: Dict[str, str], labels_topic: Optional[str]) -> BagInputs:
    names = {modality: modalities.get(modality).topic for modality in config.modalities}  # base topics
    info_name = node_config.camera_info_topic()
    points_name = posixpath.join(posixpath.dirname(names[LIDAR]), POINTS) if LIDAR in names else None
    allowed = {*names.values(), info_name, *([points_name] if points_name else [])}
    unknown = sorted(set(remaps) - allowed)
    if unknown:
        raise ConfigError(f"--remap {', '.join(unknown)}: not an input of this replay; inputs: {sorted(allowed)}")
    lidar_image = "/" + names[LIDAR] if LIDAR in names else None
    recorded_as_points = (lidar_image and names[LIDAR] not in remaps and lidar_image not in bag.topics
                          and bag.topics.get("/" + points_name) == POINTS_TYPE)
    if (points_name in remaps or recorded_as_points) and config.lidar_source != POINTS:
        # A LiDAR mapped as points, or a bag that recorded only the cloud (as vehicles do): project the points
        config = dataclasses.replace(config, lidar_source=POINTS)
    defaults = {m: "/" + t for m, t in node_config.input_topics(config.modalities, config.lidar_source,
                                                              config.transports).items()}
    have = bag.topics
    topics = {}
    for modality, base in names.items():
        name = points_name if modality == LIDAR and config.lidar_source == POINTS else base
        topics[modality] = remaps.get(name, defaults[modality])
        if name not in remaps and topics[modality] not in have and name == base:
            # image_transport's naming: a bag without the raw topic may hold base/compressed or base/compressedDepth
            found = [f"/{base}/{t}" for t in msgs.TRANSPORTS[1:] if have.get(f"/{base}/{t}") == COMPRESSED_TYPE]
            topics[modality] = found[0] if len(found) == 1 else topics[modality]
    missing = [t for t in topics.values() if t not in have]
    if missing:
        listing = ", ".join(f"{t} ({m})" for t, m in sorted(have.items())) or "nothing"
        raise DataError(f"bag {bag.path} has no {', '.join(missing)} (an input of the model; map the bag's topics with "
                        f"--remap NAME:=TOPIC); it has: {listing}")
    types = {m: have[t] for m, t in topics.items()}
    transports = dict(config.transports)
    for modality, msgtype in types.items():
        points = modality == LIDAR and config.lidar_source == POINTS
        wanted = (POINTS_TYPE,) if points else (IMAGE_TYPE, COMPRESSED_TYPE)
        if msgtype not in wanted:
            raise DataError(f"bag {bag.path}: {topics[modality]} is {msgtype}; input {modality} takes "
                            f"{' or '.join(wanted)}")
        if not points:
            transports[modality] = _transport(bag, topics[modality]) if msgtype == COMPRESSED_TYPE else RAW
    config = dataclasses.replace(config, transports=transports)
    info = None
    if config.lidar_source == POINTS and LIDAR in topics:
        info = remaps.get(info_name, "/" + info_name)
        bag.require({info: CAMERA_INFO_TYPE}, "the CameraInfo the LiDAR points are projected into")
    if labels_topic:
        bag.require({labels_topic: IMAGE_TYPE}, "the ground-truth labels topic given")
    elif LABELS_TOPIC in have:
        labels_topic = LABELS_TOPIC
    tf = tuple(t for t in TF_TOPICS if have.get(t) == TF_TYPE)
    return BagInputs(config, topics, types, info, labels_topic, tf)


def _transport(bag: InputBag, topic: str) -> str:
    """compressed or compressedDepth, from the first message's format (the topic name is only a convention)."""
    for _, _, msg in bag.messages([topic]):
        try:
            return msgs.parse_format(msg.format).transport
        except MMSegError as exc:
            raise DataError(f"bag {bag.path}: {topic}: {exc}") from None
    raise DataError(f"bag {bag.path}: {topic} holds no message")


# -- the LiDAR extrinsic ----------------------------------------------------------------------------------------------


def extrinsic_source(bag: InputBag, inputs: BagInputs) -> Tuple[NodeConfig, Optional[TransformTree], str]:
    """(config, transform tree or None, what gives the extrinsic) for LiDAR points: the parameter when set; else
    the bag's /tf_static (read up front: static transforms hold at every time) and /tf (fed in log order by the
    replay); else the matrix a generator bag recorded in its metadata (bags written before TF); else nothing, and
    every cloud is rejected with that reason."""
    config = inputs.config
    if inputs.camera_info is None:
        return config, None, "unused"
    if config.lidar_extrinsic is not None:
        return config, None, "parameter"
    if inputs.tf:
        tree = TransformTree()
        if "/tf_static" in inputs.tf:
            for _, _, msg in bag.messages(["/tf_static"]):
                tree.add_message(msg, static=True)
        return config, tree, "tf"
    recorded = bag.custom_data.get(EXTRINSIC_METADATA)
    if recorded is not None:
        matrix = tuple(tuple(float(v) for v in row) for row in np.asarray(json.loads(recorded), dtype=float))
        return dataclasses.replace(config, lidar_extrinsic=matrix), None, "bag metadata"
    return config, None, "none"
