"""What segment.launch.py's arguments mean, without the launch packages: which parameter or topic each one sets,
and the remapping rules they make. The launch file calls this; tests check it without a ROS install."""
from __future__ import annotations

import posixpath
from typing import Callable, List, Tuple

from .. import modalities
from ..pipeline import config as node_config

# launch argument -> node parameter it overrides when given
PARAMETER_ARGUMENTS = {
    "model": "model.card",
    "checkpoint": "model.checkpoint",
    "device": "model.device",
    "use_sim_time": "use_sim_time",
}
BOOLEAN_PARAMETERS = ("use_sim_time",)
# launch argument -> modality whose input topic it remaps
TOPIC_ARGUMENTS = {"rgb_topic": "rgb", "depth_topic": "depth", "event_topic": "event", "lidar_topic": "lidar"}
# launch arguments for the topics of inputs.lidar_source: points
POINTS_ARGUMENT = "lidar_points_topic"
CAMERA_INFO_ARGUMENT = "camera_info_topic"
# launch argument -> output topic (the node's private names) it remaps
OUTPUT_ARGUMENTS = {"labels_topic": "~/labels", "confidence_topic": "~/confidence", "color_topic": "~/color"}
LIFECYCLE_ARGUMENT = "lifecycle"
DDS_FOR_ALL_ARGUMENT = "dds_profile_for_all"


def remappings(arg: Callable[[str], str]) -> List[Tuple[str, str]]:
    """(from, to) rules for the arguments given (`arg(name)` is '' when not given). The camera's CameraInfo follows
    the camera topic (image_transport's convention: `camera_info` beside the image topic) unless given itself."""
    topics = node_config.input_topics([modalities.get(m).name for m in TOPIC_ARGUMENTS.values()])
    remaps = [(topics[modality], arg(name)) for name, modality in TOPIC_ARGUMENTS.items() if arg(name)]
    points = node_config.input_topics([node_config.LIDAR], node_config.POINTS)[node_config.LIDAR]
    if arg(POINTS_ARGUMENT):
        remaps.append((points, arg(POINTS_ARGUMENT)))
    camera_info = arg(CAMERA_INFO_ARGUMENT)
    camera = arg(next(name for name, m in TOPIC_ARGUMENTS.items() if m == node_config.CAMERA))
    if not camera_info and camera:
        camera_info = posixpath.join(posixpath.dirname(camera), node_config.CAMERA_INFO)
    if camera_info:
        remaps.append((node_config.camera_info_topic(), camera_info))
    remaps += [(source, arg(name)) for name, source in OUTPUT_ARGUMENTS.items() if arg(name)]
    return remaps


def parameter_overrides(arg: Callable[[str], str]) -> dict:
    """{parameter: value} for the parameter arguments given (booleans parsed)."""
    overrides = {}
    for name, param in PARAMETER_ARGUMENTS.items():
        value = arg(name)
        if value:
            overrides[param] = value.lower() == "true" if param in BOOLEAN_PARAMETERS else value
    return overrides
