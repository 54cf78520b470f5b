"""Drives recorded as vehicles record them: JPEG camera, compressedDepth, PNG events, the LiDAR only as PointCloud2
with its extrinsic only in /tf_static, all under other topic names. Replayed offline with --remap (scores like the
same drive recorded raw) and live over DDS into segment_node subscribed to the compressed transports, through
drop-outs. Real rosbag2 files, a real tiny MLE-SAM, a real node process."""
import json

import pytest

CARD = "test_tiny_mle_sam"
SIZE = 64
FRAMES = 20  # 2 s at 10 Hz
VEHICLE = {  # bag writer key -> topic, and the node's name it is mapped to
    "rgb": ("/sensing/camera/front/image_raw/compressed", "rgb/image"),
    "depth": ("/sensing/camera/front/depth/compressedDepth", "depth/image"),
    "event": ("/sensing/event/front/image/compressed", "event/image"),
    "points": ("/sensing/lidar/top/pointcloud", "lidar/points"),
    "camera_info": ("/sensing/camera/front/camera_info", "rgb/camera_info"),
}
REMAPS = [arg for topic, name in VEHICLE.values() for arg in ("--remap", f"{name}:={topic}")]


@pytest.fixture(scope="module")
def drives(tmp_path_factory):
    """The same rendered frames as a raw bag and as a compressed vehicle-style bag, plus a tiny checkpoint."""
    import torch

    from mmseg_ros.data.synthetic import SceneGenerator
    from mmseg_ros.data.synthetic.bag import write_drive_bag
    from mmseg_ros.nn.build import build_model
    from mmseg_ros.nn.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("compressed")
    gen = SceneGenerator(5, SIZE, "sun")
    frames = [gen.render_frame(i, all_events=True) for i in range(FRAMES)]
    write_drive_bag(root / "raw", frames)
    write_drive_bag(root / "vehicle", frames, compressed=True, topics={k: t for k, (t, _) in VEHICLE.items()})
    torch.manual_seed(0)
    model = build_model(CARD)
    with torch.no_grad():  # a sharper random decoder: predictions that depend on the inputs
        for name, parameter in model.named_parameters():
            if name.startswith("decoder"):
                parameter.mul_(3.0)
    return root, save_checkpoint(model, root / "tiny.pt")


def replay(bag, out, checkpoint, *extra):
    from mmseg_ros import cli

    code = cli.main(["replay", str(bag), "--card", CARD, "--checkpoint", str(checkpoint), "--out", str(out),
                     "--no-progress", "--quiet", *extra])
    return code, (json.loads((out / "report.json").read_text()) if code == 0 else None)


def test_the_vehicle_bag_holds_what_vehicles_record(drives):
    from mmseg_ros.replay.bagio import InputBag

    root, _ = drives
    with InputBag(root / "vehicle") as bag:
        topics = bag.topics
        assert topics[VEHICLE["rgb"][0]] == topics[VEHICLE["depth"][0]] == "sensor_msgs/msg/CompressedImage"
        assert topics[VEHICLE["points"][0]] == "sensor_msgs/msg/PointCloud2"
        assert topics["/tf_static"] == "tf2_msgs/msg/TFMessage" and "/lidar/image" not in topics
        assert "mmseg.camera_from_lidar" not in bag.custom_data  # the extrinsic is only in TF
        formats = {t: next(m for _, _, m in bag.messages([t])).format for t in (VEHICLE["rgb"][0], VEHICLE["depth"][0])}
    assert formats == {VEHICLE["rgb"][0]: "rgb8; jpeg compressed bgr8",
                       VEHICLE["depth"][0]: "32FC1; compressedDepth png"}


def test_remapped_vehicle_bag_scores_like_the_raw_drive_with_every_sensor_used(drives, tmp_path):
    root, checkpoint = drives
    code, raw = replay(root / "raw", tmp_path / "raw", checkpoint, "--no-output-bag")
    assert code == 0
    code, vehicle = replay(root / "vehicle", tmp_path / "vehicle", checkpoint, "--no-output-bag", *REMAPS)
    assert code == 0
    settings = vehicle["settings"]
    assert settings["lidar_source"] == "points" and settings["lidar_extrinsic_from"] == "tf"
    assert settings["transports"] == {"rgb": "compressed", "depth": "compressedDepth", "event": "compressed",
                                      "lidar": "raw"}
    assert vehicle["bag"]["topics"]["rgb"] == VEHICLE["rgb"][0]
    frames = vehicle["frames"]
    assert frames["processed"] == FRAMES and not any(v["rejected"] for v in vehicle["inputs"].values())
    assert all(frames["used"][m] >= 0.9 * FRAMES for m in ("rgb", "depth", "event", "lidar")), frames["used"]
    print(f"tiny model, {FRAMES} frames: raw mIoU {raw['overall']['miou']:.2f}, vehicle (JPEG, compressedDepth, "
          f"points + TF) {vehicle['overall']['miou']:.2f}")
    assert abs(vehicle["overall"]["miou"] - raw["overall"]["miou"]) < 1.5


def test_without_remaps_the_missing_topics_are_named_and_a_wrong_name_is_refused(drives, tmp_path, capsys):
    from mmseg_ros import cli

    root, checkpoint = drives
    assert cli.main(["replay", str(root / "vehicle"), "--card", CARD, "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "has no /rgb/image" in err and "--remap" in err and VEHICLE["rgb"][0] in err
    assert cli.main(["replay", str(root / "vehicle"), "--card", CARD, "--remap", "camera/image:=/x"]) != 0
    assert "not an input of this replay" in capsys.readouterr().err
    code, _ = replay(root / "vehicle", tmp_path / "x", checkpoint, "--remap", f"rgb/image:={VEHICLE['points'][0]}")
    assert code != 0 and "PointCloud2" in capsys.readouterr().err


def test_no_transform_for_the_cloud_fails_clearly(drives, tmp_path, capsys):
    """The LiDAR's extrinsic exists only in /tf_static: with the bag's TF recorded elsewhere than the replay reads
    it the clouds cannot be projected, and the replay says why instead of using an identity."""
    from mmseg_ros.data.synthetic import SceneGenerator
    from mmseg_ros.data.synthetic.bag import write_drive_bag

    root, checkpoint = drives
    gen = SceneGenerator(5, SIZE, "sun")
    frames = [gen.render_frame(i, all_events=True) for i in range(6)]
    write_drive_bag(tmp_path / "no_tf", frames, compressed=True,
                    topics={"tf_static": "/elsewhere/tf_static", "tf": "/elsewhere/tf"})
    code, _ = replay(tmp_path / "no_tf", tmp_path / "out", checkpoint, "--param", "modalities=[rgb,lidar]")
    assert code != 0
    err = capsys.readouterr().err
    assert "input lidar" in err and "no TF is available" in err


def test_live_node_on_compressed_transports_keeps_publishing_through_drop_outs(drives, tmp_path):
    """Over DDS: the bag's CompressedImages are published as recorded on the node's transport topics
    (rgb/image/compressed, depth/image/compressedDepth, event/image/compressed) and the node, told the transports by
    parameters, answers the camera frames; the camera and depth drop out for a while and it keeps publishing."""
    root, checkpoint = drives
    remaps = REMAPS[:6]  # camera, depth, events (a PointCloud2 LiDAR replays offline only)
    code, live = replay(root / "vehicle", tmp_path / "live", checkpoint, "--live", "--rate", "0.5", *remaps,
                        "--param", "modalities=[rgb,depth,event]", "--drop", "depth@0.4-0.9", "--drop", "rgb@1.1-1.5")
    assert code == 0, (tmp_path / "live" / "segment_node.log").read_text()[-3000:]
    log = (tmp_path / "live" / "segment_node.log").read_text()
    assert "/rgb/image/compressed" in log and "/depth/image/compressedDepth" in log and "Traceback" not in log
    frames = live["frames"]
    sent = FRAMES - live["inputs"]["rgb"]["dropped"]
    assert frames["anchor_messages"] == sent and frames["answered"] >= sent - 1, frames
    assert len(live["windows"]) == 2 and all(w["frames"] >= 2 for w in live["windows"]), live["windows"]
    assert abs(live["overall"]["miou"] - replay(root / "vehicle", tmp_path / "offline", checkpoint, *remaps,
                                               "--param", "modalities=[rgb,depth,event]", "--no-output-bag")[1]
               ["overall"]["miou"]) < 3.0
