"""The ROS-free transform tree (mmseg_ros.transforms): lookups through the tree, interpolation, clear errors, and
TFMessages as rosbags deserialises them."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mmseg_ros.transforms import Transform, TransformError, TransformTree, interpolate, matrix_quaternion

NS = 1_000_000_000


def rotation_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def rigid(rotation: np.ndarray, translation) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rotation, translation
    return out


# The vehicle rig of the issue: base_link -> lidar_top and base_link -> camera_front_optical, both static.
OPTICAL = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0.0]])  # camera optical (z forward) from a body frame (x forward)
BASE_FROM_LIDAR = rigid(rotation_z(0.02), [0.1, 0.0, 1.8])
BASE_FROM_CAMERA = rigid(rotation_z(-0.01) @ OPTICAL.T, [1.5, 0.05, 1.3])


def rig_tree() -> TransformTree:
    tree = TransformTree()
    tree.set_transform("base_link", "lidar_top", Transform.from_matrix(BASE_FROM_LIDAR), static=True)
    tree.set_transform("/base_link", "camera_front_optical", Transform.from_matrix(BASE_FROM_CAMERA), static=True)
    return tree


def test_lookup_through_a_common_parent_is_the_composed_transform():
    tree = rig_tree()
    expected = np.linalg.inv(BASE_FROM_CAMERA) @ BASE_FROM_LIDAR
    got = tree.lookup("camera_front_optical", "lidar_top", 5 * NS)
    assert np.allclose(got, expected, atol=1e-12)
    assert np.allclose(tree.lookup("lidar_top", "camera_front_optical"), np.linalg.inv(expected), atol=1e-12)
    assert np.allclose(tree.lookup("base_link", "lidar_top"), BASE_FROM_LIDAR, atol=1e-12)
    assert np.array_equal(tree.lookup("lidar_top", "/lidar_top"), np.eye(4))


def test_quaternions_round_trip_for_every_kind_of_rotation():
    rng = np.random.default_rng(0)
    for _ in range(200):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        m = Transform((0, 0, 0), tuple(q)).matrix()[:3, :3]
        assert np.allclose(Transform((0, 0, 0), matrix_quaternion(m)).matrix()[:3, :3], m, atol=1e-9)
    for angle in (0.0, math.pi, -math.pi / 2):  # trace <= 0 branches
        m = rigid(rotation_z(angle) @ OPTICAL, [0, 0, 0])[:3, :3]
        assert np.allclose(Transform((0, 0, 0), matrix_quaternion(m)).matrix()[:3, :3], m, atol=1e-9)


def test_dynamic_transforms_interpolate_and_refuse_to_extrapolate():
    tree = rig_tree()
    tree.set_transform("odom", "base_link", Transform.from_matrix(rigid(rotation_z(0.0), [0, 0, 0])), 10 * NS)
    tree.set_transform("odom", "base_link", Transform.from_matrix(rigid(rotation_z(0.4), [2.0, 0, 0])), 11 * NS)
    mid = tree.lookup("odom", "base_link", 10 * NS + NS // 4)
    assert np.allclose(mid, rigid(rotation_z(0.1), [0.5, 0, 0]), atol=1e-9)
    # Static edges below a dynamic one: the chain composes both
    assert np.allclose(tree.lookup("odom", "lidar_top", 11 * NS), rigid(rotation_z(0.4), [2, 0, 0]) @ BASE_FROM_LIDAR)
    with pytest.raises(TransformError, match="extrapolate into the future"):
        tree.lookup("odom", "lidar_top", 12 * NS)
    with pytest.raises(TransformError, match="extrapolate into the past"):
        tree.lookup("odom", "base_link", 9 * NS)
    assert np.allclose(tree.lookup("odom", "base_link"), rigid(rotation_z(0.4), [2.0, 0, 0]))  # newest
    # The camera <- lidar chain does not pass through odom: no time dependence, any stamp works
    assert np.allclose(tree.lookup("camera_front_optical", "lidar_top", 99 * NS),
                       np.linalg.inv(BASE_FROM_CAMERA) @ BASE_FROM_LIDAR)


def test_slerp_takes_the_short_way_and_stays_unit():
    a = Transform((0, 0, 0), (0, 0, math.sin(0.1), math.cos(0.1)))
    b = Transform((0, 0, 0), (0, 0, -math.sin(0.2), -math.cos(0.2)))  # the same as +0.4 rad, sign flipped
    mid = interpolate(a, b, 0.5)
    assert np.allclose(mid.matrix()[:3, :3], rotation_z(0.3), atol=1e-9)


def test_old_samples_leave_the_cache():
    tree = TransformTree(cache_ns=2 * NS)
    for second in range(10):
        tree.set_transform("odom", "base_link", Transform((second, 0, 0), (0, 0, 0, 1)), second * NS)
    with pytest.raises(TransformError, match="known from 7.000 s to 9.000 s"):
        tree.lookup("odom", "base_link", 5 * NS)


@pytest.mark.parametrize("target, source, words", [
    ("camera_front_optical", "lidar_rear", "'lidar_rear' does not exist"),
    ("camera_front_optical", "map", "not connected"),
    ("", "lidar_top", "non-empty frame id"),
])
def test_lookup_errors_name_the_frames(target, source, words):
    tree = rig_tree()
    tree.set_transform("map", "gps", Transform((0, 0, 0), (0, 0, 0, 1)), static=True)
    with pytest.raises(TransformError, match=words):
        tree.lookup(target, source, 0)


@pytest.mark.parametrize("translation, rotation, words", [
    ((float("nan"), 0, 0), (0, 0, 0, 1), "not finite"),
    ((0, 0, 0), (0, 0, 0, 0), "zero quaternion"),
])
def test_malformed_transforms_are_refused(translation, rotation, words):
    with pytest.raises(TransformError, match=words):
        TransformTree().set_transform("a", "b", Transform(translation, rotation), static=True)
    with pytest.raises(TransformError, match="itself"):
        TransformTree().set_transform("a", "/a", Transform((0, 0, 0), (0, 0, 0, 1)))


def test_a_loop_is_an_error_not_a_hang():
    tree = TransformTree()
    identity = Transform((0, 0, 0), (0, 0, 0, 1))
    tree.set_transform("a", "b", identity, static=True)
    tree.set_transform("b", "c", identity, static=True)
    tree.set_transform("c", "a", identity, static=True)
    tree.set_transform("x", "y", identity, static=True)
    with pytest.raises(TransformError, match="loop"):
        tree.lookup("y", "a")


def test_tf_messages_as_rosbags_builds_them():
    from rosbags.typesys import Stores, get_typestore

    t = get_typestore(Stores.ROS2_KILTED).types

    def stamped(parent, child, matrix, sec):
        q = matrix_quaternion(matrix[:3, :3])
        return t["geometry_msgs/msg/TransformStamped"](
            header=t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=0),
                                            frame_id=parent),
            child_frame_id=child,
            transform=t["geometry_msgs/msg/Transform"](
                translation=t["geometry_msgs/msg/Vector3"](x=matrix[0, 3], y=matrix[1, 3], z=matrix[2, 3]),
                rotation=t["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3])))

    message = t["tf2_msgs/msg/TFMessage"](transforms=[
        stamped("base_link", "lidar_top", BASE_FROM_LIDAR, 0),
        stamped("base_link", "camera_front_optical", BASE_FROM_CAMERA, 0)])
    tree = TransformTree()
    assert tree.add_message(message, static=True) == 2
    assert np.allclose(tree.lookup("camera_front_optical", "lidar_top", 3 * NS),
                       np.linalg.inv(BASE_FROM_CAMERA) @ BASE_FROM_LIDAR, atol=1e-12)
    with pytest.raises(TransformError, match="TFMessage"):
        tree.add_message(object())


def ego_at(seconds: float) -> np.ndarray:
    """odom <- base_link of an ego driving 10 m/s along x while turning left at 0.2 rad/s: translation linear and
    rotation at a constant rate about one axis, so the tree's interpolation between samples is exact."""
    return rigid(rotation_z(0.2 * seconds), [10.0 * seconds, 0.5, 0.0])


def moving_rig_tree() -> TransformTree:
    tree = rig_tree()
    for ms in range(10_000, 10_501, 100):  # 10 Hz odometry from 10.0 s to 10.5 s
        tree.set_transform("odom", "base_link", Transform.from_matrix(ego_at(ms / 1000)), ms * NS // 1000)
    return tree


def test_time_travel_carries_a_sensor_from_its_stamp_to_another_sensors():
    """camera at 10.23 s <- lidar at 10.255 s through odom, against the product written out by hand: the LiDAR's
    point goes up to odom with the ego as it was at the LiDAR's stamp, and down to the camera with the ego as it was
    at the camera's (both stamps between odometry samples)."""
    tree = moving_rig_tree()
    camera_ns, lidar_ns = 10_230_000_000, 10_255_000_000
    expected = (np.linalg.inv(ego_at(10.23) @ BASE_FROM_CAMERA)) @ (ego_at(10.255) @ BASE_FROM_LIDAR)
    got = tree.lookup_full("camera_front_optical", camera_ns, "lidar_top", lidar_ns, "odom")
    assert np.allclose(got, expected, atol=1e-9)
    # 25 ms at 10 m/s: a quarter of a metre away from the static transform, which ignores the motion
    static = np.linalg.inv(BASE_FROM_CAMERA) @ BASE_FROM_LIDAR
    assert 0.2 < np.linalg.norm(got[:3, 3] - static[:3, 3]) < 0.3
    # At one stamp the ego did not move in between: the static chain, whatever the fixed frame
    same = tree.lookup_full("camera_front_optical", camera_ns, "lidar_top", camera_ns, "odom")
    assert np.allclose(same, static, atol=1e-9)
    # A point of the world seen by both: the LiDAR's coordinates map onto the camera's
    world_point = np.array([25.0, 3.0, 1.0, 1.0])
    in_lidar = np.linalg.inv(ego_at(10.255) @ BASE_FROM_LIDAR) @ world_point
    in_camera = np.linalg.inv(ego_at(10.23) @ BASE_FROM_CAMERA) @ world_point
    assert np.allclose(got @ in_lidar, in_camera, atol=1e-9)
    assert tree.has_frame("odom") and tree.has_frame("/base_link") and not tree.has_frame("map")


@pytest.mark.parametrize("camera_ns, lidar_ns, words", [
    (10_230_000_000, 10_525_000_000, r"leg odom <- lidar_top at 10\.525 s.*future: known from 10\.000 s to 10\.500"),
    (9_990_000_000, 10_015_000_000, r"leg camera_front_optical <- odom at 9\.990 s.*extrapolate into the past"),
])
def test_time_travel_outside_the_buffered_odometry_says_which_leg_and_when(camera_ns, lidar_ns, words):
    with pytest.raises(TransformError, match=words):
        moving_rig_tree().lookup_full("camera_front_optical", camera_ns, "lidar_top", lidar_ns, "odom")
    with pytest.raises(TransformError, match="'map' does not exist"):
        moving_rig_tree().lookup_full("camera_front_optical", camera_ns, "lidar_top", camera_ns, "map")
