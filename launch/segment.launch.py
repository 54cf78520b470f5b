"""ros2 launch mmseg_ros segment.launch.py [params_file:=...] [model:=...] [checkpoint:=...] [device:=...]
[use_sim_time:=true] [namespace:=...] [lifecycle:=true] [rgb_topic:=...] [depth_topic:=...] [event_topic:=...]
[lidar_topic:=...] [lidar_points_topic:=...] [camera_info_topic:=...] [labels_topic:=...] [confidence_topic:=...]
[color_topic:=...] [dds_profile_for_all:=true]

Starts segment_node with the package's parameter file (config/segment.yaml, keyed `/**` so it applies under any
namespace and node name) or yours. Empty arguments keep the parameter file's values and the node's default topics.
The camera's CameraInfo follows the camera topic's remap (image_transport's convention: `camera_info` beside the
image topic) unless camera_info_topic is given.

Large images: the node gets the shipped Fast DDS shared-memory profile (both Fast DDS generations' variables) unless
FASTDDS_DEFAULT_PROFILES_FILE or FASTRTPS_DEFAULT_PROFILES_FILE is set already. The profile matters most on the
PUBLISHING side: with `dds_profile_for_all:=true` it is set for everything this launch (and a launch file including
it) starts afterwards, e.g. camera drivers; for drivers started elsewhere, `mmseg dds env` prints the lines.
test/test_launch.py checks this file against the package.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from mmseg_ros.pipeline import config as node_config
from mmseg_ros.ros import dds, launch_args

PACKAGE = "mmseg_ros"
EXECUTABLE = "segment_node"
PARAMS_FILE = os.path.join("config", "segment.yaml")
DDS_PROFILE = os.path.join("config", dds.PROFILE_FILE)
# The arguments' meaning lives in the package (mmseg_ros/ros/launch_args.py), where it is tested without ROS.
PARAMETER_ARGUMENTS = launch_args.PARAMETER_ARGUMENTS
TOPIC_ARGUMENTS = launch_args.TOPIC_ARGUMENTS
POINTS_ARGUMENT = launch_args.POINTS_ARGUMENT
CAMERA_INFO_ARGUMENT = launch_args.CAMERA_INFO_ARGUMENT
OUTPUT_ARGUMENTS = launch_args.OUTPUT_ARGUMENTS
LIFECYCLE_ARGUMENT = launch_args.LIFECYCLE_ARGUMENT
DDS_FOR_ALL_ARGUMENT = launch_args.DDS_FOR_ALL_ARGUMENT


def _profile_environment():
    """The profile variables to set (none when the user set either: their choice wins, as in dds)."""
    if dds.chosen_profiles():
        return {}
    profile = os.path.join(get_package_share_directory(PACKAGE), DDS_PROFILE)
    return {name: profile for name in dds.profile_variables(dds.fastdds_generation())}


def _node(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    overrides = launch_args.parameter_overrides(arg)
    environment = _profile_environment()
    actions = []
    if arg(DDS_FOR_ALL_ARGUMENT).lower() == "true":
        actions += [SetEnvironmentVariable(name, value) for name, value in environment.items()]
    actions.append(Node(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=node_config.NODE_NAME,
        namespace=arg("namespace"),
        output="screen",
        arguments=["--lifecycle"] if arg(LIFECYCLE_ARGUMENT).lower() == "true" else [],
        parameters=[arg("params_file"), overrides] if overrides else [arg("params_file")],
        remappings=launch_args.remappings(arg),
        additional_env=environment,
    ))
    return actions


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    actions = [
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, PARAMS_FILE),
                              description="segment_node parameter YAML (keyed /** to match any namespace)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
        DeclareLaunchArgument(LIFECYCLE_ARGUMENT, default_value="false",
                              description="true: a managed node (configure loads the model, activate subscribes)"),
        DeclareLaunchArgument(DDS_FOR_ALL_ARGUMENT, default_value="false",
                              description="true: the shared-memory Fast DDS profile for every process started "
                                          "after this point (camera drivers), not only segment_node"),
    ]
    actions += [DeclareLaunchArgument(name, default_value="", description=f"overrides parameter {param}")
                for name, param in PARAMETER_ARGUMENTS.items()]
    actions += [DeclareLaunchArgument(name, default_value="", description=f"topic to read the {modality} input from")
                for name, modality in TOPIC_ARGUMENTS.items()]
    actions += [DeclareLaunchArgument(name, default_value="", description=text) for name, text in (
        (POINTS_ARGUMENT, "PointCloud2 topic (inputs.lidar_source: points)"),
        (CAMERA_INFO_ARGUMENT, "CameraInfo topic of the camera (default: camera_info beside rgb_topic)"))]
    actions += [DeclareLaunchArgument(name, default_value="", description=f"topic to publish {source} on")
                for name, source in OUTPUT_ARGUMENTS.items()]
    actions.append(OpaqueFunction(function=_node))
    return LaunchDescription(actions)
