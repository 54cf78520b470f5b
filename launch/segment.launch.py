"""ros2 launch mmseg_ros segment.launch.py [params_file:=...] [model:=...] [checkpoint:=...] [device:=...]
[namespace:=...] [rgb_topic:=...] [depth_topic:=...] [event_topic:=...] [lidar_topic:=...]

Starts segment_node with the package's parameter file and sets the Fast DDS shared-memory profile shipped in
config/ (large best-effort images are otherwise lost between processes) unless FASTDDS_DEFAULT_PROFILES_FILE is
already set.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "mmseg_ros"
EXECUTABLE = "segment_node"
PARAMS_FILE = os.path.join("config", "segment.yaml")
DDS_PROFILE = os.path.join("config", "fastdds_shm.xml")
# launch argument -> node parameter it overrides when given (empty = keep the params file's value)
PARAMETER_ARGUMENTS = {"model": "model.card", "checkpoint": "model.checkpoint", "device": "model.device"}
# launch argument -> the node's relative input topic it remaps
TOPIC_ARGUMENTS = {
    "rgb_topic": "rgb/image",
    "depth_topic": "depth/image",
    "event_topic": "event/image",
    "lidar_topic": "lidar/image",
}


def _node(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {param: arg(name) for name, param in PARAMETER_ARGUMENTS.items() if arg(name)}
    return [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name="segment_node",
            namespace=arg("namespace"),
            output="screen",
            parameters=[arg("params_file"), overrides] if overrides else [arg("params_file")],
            remappings=[(topic, arg(name)) for name, topic in TOPIC_ARGUMENTS.items()],
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
    actions += [DeclareLaunchArgument(name, default_value=topic, description=f"topic remapped to {topic}")
                for name, topic in TOPIC_ARGUMENTS.items()]
    if not os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        actions.append(SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", os.path.join(share, DDS_PROFILE)))
    actions.append(OpaqueFunction(function=_node))
    return LaunchDescription(actions)
