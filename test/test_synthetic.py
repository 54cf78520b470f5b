"""The synthetic multi-sensor scene generator: determinism, physical consistency between modalities, sensor
conditions and failures, the DELIVER tree and the rosbag2 drive (both storages)."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmseg_ros import classes, cli
from mmseg_ros.data.synthetic import CONDITIONS, SceneGenerator, encode
from mmseg_ros.data.synthetic.bag import custom_data, write_drive_bag
from mmseg_ros.data.synthetic.tree import FOLDERS, plan_maps, split_counts
from mmseg_ros.errors import ConfigError

DELIVER = classes.load("deliver")
LISTED = ("Road", "SideWalk", "RoadLine", "Terrain", "Building", "Wall", "Cars", "Bus", "Truck", "Pedestrian", "Pole",
          "TrafficSign", "TrafficLight", "Vegetation", "Sky")
NO_LIDAR_LAG = {"rig": {"rates": {"lidar_offset_s": 0.0}}}


def ids(*names):
    return [DELIVER.index(n) for n in names]


def camera_rays(meta):
    """World directions of every pixel's ray (unit optical-axis component) and the camera centre."""
    k, pose = meta["intrinsics"], meta["world_from_camera"]
    size = meta["size"]
    u = (np.arange(size) + 0.5 - k[0, 2]) / k[0, 0]
    v = (np.arange(size) + 0.5 - k[1, 2]) / k[1, 1]
    optical = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))), axis=-1)
    return optical @ pose[:3, :3].T, pose[:3, 3]


@pytest.fixture(scope="module")
def frame_sun():
    return SceneGenerator(seed=3, size=96, condition="sun").render_frame(4)


def test_same_seed_same_bytes_any_order():
    a = SceneGenerator(seed=11, size=64, condition="rain")
    b = SceneGenerator(seed=11, size=64, condition="rain")
    b.render_frame(7)  # a different history must not change frame 2
    fa, fb = a.render_frame(2), b.render_frame(2)
    for key in ("rgb", "depth", "event", "lidar", "labels", "lidar_points"):
        assert np.array_equal(fa[key], fb[key]), key
    other = SceneGenerator(seed=12, size=64, condition="rain").render_frame(2)
    assert not np.array_equal(fa["labels"], other["labels"])


def test_outputs_have_the_documented_types(frame_sun):
    f = frame_sun
    assert f["rgb"].shape == (96, 96, 3) and f["rgb"].dtype == np.uint8
    assert f["depth"].shape == (96, 96) and f["depth"].dtype == np.float32
    assert f["event"].shape == (96, 96, 3) and f["event"].dtype == np.uint8 and not f["event"][..., 2].any()
    assert f["lidar"].shape == (96, 96) and f["lidar"].dtype == np.float32
    assert f["labels"].dtype == np.uint8 and f["labels"].max() < DELIVER.num_classes
    assert f["lidar_points"].ndim == 2 and f["lidar_points"].shape[1] == 4
    # Event bytes are counts times the documented scale.
    scale = f["meta"]["event_count_scale"]
    values = np.unique(f["event"][..., :2])
    assert set(values.tolist()) <= {min(255, n * scale) for n in range(256)}


def test_labels_agree_with_geometry(frame_sun):
    f = frame_sun
    labels, depth = f["labels"], f["depth"]
    sky = labels == DELIVER.index("Sky")
    assert sky.any() and np.isinf(depth[sky]).all()
    assert np.isfinite(depth[~sky & (depth < 60)]).all()
    # Road and lane markings lie exactly on the ground plane: z-depth = camera height / -(ray's z component).
    dirs, centre = camera_rays(f["meta"])
    ground_depth = centre[2] / -dirs[..., 2]
    for name in ("Road", "RoadLine"):
        mask = (labels == DELIVER.index(name)) & np.isfinite(depth)
        assert mask.sum() > 20, name
        np.testing.assert_allclose(depth[mask], ground_depth[mask], rtol=1e-4)
    # ... so markings only differ from road in colour: brighter paint on the same plane.
    gray = f["rgb"].mean(-1)
    assert gray[labels == DELIVER.index("RoadLine")].mean() > gray[labels == DELIVER.index("Road")].mean() + 20
    # Sidewalks are raised slabs: above the ground plane, so nearer than the plane along the same ray.
    walk = (labels == DELIVER.index("SideWalk")) & np.isfinite(depth) & (dirs[..., 2] < 0)
    assert walk.any() and (depth[walk] < ground_depth[walk]).mean() > 0.95


def test_every_listed_class_appears_over_a_batch():
    seen = set()
    for seed in range(10):
        seen |= set(np.unique(SceneGenerator(seed=seed, size=96).render_frame(0)["labels"]).tolist())
    missing = [n for n in LISTED if DELIVER.index(n) not in seen]
    assert not missing, missing


def test_night_darkens_rgb_but_not_geometry():
    day = SceneGenerator(seed=5, size=96, condition="sun").render_frame(3)
    night = SceneGenerator(seed=5, size=96, condition="night").render_frame(3)
    assert np.array_equal(day["depth"], night["depth"])
    assert np.array_equal(day["lidar"], night["lidar"])
    assert np.array_equal(day["labels"], night["labels"])
    gray_day, gray_night = day["rgb"].mean(-1), night["rgb"].mean(-1)
    assert gray_night.mean() < 0.7 * gray_day.mean()
    # Contrast between classes: the spread of per-class mean brightness shrinks at night.
    spread = [np.std([g[day["labels"] == c].mean() for c in np.unique(day["labels"])]) for g in (gray_day, gray_night)]
    assert spread[1] < spread[0]


def test_fog_hides_far_things_from_rgb_only():
    clear = SceneGenerator(seed=6, size=96, condition="cloud").render_frame(2)
    fog = SceneGenerator(seed=6, size=96, condition="fog").render_frame(2)
    assert np.array_equal(clear["depth"], fog["depth"])
    far = np.isfinite(clear["depth"]) & (clear["depth"] > 40)
    near = clear["depth"] < 8
    gray_c, gray_f = clear["rgb"].astype(float).mean(-1), fog["rgb"].astype(float).mean(-1)
    # Far pixels collapse onto the fog colour (little variation left), near ones keep most of theirs.
    assert gray_f[far].std() < 0.5 * gray_c[far].std()
    assert gray_f[near].std() > 0.5 * gray_c[near].std()


def test_events_come_from_motion_only():
    still = SceneGenerator(seed=2, size=96, condition="cloud", ego_speed=0.0, dynamic=False)
    for i in (0, 3):
        assert not still.render_frame(i)["event"].any()
    traffic = SceneGenerator(seed=2, size=96, condition="cloud", ego_speed=0.0, dynamic=True)
    moving = ids("Cars", "Bus", "Truck", "Pedestrian")
    found = 0
    for i in range(12):
        f = traffic.render_frame(i)
        fired = f["event"][..., :2].any(-1)
        if not fired.any():
            continue
        mask = np.isin(f["labels"], moving).astype(np.uint8)
        near_movers = cv2.dilate(mask, np.ones((9, 9), np.uint8)) > 0
        assert fired[near_movers].sum() >= 0.95 * fired.sum()
        found += 1
    assert found >= 3, "a parked ego should see passing traffic fire events"
    driving = SceneGenerator(seed=2, size=96, condition="cloud").render_frame(3)
    assert driving["event"][..., 0].any() and driving["event"][..., 1].any()


def lidar_agreement(frame, depth):
    """Share of LiDAR returns within 5 cm of the depth image, allowing for where inside its pixel a return lands
    (half a pixel of the local depth slope: on the ground near the horizon a pixel spans metres)."""
    hit = (frame["lidar"] > 0) & np.isfinite(depth)
    slope_v, slope_u = np.gradient(np.where(np.isfinite(depth), depth, np.nan))
    tolerance = np.nan_to_num(0.05 + 0.5 * (np.abs(slope_u) + np.abs(slope_v)), nan=np.inf)
    return (np.abs(frame["lidar"] - depth)[hit] <= tolerance[hit]).mean()


def test_lidar_is_sparse_beams_that_agree_with_depth():
    gen = SceneGenerator(seed=4, size=96, condition="sun", overrides=NO_LIDAR_LAG)
    f = gen.render_frame(2)
    returns = f["lidar"] > 0
    assert 0.02 < returns.mean() < 0.4  # a 32-beam scanner at 96 px: ~1/3 of the pixels, fewer at higher sizes
    assert (returns.sum(1) == 0).sum() > 20  # whole image rows between beams have no return
    assert lidar_agreement(f, f["depth"]) > 0.93  # the rest: parallax at edges (the scanner sits higher)
    # With the default lag the scan matches the depth of its own instant, not the camera's.
    lagged = SceneGenerator(seed=4, size=96, condition="sun")
    g = lagged.render_frame(2)
    assert g["meta"]["lidar_time"] > g["meta"]["time"]
    assert lidar_agreement(g, lagged.render_depth(g["meta"]["lidar_time"])) > 0.93
    jitter = SceneGenerator(seed=4, size=96, condition="sun", failure="lidarjitter", overrides=NO_LIDAR_LAG)
    assert lidar_agreement(jitter.render_frame(2), f["depth"]) < 0.8


def test_lidar_points_reproject_onto_the_image(frame_sun):
    meta = frame_sun["meta"]
    pts = frame_sun["lidar_points"][:, :3].astype(np.float64)
    cam = pts @ meta["camera_from_lidar"][:3, :3].T + meta["camera_from_lidar"][:3, 3]
    front = cam[:, 2] > 0.1
    u = np.floor(meta["intrinsics"][0, 0] * cam[front, 0] / cam[front, 2] + meta["intrinsics"][0, 2]).astype(int)
    v = np.floor(meta["intrinsics"][1, 1] * cam[front, 1] / cam[front, 2] + meta["intrinsics"][1, 2]).astype(int)
    inside = (u >= 0) & (u < 96) & (v >= 0) & (v < 96)
    assert inside.sum() > 100
    assert (frame_sun["lidar"][v[inside], u[inside]] > 0).all()


def test_failures_hit_only_their_sensor():
    base = SceneGenerator(seed=8, size=64).render_frame(1)
    for failure, changed in (("overexposure", "rgb"), ("underexposure", "rgb"), ("motionblur", "rgb"),
                             ("eventlowres", "event"), ("lidarjitter", "lidar")):
        f = SceneGenerator(seed=8, size=64, failure=failure).render_frame(1)
        for key in ("rgb", "event", "lidar"):
            assert np.array_equal(f[key], base[key]) == (key != changed), (failure, key)
        assert np.array_equal(f["depth"], base["depth"]) and np.array_equal(f["labels"], base["labels"])
    over = SceneGenerator(seed=8, size=64, failure="overexposure").render_frame(1)["rgb"]
    under = SceneGenerator(seed=8, size=64, failure="underexposure").render_frame(1)["rgb"]
    assert (over >= 250).mean() > 3 * (base["rgb"] >= 250).mean() + 0.05
    assert under.mean() < 0.5 * base["rgb"].mean()
    lowres = SceneGenerator(seed=8, size=64, failure="eventlowres").render_frame(1)["event"]
    assert np.array_equal(lowres[::4, ::4].repeat(4, 0).repeat(4, 1), lowres)  # blocks of 4x4


def test_hha_of_the_ground(frame_sun):
    f = frame_sun
    meta = f["meta"]
    image = encode.hha(f["depth"], meta["intrinsics"], meta["ego_from_camera"])
    road = (f["labels"] == DELIVER.index("Road")) & np.isfinite(f["depth"])
    road = cv2.erode(road.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # away from edges
    assert np.median(image[..., 0][road] - np.round(encode.HHA_DISPARITY / f["depth"][road])) == 0
    assert np.median(image[..., 1][road]) <= 1  # on the ground (the ego pitches a little)
    assert abs(np.median(image[..., 2][road]) - encode.HHA_ANGLE_OFFSET) <= 3  # horizontal
    assert not image[np.isinf(f["depth"])].any()


def test_label_encoding_round_trip():
    labels = np.array([[0, 24, 255], [7, 100, 3]], np.uint8)
    raw = encode.raw_labels(labels, DELIVER.num_classes)
    assert raw.tolist() == [[1, 25, 0], [8, 0, 4]]
    assert encode.train_ids(raw).tolist() == [[0, 24, 255], [7, 255, 3]]


def test_plan_spreads_conditions_failures_and_splits():
    plans = plan_maps(200, frames_per_map=10, conditions=CONDITIONS, failure_every=4, seed=1)
    assert sum(len(p.frames) for p in plans) == 200
    assert {p.condition for p in plans} == set(CONDITIONS)
    assert [p.failure for p in plans if p.failure] == ["motionblur", "overexposure", "underexposure", "lidarjitter",
                                                       "eventlowres"]
    for split in ("train", "val", "test"):
        assert {p.condition for p in plans if p.split == split} == set(CONDITIONS), split
    assert split_counts(4, (0.7, 0.2, 0.1)) == [2, 1, 1]
    with pytest.raises(ConfigError):
        plan_maps(10, conditions=("snow",))


def test_tree_has_delivers_layout_and_encodings(tmp_path):
    root = tmp_path / "synth"
    rc = cli.main(["synth", "--out", str(root), "--frames", "4", "--size", "64", "--frames-per-map", "2",
                   "--conditions", "sun,night", "--failures", "lidarjitter", "--failure-every", "2", "--workers", "2",
                   "--splits", "1,0,0"])
    assert rc == 0
    manifest = json.loads((root / "synthetic.json").read_text())
    names = [m["name"] for m in manifest["maps"]]
    assert names == ["MAP_00", "MAP_01_lidarjitter"]
    rgb_files = sorted(root.glob("img/*/train/*/*.png"))
    assert len(rgb_files) == 4
    for rgb in rgb_files:  # DELIVER's loader derives every other file by string substitution
        path = str(rgb)
        for folder, suffix in FOLDERS.items():
            assert Path(path.replace("/img/", f"/{folder}/").replace("_rgb_", f"_{suffix}_")).is_file()
    # Re-render one frame from the manifest's seed and compare the stored bytes.
    plan = manifest["maps"][1]
    frame = SceneGenerator(plan["seed"], 64, plan["condition"], plan["failure"]).render_frame(plan["frames"][1])
    stem = root / "{}" / plan["condition"] / "train" / "MAP_01_lidarjitter" / f"{plan['frames'][1]:06d}_{{}}_front.png"
    read = lambda folder, suffix: cv2.imread(str(stem).format(folder, suffix), cv2.IMREAD_UNCHANGED)  # noqa: E731
    assert np.array_equal(read("img", "rgb")[..., ::-1], frame["rgb"])
    assert np.array_equal(read("event", "event")[..., ::-1], frame["event"])
    semantic = read("semantic", "semantic")
    assert semantic.ndim == 2 and np.array_equal(semantic, frame["labels"] + 1)
    assert np.array_equal(read("depth", "depth"), encode.millimetres(frame["depth"]))
    assert read("depth", "depth").dtype == np.uint16 and (read("depth", "depth") == 0).any()  # the sky
    assert np.array_equal(read("lidar", "lidar"), encode.millimetres(frame["lidar"]))
    assert read("hha", "depth").shape == (64, 64, 3)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_round_trip(tmp_path, storage):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    bag = tmp_path / f"drive_{storage}"
    assert cli.main(["synth", "--bag", str(bag), "--storage", storage, "--frames", "4", "--size", "48",
                     "--conditions", "night", "--seed", "9"]) == 0
    assert custom_data(bag)["mmseg.condition"] == "night"
    extrinsic = np.array(json.loads(custom_data(bag)["mmseg.camera_from_lidar"]))
    store = get_typestore(Stores.ROS2_KILTED)
    stamps, log_times, first = {}, [], {}
    with Reader(bag) as reader:
        for conn, log_ns, raw in reader.messages():
            msg = store.deserialize_cdr(raw, conn.msgtype)
            stamp = (msg.transforms[0] if conn.topic.startswith("/tf") else msg).header.stamp
            stamps.setdefault(conn.topic, []).append(stamp.sec * 10**9 + stamp.nanosec)
            log_times.append(log_ns)
            first.setdefault(conn.topic, msg)
    # /tf: the ego's odometry at every distinct sensor stamp (camera, depth, LiDAR, two event windows per frame)
    assert {t: len(s) for t, s in stamps.items()} == {
        "/rgb/image": 4, "/rgb/camera_info": 4, "/depth/image": 4, "/event/image": 8, "/lidar/image": 4,
        "/lidar/points": 4, "/gt/labels": 4, "/tf_static": 1, "/tf": 20}
    assert log_times == sorted(log_times)
    ms = {t: np.diff(s) / 1e6 for t, s in stamps.items()}
    assert np.allclose(ms["/rgb/image"], 100, atol=3) and np.allclose(ms["/event/image"], 50, atol=3)
    lag = (np.array(stamps["/lidar/image"]) - np.array(stamps["/rgb/image"])) / 1e6
    assert np.allclose(lag, 25, atol=3)
    # Payloads are the generator's arrays, in the documented encodings.
    gen = SceneGenerator(9, 48, "night")
    frame = gen.render_frame(0, all_events=True)
    assert np.array_equal(extrinsic, frame["meta"]["camera_from_lidar"].round(9))
    rgb, depth = first["/rgb/image"], first["/depth/image"]
    assert rgb.encoding == "rgb8" and np.array_equal(rgb.data.reshape(48, 48, 3), frame["rgb"])
    assert depth.encoding == "32FC1"
    assert np.array_equal(depth.data.view(np.float32).reshape(48, 48), encode.metres(frame["depth"]))
    assert np.array_equal(first["/event/image"].data.reshape(48, 48, 3), frame["events"][0][1])
    assert np.array_equal(first["/gt/labels"].data.reshape(48, 48), frame["labels"])
    cloud = first["/lidar/points"]
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "intensity", "gt_label"]
    assert cloud.width == len(frame["lidar_points"]) == len(frame["lidar_point_labels"])
    recorded = np.frombuffer(bytes(cloud.data), np.uint8).reshape(cloud.width, cloud.point_step)
    assert np.array_equal(recorded[:, 16], frame["lidar_point_labels"])  # each point's true class
    assert first["/lidar/image"].header.frame_id != cloud.header.frame_id


def test_bag_records_the_ego_motion_on_tf_as_a_vehicle_does(tmp_path):
    """/tf holds odom -> base_link at every sensor stamp, from the generator's trajectory; with /tf_static's mounts a
    lookup at a sensor's stamp gives where that sensor was when it captured (within the stamps' 1 ms jitter), and
    each pose is in the bag before the sensor messages stamped with it."""
    from mmseg_ros.data.synthetic.bag import BASE_FRAME
    from mmseg_ros.replay.bagio import InputBag
    from mmseg_ros.transforms import ODOM_FRAME, TransformTree

    gen = SceneGenerator(4, 32, "sun")
    frames = [gen.render_frame(i, all_events=True) for i in range(3)]
    write_drive_bag(tmp_path / "b", frames)
    tree, logged_at = TransformTree(), {}
    with InputBag(tmp_path / "b") as bag:
        for _, _, msg in bag.messages(["/tf_static"]):
            tree.add_message(msg, static=True)
        for topic, log_ns, msg in bag.messages(["/tf", "/rgb/image", "/lidar/points"]):
            if topic == "/tf":
                (item,) = msg.transforms
                assert (item.header.frame_id, item.child_frame_id) == (ODOM_FRAME, BASE_FRAME)
                tree.add_message(msg)
                logged_at[item.header.stamp.sec * 10**9 + item.header.stamp.nanosec] = log_ns
            else:
                stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
                assert logged_at[stamp] < log_ns  # the pose at this stamp came first
    rates = gen.cfg.rig.rates
    for frame in frames:
        meta = frame["meta"]
        stamps, ids = meta["stamps"], meta["frame_ids"]
        for stamp in (stamps["rgb"], stamps["depth"], stamps["lidar"], *stamps["event"]):
            seconds = (stamp - int(round(rates.start_time_s * 1e9))) / 1e9
            assert np.allclose(tree.lookup(ODOM_FRAME, BASE_FRAME, stamp), gen.trajectory.pose(seconds).matrix(),
                               atol=1e-6)
        # Each sensor where the generator rendered it from: the camera at the frame's time, the LiDAR 25 ms later
        world_from_lidar = gen.trajectory.pose(meta["lidar_time"]).compose(gen.lidar_mount).matrix()
        at_lidar = tree.lookup(ODOM_FRAME, ids["lidar_points"], stamps["lidar"])
        at_camera = tree.lookup(ODOM_FRAME, ids["rgb"], stamps["rgb"])
        assert np.linalg.norm(at_lidar[:3, 3] - world_from_lidar[:3, 3]) < 0.02  # 1 ms jitter at < 13 m/s
        assert np.linalg.norm(at_camera[:3, 3] - meta["world_from_camera"][:3, 3]) < 0.02
        ego_moved = tree.lookup(ODOM_FRAME, BASE_FRAME, stamps["lidar"]) - tree.lookup(ODOM_FRAME, BASE_FRAME,
                                                                                         stamps["rgb"])
        assert np.linalg.norm(ego_moved[:3, 3]) > 0.15  # the ego drove on between camera and LiDAR


def test_bag_drops_and_refuses_overwrite(tmp_path):
    gen = SceneGenerator(1, 32)
    frames = [gen.render_frame(i) for i in range(3)]
    counts = write_drive_bag(tmp_path / "b", frames, drops={"lidar": [1], "rgb": [0, 2]}, points=False)
    assert counts["/lidar/image"] == 2 and counts["/rgb/image"] == 1 and counts["/event/image"] == 3
    assert counts["/lidar/points"] == 0 and counts["/gt/labels"] == 3
    with pytest.raises(ConfigError):
        write_drive_bag(tmp_path / "b", frames)
    with pytest.raises(ConfigError):
        write_drive_bag(tmp_path / "c", frames, drops={"radar": [0]})


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="condition"):
        SceneGenerator(0, 64, condition="snow")
    with pytest.raises(ConfigError, match="failure"):
        SceneGenerator(0, 64, failure="lens_flare")
    with pytest.raises(ConfigError, match="rig.lidar.beam"):
        SceneGenerator(0, 64, overrides={"rig": {"lidar": {"beam": 64}}})
    with pytest.raises(ConfigError, match="size"):
        SceneGenerator(0, 8)
    with pytest.raises(ConfigError, match="seed"):
        SceneGenerator(-1, 64)
    with pytest.raises(ConfigError, match="index"):
        SceneGenerator(0, 64).render_frame(-1)
    assert cli.main(["synth", "--frames", "2"]) == 1  # nothing to do


def test_generator_and_writers_import_no_ros():
    code = ("import sys, mmseg_ros.data.synth_cli, mmseg_ros.data.synthetic.bag, mmseg_ros.data.synthetic.tree, "
            "mmseg_ros.data.synthetic.preview; assert 'rclpy' not in sys.modules and 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
