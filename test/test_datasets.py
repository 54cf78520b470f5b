"""DELIVER, MUSES and MCubeS loaders on tiny trees built here in their published layouts."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from mmseg_ros import classes, modalities, preprocess
from mmseg_ros.data import common, deliver, mcubes, muses
from mmseg_ros.data.transforms import ToModelInput, eval_pipeline
from mmseg_ros.errors import DataError

H, W = 8, 12


def write_png(path, array):
    """Write an RGB(A)/gray uint8/uint16 array as PNG (cv2 wants BGR)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA)
    assert cv2.imwrite(str(path), array)


def pattern(seed, shape, dtype=np.uint8, high=256):
    return np.random.default_rng(seed).integers(0, high, shape).astype(dtype)


# ------------------------------------------------------------------------------------------------- DELIVER
DELIVER_FRAMES = [  # condition, split, scene, frame
    ("cloud", "val", "MAP_1_point2", "000001"),
    ("night", "val", "MAP_3_point7_lidarjitter", "000002"),
    ("rain", "train", "MAP_5_point1", "000003"),
    ("sun", "train", "MAP_5_point1_motionblur", "000004"),
]


def deliver_tree(root, frames=DELIVER_FRAMES, with_depth=True):
    """Returns {frame: arrays written} so tests compare against what is on disk."""
    written = {}
    for i, (condition, split, scene, frame) in enumerate(frames):
        rel = os.path.join(condition, split, scene)
        rgb = pattern(10 * i, (H, W, 3))
        hha = pattern(10 * i + 1, (H, W, 3))
        depth_mm = pattern(10 * i + 2, (H, W), np.uint16, 60000)
        event = pattern(10 * i + 3, (H // 2, W // 2, 3))  # DELIVER events are stored smaller
        lidar = pattern(10 * i + 4, (H, W, 4))  # RGBA: cut to 3 channels by preprocess
        raw = np.zeros((H, W), np.uint8)
        raw[0, :4] = [0, 1, 25, 26]
        raw[1:, :] = pattern(10 * i + 5, (H - 1, W), high=26)
        raw[2, 0] = 255
        write_png(root / "img" / rel / f"{frame}_rgb_front.png", rgb)
        write_png(root / "hha" / rel / f"{frame}_depth_front.png", hha)
        if with_depth:
            write_png(root / "depth" / rel / f"{frame}_depth_front.png", depth_mm)
        write_png(root / "event" / rel / f"{frame}_event_front.png", event)
        write_png(root / "lidar" / rel / f"{frame}_lidar_front.png", lidar)
        write_png(root / "semantic" / rel / f"{frame}_semantic_front.png", np.stack([raw, raw // 2, raw // 3], -1))
        written[frame] = dict(rgb=rgb, hha=hha, depth=depth_mm, event=event, lidar=lidar, raw=raw)
    return written


def test_deliver_raw_arrays_and_label_mapping(tmp_path):
    written = deliver_tree(tmp_path)
    data = deliver.Deliver(tmp_path, "val")
    assert data.modalities == ("rgb", "depth", "event", "lidar")
    assert len(data) == 2
    sample = data.load_raw(0)
    ref = written["000001"]
    np.testing.assert_array_equal(sample["inputs"]["rgb"], ref["rgb"])
    np.testing.assert_array_equal(sample["inputs"]["depth"], ref["hha"])  # HHA, not the metric depth file
    np.testing.assert_array_equal(sample["inputs"]["lidar"], ref["lidar"])
    event = sample["inputs"]["event"]
    assert event.shape == (H, W, 3)
    np.testing.assert_array_equal(event[::2, ::2], ref["event"])  # nearest x2: every value is a stored value
    np.testing.assert_array_equal(event[1::2, 1::2], ref["event"])
    label = sample["label"]
    assert label[0, :4].tolist() == [255, 0, 24, 255]  # raw 0 -> ignore, 1 -> 0, 25 -> 24, 26 -> ignore
    assert label[2, 0] == 255  # raw 255 stays ignore
    expected = np.where((ref["raw"] >= 1) & (ref["raw"] <= 25), ref["raw"].astype(int) - 1, 255)
    np.testing.assert_array_equal(label, expected)
    assert sample["meta"]["condition"] == "cloud" and sample["meta"]["case"] is None
    assert sample["meta"]["name"] == "cloud/val/MAP_1_point2/000001_rgb_front"
    assert sample["meta"]["path"].endswith("000001_rgb_front.png")


def test_deliver_label_uses_class_count_not_a_literal(tmp_path):
    deliver_tree(tmp_path)
    small = classes.from_dict({"name": "tiny", "classes": [{"name": f"c{i}", "color": [i, i, i]} for i in range(3)]})
    label = deliver.Deliver(tmp_path, "val", ["rgb"], class_set=small).load_raw(0)["label"]
    assert label[0, :4].tolist() == [255, 0, 255, 255]  # raw 25 is class 24: outside a 3-class set
    assert set(np.unique(label)) <= {0, 1, 2, 255}


def test_deliver_model_sample_format(tmp_path):
    written = deliver_tree(tmp_path)
    sample = deliver.Deliver(tmp_path, "val", ["rgb", "lidar"])[1]
    assert set(sample["inputs"]) == {"rgb", "lidar"}
    rgb = sample["inputs"]["rgb"]
    assert rgb.dtype == torch.float32 and rgb.shape == (3, H, W)
    spec = modalities.get("rgb")
    expected = preprocess.normalize_chw(written["000002"]["rgb"].transpose(2, 0, 1) / 255.0, spec.mean, spec.std)
    np.testing.assert_allclose(rgb.numpy(), expected, atol=1e-5)
    assert sample["inputs"]["lidar"].shape == (3, H, W)  # RGBA cut to 3
    assert sample["label"].dtype == torch.long and sample["label"].shape == (H, W)
    assert sample["meta"]["case"] == "lidarjitter" and sample["meta"]["condition"] == "night"


def test_deliver_metric_depth_source(tmp_path):
    written = deliver_tree(tmp_path)
    data = deliver.Deliver(tmp_path, "val", ["depth"], depth_source="depth")
    raw = data.load_raw(0)["inputs"]["depth"]
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, written["000001"]["depth"])
    unit = data[0]["inputs"]["depth"]  # registry depth: mean 0, std 1 -> the unit value itself
    lo, hi = modalities.get("depth").value_range
    metres = written["000001"]["depth"].astype(np.float32) / 1000.0
    expected = np.where(metres > 0, np.clip((metres - lo) / (hi - lo), 0, 1), 0)
    np.testing.assert_allclose(unit[0].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("case, frames", [
    ("night", ["000002"]), ("lidarjitter", ["000002"]), ("cloud", ["000001"]), ("fog", []),
    (["cloud", "lidarjitter"], ["000001", "000002"]),
])
def test_deliver_cases_by_substring(tmp_path, case, frames):
    deliver_tree(tmp_path)
    if not frames:
        with pytest.raises(DataError, match="no frames"):
            deliver.Deliver(tmp_path, "val", case=case)
        return
    data = deliver.Deliver(tmp_path, "val", ["rgb"], case=case)
    assert [os.path.basename(f)[:6] for f in data.frames] == frames


def test_deliver_rain_does_not_match_train(tmp_path):
    deliver_tree(tmp_path)
    data = deliver.Deliver(tmp_path, "train", ["rgb"], case="rain")
    assert [data.load_raw(i)["meta"]["condition"] for i in range(len(data))] == ["rain"]
    assert deliver.Deliver(tmp_path, "train", ["rgb"], case="motionblur").load_raw(0)["meta"]["case"] == "motionblur"


def test_deliver_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        deliver.Deliver(tmp_path / "nowhere")
    deliver_tree(tmp_path)
    with pytest.raises(DataError, match="no frames"):
        deliver.Deliver(tmp_path, "test")
    with pytest.raises(DataError, match="unknown case"):
        deliver.Deliver(tmp_path, "val", case="snow")
    with pytest.raises(DataError, match="no modality"):
        deliver.Deliver(tmp_path, "val", ["rgb", "nir"])
    with pytest.raises(DataError, match="split"):
        deliver.Deliver(tmp_path, "training")
    missing = tmp_path / "event" / "night" / "val" / "MAP_3_point7_lidarjitter" / "000002_event_front.png"
    os.remove(missing)
    data = deliver.Deliver(tmp_path, "val")
    data[0]  # frame 0 is complete
    with pytest.raises(DataError, match="000002_event_front.png"):
        data[1]


def test_deliver_layout_helpers_agree_with_loader(tmp_path):
    assert deliver.frame_file("000007", "img") == "000007_rgb_front.png"
    assert deliver.frame_file("000007", "hha") == deliver.frame_file("000007", "depth") == "000007_depth_front.png"
    assert deliver.frame_file("000007", "semantic") == "000007_semantic_front.png"
    assert deliver.scene_folder("MAP_1", "eventlowres") == "MAP_1_eventlowres"
    with pytest.raises(DataError):
        deliver.scene_folder("MAP_1", "blur")
    deliver_tree(tmp_path, [("fog", "val", deliver.scene_folder("MAP_9", "eventlowres"), "000009")])
    assert deliver.Deliver(tmp_path, "val", case="eventlowres").load_raw(0)["meta"]["case"] == "eventlowres"


def test_deliver_reads_a_tree_written_by_the_generator(tmp_path):
    """The synthetic generator's DELIVER tree loads back to exactly the arrays it rendered."""
    from mmseg_ros.data.synthetic import SceneGenerator, encode
    from mmseg_ros.data.synthetic.tree import plan_maps, write_tree

    plans = plan_maps(frames=2, frames_per_map=1, conditions=("night",), failures=("lidarjitter",), failure_every=2,
                      split_ratios=(0, 1, 0), seed=3)
    assert sum(write_tree(tmp_path, plans, size=48)) == 2
    data = deliver.Deliver(tmp_path, "val")
    assert len(data) == 2
    assert [data.load_raw(i)["meta"]["case"] for i in range(2)] == [None, "lidarjitter"]
    assert len(deliver.Deliver(tmp_path, "val", case="lidarjitter")) == 1
    metric = deliver.Deliver(tmp_path, "val", ["depth", "lidar"], depth_source="depth")
    for index, plan in enumerate(plans):
        frame = SceneGenerator(plan.seed, 48, plan.condition, plan.failure).render_frame(plan.frames[0])
        raw = data.load_raw(index)
        assert raw["meta"]["condition"] == "night"
        np.testing.assert_array_equal(raw["inputs"]["rgb"], frame["rgb"])
        np.testing.assert_array_equal(raw["inputs"]["event"], frame["event"])
        np.testing.assert_array_equal(raw["inputs"]["depth"], encode.hha(frame["depth"], frame["meta"]["intrinsics"],
                                                                          frame["meta"]["ego_from_camera"]))
        np.testing.assert_array_equal(raw["label"], np.where(frame["labels"] < data.num_classes, frame["labels"], 255))
        metres = metric.load_raw(index)["inputs"]
        assert metres["depth"].dtype == np.uint16 and metres["lidar"].dtype == np.uint16
        np.testing.assert_array_equal(metres["depth"], encode.millimetres(frame["depth"]))
        np.testing.assert_array_equal(metres["lidar"], encode.millimetres(frame["lidar"]))
        model = metric[index]["inputs"]
        lo, hi = modalities.get("lidar").value_range
        expected = np.clip((encode.metres(frame["lidar"]) - lo) / (hi - lo), 0, 1)
        np.testing.assert_allclose(model["lidar"][0].numpy(), expected, atol=1e-3)  # mm rounding


# ------------------------------------------------------------------------------------------------- MUSES
def muses_tree(root, split, entries, size=(H, W), projected_size=None):
    written = {}
    ph, pw = projected_size or size
    for i, (weather, time, name) in enumerate(entries):
        rel = os.path.join(split, weather, time)
        rgb = pattern(20 + i, (*size, 3))
        write_png(root / "frame_camera" / rel / f"{name}_frame_camera.png", rgb)
        event = np.zeros((ph, pw, 3), np.uint8)
        event[..., :2] = pattern(30 + i, (ph, pw, 2), high=4)
        lidar = np.zeros((ph, pw, 3), np.float32)
        hits = np.random.default_rng(40 + i).random((ph, pw)) < 0.2
        lidar[hits, 0] = np.random.default_rng(41 + i).uniform(2, 60, hits.sum())
        lidar[hits, 1] = 0.5
        lidar[hits, 2] = -1.5
        for folder, suffix, array in (("event_camera", "_event_camera.npz", event), ("lidar", "_lidar.npz", lidar)):
            path = root / "projected_to_rgb" / folder / rel / f"{name}{suffix}"
            os.makedirs(path.parent, exist_ok=True)
            np.savez_compressed(path, array)  # positional, as MUSES' projection script saves
        label = pattern(50 + i, size, high=19)
        label[0, 0], label[0, 1] = 255, 19
        if split != "test":
            write_png(root / "gt_semantic" / rel / f"{name}_gt_labelTrainIds.png", label)
        written[name] = dict(rgb=rgb, event=event, lidar=lidar, label=label)
    return written


MUSES_ENTRIES = [("clear", "day", "REC0001_frame_000100"), ("fog", "night", "REC0002_frame_000200"),
                 ("snow", "night", "REC0003_frame_000300")]


def test_muses_reads_projected_npz_and_train_ids(tmp_path):
    written = muses_tree(tmp_path, "val", MUSES_ENTRIES)
    data = muses.Muses(tmp_path, "val")
    assert data.modalities == ("rgb", "event", "lidar") and len(data) == 3
    raw = data.load_raw(1)
    ref = written["REC0002_frame_000200"]
    np.testing.assert_array_equal(raw["inputs"]["rgb"], ref["rgb"])
    np.testing.assert_array_equal(raw["inputs"]["event"], ref["event"])
    np.testing.assert_array_equal(raw["inputs"]["lidar"], ref["lidar"][..., 0])  # range channel, metres
    assert raw["inputs"]["lidar"].dtype == np.float32
    assert raw["label"][0, 0] == 255 and raw["label"][0, 1] == 255  # 19 is outside the 19 train ids
    np.testing.assert_array_equal(raw["label"][1:], ref["label"][1:])
    assert raw["meta"]["condition"] == "fog_night" and raw["meta"]["labelled"] is True
    model = data[1]
    assert {k: tuple(v.shape) for k, v in model["inputs"].items()} == {m: (3, H, W) for m in data.modalities}


def test_muses_condition_filter_and_projection_resize(tmp_path):
    muses_tree(tmp_path, "train", MUSES_ENTRIES, projected_size=(H // 2, W // 2))
    night = muses.Muses(tmp_path, "train", ["lidar"], conditions="night")
    assert [night.load_raw(i)["meta"]["condition"] for i in range(len(night))] == ["fog_night", "snow_night"]
    assert len(muses.Muses(tmp_path, "train", ["rgb"], conditions=["clear_day", "snow"])) == 2
    lidar = night.load_raw(0)["inputs"]["lidar"]
    assert lidar.shape == (H, W)
    assert len(np.unique(lidar[lidar > 0])) <= (H // 2) * (W // 2)  # nearest: no new ranges
    with pytest.raises(DataError, match="unknown condition"):
        muses.Muses(tmp_path, "train", conditions="dusk")


def test_muses_test_split_has_no_labels(tmp_path):
    muses_tree(tmp_path, "test", MUSES_ENTRIES[:1])
    sample = muses.Muses(tmp_path, "test", ["rgb"])[0]
    assert bool((sample["label"] == 255).all()) and sample["meta"]["labelled"] is False


def test_muses_missing_file_is_named(tmp_path):
    muses_tree(tmp_path, "val", MUSES_ENTRIES[:1])
    os.remove(tmp_path / "projected_to_rgb" / "lidar" / "val" / "clear" / "day" / "REC0001_frame_000100_lidar.npz")
    with pytest.raises(DataError, match="REC0001_frame_000100_lidar.npz"):
        muses.Muses(tmp_path, "val")[0]
    assert muses.Muses(tmp_path, "val", ["rgb", "event"])[0]["label"].shape == (H, W)
    with pytest.raises(DataError, match="does not exist"):
        muses.Muses(tmp_path, "train")


# ------------------------------------------------------------------------------------------------- MCubeS
MC_H, MC_W, MC_CROP = 6, 20, 5


def mcubes_tree(root, names, split="train"):
    os.makedirs(root / "list_folder", exist_ok=True)
    (root / "list_folder" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    written = {}
    for i, name in enumerate(names):
        rgb = pattern(60 + i, (MC_H, MC_W, 3), np.uint16, 65536)
        nir = pattern(61 + i, (MC_H, MC_W))
        angle = np.random.default_rng(62 + i).uniform(-np.pi, np.pi, (MC_H, MC_W))
        dolp = np.random.default_rng(63 + i).random((MC_H, MC_W))
        label = pattern(64 + i, (MC_H, MC_W), high=21)  # 20 -> ignore
        mask = np.zeros((MC_H, MC_W), np.uint8)
        mask[0, :] = 255
        write_png(root / "polL_color" / f"{name}.png", rgb)
        write_png(root / "NIR_warped" / f"{name}.png", nir)
        write_png(root / "NIR_warped_mask" / f"{name}.png", mask)
        write_png(root / "GT" / f"{name}.png", label)
        for folder, array in (("polL_aolp_sin", np.sin(angle)), ("polL_aolp_cos", np.cos(angle)), ("polL_dolp", dolp)):
            os.makedirs(root / folder, exist_ok=True)
            np.save(root / folder / f"{name}.npy", array)
        written[name] = dict(rgb=rgb, nir=nir, angle=angle, dolp=dolp, label=label)
    return written


def test_mcubes_modalities_crop_and_labels(tmp_path):
    written = mcubes_tree(tmp_path, ["outscene1208_2_0000000150", "outscene1208_2_0000000180"])
    data = mcubes.MCubeS(tmp_path, "train", left_crop=MC_CROP)
    assert data.modalities == ("rgb", "aolp", "dolp", "nir") and len(data) == 2
    raw = data.load_raw(1)
    ref = written["outscene1208_2_0000000180"]
    np.testing.assert_array_equal(raw["inputs"]["rgb"], ref["rgb"][:, MC_CROP:])
    np.testing.assert_array_equal(raw["inputs"]["nir"], ref["nir"][:, MC_CROP:])
    aolp = raw["inputs"]["aolp"]
    assert aolp.shape == (MC_H, MC_W - MC_CROP, 3) and aolp.min() >= 0 and aolp.max() <= 1
    np.testing.assert_allclose(aolp[..., 0] * 2 - 1, np.sin(ref["angle"][:, MC_CROP:]), atol=1e-6)
    np.testing.assert_allclose(aolp[..., 1] * 2 - 1, np.cos(ref["angle"][:, MC_CROP:]), atol=1e-6)
    np.testing.assert_allclose(raw["inputs"]["dolp"], ref["dolp"][:, MC_CROP:], atol=1e-6)
    expected = np.where(ref["label"] < 20, ref["label"], 255)[:, MC_CROP:]
    np.testing.assert_array_equal(raw["label"], expected)
    assert raw["meta"]["condition"] == "outscene1208_2" and raw["meta"]["name"] == "outscene1208_2_0000000180"
    model = data[1]
    assert model["inputs"]["rgb"].shape == (3, MC_H, MC_W - MC_CROP)
    spec = modalities.get("rgb")
    unit = ref["rgb"][:, MC_CROP:].transpose(2, 0, 1) / 65535.0  # 16-bit camera
    np.testing.assert_allclose(model["inputs"]["rgb"].numpy(), preprocess.normalize_chw(unit, spec.mean, spec.std),
                               atol=1e-5)


def test_mcubes_nir_mask_and_errors(tmp_path):
    mcubes_tree(tmp_path, ["scene_0001"])
    masked = mcubes.MCubeS(tmp_path, "train", ["nir"], left_crop=MC_CROP, mask_invalid_nir=True).load_raw(0)["label"]
    assert (masked[0] == 255).all()
    with pytest.raises(DataError, match="val.txt"):
        mcubes.MCubeS(tmp_path, "val")
    os.remove(tmp_path / "polL_aolp_cos" / "scene_0001.npy")
    with pytest.raises(DataError, match="polL_aolp_cos"):
        mcubes.MCubeS(tmp_path, "train", left_crop=MC_CROP)[0]
    with pytest.raises(DataError, match="leaves nothing"):
        mcubes.MCubeS(tmp_path, "train", ["rgb"], left_crop=MC_W)[0]


# ------------------------------------------------------------------------------------------------- shared
def test_eval_pipeline_batches_through_a_dataloader(tmp_path):
    deliver_tree(tmp_path)
    data = deliver.Deliver(tmp_path, "val", transform=eval_pipeline((16, 16), ToModelInput.registry_normalization(
        ("rgb", "depth", "event", "lidar"))))
    loader = torch.utils.data.DataLoader(data, batch_size=2, collate_fn=common.Collate(data.modalities))
    batch = next(iter(loader))
    assert batch["present"].all() and batch["present"].shape == (2, 4)
    assert batch["inputs"]["event"].shape == (2, 3, 16, 16) and batch["label"].shape == (2, 16, 16)
    assert [m["condition"] for m in batch["meta"]] == ["cloud", "night"]


def test_loaders_do_not_import_ros():
    code = ("import sys, mmseg_ros.data.deliver, mmseg_ros.data.muses, mmseg_ros.data.mcubes; "
            "print('rclpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
