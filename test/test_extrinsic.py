"""The pipeline's LiDAR extrinsic: the parameter when set, else a transform tree: through the fixed frame from the
ego at the cloud's stamp to the camera at the image's (ego-motion compensation), or, without that frame, the static
transform at the cloud's stamp, said once; never a silent identity. A real (tiny, random-init) model segments every
set, so the LiDAR image checked is the one the engine got."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from mmseg_ros import msgs
from mmseg_ros.pipeline import Pipeline
from mmseg_ros.pipeline.config import NodeConfig
from mmseg_ros.transforms import Transform, TransformError, TransformTree

CARD = "test_tiny_mle_sam"
SIZE = 64
NS = 1_000_000_000
K = [60.0, 0.0, 32.0, 0.0, 60.0, 32.0, 0.0, 0.0, 1.0]
# The LiDAR 0.5 m left of the camera, axes as a vehicle's (x forward, z up) against the optical frame (z forward)
CAMERA_FROM_LIDAR = np.array([[0, -1, 0, -0.5], [0, 0, -1, 0.2], [1, 0, 0, 0.1], [0, 0, 0, 1.0]])


@pytest.fixture(scope="module")
def segmenter():
    from mmseg_ros.engine import Segmenter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no checkpoint: random init is enough to carry the inputs through
        return Segmenter(CARD, device="cpu")


def points_in_lidar_frame(n=3000, seed=0):
    """Points 4-20 m ahead of the camera, expressed in the LiDAR frame."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(4, 20, n)
    camera = np.stack([rng.uniform(-0.4, 0.4, n) * z, rng.uniform(-0.4, 0.4, n) * z, z, np.ones(n)], 1)
    return (np.linalg.inv(CAMERA_FROM_LIDAR) @ camera.T).T[:, :3].astype(np.float32)


def run(segmenter, values, transforms=None, cloud_frame="lidar_top", camera_frame="camera_optical", sets=2,
        lidar_delay_ns=0, pipelines=None):
    """Camera + CameraInfo + cloud (stamped `lidar_delay_ns` after the camera) through a Pipeline; (outputs,
    rejections, warnings). The pipeline is appended to `pipelines` when given."""
    config = NodeConfig.from_values({"model.card": CARD, "modalities": ["rgb", "lidar"],
                                     "inputs.lidar_source": "points", **values})
    rejected, warned = [], []
    pipeline = Pipeline(config, segmenter, color=False, transforms=transforms, on_warning=warned.append,
                        on_bad_input=lambda name, reason, _: rejected.append((name, reason)))
    if pipelines is not None:
        pipelines.append(pipeline)
    cloud = points_in_lidar_frame()
    outputs = []
    for i in range(sets):
        stamp = 10 * NS + i * NS // 10
        time = msgs.Time(*divmod(stamp, NS))
        pipeline.add_camera_info(msgs.numpy_to_camera_info(K, SIZE, SIZE, header=msgs.Header(time, camera_frame),
                                                           ros=False), stamp)
        ready = pipeline.add("rgb", msgs.numpy_to_image(np.zeros((SIZE, SIZE, 3), np.uint8), "rgb8",
                                                        msgs.Header(time, camera_frame), ros=False), stamp)
        lidar_time = msgs.Time(*divmod(stamp + lidar_delay_ns, NS))
        ready += pipeline.add("lidar", msgs.numpy_to_pointcloud(cloud, msgs.Header(lidar_time, cloud_frame),
                                                                ros=False), stamp + lidar_delay_ns)
        ready += pipeline.poll(stamp + NS // 20)  # (within sync.anchor_timeout: nobody counts as silent)
        outputs += [out for out in (pipeline.process(s, stamp + NS // 20) for s in ready) if out is not None]
    assert len(outputs) == sets
    return outputs, rejected, warned


def expected_image(extrinsic):
    camera = msgs.camera_from_info(msgs.numpy_to_camera_info(K, SIZE, SIZE, ros=False))
    return msgs.project_points(points_in_lidar_frame(), camera, extrinsic, value="depth")


def tree(*edges):
    out = TransformTree()
    for parent, child, matrix in edges:
        out.set_transform(parent, child, Transform.from_matrix(matrix), static=True)
    return out


BASE_FROM_CAMERA = np.array([[0, 0, 1, 1.5], [-1, 0, 0, 0.0], [0, -1, 0, 1.3], [0, 0, 0, 1.0]])
RIG = (("base_link", "camera_optical", BASE_FROM_CAMERA),
       ("base_link", "lidar_top", BASE_FROM_CAMERA @ CAMERA_FROM_LIDAR))


def test_unset_extrinsic_is_looked_up_through_the_tree(segmenter):
    """A tree with the rig's mounts but no odometry: the static transform, and the missing fixed frame said once."""
    pipelines = []
    outputs, rejected, warned = run(segmenter, {}, transforms=tree(*RIG), sets=3, lidar_delay_ns=LIDAR_DELAY_NS,
                                    pipelines=pipelines)
    assert not rejected and len(outputs) == 3
    assert len(warned) == 1 and "no frame 'odom'" in warned[0] and "not compensated" in warned[0]
    for out in outputs:
        assert out.used == ("rgb", "lidar")
        assert np.allclose(out.images["lidar"], expected_image(CAMERA_FROM_LIDAR), atol=1e-4)
    status = {s.name: s for s in pipelines[0].report(11 * NS, "segment_node", {})}["segment_node: segmentation"]
    assert status.value("lidar_clouds_uncompensated") == "3" and status.value("lidar_clouds_motion_compensated") == "0"
    # inputs.fixed_frame empty: compensation is off by choice, nothing to say
    outputs, rejected, warned = run(segmenter, {"inputs.fixed_frame": ""}, transforms=tree(*RIG))
    assert not rejected and not warned
    assert np.allclose(outputs[0].images["lidar"], expected_image(CAMERA_FROM_LIDAR), atol=1e-4)


LIDAR_DELAY_NS = 25_000_000  # the LiDAR scans 25 ms after the camera, as the generated rig's


def ego_at(stamp_ns: int) -> np.ndarray:
    """odom <- base_link: 12 m/s along x, yawing at 0.3 rad/s (constant rates: interpolating samples is exact)."""
    seconds = stamp_ns / NS - 10.0
    c, s = np.cos(0.3 * seconds), np.sin(0.3 * seconds)
    return np.array([[c, -s, 0, 12.0 * seconds], [s, c, 0, 0.2], [0, 0, 1, 0], [0, 0, 0, 1.0]])


def moving_tree(*edges) -> TransformTree:
    out = tree(*edges)
    for ms in range(9_950, 10_451, 50):  # 20 Hz odometry around the sets' stamps
        out.set_transform("odom", "base_link", Transform.from_matrix(ego_at(ms * NS // 1000)), ms * NS // 1000)
    return out


def test_odometry_that_does_not_reach_the_stamps_costs_the_compensation_not_the_lidar(segmenter):
    """Odometry ending before the sets (a late or stopped odometry source): every cloud still goes into its set,
    through the static transform, counted uncompensated and said once."""
    stale = tree(*RIG)
    for ms in range(9_000, 9_201, 50):  # odometry that stops 0.8 s before the first set
        stale.set_transform("odom", "base_link", Transform.from_matrix(ego_at(ms * NS // 1000)), ms * NS // 1000)
    pipelines = []
    outputs, rejected, warned = run(segmenter, {}, transforms=stale, sets=3, lidar_delay_ns=LIDAR_DELAY_NS,
                                    pipelines=pipelines)
    assert not rejected and len(outputs) == 3 and all(out.used == ("rgb", "lidar") for out in outputs)
    assert len(warned) == 1 and "could not be compensated" in warned[0] and "'odom'" in warned[0]
    for out in outputs:
        assert np.allclose(out.images["lidar"], expected_image(CAMERA_FROM_LIDAR), atol=1e-4)
    status = {s.name: s for s in pipelines[0].report(11 * NS, "segment_node", {})}["segment_node: segmentation"]
    assert status.value("lidar_clouds_uncompensated") == "3" and status.value("lidar_clouds_motion_compensated") == "0"


def test_the_cloud_is_carried_to_where_the_camera_was_at_its_stamp(segmenter):
    """With odometry in the tree, the LiDAR image the model gets is the cloud projected through camera(t_image) <-
    odom <- lidar(t_cloud), written out here by hand; the static transform would put it 0.3 m off."""
    pipelines = []
    outputs, rejected, warned = run(segmenter, {}, transforms=moving_tree(*RIG), sets=3,
                                    lidar_delay_ns=LIDAR_DELAY_NS, pipelines=pipelines)
    assert not rejected and not warned and len(outputs) == 3
    base_from_camera, base_from_lidar = RIG[0][2], RIG[1][2]
    for out in outputs:
        assert out.used == ("rgb", "lidar")
        camera_ns, cloud_ns = out.stamp_ns, out.stamp_ns + LIDAR_DELAY_NS
        moving = np.linalg.inv(ego_at(camera_ns) @ base_from_camera) @ ego_at(cloud_ns) @ base_from_lidar
        assert np.allclose(out.images["lidar"], expected_image(moving), atol=1e-3)
        assert not np.allclose(out.images["lidar"], expected_image(CAMERA_FROM_LIDAR), atol=1e-3)
    status = {s.name: s for s in pipelines[0].report(11 * NS, "segment_node", {})}["segment_node: segmentation"]
    assert status.value("lidar_clouds_motion_compensated") == "3"
    # Odometry that ends between the camera's and the cloud's stamps: tf2's extrapolation error, said in the warning
    short = tree(*RIG)
    for ms in (9_950, 10_000):
        short.set_transform("odom", "base_link", Transform.from_matrix(ego_at(ms * NS // 1000)), ms * NS // 1000)
    outputs, rejected, warned = run(segmenter, {}, transforms=short, sets=1, lidar_delay_ns=LIDAR_DELAY_NS)
    assert not rejected and outputs[0].used == ("rgb", "lidar")
    assert len(warned) == 1 and "extrapolate into the future" in warned[0]


def test_no_tree_or_no_transform_is_bad_lidar_input_not_identity(segmenter):
    outputs, rejected, _ = run(segmenter, {})
    assert all(out.used == ("rgb",) for out in outputs) and len(outputs) == 2
    assert rejected and all(name == "lidar" and "no TF is available" in reason for name, reason in rejected)
    _, rejected, _ = run(segmenter, {}, transforms=tree(RIG[0]))  # the LiDAR's frame is not in the tree
    assert rejected and "'lidar_top' does not exist" in rejected[0][1]
    _, rejected, _ = run(segmenter, {}, transforms=tree(RIG[0], ("odom", "lidar_top", np.eye(4))))
    assert rejected and "not connected" in rejected[0][1]


def test_parameter_wins_and_an_identity_across_frames_warns_once(segmenter):
    outputs, rejected, warned = run(segmenter, {"inputs.lidar_extrinsic": CAMERA_FROM_LIDAR.ravel().tolist()},
                                    transforms=tree(RIG[0]))  # (a tree without the LiDAR: not consulted)
    assert not rejected and not warned
    assert np.allclose(outputs[0].images["lidar"], expected_image(CAMERA_FROM_LIDAR), atol=1e-4)
    _, rejected, warned = run(segmenter, {"inputs.lidar_extrinsic": np.eye(4).ravel().tolist()}, sets=3)
    assert not rejected and len(warned) == 1 and "'lidar_top'" in warned[0] and "'camera_optical'" in warned[0]


def test_a_cloud_in_the_camera_frame_needs_no_transform(segmenter):
    outputs, rejected, warned = run(segmenter, {}, cloud_frame="camera_optical")
    assert not rejected and not warned
    assert np.allclose(outputs[0].images["lidar"], expected_image(np.eye(4)), atol=1e-4)


class _Tf2BufferStandIn:
    """What the node's Tf2Lookup calls on a tf2_ros Buffer (there is no tf2_ros here), answered by a TransformTree
    with tf2's argument order and rclpy Times, so the adapter's plumbing (argument order, time conversion, errors,
    the frames YAML) is what is checked."""

    class Failed(Exception):
        pass

    def __init__(self, tree_, edges):
        self.tree, self.edges = tree_, edges

    def lookup_transform(self, target, source, time):
        return self._stamped(lambda: self.tree.lookup(target, source, time.nanoseconds))

    def lookup_transform_full(self, target, target_time, source, source_time, fixed):
        return self._stamped(lambda: self.tree.lookup_full(target, target_time.nanoseconds, source,
                                                           source_time.nanoseconds, fixed))

    def all_frames_as_yaml(self):
        import yaml

        return yaml.safe_dump({child: {"parent": parent, "broadcaster": "default_authority", "rate": 10.0}
                               for parent, child in self.edges})

    def _stamped(self, lookup):
        from types import SimpleNamespace

        from mmseg_ros.transforms import TransformError

        try:
            value = Transform.from_matrix(lookup())
        except TransformError as exc:
            raise self.Failed(str(exc)) from None
        (x, y, z), (qx, qy, qz, qw) = value.translation, value.rotation
        return SimpleNamespace(transform=SimpleNamespace(translation=SimpleNamespace(x=x, y=y, z=z),
                                                         rotation=SimpleNamespace(x=qx, y=qy, z=qz, w=qw)))


@pytest.mark.ros
def test_the_nodes_tf2_adapter_travels_in_time_through_the_fixed_frame(segmenter):
    """The node's tf2_ros path (Tf2Lookup over a Buffer's lookup_transform_full) gives the pipeline the same
    compensated LiDAR image as the TransformTree, and the fallback when the Buffer has no odom."""
    from mmseg_ros.ros.tf_lookup import Tf2Lookup

    edges = [("base_link", "camera_optical"), ("base_link", "lidar_top"), ("odom", "base_link")]
    buffer = _Tf2BufferStandIn(moving_tree(*RIG), edges)
    lookup = Tf2Lookup(buffer, (_Tf2BufferStandIn.Failed,))
    assert lookup.has_frame("odom") and lookup.has_frame("/lidar_top") and not lookup.has_frame("map")
    outputs, rejected, warned = run(segmenter, {}, transforms=lookup, sets=2, lidar_delay_ns=LIDAR_DELAY_NS)
    assert not rejected and not warned
    reference, _, _ = run(segmenter, {}, transforms=moving_tree(*RIG), sets=2, lidar_delay_ns=LIDAR_DELAY_NS)
    for out, expected in zip(outputs, reference):
        np.testing.assert_array_equal(out.images["lidar"], expected.images["lidar"])
    with pytest.raises(TransformError, match="Failed: .*extrapolate"):
        lookup.lookup_full("camera_optical", 20 * NS, "lidar_top", 10 * NS, "odom")
    static = Tf2Lookup(_Tf2BufferStandIn(tree(*RIG), edges[:2]), (_Tf2BufferStandIn.Failed,))
    outputs, rejected, warned = run(segmenter, {}, transforms=static, lidar_delay_ns=LIDAR_DELAY_NS)
    assert not rejected and len(warned) == 1 and "no frame 'odom'" in warned[0]
    assert np.allclose(outputs[0].images["lidar"], expected_image(CAMERA_FROM_LIDAR), atol=1e-4)
