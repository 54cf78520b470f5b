"""Evaluation: confusion-matrix metrics, subset enumeration, noise, paper-shaped tables, plots, `mmseg eval`."""
import json
import math

import numpy as np
import pytest
import torch

from mmseg_ros import modalities
from mmseg_ros.errors import ConfigError, DataError
from mmseg_ros.evaluation import noise, plots, tables
from mmseg_ros.evaluation.metrics import NAN_POLICY, ConfusionMatrix
from mmseg_ros.evaluation.subsets import modality_subsets, parse_subset, subset_code

IGNORE = 255


# ------------------------------------------------------------------------------------------------- metrics
def _hand_case():
    # 4 classes; class 3 never appears in labels or predictions; two pixels ignored.
    label = np.array([[0, 0, 1, 1],
                      [2, 2, IGNORE, IGNORE]])
    pred = np.array([[0, 1, 1, 1],
                     [2, 0, 3, 0]])  # the last two are under ignored labels: class 3 stays absent
    return pred, label


def test_confusion_matrix_hand_computed():
    pred, label = _hand_case()
    cm = ConfusionMatrix(4).update(pred, label)
    expected = np.zeros((4, 4), np.int64)
    expected[0, 0] = 1  # label 0 -> pred 0
    expected[0, 1] = 1  # label 0 -> pred 1
    expected[1, 1] = 2
    expected[2, 2] = 1
    expected[2, 0] = 1
    np.testing.assert_array_equal(cm.matrix, expected)
    s = cm.scores(["a", "b", "c", "d"])
    # IoU: a = 1 / (2 + 2 - 1) = 1/3; b = 2 / (2 + 3 - 2) = 2/3; c = 1 / (2 + 1 - 1) = 1/2; d = NaN
    np.testing.assert_allclose(s.iou[:3], [100 / 3, 200 / 3, 50.0])
    assert math.isnan(s.iou[3])
    assert s.absent_classes == ["d"]
    # DELIVER: NaN counts as 0 in the mean over all K classes
    assert s.miou == pytest.approx((100 / 3 + 200 / 3 + 50.0 + 0.0) / 4)
    assert s.miou_present == pytest.approx((100 / 3 + 200 / 3 + 50.0) / 3)
    # per-class accuracy (recall): a 1/2, b 2/2, c 1/2, d NaN -> 0
    np.testing.assert_allclose(s.accuracy[:3], [50.0, 100.0, 50.0])
    assert s.macc == pytest.approx((50 + 100 + 50 + 0) / 4)
    assert s.aacc == pytest.approx(100 * 4 / 6)
    assert s.fwiou == pytest.approx((2 / 6) * 100 / 3 + (2 / 6) * 200 / 3 + (2 / 6) * 50)
    assert s.pixels == 6
    d = s.to_dict()
    assert d["iou"]["d"] is None and d["absent_classes"] == ["d"] and d["unlabelled_classes"] == ["d"]
    json.dumps(d, allow_nan=False)  # NaN never reaches JSON


def test_class_only_predicted_has_zero_iou_not_nan():
    cm = ConfusionMatrix(3).update(np.array([2, 2]), np.array([0, 0]))
    s = cm.scores()
    assert s.iou[2] == 0.0 and math.isnan(s.accuracy[2]) and s.absent_classes == ["1"]


def test_merging_halves_equals_whole_and_torch_matches_numpy():
    rng = np.random.default_rng(0)
    k = 7
    label = rng.integers(0, k, size=(4, 33, 29))
    label[rng.random(label.shape) < 0.1] = IGNORE
    pred = rng.integers(0, k, size=label.shape)
    whole = ConfusionMatrix(k).update(pred, label)
    first = ConfusionMatrix(k).update(pred[:2], label[:2])
    second = ConfusionMatrix(k).update(pred[2:], label[2:])
    np.testing.assert_array_equal((first + second).matrix, whole.matrix)
    np.testing.assert_array_equal(first.copy().merge(second).matrix, whole.matrix)
    # torch path (batched updates, int64 and uint8 labels) == numpy path
    by_torch = ConfusionMatrix(k)
    for i in range(4):
        by_torch.update(torch.from_numpy(pred[i]), torch.from_numpy(label[i].astype(np.uint8)))
    np.testing.assert_array_equal(by_torch.matrix, whole.matrix)
    assert by_torch.total == int((label != IGNORE).sum())
    # the matrix round-trips through its list form
    np.testing.assert_array_equal(ConfusionMatrix.from_matrix(whole.to_list()).matrix, whole.matrix)


def test_confusion_matrix_rejects_bad_input():
    cm = ConfusionMatrix(3)
    with pytest.raises(DataError, match="label values"):
        cm.update(np.array([0, 1]), np.array([0, 7]))
    with pytest.raises(DataError, match="prediction values"):
        cm.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(DataError, match="shape"):
        cm.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(DataError, match="merge"):
        cm.merge(ConfusionMatrix(4))
    assert cm.total == 0  # rejected batches left nothing behind


def test_all_reduce_without_process_group_is_identity():
    cm = ConfusionMatrix(2).update(np.array([0, 1]), np.array([0, 0]))
    before = cm.matrix.copy()
    np.testing.assert_array_equal(cm.all_reduce().matrix, before)


# ------------------------------------------------------------------------------------------------- subsets
@pytest.mark.parametrize("trained", [["rgb"], ["depth", "lidar"], ["rgb", "depth", "event", "lidar"],
                                     ["rgb", "depth", "event", "lidar", "nir"]])
def test_subset_enumeration_any_m(trained):
    subsets = modality_subsets(trained)
    m = len(trained)
    assert len(subsets) == 2 ** m - 1 == len(set(subsets))
    assert subsets == modality_subsets(trained)  # stable
    assert [len(s) for s in subsets] == sorted(len(s) for s in subsets)
    assert subsets[-1] == tuple(trained) and subsets[:m] == [(t,) for t in trained]
    for s in subsets:  # each subset keeps the trained order, and its code spells it
        assert list(s) == [t for t in trained if t in s]
        assert subset_code(s) == "-".join(modalities.get(n).code for n in s)
        assert parse_subset(subset_code(s), trained) == s


def test_subset_codes_match_mle_sam_table_vi_columns():
    codes = [subset_code(s) for s in modality_subsets(["rgb", "depth", "event", "lidar"])]
    assert codes == ["R", "D", "E", "L", "R-D", "R-E", "R-L", "D-E", "D-L", "E-L",
                     "R-D-E", "R-D-L", "R-E-L", "D-E-L", "R-D-E-L"]


def test_parse_subset_rejects_untrained_modality():
    with pytest.raises(ConfigError, match="not one of the trained"):
        parse_subset("R-L", ["rgb", "depth"])


# --------------------------------------------------------------------------------------------------- noise
def test_gaussian_noise_statistics_before_and_after_clipping():
    rng = np.random.default_rng(1)
    spec = noise.make("gaussian")
    raw = spec.sample((3, 200, 200), rng)
    assert raw.std() == pytest.approx(50.0, rel=0.02) and abs(raw.mean()) < 1.0
    mid = np.full((3, 200, 200), 128 / 255, np.float32)
    out = noise.corrupt_unit(mid, spec, np.random.default_rng(1))
    pixels = out * 255
    assert pixels.min() >= 0 and pixels.max() <= 255
    # with mean 128 and sigma 50 about 1% of pixels clip; the rest are the exact noise
    inside = (pixels > 0) & (pixels < 255)
    np.testing.assert_allclose(pixels[inside] - 128, raw[inside], atol=1e-3)
    assert inside.mean() > 0.98


def test_uniform_noise_bounds_and_clipping_at_the_ends():
    spec = noise.make("uniform")
    raw = spec.sample((100_000,), np.random.default_rng(2))
    assert raw.min() >= -100 and raw.max() <= 100 and raw.min() < -99 and raw.max() > 99
    assert raw.std() == pytest.approx(200 / math.sqrt(12), rel=0.02)
    black = np.zeros((1000,), np.float32)
    out = noise.corrupt_unit(black, spec, np.random.default_rng(2)) * 255
    assert out.min() == 0.0 and out.max() <= 100.0 + 1e-3
    assert (out == 0).mean() == pytest.approx(0.5, abs=0.05)  # the negative half is clipped to 0


def test_noise_changes_only_the_chosen_modality_and_torch_matches_numpy():
    rng = np.random.default_rng(3)
    inputs = {name: torch.rand(2, 3, 16, 16) for name in ("rgb", "depth", "lidar")}
    out = noise.corrupt_one(inputs, "depth", noise.make("gaussian"), np.random.default_rng(7))
    assert out["rgb"] is inputs["rgb"] and out["lidar"] is inputs["lidar"]
    assert not torch.equal(out["depth"], inputs["depth"])
    assert out["depth"].min() >= 0 and out["depth"].max() <= 1
    as_numpy = noise.corrupt_unit(inputs["depth"].numpy(), noise.make("gaussian"), np.random.default_rng(7))
    np.testing.assert_allclose(out["depth"].numpy(), as_numpy, atol=1e-6)
    with pytest.raises(ConfigError, match="cannot add noise"):
        noise.corrupt_one(inputs, "event", noise.make("uniform"), rng)
    with pytest.raises(ConfigError, match="unknown"):
        noise.make("salt")


def test_metric_modality_noise_is_on_the_value_range_scale():
    lo, hi = modalities.get("depth").value_range
    metres = np.full((64, 64), (lo + hi) / 2, np.float32)
    spec = noise.make("gaussian")
    unit = noise.corrupt_raw("depth", metres, spec, np.random.default_rng(4))
    assert unit.shape == (64, 64, 3)
    noisy_metres = lo + unit * (hi - lo)
    # sigma 50 on the 0..255 scale = 50/255 of the range (a little less after clipping at the ends)
    assert noisy_metres.std() == pytest.approx(50 / 255 * (hi - lo), rel=0.05)
    assert noisy_metres.min() >= lo and noisy_metres.max() <= hi
    # uint8 images get the paper's operation on their pixel values
    img = np.full((8, 8, 3), 200, np.uint8)
    got = noise.corrupt_raw("rgb", img, spec, np.random.default_rng(5)) * 255
    want = np.clip(200 + spec.sample((8, 8, 3), np.random.default_rng(5)), 0, 255)
    np.testing.assert_allclose(got, want, atol=1e-3)


# -------------------------------------------------------------------------------------------- tables, plots
def _fake_report(trained=("rgb", "depth", "event"), k=5, seed=0):
    """A results document built from random confusion matrices (class k-1 never occurs)."""
    rng = np.random.default_rng(seed)
    names = [f"class{i}" for i in range(k)]

    def matrix():
        label = rng.integers(0, k - 1, size=400)
        pred = np.where(rng.random(400) < 0.6, label, rng.integers(0, k - 1, size=400))
        return ConfusionMatrix(k).update(pred, label)

    subsets = modality_subsets(trained)
    codes = {s: subset_code(s) for s in subsets}
    codes.update({(m,): subset_code((m,)) for m in trained})
    groups = {"fog": "condition", "night": "condition", "motionblur": "case"}
    clean = {s: {"all": matrix(), **{g: matrix() for g in groups}} for s in subsets}
    noisy = {(noise.make(kind), m): matrix() for kind in ("gaussian", "uniform") for m in trained}
    return tables.build_report(class_names=names, trained=trained, subset_codes=codes, clean=clean,
                               group_kinds=groups, group_samples={g: 2 for g in groups}, noisy=noisy, noise_seed=0,
                               model={"name": "fake", "modalities": list(trained)},
                               data={"source": "synthetic:test", "split": "val", "samples": 6})


def test_report_json_shape_and_markdown_tables(tmp_path):
    trained = ("rgb", "depth", "event")
    report = _fake_report(trained)
    path = tmp_path / "eval.json"
    tables.save_json(report, path)
    loaded = tables.load_json(path)
    assert loaded["schema"] == tables.SCHEMA and loaded["units"] == "percent"
    assert loaded["metric_note"] == NAN_POLICY
    assert loaded["full"]["subset"] == "R-D-E" and len(loaded["full"]["confusion"]) == 5
    assert list(loaded["subsets"]) == [subset_code(s) for s in modality_subsets(trained)]
    mean = sum(e["miou"] for e in loaded["subsets"].values()) / 7
    assert loaded["subsets_mean"]["miou"] == pytest.approx(mean) and loaded["subsets_mean"]["count"] == 7
    assert loaded["subsets_mean"]["ratio_to_full"] == pytest.approx(mean / loaded["full"]["miou"])
    assert list(loaded["conditions"]) == ["fog", "night", "motionblur"]
    assert loaded["conditions"]["motionblur"]["kind"] == "case"
    assert set(loaded["subset_conditions"]) == set(loaded["subsets"])
    settings = loaded["noise"]["settings"]
    assert [(s["noise"], s["modality"]) for s in settings] == [(k, m) for k in ("gaussian", "uniform") for m in trained]
    for s in settings:
        assert s["delta_miou"] == pytest.approx(s["miou"] - loaded["full"]["miou"])
    assert loaded["full"]["absent_classes"] == ["class4"] and loaded["full"]["iou"]["class4"] is None

    md = tables.to_markdown(loaded)
    lines = md.splitlines()
    # Table VI: header with every subset code then Mean, one data row with 2^M - 1 + 2 cells
    header = next(line for line in lines if line.startswith("| Training |"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells == ["Training", "R", "D", "E", "R-D", "R-E", "D-E", "R-D-E", "Mean"]
    row = lines[lines.index(header) + 2]
    assert row.split("|")[1].strip() == "R-D-E" and len(row.strip("|").split("|")) == len(cells)
    assert f"{loaded['subsets_mean']['miou']:.2f}" in row
    # per-class table: one row per class + the mean; the absent class is shown as counted 0
    assert "| class4 | – (0) | – (0) |" in md
    # conditions: one row per condition/case; Table IV cross: one row per subset
    assert sum(line.startswith("| fog |") for line in lines) == 1
    header4 = next(line for line in lines if line.startswith("| Modalities |"))
    assert [c.strip() for c in header4.strip("|").split("|")] == ["Modalities", "fog", "night", "motionblur", "Mean"]
    # Table VIII: 2 noise kinds x M modalities + the clean row
    noise_header = next(line for line in lines if line.startswith("| Noise type |"))
    start = lines.index(noise_header) + 2
    noise_rows = [line for line in lines[start:start + 2 * len(trained) + 1] if line.startswith("|")]
    assert len(noise_rows) == 2 * len(trained) + 1 and "none (clean)" in noise_rows[-1]
    assert "counted as 0" in md and "class4" in md.split("counted as 0")[-1]


def test_report_with_only_the_full_set_has_no_subset_tables():
    k, trained = 3, ("rgb", "lidar")
    cm = ConfusionMatrix(k).update(np.array([0, 1, 2]), np.array([0, 1, 1]))
    report = tables.build_report(class_names=list("abc"), trained=trained, subset_codes={trained: "R-L"},
                                 clean={trained: {"all": cm}}, group_kinds={}, group_samples={})
    assert "subsets" not in report and "noise" not in report and "conditions" not in report
    md = tables.to_markdown(report)
    assert "Table VI" not in md and "| R-L (all trained) |" in md


def test_plots_are_written_and_readable(tmp_path):
    import matplotlib.image

    report = _fake_report(("rgb", "depth"), k=12)
    names = report["classes"]
    plots.iou_bars(report["full"], names, tmp_path / "iou.png")
    plots.confusion_matrix(report["full"]["confusion"], names, tmp_path / "confusion.png")
    plots.subset_bars(report, tmp_path / "subsets.png")
    for name in ("iou.png", "confusion.png", "subsets.png"):
        image = matplotlib.image.imread(tmp_path / name)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
        assert image[..., :3].std() > 0.05  # not a blank canvas
    assert not list(tmp_path.glob(".tmp-*"))


# ------------------------------------------------------------------------------------------------- the loop
ORACLE_STEP = 10  # the toy data writes class k into the event image as pixel value 10 * k


class EventOracle(torch.nn.Module):
    """A real (parameter-free) segmenter that reads the class id from the event image and knows nothing without
    it (predicts class 0), so every number the loop reports can be derived by hand."""

    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.calls = []

    def forward(self, inputs, present=None):
        self.calls.append(tuple(inputs))
        any_input = next(iter(inputs.values()))
        if "event" in inputs:  # registry normalisation of event is the identity: value = unit image
            ids = torch.round(inputs["event"][:, 0] * 255 / ORACLE_STEP).long().clamp(0, self.num_classes - 1)
        else:
            ids = torch.zeros(any_input.shape[0], *any_input.shape[-2:], dtype=torch.long)
        return {"logits": torch.nn.functional.one_hot(ids, self.num_classes).permute(0, 3, 1, 2).float()}


def write_deliver_tree(root, frames, size=(64, 64)):
    """frames: [(condition, failure or None, [class id per vertical stripe])] -> a DELIVER-layout val tree."""
    import cv2

    from mmseg_ros.data import deliver

    h, w = size
    for number, (condition, failure, stripes) in enumerate(frames):
        scene = deliver.scene_folder(f"MAP_{number}", failure)
        ids = np.repeat(np.asarray(stripes), w // len(stripes))[None, :].repeat(h, 0)
        images = {
            "img": np.dstack([ids * 7 % 256, ids * 3, np.full_like(ids, 90)]).astype(np.uint8),
            "hha": np.dstack([ids * 5 % 256] * 3).astype(np.uint8),
            "event": (ids * ORACLE_STEP).astype(np.uint8),
            "lidar": (ids * 2).astype(np.uint8),
            "semantic": np.dstack([ids + 1] * 3).astype(np.uint8),
        }
        for folder, image in images.items():
            path = root / folder / condition / "val" / scene / deliver.frame_file(f"{number:06d}", folder)
            path.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(path), image[..., ::-1] if image.ndim == 3 else image)
    return root


TRAINED = ("rgb", "depth", "event", "lidar")
FRAMES = [("fog", None, [0, 6, 6, 12]), ("fog", "motionblur", [6, 6, 9, 9]),
          ("night", None, [0, 0, 12, 3]), ("night", "lidarjitter", [3, 6, 9, 12])]


@pytest.fixture(scope="module")
def toy_dataset(tmp_path_factory):
    from mmseg_ros.data.deliver import Deliver
    from mmseg_ros.evaluation.evaluate import unit_pipeline

    root = write_deliver_tree(tmp_path_factory.mktemp("deliver"), FRAMES)
    return Deliver(root, "val", modalities=TRAINED, transform=unit_pipeline((32, 32), TRAINED))


def _run(dataset, **kwargs):
    from mmseg_ros.data.transforms import ToModelInput
    from mmseg_ros.evaluation.evaluate import evaluate

    model = EventOracle(25)
    result = evaluate(model, dataset, modalities=TRAINED, normalization=ToModelInput.registry_normalization(TRAINED),
                      num_classes=25, progress=False, **kwargs)
    return model, result


def test_evaluation_loop_subsets_conditions_and_noise(toy_dataset):
    from mmseg_ros.evaluation.evaluate import ALL

    subsets = modality_subsets(TRAINED)
    model, result = _run(toy_dataset, subsets=subsets, noises=[noise.make("gaussian"), noise.make("uniform")],
                         conditions=True, batch_size=3, seed=5)
    assert result.samples == 4
    # every subset was fed exactly its own modalities (2 batches x (15 subsets + 2 x 4 noise settings))
    assert len(model.calls) == 2 * (15 + 8)
    assert {c for c in model.calls} == set(subsets)
    present = sorted({c for _, _, stripes in FRAMES for c in stripes})
    names = [f"c{i}" for i in range(25)]
    for subset in subsets:
        s = result.clean[subset][ALL].scores(names)
        if "event" in subset:  # the oracle is perfect: 100 on each present class, NaN -> 0 for the other 20
            assert s.miou == pytest.approx(100 * len(present) / 25) and s.miou_present == pytest.approx(100)
        else:  # everything predicted as class 0, which covers 3 of the 16 stripes
            assert s.iou[0] == pytest.approx(100 * 3 / 16) and s.aacc == pytest.approx(100 * 3 / 16)
    assert result.ordered_groups() == ["fog", "night", "motionblur", "lidarjitter"]
    assert result.group_samples == {"fog": 2, "night": 2, "motionblur": 1, "lidarjitter": 1}
    assert result.clean[("rgb",)]["fog"].total == 2 * 32 * 32
    assert result.clean[("rgb",)]["fog"].scores().iou[0] == pytest.approx(100 * 1 / 8)
    # noise: only the corrupted modality matters; corrupting the event image breaks the oracle
    clean_full = result.clean[TRAINED][ALL].matrix
    for (spec, modality), matrix in result.noisy.items():
        if modality == "event":
            assert matrix.scores().aacc < 50
        else:
            np.testing.assert_array_equal(matrix.matrix, clean_full)
    # the results document carries all of it in the papers' shapes
    from mmseg_ros.evaluation.evaluate import to_report

    report = to_report(result, names, TRAINED, seed=5, model={"name": "oracle"}, data={"source": "toy"})
    assert report["data"]["samples"] == 4 and report["noise"]["seed"] == 5
    assert list(report["subsets"]) == [subset_code(s) for s in subsets]
    assert list(report["conditions"]) == ["fog", "night", "motionblur", "lidarjitter"]
    assert report["subset_conditions"]["E"]["night"] == pytest.approx(100 * 5 / 25)  # classes 0, 3, 6, 9, 12
    event_rows = [s for s in report["noise"]["settings"] if s["modality"] == "event"]
    assert len(event_rows) == 2 and all(s["delta_miou"] < -1 for s in event_rows)
    json.dumps(report, allow_nan=False)


def test_noise_does_not_depend_on_batching(toy_dataset):
    kwargs = dict(noises=[noise.make("uniform")], seed=3)
    _, by_one = _run(toy_dataset, batch_size=1, **kwargs)
    _, by_four = _run(toy_dataset, batch_size=4, **kwargs)
    _, other_seed = _run(toy_dataset, batch_size=4, noises=[noise.make("uniform")], seed=4)
    key = (noise.make("uniform"), "event")
    np.testing.assert_array_equal(by_one.noisy[key].matrix, by_four.noisy[key].matrix)
    assert not np.array_equal(by_four.noisy[key].matrix, other_seed.noisy[key].matrix)


# ----------------------------------------------------------------------------------------------- mmseg eval
SYNTH_SOURCE = "frames=3,size=64,seed=9,frames_per_map=1,conditions=fog+night,failures=lidarjitter,failure_every=2"


def test_synthetic_spec_and_cached_tree(tmp_path):
    from mmseg_ros.evaluation import synthetic_source
    from mmseg_ros.evaluation.evaluate import unit_pipeline

    assert synthetic_source.parse_spec("frames=4,conditions=fog+night,failures=none") == {
        "frames": 4, "conditions": ("fog", "night"), "failures": ()}
    with pytest.raises(ConfigError, match="key=value"):
        synthetic_source.parse_spec("frame=4")
    root = synthetic_source.tree_for(SYNTH_SOURCE, "val", 64, cache=tmp_path, workers=1)
    stamp = (root / synthetic_source.DONE_MARKER).stat().st_mtime_ns
    assert synthetic_source.tree_for(SYNTH_SOURCE, "val", 64, cache=tmp_path) == root  # cached, not re-rendered
    assert (root / synthetic_source.DONE_MARKER).stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob(".tmp-*"))
    dataset = synthetic_source.open_dataset(SYNTH_SOURCE, "val", TRAINED, unit_pipeline((32, 32), TRAINED), 64,
                                            cache=tmp_path)
    metas = [dataset[i]["meta"] for i in range(len(dataset))]
    assert len(dataset) == 3
    assert sorted((m["condition"], m["case"]) for m in metas) == [("fog", None), ("fog", None),
                                                                  ("night", "lidarjitter")]
    sample = dataset[0]
    for name in TRAINED:  # unit inputs: in [0, 1], at the requested size, not normalised
        assert sample["inputs"][name].shape == (3, 32, 32)
        assert 0 <= float(sample["inputs"][name].min()) and float(sample["inputs"][name].max()) <= 1
    assert float(sample["inputs"]["rgb"].std()) > 0.01


def test_mmseg_eval_end_to_end_on_a_tiny_checkpoint(tmp_path, capsys):
    """`mmseg eval` on a random-init tiny MLE-SAM checkpoint over generated scenes writes every output."""
    import matplotlib.image

    from mmseg_ros import cli
    from mmseg_ros.nn.build import build_model
    from mmseg_ros.nn.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model("test_tiny_mle_sam")
    checkpoint = save_checkpoint(model, tmp_path / "tiny.pt")
    out = tmp_path / "out"
    code = cli.main(["eval", "--checkpoint", str(checkpoint), "--data", "synthetic:" + SYNTH_SOURCE,
                     "--cache", str(tmp_path / "cache"), "--subsets", "E,R-D-E-L", "--noise", "--noise-on", "L",
                     "--conditions",
                     "--size", "32", "--max-samples", "2", "--batch-size", "2", "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| Training | E | R-D-E-L | Mean |" in printed and "counted as 0" in printed
    report = tables.load_json(out / "results.json")
    assert report["schema"] == tables.SCHEMA
    assert report["model"]["name"] == "test_tiny_mle_sam" and report["model"]["code"] == "R-D-E-L"
    assert len(report["model"]["checkpoint_sha256"]) == 64
    assert report["data"]["dataset"] == "synthetic" and report["data"]["source"] == "synthetic:" + SYNTH_SOURCE
    assert report["data"]["samples"] == 2 and report["data"]["size"] == [32, 32]
    assert list(report["subsets"]) == ["E", "R-D-E-L"]
    assert report["full"]["pixels"] <= 2 * 32 * 32
    assert len(report["full"]["confusion"]) == model.num_classes
    assert [(s["noise"], s["modality"]) for s in report["noise"]["settings"]] == [("gaussian", "lidar"),
                                                                                ("uniform", "lidar")]
    assert sum(e["samples"] for e in report["conditions"].values() if e["kind"] == "condition") == 2
    assert (out / "results.md").read_text().strip() in printed
    for name in ("per_class_iou.png", "confusion.png", "subsets.png"):
        assert matplotlib.image.imread(out / name).shape[0] > 100


def test_mmseg_eval_runs_memory_sam_with_its_card(tmp_path, capsys):
    """The other architecture through the same path, model chosen by --card (its stored card is the same)."""
    from mmseg_ros import cli
    from mmseg_ros.nn.build import build_model
    from mmseg_ros.nn.checkpoint import save_checkpoint

    torch.manual_seed(0)
    checkpoint = save_checkpoint(build_model("test_tiny_memory_sam"), tmp_path / "memory.pt")
    out = tmp_path / "out"
    assert cli.main(["eval", "--checkpoint", str(checkpoint), "--card", "test_tiny_memory_sam",
                     "--data", "synthetic:" + SYNTH_SOURCE, "--cache", str(tmp_path / "cache"),
                     "--max-samples", "1", "--out", str(out), "--no-progress"]) == 0
    report = tables.load_json(out / "results.json")
    assert report["model"]["architecture"] == "memory_sam" and report["full"]["pixels"] > 0
    assert "subsets" not in report and "noise" not in report


# --------------------------------------------------------------------------------------------------- DDP
def _ddp_worker(rank, world, init_file, queue):
    import torch.distributed as dist

    from mmseg_ros.evaluation.evaluate import ALL, EvalResult

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        pred, label = _ddp_data()
        half = slice(rank * 2, rank * 2 + 2)
        matrix = ConfusionMatrix(6).update(torch.from_numpy(pred[half]), torch.from_numpy(label[half])).all_reduce()
        # an evaluation whose shards saw different conditions: rank 0 only fog, rank 1 only night
        result = EvalResult(6, [("rgb",)], [])
        group = ("fog", "night")[rank]
        result.add_group(group, "condition")
        result.group_samples[group] += 2
        result.samples = 2
        result.clean[("rgb",)][ALL].update(pred[half], label[half])
        result.clean[("rgb",)][group].update(pred[half], label[half])
        result.all_reduce()
        queue.put((rank, matrix.matrix, result.samples, dict(result.group_samples),
                   {g: m.matrix for g, m in result.clean[("rgb",)].items()}))
    finally:
        dist.destroy_process_group()


def _ddp_data():
    rng = np.random.default_rng(11)
    label = rng.integers(0, 6, size=(4, 9, 10))
    label[:, 0] = IGNORE
    return rng.integers(0, 6, size=label.shape), label


def test_confusion_matrices_sum_across_ddp_ranks(tmp_path):
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    queue = context.Queue()
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), queue), nprocs=2, join=True)
    got = dict((item[0], item[1:]) for item in (queue.get(timeout=60) for _ in range(2)))
    pred, label = _ddp_data()
    whole = ConfusionMatrix(6).update(pred, label).matrix
    fog = ConfusionMatrix(6).update(pred[:2], label[:2]).matrix
    night = ConfusionMatrix(6).update(pred[2:], label[2:]).matrix
    for rank in (0, 1):
        matrix, samples, group_samples, per_group = got[rank]
        np.testing.assert_array_equal(matrix, whole)
        assert samples == 4 and group_samples == {"fog": 2, "night": 2}
        np.testing.assert_array_equal(per_group["all"], whole)
        np.testing.assert_array_equal(per_group["fog"], fog)
        np.testing.assert_array_equal(per_group["night"], night)


def test_eval_uses_the_training_data_options():
    from mmseg_ros.evaluation.cli import _options
    from mmseg_ros.training import config as recipes

    name = "synth_tiny_mle_sam_dropout"
    trained = dict(recipes.load(name).data.options)
    assert trained, "the synthetic recipes read metric depth; the test needs a recipe with loader options"
    assert _options([], {"recipe": name}) == trained
    assert _options([], {"recipe": {"data": {"options": {"depth_source": "hha"}}}}) == {"depth_source": "hha"}
    assert _options(["depth_source=hha", "x=3"], {"data_options": {"depth_source": "depth"}}) == {
        "depth_source": "hha", "x": 3}
    assert _options([], {"recipe": "no_such_recipe"}) == {}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        _options(["depth_source"], {})


def test_eval_cli_rejects_bad_arguments_by_name(capsys):
    from mmseg_ros import cli
    from mmseg_ros.evaluation.cli import _size

    assert _size(None, (64, 64)) == (64, 64) and _size([96], (64, 64)) == (96, 96) and _size([64, 96], None) == (64, 96)
    with pytest.raises(ConfigError, match="multiples of 32"):
        _size([50], (64, 64))
    assert cli.main(["eval", "--card", "test_tiny_mle_sam", "--data", "x"]) == 1  # the card names no checkpoint
    assert "--checkpoint is required" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------ compare
def _shipped_reports():
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "models" / "eval"
    paths = sorted(p for p in folder.glob("*.json") if p.name != "regression.json")
    assert len(paths) >= 2, paths
    return paths, [json.loads(p.read_text()) for p in paths]


def test_fusion_rows_are_the_full_set_minus_the_best_single_modality():
    from mmseg_ros.evaluation import compare

    _, reports = _shipped_reports()
    for report in reports:
        cross = report["subset_conditions"]
        singles = [code for code, e in report["subsets"].items() if len(e["modalities"]) == 1]
        assert len(singles) == len(report["model"]["modalities"])
        rows = compare.fusion_rows(report, ["night", "fog"])
        assert [r["condition"] for r in rows] == ["night", "fog"]
        for row in rows:
            best = max(cross[c][row["condition"]] for c in singles)
            assert row["best_miou"] == best and cross[row["best"]][row["condition"]] == best
            assert row["gain"] == pytest.approx(cross[report["full"]["subset"]][row["condition"]] - best)


def test_mmseg_compare_prints_one_column_per_report(capsys, tmp_path):
    from mmseg_ros import cli

    paths, reports = _shipped_reports()
    assert cli.main(["compare", *map(str, paths), "--fusion-conditions", "night"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| subset |"))
    assert [c.strip() for c in header.strip("|").split("|")][1:] == [r["model"]["name"] for r in reports]
    ratio = next(line for line in out.splitlines() if "mean / full" in line)
    assert [float(c) for c in ratio.strip("|").split("|")[1:]] == \
        [round(r["subsets_mean"]["ratio_to_full"], 2) for r in reports]
    assert "| fog |" not in out.split("Fusion vs")[1].split("###")[0]  # only the asked condition
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli.main(["compare", str(bad)]) == 1
    assert "not a results.json" in capsys.readouterr().err


def test_compare_means_only_the_subsets_all_reports_have():
    from mmseg_ros.evaluation import compare

    _, reports = _shipped_reports()
    full, trimmed = reports[0], json.loads(json.dumps(reports[1]))
    keep = ["R", "D", full["full"]["subset"]]
    trimmed["subsets"] = {c: e for c, e in trimmed["subsets"].items() if c in keep}
    trimmed["subsets_mean"] = {"miou": 99.0, "ratio_to_full": 9.9}  # stored over other subsets: must not be shown
    out = compare.compare([full, trimmed])
    mean_row = next(line for line in out.splitlines() if "**mean of" in line)
    assert "**mean of 3**" in mean_row
    expected = [np.mean([r["subsets"][c]["miou"] for c in keep]) for r in (full, trimmed)]
    assert [float(c) for c in mean_row.strip("|").split("|")[1:]] == [round(v, 1) for v in expected]
    overall = out.split("### All modalities")[1].split("###")[0]
    assert f"| mIoU | {full['full']['miou']:.1f} | {trimmed['full']['miou']:.1f} |" in overall
    only_full = {k: v for k, v in full.items() if k in ("model", "data", "full", "classes")}
    assert "### All modalities" in compare.compare([only_full]) and "Missing" not in compare.compare([only_full])
