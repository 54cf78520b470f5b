"""`mmseg replay`: generated drive bags (real rosbag2 files, mcap and sqlite3) through the node's synchronizer and a
real tiny MLE-SAM; scores against `mmseg eval` on the same rendered frames; drop-out windows; clear failures."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

CARD = "test_tiny_mle_sam"
SIZE = 64  # the tiny card's input size: camera frames at model size, so no resize separates replay from eval
FRAMES = 30  # 3 s at 10 Hz
CONDITION = "night"
DECODER_GAIN = 3.0


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    """One rendered drive written three ways: an mcap bag, a sqlite3 bag and a DELIVER val tree; plus a tiny
    random-init checkpoint that both `mmseg eval` and `mmseg replay` load."""
    from mmseg_ros.data.synthetic import SceneGenerator, tree
    from mmseg_ros.data.synthetic.bag import write_drive_bag
    from mmseg_ros.nn.build import build_model
    from mmseg_ros.nn.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("replay")
    gen = SceneGenerator(7, SIZE, CONDITION)
    frames = [gen.render_frame(i, all_events=True) for i in range(FRAMES)]
    write_drive_bag(root / "drive_mcap", frames, storage="mcap")
    write_drive_bag(root / "drive_sqlite", frames, storage="sqlite3")
    plan = tree.MapPlan(0, 7, CONDITION, None, "val", tuple(range(FRAMES)))
    for frame in frames:
        tree.write_frame(root / "tree", plan, frame)
    import torch

    torch.manual_seed(0)
    model = build_model(CARD)
    with torch.no_grad():  # random init predicts nearly one class whatever the input; a sharper decoder follows
        for name, parameter in model.named_parameters():  # the features (11 classes; without LiDAR ~5% px change)
            if name.startswith("decoder"):
                parameter.mul_(DECODER_GAIN)
    checkpoint = save_checkpoint(model, root / "tiny.pt")
    return root, checkpoint


def replay(bag, out, *extra, checkpoint=None):
    from mmseg_ros import cli

    args = ["replay", str(bag), "--card", CARD, "--out", str(out), "--no-progress", "--quiet", *extra]
    if checkpoint is not None:
        args += ["--checkpoint", str(checkpoint)]
    code = cli.main(args)
    return code, (json.loads((out / "report.json").read_text()) if code == 0 else None)


def test_offline_replay_scores_like_mmseg_eval_on_the_same_frames(drive, tmp_path):
    from mmseg_ros import cli

    root, checkpoint = drive
    assert cli.main(["eval", "--checkpoint", str(checkpoint), "--card", CARD, "--data", str(root / "tree"),
                     "--split", "val", "--option", "depth_source=depth", "--out", str(tmp_path / "eval"),
                     "--no-progress"]) == 0
    evaluated = json.loads((tmp_path / "eval" / "results.json").read_text())["full"]
    code, report = replay(root / "drive_mcap", tmp_path / "replay", "--score-size", "model", checkpoint=checkpoint)
    assert code == 0
    replayed = report["overall"]
    assert report["frames"]["scored"] == report["frames"]["processed"] == FRAMES
    assert report["subsets"]["R-D-E-L"]["frames"] == FRAMES  # every set complete: eval's full set
    assert replayed["pixels"] == evaluated["pixels"]  # the same labelled pixels
    assert abs(replayed["miou"] - evaluated["miou"]) < 0.5, (replayed["miou"], evaluated["miou"])
    # Stronger than the mIoU: the predictions agree pixel for pixel but for quantisation (depth/LiDAR in the tree
    # are whole millimetres, in the bag float metres). Leaving LiDAR out changes ~50x more than this allows.
    confusion_eval, confusion_replay = np.array(evaluated["confusion"]), np.array(replayed["confusion"])
    print(f"mIoU eval {evaluated['miou']:.3f} replay {replayed['miou']:.3f}; confusion cells differing by "
          f"{np.abs(confusion_eval - confusion_replay).sum()} of {confusion_eval.sum()} pixels")
    assert np.abs(confusion_eval - confusion_replay).sum() <= 0.001 * confusion_eval.sum()
    assert report["conditions"][CONDITION]["miou"] == pytest.approx(replayed["miou"])


def test_drop_window_removes_depth_exactly_there_and_outputs_follow_input_stamps(drive, tmp_path):
    from mmseg_ros.replay.bagio import InputBag
    from mmseg_ros.sync import stamp_to_ns

    root, _ = drive
    _, clean = replay(root / "drive_mcap", tmp_path / "clean", "--no-output-bag")
    code, dropped = replay(root / "drive_mcap", tmp_path / "dropped", "--drop", "depth@1-2", "--pictures")
    assert code == 0
    from PIL import Image

    assert Image.open(tmp_path / "dropped" / "sheet.png").size[0] > 5 * 128  # with the ground-truth column
    assert Image.open(tmp_path / "dropped" / "drive.gif").n_frames == FRAMES
    window = dropped["windows"][0]
    assert window["drop"] == "depth@1-2" and window["frames"] == 10
    assert window["used"]["depth"] == 0 and window["used"]["rgb"] == 10
    assert dropped["frames"]["used"]["depth"] == clean["frames"]["used"]["depth"] - 10 == FRAMES - 10
    assert dropped["inputs"]["depth"]["dropped"] == 10
    assert dropped["subsets"]["R-E-L"]["frames"] == 10 and dropped["subsets"]["R-D-E-L"]["frames"] == FRAMES - 10
    markdown = (tmp_path / "dropped" / "report.md").read_text()
    assert "depth@1-2" in markdown and "Latency per stage" in markdown

    # The output bag: same storage as the input, one labels/confidence/color message per frame, on the camera stamps.
    with InputBag(root / "drive_mcap") as bag:
        camera = [stamp_to_ns(m.header.stamp) for _, _, m in bag.messages(["/rgb/image"])]
    with InputBag(tmp_path / "dropped" / "segmented") as out:
        assert out.storage == "mcap"
        for kind, encoding in (("labels", "mono8"), ("confidence", "32FC1"), ("color", "rgb8")):
            messages = [m for _, _, m in out.messages([f"/segment_node/{kind}"])]
            assert [stamp_to_ns(m.header.stamp) for m in messages] == camera
            assert {m.encoding for m in messages} == {encoding}
            assert {(m.height, m.width) for m in messages} == {(SIZE, SIZE)}


def test_sqlite3_bag_replays_to_the_same_result_without_rclpy(drive, tmp_path):
    """Both storages give identical results (deterministic replay); the offline path never imports rclpy."""
    root, checkpoint = drive
    code, mcap = replay(root / "drive_mcap", tmp_path / "mcap", "--no-output-bag", checkpoint=checkpoint)
    assert code == 0
    script = (
        "import sys\n"
        "from mmseg_ros import cli\n"
        f"code = cli.main(['replay', {str(root / 'drive_sqlite')!r}, '--card', {CARD!r}, '--checkpoint', "
        f"{str(checkpoint)!r}, '--out', {str(tmp_path / 'sqlite')!r}, '--no-progress', '--quiet'])\n"
        "assert 'rclpy' not in sys.modules, 'offline replay imported rclpy'\n"
        "sys.exit(code)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    sqlite = json.loads((tmp_path / "sqlite" / "report.json").read_text())
    assert sqlite["bag"]["storage"] == "sqlite3" and sqlite["output_bag"]["storage"] == "sqlite3"
    assert sqlite["overall"]["confusion"] == mcap["overall"]["confusion"]
    assert sqlite["frames"] == mcap["frames"]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_fails_clearly_and_leaves_no_output(drive, tmp_path, capsys, storage):
    from mmseg_ros import cli

    root, _ = drive
    bag = tmp_path / "cut"
    shutil.copytree(root / ("drive_mcap" if storage == "mcap" else "drive_sqlite"), bag)
    (data_file,) = [p for p in bag.iterdir() if p.name != "metadata.yaml"]
    with open(data_file, "r+b") as f:
        f.truncate(data_file.stat().st_size // 2)
    code = cli.main(["replay", str(bag), "--card", CARD, "--out", str(tmp_path / "out"), "--no-progress"])
    assert code != 0
    err = capsys.readouterr().err
    assert "mmseg replay: error:" in err and str(bag) in err
    assert "truncated" in err
    assert not (tmp_path / "out" / "segmented").exists()
    assert not [p for p in (tmp_path / "out").glob(".tmp-*")] if (tmp_path / "out").exists() else True


def _write_bag(path, images):
    """A bag of hand-made Image messages: {topic: [(stamp_ns, array, encoding)]}."""
    from mmseg_ros import msgs
    from mmseg_ros.replay.bagio import OutputBag

    with OutputBag(path, "mcap", images) as bag:
        records = sorted((stamp, topic, array, encoding) for topic, items in images.items()
                         for stamp, array, encoding in items)
        for stamp, topic, array, encoding in records:
            header = msgs.Header(msgs.Time(*divmod(stamp, 10**9)), "cam")
            bag.write(topic, stamp, msgs.numpy_to_image(array, encoding, header, ros=False))


def test_missing_topics_and_bad_inputs_are_named(tmp_path, capsys):
    from mmseg_ros import cli

    rgb = [(10**9 + i * 10**8, np.zeros((32, 32, 3), np.uint8), "rgb8") for i in range(5)]
    _write_bag(tmp_path / "camera_only", {"/rgb/image": rgb})
    assert cli.main(["replay", str(tmp_path / "camera_only"), "--card", CARD, "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "/depth/image" in err and "/lidar/image" in err and "it has: /rgb/image (sensor_msgs/msg/Image)" in err

    depth = [(s, np.ones((32, 32, 3), np.uint8), "bgr8") for s, _, _ in rgb]  # a colour image on the depth topic
    _write_bag(tmp_path / "bad_depth", {"/rgb/image": rgb, "/depth/image": depth})
    assert cli.main(["replay", str(tmp_path / "bad_depth"), "--card", CARD, "--param", "modalities=[rgb,depth]",
                     "--out", str(tmp_path / "out"), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "mmseg replay: error: input depth" in err and "'bgr8' is not accepted" in err

    assert cli.main(["replay", str(tmp_path / "nothing_here"), "--card", CARD]) != 0
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["replay", str(tmp_path / "camera_only"), "--card", CARD, "--drop", "depth@4-2"]) != 0
    assert "--drop" in capsys.readouterr().err


def test_bag_without_ground_truth_replays_unscored(tmp_path):
    rgb = [(10**9 + i * 10**8, np.full((32, 32, 3), 40 * i, np.uint8), "rgb8") for i in range(5)]
    _write_bag(tmp_path / "camera_only", {"/rgb/image": rgb})
    code, report = replay(tmp_path / "camera_only", tmp_path / "out", "--param", "modalities=[rgb]")
    assert code == 0
    assert report["frames"]["processed"] == 5 and report["frames"]["scored"] == 0
    assert "overall" not in report and report["bag"]["labels_topic"] is None


@pytest.mark.ros
def test_live_replay_into_the_real_node_answers_every_frame_and_scores_like_offline(drive, tmp_path):
    """--live starts segment_node (a child process), plays the bag over DDS, records the outputs and scores them;
    every camera frame is answered and the confusion matrix is that of the offline replay but for timing (a set may
    miss an input that came after max_wait). Half the recorded rate: on a 2-core machine loaded by other test runs
    the node's latest-wins hand-off would otherwise skip a frame now and then, as it should under overload."""
    from mmseg_ros.replay.bagio import InputBag

    root, checkpoint = drive
    code, offline = replay(root / "drive_mcap", tmp_path / "offline", "--no-output-bag", checkpoint=checkpoint)
    assert code == 0
    code, live = replay(root / "drive_mcap", tmp_path / "live", "--live", "--rate", "0.5", checkpoint=checkpoint)
    assert code == 0, (tmp_path / "live" / "segment_node.log").read_text()[-3000:]
    assert live["mode"] == "live"
    assert live["frames"]["anchor_messages"] == FRAMES and live["frames"]["answered"] == FRAMES
    assert live["frames"]["scored"] >= FRAMES
    assert abs(live["overall"]["miou"] - offline["overall"]["miou"]) < 2.0
    difference = np.abs(np.array(live["overall"]["confusion"]) - np.array(offline["overall"]["confusion"])).sum()
    print(f"live mIoU {live['overall']['miou']:.3f} offline {offline['overall']['miou']:.3f}; confusion differs by "
          f"{difference} of {offline['overall']['pixels']} pixels")
    assert difference <= 0.1 * offline["overall"]["pixels"]
    with InputBag(tmp_path / "live" / "segmented") as out:
        assert out.message_count("/segment_node/labels") == live["frames"]["processed"]
        assert out.message_count("/segment_node/confidence") == live["frames"]["processed"]


def test_lidar_as_points_is_projected_like_the_node_with_the_bags_transforms(drive, tmp_path):
    """inputs.lidar_source=points: /lidar/points + /rgb/camera_info, projected with the transform from the bag's TF.
    With compensation off (inputs.fixed_frame empty) the projected returns land where the generator's LiDAR image
    (projected through the static mounts) has them; on (the default), through the ego's motion, elsewhere. A bag
    without TF falls back to the matrix the generator recorded in its metadata."""
    from mmseg_ros import msgs
    from mmseg_ros.data.synthetic import SceneGenerator
    from mmseg_ros.data.synthetic.bag import custom_data, write_drive_bag
    from mmseg_ros.pipeline.config import NodeConfig
    from mmseg_ros.replay.bagio import InputBag
    from mmseg_ros.replay.run import replay_offline
    from mmseg_ros.sync import stamp_to_ns

    root, checkpoint = drive

    def replay(bag, **values):
        config = NodeConfig.from_values({"model.card": CARD, "model.checkpoint": str(checkpoint),
                                         "inputs.lidar_source": "points", **values})
        projected = {}
        report = replay_offline(bag, config, progress=False, watch=lambda frame, _time_s: projected.setdefault(
            frame.stamp_ns, np.array(frame.images["lidar"])))
        return report, projected

    report, projected = replay(root / "drive_mcap", **{"inputs.fixed_frame": ""})
    assert report["inputs"]["lidar"]["topic"] == "/lidar/points" and report["frames"]["used"]["lidar"] == FRAMES
    assert report["settings"]["lidar_extrinsic_from"] == "tf"
    assert report["settings"]["lidar_motion_compensation"]["clouds_uncompensated"] == FRAMES
    with InputBag(root / "drive_mcap") as bag:
        recorded = {stamp_to_ns(m.header.stamp): np.array(msgs.image_to_numpy(m))
                    for _, _, m in bag.messages(["/lidar/image"])}
    for stamp, image in projected.items():
        reference = recorded[min(recorded, key=lambda s: abs(s - stamp))]
        ours, theirs = image > 0, reference > 0
        assert (ours & theirs).sum() / (ours | theirs).sum() > 0.8
    report, compensated = replay(root / "drive_mcap")
    assert report["settings"]["lidar_motion_compensation"]["clouds_compensated"] == FRAMES
    assert sum(not np.array_equal(compensated[s], projected[s]) for s in projected) > FRAMES // 2
    gen = SceneGenerator(7, SIZE, CONDITION)
    write_drive_bag(tmp_path / "no_tf", [gen.render_frame(i, all_events=True) for i in range(4)],
                    topics={"tf_static": "/elsewhere/tf_static", "tf": "/elsewhere/tf"})
    report, _ = replay(tmp_path / "no_tf")
    assert report["settings"]["lidar_extrinsic_from"] == "bag metadata"
    recorded_matrix = json.loads(custom_data(tmp_path / "no_tf")["mmseg.camera_from_lidar"])
    assert report["settings"]["lidar_extrinsic"] == recorded_matrix
    assert "lidar_motion_compensation" not in report["settings"]
