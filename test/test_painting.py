"""Segmented LiDAR points (outputs.points): the painted cloud against an independent projection of a generated scene's
points, its layout (fields, order, count), the pipeline's bookkeeping, and replay's point-level scores."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mmseg_ros import msgs
from mmseg_ros.data.synthetic import bag
from mmseg_ros.data.synthetic.generator import SceneGenerator
from mmseg_ros.errors import ConfigError, MessageError
from mmseg_ros.pipeline import NodeConfig, painting

SIZE = 96
TINY = "test_tiny_mle_sam"


@pytest.fixture(scope="module")
def scene():
    frame = SceneGenerator(5, SIZE).render_frame(0)
    meta = frame["meta"]
    camera = msgs.camera_from_info(msgs.numpy_to_camera_info(meta["intrinsics"].reshape(-1), SIZE, SIZE, ros=False))
    records = bag.cloud_records(frame["lidar_points"], frame["lidar_point_labels"])
    records = np.concatenate([records, np.array([(np.nan, 0, 0, 0, 0)], records.dtype)])  # a NaN point stays put
    return frame, camera, meta["camera_from_lidar"], records


def _independent_pixels(records, intrinsics, camera_from_lidar):
    """Each point's pixel (row, col) written out from the pinhole model, -1 when behind the camera or outside."""
    return _pixels_at(records, intrinsics, camera_from_lidar, SIZE)


def test_painted_points_carry_the_label_of_the_pixel_they_project_to(scene):
    frame, camera, extrinsic, records = scene
    projection = msgs.project_cloud(msgs.cloud_xyz(records), camera, extrinsic)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 25, (SIZE, SIZE)).astype(np.uint8)
    confidence = rng.random((SIZE, SIZE)).astype(np.float32)
    painted = painting.paint(records, projection, labels, confidence, num_classes=25)

    assert len(painted) == len(records)  # order and count kept: a consumer indexes it against the input
    for name in records.dtype.names:
        np.testing.assert_array_equal(painted[name], records[name])
    rows, cols, depth = _independent_pixels(records, frame["meta"]["intrinsics"], extrinsic)
    labelled = painted["label"] != 255
    assert labelled.sum() > 1000  # at 96 px many returns share a pixel: the nearest owns it
    # Every labelled point has the label and confidence of the pixel it lands on, by an independent projection.
    assert (rows[labelled] >= 0).all()
    np.testing.assert_array_equal(painted["label"][labelled], labels[rows[labelled], cols[labelled]])
    np.testing.assert_array_equal(painted["confidence"][labelled], confidence[rows[labelled], cols[labelled]])
    assert (painted["confidence"][~labelled] == 0).all()
    # Unlabeled: behind / outside (no pixel), NaN, or occluded: a nearer point owns the same pixel.
    owners = {}
    for i in np.flatnonzero(rows >= 0):
        key = (rows[i], cols[i])
        owners[key] = min(owners.get(key, (np.inf, -1)), (depth[i], i))
    expected = np.zeros(len(records), bool)
    expected[[i for _, i in owners.values()]] = True
    assert np.array_equal(labelled, expected)
    assert not labelled[-1]  # the NaN point
    # The projection's image is the LiDAR image the model took (the same pixels, z-buffer and depth).
    np.testing.assert_array_equal(projection.image(), msgs.project_points(
        msgs.pointcloud_xyz(records), camera, extrinsic, value="depth"))


def test_painted_cloud_layout_and_dropping_unlabeled_points(scene):
    _, camera, extrinsic, records = scene
    projection = msgs.project_cloud(msgs.cloud_xyz(records), camera, extrinsic)
    labels, confidence = np.zeros((SIZE, SIZE), np.uint8), np.ones((SIZE, SIZE), np.float32)
    painted = painting.paint(records, projection, labels, confidence, num_classes=25)
    assert painted.dtype.names[-2:] == ("label", "confidence") and painted.dtype["label"] == np.uint8
    assert painted.dtype.fields["label"][1] == records.dtype.itemsize
    assert painted.dtype.fields["confidence"][1] % 4 == 0  # aligned for consumers that read float32 directly
    wide = painting.paint(records, projection, labels.astype(np.uint16), confidence, num_classes=300)
    assert wide.dtype["label"] == np.uint16 and (wide["label"][~projection.visible] == 65535).all()
    kept = painting.paint(records, projection, labels, confidence, num_classes=25, keep_unlabeled=False)
    assert len(kept) == projection.visible.sum() and (kept["label"] == 0).all()
    assert np.array_equal(kept["x"], records["x"][projection.visible])  # input order
    # Outputs at another resolution (e.g. the model's): pixels are scaled to them.
    half = np.arange((SIZE // 2) ** 2, dtype=np.uint8).reshape(SIZE // 2, SIZE // 2) % 25
    small = painting.paint(records, projection, half, confidence[::2, ::2], num_classes=25)
    vis = projection.winners
    np.testing.assert_array_equal(small["label"][vis], half[projection.rows[vis] // 2, projection.cols[vis] // 2])
    # A round trip through PointCloud2 keeps every field.
    back = msgs.pointcloud_to_numpy(msgs.numpy_to_pointcloud(painted, ros=False))
    assert back.dtype.names == painted.dtype.names and np.array_equal(back["label"], painted["label"])


def _thin_pole_before_a_wall():
    """A LiDAR looking along the camera's axis (identity extrinsic) at a wall 20 m away and a thin pole 5 m away,
    both scanned every third image row as a LiDAR's beams would be: the pole's returns (column 32, rows 1, 4, 7, ...)
    share no pixel with the wall's (rows 0, 3, 6, ...), so the z-buffer alone hides nothing. One more return 0.3 m
    behind the pole (the pole's own relief, within the occlusion margin) sits at row 2, column 32."""
    size, focal = 64, 64.0
    camera = msgs.camera_from_info(msgs.numpy_to_camera_info(
        np.array([focal, 0, 32, 0, focal, 32, 0, 0, 1], float), size, size, ros=False))
    pixels = ([(r, c, 20.0) for r in range(0, size, 3) for c in range(size)]
              + [(r, 32, 5.0) for r in range(1, size, 3)] + [(2, 32, 5.3)])
    rows, cols, depth = (np.array(v) for v in zip(*pixels))
    records = np.zeros(len(pixels), [("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    records["x"], records["y"], records["z"] = (cols - 32) * depth / focal, (rows - 32) * depth / focal, depth
    order = np.random.default_rng(3).permutation(len(records))  # the cloud's order is not the image's
    return camera, records[order], rows[order], cols[order], depth[order]


def test_a_thin_near_object_hides_the_far_points_between_its_returns():
    camera, records, rows, cols, depth = _thin_pole_before_a_wall()
    labels = (np.arange(64 * 64) % 25).astype(np.uint8).reshape(64, 64)
    confidence = np.ones((64, 64), np.float32)
    footprint = 2.0  # 64 px * tan(1 deg) = 1.1: each return covers the pixels within 1 row and 1 column
    assert msgs.projection.footprint_radii(camera, footprint) == (1, 1)
    # The wall's returns within one row and one column of a pole return are behind it; nothing else is.
    pole = depth == 5.0
    behind = np.zeros(len(records), bool)
    for r, c in zip(rows[pole], cols[pole]):
        behind |= (depth == 20.0) & (abs(rows - r) <= 1) & (abs(cols - c) <= 1)
    assert 30 < behind.sum() < 100

    flat = msgs.project_cloud(msgs.cloud_xyz(records), camera, np.eye(4))
    assert (painting.paint(records, flat, labels, confidence, 25)["label"] == labels[rows, cols]).all()
    projection = msgs.project_cloud(msgs.cloud_xyz(records), camera, np.eye(4), footprint_deg=footprint)
    np.testing.assert_array_equal(projection.image(), flat.image())  # the model's LiDAR image does not change
    painted = painting.paint(records, projection, labels, confidence, 25)
    assert len(painted) == len(records) and np.array_equal(painted["x"], records["x"])  # order and count kept
    labelled = painted["label"] != 255
    np.testing.assert_array_equal(labelled, ~behind)  # the relief return 0.3 m behind the pole stays labelled
    # The points the camera sees carry the label of their pixel, by the construction's own pixels.
    np.testing.assert_array_equal(painted["label"][labelled], labels[rows[labelled], cols[labelled]])
    assert (painted["confidence"][~labelled] == 0).all()
    kept = painting.paint(records, projection, labels, confidence, 25, keep_unlabeled=False)
    np.testing.assert_array_equal(kept["x"], records["x"][~behind])  # the hidden ones dropped, input order kept


def test_a_cloud_that_already_has_the_fields_is_refused(scene):
    _, camera, extrinsic, records = scene
    clashing = np.zeros(3, [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("label", "u1")])
    projection = msgs.project_cloud(msgs.cloud_xyz(clashing), camera, extrinsic)
    with pytest.raises(MessageError, match="already has field"):
        painting.paint(clashing, projection, np.zeros((SIZE, SIZE), np.uint8), np.zeros((SIZE, SIZE)), 25)


def test_points_output_needs_lidar_points():
    with pytest.raises(ConfigError, match="outputs.points"):
        NodeConfig.from_values({"model.card": TINY, "outputs.points": True})
    NodeConfig.from_values({"model.card": TINY, "outputs.points": True, "inputs.lidar_source": "points"})


def test_replay_scores_painted_points_and_writes_them(tmp_path):
    from mmseg_ros.replay.bagio import InputBag
    from mmseg_ros.replay.run import OUTPUT_TOPICS, replay_offline

    drive = tmp_path / "drive"
    generator = SceneGenerator(2, SIZE)
    bag.write_drive_bag(drive, [generator.render_frame(i) for i in range(8)])
    from mmseg_ros.replay import pictures

    values = {"model.card": TINY, "inputs.lidar_source": "points", "outputs.points": True}
    config = NodeConfig.from_values(values)
    recorder = pictures.Recorder(config.card.class_set, config.modalities, tile=64)
    report = replay_offline(drive, config, out=tmp_path / "out", progress=False, watch=recorder)
    bird_eye = recorder.frames[0].points  # the painted points from above, in class colours
    assert bird_eye.shape == (64, 64, 3)
    palette = {tuple(c) for c in config.card.class_set.colors}
    coloured = {tuple(p) for p in bird_eye.reshape(-1, 3)} & palette
    assert coloured, "no painted point in the bird's-eye view"
    sheet = recorder.contact_sheet(tmp_path / "sheet.png")
    assert sheet.is_file()
    points = report["points"]
    assert points["clouds"] == points["clouds_scored"] == report["frames"]["processed"] > 0
    assert points["points_scored"] > 0 and 0 <= points["overall"]["miou"] <= 100
    with InputBag(tmp_path / "out" / "segmented") as out:
        clouds = list(out.messages([OUTPUT_TOPICS["points"]]))
    assert len(clouds) == points["clouds"]
    cloud = msgs.pointcloud_to_numpy(clouds[0][2])
    assert {"x", "y", "z", "intensity", "gt_label", "label", "confidence"} <= set(cloud.dtype.names)
    assert clouds[0][2].header.frame_id == generator.render_frame(0)["meta"]["frame_ids"]["lidar_points"]
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["points"]["overall"]["miou"] == points["overall"]["miou"]
    assert "Painted LiDAR points" in (tmp_path / "out" / "report.md").read_text()


def test_the_pipeline_paints_the_sets_own_cloud_and_counts_sets_without_one(scene):
    from mmseg_ros.engine import Segmenter
    from mmseg_ros.pipeline import Pipeline

    frame, camera, extrinsic, records = scene
    config = NodeConfig.from_values({
        "model.card": TINY, "modalities": ["rgb", "lidar"], "inputs.lidar_source": "points", "outputs.points": True,
        "inputs.lidar_extrinsic": [float(v) for v in np.asarray(extrinsic).reshape(-1)]})
    pipeline = Pipeline(config, Segmenter(config.card, device="cpu"), started_ns=0)
    ids = frame["meta"]["frame_ids"]

    def header(ms, frame_id):
        return msgs.Header(stamp=msgs.Time(sec=ms // 1000, nanosec=(ms % 1000) * 10**6), frame_id=frame_id)

    info = msgs.numpy_to_camera_info(frame["meta"]["intrinsics"].reshape(-1), SIZE, SIZE, header=header(0, ids["rgb"]),
                                     ros=False)
    pipeline.add_camera_info(info, 0)
    outputs = []
    for i in range(16):  # 10 Hz; LiDAR off in frames 3-4, camera off in frames 6-13 (longer than anchor_timeout)
        t = 100 * i
        ready = []
        if not 6 <= i <= 13:
            ready += pipeline.add("rgb", msgs.numpy_to_image(frame["rgb"], "rgb8", header(t, ids["rgb"]), ros=False),
                                  t + 1)
        if i not in (3, 4):
            cloud = msgs.numpy_to_pointcloud(records, header(t + 25, ids["lidar_points"]), ros=False)
            ready += pipeline.add("lidar", cloud, t + 26)
        ready += pipeline.poll((t + 60) * 10**6)
        outputs += [o for o in (pipeline.process(s, (t + 60) * 10**6) for s in ready) if o is not None]
    painted = [o for o in outputs if o.points is not None]
    unpainted = [o for o in outputs if o.points is None]
    assert unpainted and all("lidar" not in o.used for o in unpainted)  # LiDAR dropped: nothing to paint
    assert pipeline.unpainted == len(unpainted)
    assert any(o.anchor == "lidar" for o in painted)  # the camera dropped: the cloud still gets its labels
    for o in painted:
        assert o.points_header.frame_id == ids["lidar_points"] and len(o.points) == len(records)
        used = o.images["lidar"]  # the LiDAR image this set's model saw came from the very cloud painted
        projection = msgs.project_cloud(msgs.cloud_xyz(records), camera, extrinsic,
                                        footprint_deg=config.points_occlusion_deg)
        np.testing.assert_array_equal(projection.image(), used)
        # The points the camera sees (the default footprint hides some on the winners' pixels) and no others.
        seen = projection.seen
        assert 0 < len(seen) < len(projection.winners)
        np.testing.assert_array_equal(o.points["label"][seen], o.labels[projection.rows[seen], projection.cols[seen]])
        assert (o.points["label"] != 255).sum() == len(seen)
    statuses = {s.name: s for s in pipeline.report(2 * 10**9, "segment_node", {})}
    assert statuses["segment_node: segmentation"].value("unpainted_sets") == str(len(unpainted))


def test_replay_paints_through_the_moving_ego_from_the_bags_odometry(tmp_path):
    """A generated drive replayed with its /tf: every labelled point carries the label of the pixel an independent
    pinhole projection puts it at through the ego as it moved, camera(t_image) <- world <- LiDAR(t_cloud) from the
    generator's own trajectory and mounts; the static transform would put a large share of them elsewhere."""
    from mmseg_ros.replay.run import replay_offline

    generator = SceneGenerator(7, SIZE)
    bag.write_drive_bag(tmp_path / "drive", [generator.render_frame(i) for i in range(4)])
    config = NodeConfig.from_values({"model.card": TINY, "inputs.lidar_source": "points", "outputs.points": True})
    painted = []

    def keep(frame, _):
        if frame.points is not None:
            painted.append((frame.stamp_ns, frame.points_header, frame.points.copy(), frame.labels.copy()))

    report = replay_offline(tmp_path / "drive", config, progress=False, write_bag=False, watch=keep)
    assert report["settings"]["lidar_motion_compensation"] == {
        "fixed_frame": "odom", "clouds_compensated": len(painted), "clouds_uncompensated": 0}
    assert len(painted) >= 3 and not report["warnings"]
    k = generator.intrinsics.matrix()
    moved = 0
    for camera_ns, header, cloud, labels in painted:
        cloud_ns = header.stamp.sec * 10**9 + header.stamp.nanosec
        assert cloud_ns - camera_ns > 20_000_000  # the LiDAR scanned after the camera
        world_from_camera = generator.ego_pose_at(camera_ns).compose(generator.camera_mount)
        world_from_lidar = generator.ego_pose_at(cloud_ns).compose(generator.lidar_mount)
        camera_from_lidar = world_from_camera.inverse().compose(world_from_lidar).matrix()
        rows, cols, _ = _pixels_at(cloud, k, camera_from_lidar, SIZE)
        labelled = cloud["label"] != 255
        assert labelled.sum() > 500 and (rows[labelled] >= 0).all()
        np.testing.assert_array_equal(cloud["label"][labelled], labels[rows[labelled], cols[labelled]])
        static_rows, static_cols, _ = _pixels_at(cloud, k, generator.camera_from_lidar.matrix(), SIZE)
        moved += np.mean((static_rows[labelled] != rows[labelled]) | (static_cols[labelled] != cols[labelled]))
    assert moved / len(painted) > 0.1  # the ego's motion moves points by pixels: the check tells the two apart


@pytest.mark.ros
def test_the_node_publishes_painted_clouds_through_camera_and_lidar_drop_outs(tmp_path):
    """Over DDS: `mmseg sensors --points` (its gt_label field included) into segment_node with outputs.points; every
    labelled point carries the label of the ~/labels pixel it projects to (an independent pinhole projection), no
    cloud is painted while the LiDAR is off, and clouds keep coming while the camera is off (LiDAR or depth anchor).
    """
    import re
    import subprocess
    import sys
    import threading
    import time

    import test_node as live
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, PointCloud2

    size, ns = 64, "/painting"
    meta = SceneGenerator(0, size).render_frame(0)["meta"]  # `mmseg sensors` renders seed 0 at --size
    extrinsic = meta["camera_from_lidar"]
    listener = live.Listener()
    got = {"labels": [], "points": []}
    lock = threading.Lock()
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)

    def keep(kind, decode):
        def callback(msg):
            with lock:
                got[kind].append((msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec, msg.header.frame_id,
                                  time.monotonic(), decode(msg)))
        return callback

    listener.node.create_subscription(Image, f"{ns}/{live.NODE}/labels",
                                      keep("labels", lambda m: np.array(msgs.image_to_numpy(m))), qos)
    listener.node.create_subscription(PointCloud2, f"{ns}/{live.NODE}/points",
                                      keep("points", lambda m: np.array(msgs.pointcloud_to_numpy(m))), qos)
    log = tmp_path / "node.log"
    node = live.start_node(log, ns, "inputs.lidar_source:=points", "outputs.points:=true",
                           "inputs.lidar_extrinsic:=" + str([float(v) for v in extrinsic.reshape(-1)]))
    sensors = None
    try:
        live.wait_for(lambda: listener.node.count_publishers(f"{ns}/{live.NODE}/points") == 1, live.START_TIMEOUT_S,
                      "the node's ~/points publisher", node, log)
        sensors = subprocess.run(
            [sys.executable, "-m", "mmseg_ros.cli", "sensors", "--points", "--size", str(size), "--frames", "4",
             "--duration", "9", "--rate-scale", "0.5", "--drop", "lidar@2-3.5", "--drop", "rgb@5-7",
             "--ros-args", "-r", f"__ns:={ns}"], capture_output=True, text=True, timeout=120)
        assert sensors.returncode == 0, sensors.stdout + sensors.stderr
        time.sleep(1.5)
    finally:
        code, _ = live.stop(node)
        listener.close()
    assert code == 0, live._tail(log)
    with lock:
        labels, clouds = list(got["labels"]), list(got["points"])
    assert len(clouds) >= 5 and len(labels) > len(clouds)  # sets without a cloud published labels only
    k = meta["intrinsics"]
    checked = 0
    for stamp, frame_id, _, cloud in clouds:
        assert frame_id == meta["frame_ids"]["lidar_points"]  # the cloud's own frame and stamp
        # The set's labels: the output stamped nearest the cloud (the LiDAR fires 25 ms after the camera).
        _, _, _, image = min(labels, key=lambda item: abs(item[0] - stamp))
        rows, cols, _ = _pixels_at(cloud, k, extrinsic, size)
        labelled = cloud["label"] != 255
        assert labelled.any() and (rows[labelled] >= 0).all()
        np.testing.assert_array_equal(cloud["label"][labelled], image[rows[labelled], cols[labelled]])
        assert "gt_label" in cloud.dtype.names and "intensity" in cloud.dtype.names
        checked += 1
    sec, nsec = re.search(r"t0=(\d+)\.(\d{9})", sensors.stdout).groups()
    times = [(stamp - int(sec) * 10**9 - int(nsec)) / 1e9 for stamp, _, _, _ in clouds]  # the drops' clock
    assert not [t for t in times if 2.0 <= t < 3.5], times  # the LiDAR is off: nothing to paint
    assert [t for t in times if 5.7 < t < 7.0], times  # the camera is off: the clouds still get labels
    assert checked == len(clouds)


def _pixels_at(records, intrinsics, camera_from_lidar, size):
    xyz = np.stack([records["x"], records["y"], records["z"]], 1).astype(np.float64)
    cam = xyz @ camera_from_lidar[:3, :3].T + camera_from_lidar[:3, 3]
    with np.errstate(invalid="ignore", divide="ignore"):
        u = np.floor(intrinsics[0, 0] * cam[:, 0] / cam[:, 2] + intrinsics[0, 2] + 0.5)
        v = np.floor(intrinsics[1, 1] * cam[:, 1] / cam[:, 2] + intrinsics[1, 2] + 0.5)
        inside = (cam[:, 2] > 1e-3) & (u >= 0) & (u < size) & (v >= 0) & (v < size)
    return np.where(inside, v, -1).astype(int), np.where(inside, u, -1).astype(int), cam[:, 2]
