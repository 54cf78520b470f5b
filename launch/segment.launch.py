"""ros2 launch mmseg_ros segment.launch.py [params_file:=...] [model:=...] [checkpoint:=...] [device:=...]
[use_sim_time:=true] [namespace:=...] [rgb_topic:=...] [depth_topic:=...] [event_topic:=...] [lidar_topic:=...]
[lidar_points_topic:=...] [camera_info_topic:=...]

Starts segment_node with the package's parameter file (config/segment.yaml) and sets the Fast DDS shared-memory
profile shipped in config/ (large best-effort images are otherwise lost between processes) unless
FASTDDS_DEFAULT_PROFILES_FILE is already set. Empty arguments keep the parameter file's values and the node's
default topics. test/test_launch.py checks this file against the package.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from mmseg_ros import modalities
from mmseg_ros.pipeline import config as node_config
from mmseg_ros.ros import dds

PACKAGE = "mmseg_ros"
EXECUTABLE = "segment_node"
PARAMS_FILE = os.path.join("config", "segment.yaml")
DDS_PROFILE = os.path.join("config", dds.PROFILE_FILE)
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


def _node(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {}
    for name, param in PARAMETER_ARGUMENTS.items():
        value = arg(name)
        if value:
            overrides[param] = value.lower() == "true" if param in BOOLEAN_PARAMETERS else value
    topics = node_config.input_topics([modalities.get(m).name for m in TOPIC_ARGUMENTS.values()])
    remaps = [(topics[modality], arg(name)) for name, modality in TOPIC_ARGUMENTS.items() if arg(name)]
    points = node_config.input_topics([node_config.LIDAR], "points")[node_config.LIDAR]
    remaps += [(source, arg(name)) for name, source in ((POINTS_ARGUMENT, points),
                                                        (CAMERA_INFO_ARGUMENT, node_config.camera_info_topic()))
               if arg(name)]
    return [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=node_config.NODE_NAME,
            namespace=arg("namespace"),
            output="screen",
            parameters=[arg("params_file"), overrides] if overrides else [arg("params_file")],
            remappings=remaps,
        )
    ]


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    actions = [
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, PARAMS_FILE),
                              description="segment_node parameter YAML"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
    ]
    actions += [DeclareLaunchArgument(name, default_value="", description=f"overrides parameter {param}")
                for name, param in PARAMETER_ARGUMENTS.items()]
    actions += [DeclareLaunchArgument(name, default_value="", description=f"topic to read the {modality} input from")
                for name, modality in TOPIC_ARGUMENTS.items()]
    actions += [DeclareLaunchArgument(name, default_value="", description=text) for name, text in (
        (POINTS_ARGUMENT, "PointCloud2 topic (inputs.lidar_source: points)"),
        (CAMERA_INFO_ARGUMENT, "CameraInfo topic of the camera the points are projected into"))]
    if dds.PROFILE_VARIABLE not in os.environ:  # the user's choice wins, as in dds.configure_transport
        actions.append(SetEnvironmentVariable(dds.PROFILE_VARIABLE, os.path.join(share, DDS_PROFILE)))
    actions.append(OpaqueFunction(function=_node))
    return LaunchDescription(actions)
