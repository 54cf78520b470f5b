"""The shared transform pipeline: geometry keeps modalities and label aligned, sparse LiDAR stays sparse, photometry
touches only the camera, modality dropout never drops everything, collate builds `present`, seeds repeat."""
from itertools import combinations

import numpy as np
import pytest
import torch

from mmseg_ros import modalities, preprocess
from mmseg_ros.data import common
from mmseg_ros.data.transforms import (ColorJitter, Compose, GaussianBlur, ModalityDropout, RandomHorizontalFlip,
                                       RandomResizedCrop, Resize, ToModelInput, default_nearest, eval_pipeline,
                                       seed_worker, train_pipeline)
from mmseg_ros.errors import ConfigError, DataError

ALL = ("rgb", "depth", "event", "lidar")
H, W = 32, 40


def coded_sample(h=H, w=W):
    """Every modality derived from the same coordinate code, so any misalignment shows as a mismatch."""
    yy, xx = np.mgrid[0:h, 0:w]
    code = (yy * 7 + xx * 3) % 200 + 1  # 1..200, never the ignore value
    rgb = np.stack([code, xx * 4, yy * 4], -1).astype(np.uint8)
    depth = code.astype(np.float32)  # metres
    lidar = np.where((yy % 4 == 0) & (xx % 3 == 0), code * 0.25 + 1.0, 0.0).astype(np.float32)  # sparse beams
    event = np.zeros((h, w, 2), np.uint8)
    event[..., 0] = (code % 3 == 0) * 2
    event[..., 1] = (code % 5 == 0) * 1
    return {"inputs": {"rgb": rgb, "depth": depth, "event": event, "lidar": lidar},
            "label": code.astype(np.uint8), "meta": {"condition": "sun", "case": None, "path": "p", "name": "n"}}


def test_crop_and_flip_keep_modalities_and_label_aligned():
    sample = coded_sample()
    position = np.arange(1, H * W + 1, dtype=np.float32).reshape(H, W)  # unique per pixel: finds the window
    sample["inputs"]["depth"] = position
    unscaled = 1 / max(16 / H, 24 / W)  # the crop scales relative to the factor that just covers the window
    crop = RandomResizedCrop((16, 24), scale=(unscaled, unscaled))
    out = Compose([crop, RandomHorizontalFlip(p=1.0)], seed=3)(sample)
    depth = out["inputs"]["depth"]
    assert depth.shape == (16, 24)
    matches = [(y, x) for y in range(H - 16 + 1) for x in range(W - 24 + 1)
               if np.array_equal(depth, position[y:y + 16, x:x + 24][:, ::-1])]
    assert len(matches) == 1  # a pure crop (no rescale), mirrored
    y, x = matches[0]

    def window(a):
        return a[y:y + 16, x:x + 24][:, ::-1]

    np.testing.assert_array_equal(out["label"], window(sample["label"]))
    np.testing.assert_array_equal(out["inputs"]["rgb"], window(sample["inputs"]["rgb"]))
    np.testing.assert_array_equal(out["inputs"]["lidar"], window(sample["inputs"]["lidar"]))
    np.testing.assert_array_equal(out["inputs"]["event"], window(sample["inputs"]["event"]))


@pytest.mark.parametrize("seed", range(4))
def test_rescaled_crop_keeps_nearest_modalities_on_the_label_grid(seed):
    sample = coded_sample()
    out = Compose([RandomResizedCrop((24, 24), scale=(0.7, 1.6)), RandomHorizontalFlip()], seed=seed)(sample)
    label = out["label"]
    valid = label != 255
    assert valid.any()
    # depth is resampled nearest with the label's map: identical codes wherever the label is valid
    np.testing.assert_array_equal(out["inputs"]["depth"][valid], label[valid].astype(np.float32))
    assert (out["inputs"]["depth"][~valid] == 0).all()  # padding = no return
    # the linearly resampled camera channel stays within interpolation distance of the nearest code
    diff = np.abs(out["inputs"]["rgb"][..., 0].astype(int) - label.astype(int))[valid]
    assert np.median(diff) <= 5


def test_label_fill_is_ignore_and_inputs_are_zero_in_padding():
    sample = coded_sample()
    out = Compose([RandomResizedCrop((32, 32), scale=(0.4, 0.4))], seed=0)(sample)
    label = out["label"]
    padded = label == 255
    scaled_area = round(H * 0.4 * 32 / H) * round(W * 0.4 * 32 / H)  # cover factor = 32 / min(H, W) = 1
    assert (~padded).sum() == scaled_area
    for name in ("depth", "lidar", "event"):
        assert (out["inputs"][name][padded] == 0).all(), name
    assert (out["inputs"]["rgb"][padded.nonzero()[0][:1], padded.nonzero()[1][:1]] == 0).all()


def test_lidar_is_not_smeared_but_camera_is_interpolated():
    sample = coded_sample()
    stored = set(np.unique(sample["inputs"]["lidar"]).tolist())
    out = Compose([RandomResizedCrop((29, 37), scale=(1.3, 1.3))], seed=1)(sample)
    lidar = out["inputs"]["lidar"]
    assert set(np.unique(lidar).tolist()) <= stored  # no range that was never measured
    hit_fraction = (lidar > 0).mean()
    assert 0.02 < hit_fraction < 0.2  # still sparse (1 in 12 pixels before)
    camera_values = set(np.unique(out["inputs"]["rgb"][..., 1]).tolist())
    assert not camera_values <= set(np.unique(sample["inputs"]["rgb"][..., 1]).tolist())  # bilinear made new values
    mm = {**sample, "inputs": {"lidar": (sample["inputs"]["lidar"] * 1000).astype(np.uint16)}}
    out_mm = Compose([Resize((45, 51))], seed=0)(mm)["inputs"]["lidar"]
    assert out_mm.dtype == np.uint16 and set(np.unique(out_mm)) <= set(np.unique(mm["inputs"]["lidar"]))


def test_resize_to_model_size_and_eval_pipeline():
    sample = coded_sample()
    pipeline = eval_pipeline((64, 48), ToModelInput.registry_normalization(ALL))
    out = pipeline(sample)
    assert all(t.shape == (3, 64, 48) and t.dtype == torch.float32 for t in out["inputs"].values())
    assert out["label"].shape == (64, 48) and out["label"].dtype == torch.long
    assert set(out["label"].unique().tolist()) <= set(np.unique(sample["label"]).tolist())
    assert "lidar" in default_nearest() and "depth" in default_nearest() and "rgb" not in default_nearest()


def test_eval_resize_is_the_engines_resize():
    """Shrinking to the model size: each modality resampled exactly as the engine's preprocess resizes it (area for
    camera and events, nearest for metric images), so the deployed model sees what evaluation and training saw."""
    sample = coded_sample(96, 120)
    out = Compose([Resize((24, 30))], seed=0)(sample)["inputs"]
    for name, array in sample["inputs"].items():
        expected = preprocess.resize(name, array, (24, 30))
        assert np.array_equal(out[name].reshape(expected.shape), expected), name
    events = np.zeros((96, 120, 2), np.uint8)
    events[::4, ::4, 0] = 160  # one event pixel in every 4x4 block
    shrunk = Compose([Resize((24, 30))], seed=0)({**sample, "inputs": {"event": events}})["inputs"]["event"]
    assert (shrunk[..., 0] == 10).all(), "events are averaged (area), not one pixel of every 4x4 picked"


def test_shrinking_crop_averages_the_camera_as_a_resize_then_crop():
    sample = coded_sample(96, 120)
    crop = RandomResizedCrop((20, 24), scale=(0.5, 0.5))
    out = Compose([crop], seed=3)(sample)["inputs"]
    # half the factor that just covers 20x24 px: the frame shrinks below the window, which is padded with zeros
    factor = 0.5 * max(20 / 96, 24 / 120)
    shrunk = preprocess.resize("rgb", sample["inputs"]["rgb"], (round(96 * factor), round(120 * factor)))
    rgb = out["rgb"]
    nonzero = np.argwhere(rgb.any(axis=2))
    (top, left), (bottom, right) = nonzero.min(0), nonzero.max(0) + 1
    assert np.array_equal(rgb[top:bottom, left:right], shrunk[: bottom - top, : right - left])


def test_photometric_changes_only_the_camera():
    sample = coded_sample()
    out = Compose([ColorJitter(0.5, 0.5, 0.5, p=1.0), GaussianBlur((1.0, 1.5), p=1.0)], seed=0)(sample)
    rgb = out["inputs"]["rgb"]
    assert rgb.dtype == np.float32 and rgb.min() >= 0 and rgb.max() <= 1
    assert np.abs(rgb - sample["inputs"]["rgb"] / 255.0).mean() > 0.01
    for name in ("depth", "event", "lidar"):
        assert out["inputs"][name] is sample["inputs"][name]
    assert out["label"] is sample["label"]
    # the changed camera image is still a valid raw camera input
    assert preprocess.to_unit("rgb", rgb).shape == (H, W, 3)
    with pytest.raises(ConfigError, match="metric"):
        ColorJitter(modality="depth")
    without_camera = {**sample, "inputs": {"depth": sample["inputs"]["depth"]}}
    assert Compose([ColorJitter(p=1.0)], seed=0)(without_camera) == without_camera


def test_cmnext_jitter_and_blur():
    """CMNeXt's RandomColorJitter (brightness, contrast, saturation in that order, each clamped, factors U(0.5, 1.5))
    and RandomGaussianBlur((3, 3)) (sigma 0.8, reflected borders), written out here as torchvision computes them."""
    sample = coded_sample()
    unit = sample["inputs"]["rgb"].astype(np.float32) / 255
    out = Compose([ColorJitter(0.5, 0.5, 0.5, p=1.0, order="fixed")], seed=3)(sample)["inputs"]["rgb"]
    rng = np.random.default_rng(3)
    assert rng.random() < 1.0  # the p draw
    b, c, s = (rng.uniform(0.5, 1.5) for _ in range(3))
    gray = np.array([0.299, 0.587, 0.114], np.float32)
    expected = np.clip(unit * b, 0, 1)
    expected = np.clip((expected - (expected @ gray).mean()) * c + (expected @ gray).mean(), 0, 1)
    expected = np.clip((expected - (expected @ gray)[..., None]) * s + (expected @ gray)[..., None], 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-5)

    blurred = Compose([GaussianBlur(p=1.0, kernel=3)], seed=0)(sample)["inputs"]["rgb"]
    taps = np.exp(-np.arange(-1, 2) ** 2 / (2 * 0.8 ** 2))
    taps /= taps.sum()
    padded = np.pad(unit, ((1, 1), (1, 1), (0, 0)), mode="reflect")  # torch's "reflect" = cv2's REFLECT_101
    rows = sum(t * padded[i:i + H] for i, t in enumerate(taps))
    expected = sum(t * rows[:, i:i + W] for i, t in enumerate(taps))
    np.testing.assert_allclose(blurred, expected, atol=1e-5)
    with pytest.raises(ConfigError, match="kernel"):
        GaussianBlur(kernel=4)
    with pytest.raises(ConfigError, match="order"):
        ColorJitter(order="sorted")


def test_photometric_first_is_cmnexts_order():
    norm = ToModelInput.registry_normalization(ALL)
    cmnext = train_pipeline(16, norm, jitter=0.5, jitter_p=0.2, jitter_order="fixed", blur_p=0.2, blur_kernel=3,
                            photometric_first=True, seed=0)
    assert [type(t).__name__ for t in cmnext.transforms] == [
        "ColorJitter", "RandomHorizontalFlip", "GaussianBlur", "RandomResizedCrop", "ToModelInput"]
    jitter, blur = cmnext.transforms[0], cmnext.transforms[2]
    assert (jitter.p, jitter.order, jitter.strength["contrast"], blur.p, blur.kernel) == (0.2, "fixed", 0.5, 0.2, 3)
    ours = train_pipeline(16, norm, seed=0)
    assert [type(t).__name__ for t in ours.transforms] == [
        "RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter", "GaussianBlur", "ToModelInput"]
    out = cmnext(coded_sample())
    assert out["inputs"]["rgb"].shape == (3, 16, 16) and out["label"].shape == (16, 16)


def test_random_transforms_need_the_compose_generator():
    with pytest.raises(ConfigError, match="Compose"):
        RandomHorizontalFlip()(coded_sample())


def kept_sets(dropout, draws, names=ALL, seed=0):
    compose = Compose([dropout], seed=seed)
    sample = coded_sample()
    sample["inputs"] = {n: sample["inputs"][n] for n in names}
    results = []
    for _ in range(draws):
        out = compose(sample)
        kept = tuple(out["inputs"])
        assert set(kept) | set(out["meta"].get("dropped", ())) == set(names)
        results.append(kept)
    return results


def test_modality_dropout_never_drops_all_and_hits_every_subset():
    results = kept_sets(ModalityDropout(p=1.0), 1400)
    proper = {c for k in range(1, len(ALL)) for c in combinations(ALL, k)}
    assert set(results) == proper  # every non-empty proper subset is kept at some point, never none, never all
    counts = np.array([results.count(c) for c in proper])
    assert counts.min() > 40  # roughly uniform: 100 expected each
    assert all(len(k) >= 1 for k in results)


def test_modality_dropout_probability_and_droppable():
    results = kept_sets(ModalityDropout(p=0.3), 1000)
    dropped_fraction = np.mean([len(k) < len(ALL) for k in results])
    assert 0.24 < dropped_fraction < 0.36
    assert all(len(k) == len(ALL) for k in kept_sets(ModalityDropout(p=0.0), 50))
    limited = kept_sets(ModalityDropout(p=1.0, droppable=["depth", "lidar"]), 300)
    assert all("rgb" in k and "event" in k for k in limited)
    assert set(limited) == {("rgb", "event"), ("rgb", "depth", "event"), ("rgb", "event", "lidar")}
    assert kept_sets(ModalityDropout(p=1.0), 20, names=("lidar",)) == [("lidar",)] * 20
    with pytest.raises(ConfigError):
        ModalityDropout(p=1.5)


def model_sample(names, value, h=4, w=5):
    return {"inputs": {n: torch.full((3, h, w), float(value)) for n in names},
            "label": torch.full((h, w), value, dtype=torch.long), "meta": {"name": str(value)}}


def test_collate_builds_present_mask_and_zeros():
    collate = common.Collate(["rgb", "depth", "event", "lidar", "nir"])
    batch = collate([model_sample(["rgb", "lidar"], 1), model_sample(["depth"], 2), model_sample(ALL, 3)])
    assert batch["modalities"] == ("rgb", "depth", "event", "lidar", "nir")
    assert batch["present"].dtype == torch.bool
    assert batch["present"].tolist() == [[True, False, False, True, False],
                                         [False, True, False, False, False],
                                         [True, True, True, True, False]]
    for column, name in enumerate(batch["modalities"]):
        tensor = batch["inputs"][name]
        assert tensor.shape == (3, 3, 4, 5)
        for row in range(3):
            expected = row + 1 if batch["present"][row, column] else 0
            assert (tensor[row] == expected).all(), (name, row)
    assert batch["label"].shape == (3, 4, 5) and [m["name"] for m in batch["meta"]] == ["1", "2", "3"]
    with pytest.raises(DataError, match="outside the collate order"):
        common.Collate(["rgb"])([model_sample(["depth"], 1)])
    with pytest.raises(DataError, match="shape"):
        collate([model_sample(["rgb"], 1), {**model_sample(["rgb"], 2), "inputs": {"rgb": torch.zeros(3, 4, 6)}}])


def test_dropout_then_collate_end_to_end():
    pipeline = train_pipeline(16, ToModelInput.registry_normalization(ALL), modality_dropout=1.0, seed=5)
    samples = [pipeline(coded_sample()) for _ in range(6)]
    batch = common.Collate(ALL)(samples)
    present = batch["present"]
    assert present.any(dim=1).all() and not present.all(dim=1).any()
    for row, sample in enumerate(samples):
        assert [m for m, p in zip(ALL, present[row].tolist()) if p] == list(sample["inputs"])
        for column, name in enumerate(ALL):
            if not present[row, column]:
                assert (batch["inputs"][name][row] == 0).all()


def test_to_model_input_uses_given_normalization():
    sample = coded_sample()
    out = ToModelInput({"rgb": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), "depth": ((0, 0, 0), (1, 1, 1)),
                        "event": ((0, 0, 0), (1, 1, 1)), "lidar": ((0.1, 0.1, 0.1), (2, 2, 2))})(sample)
    expected = (sample["inputs"]["rgb"].transpose(2, 0, 1) / 255.0 - 0.5) / 0.25
    np.testing.assert_allclose(out["inputs"]["rgb"].numpy(), expected, atol=1e-5)
    lo, hi = modalities.get("lidar").value_range
    metres = sample["inputs"]["lidar"]
    unit = np.where(metres > 0, np.clip((metres - lo) / (hi - lo), 0, 1), 0)
    np.testing.assert_allclose(out["inputs"]["lidar"][2].numpy(), (unit - 0.1) / 2, atol=1e-6)
    assert out["inputs"]["event"][2].abs().sum() == 0  # 2-channel counts padded with a zero channel
    with pytest.raises(ConfigError, match="no normalization"):
        ToModelInput({"rgb": ((0, 0, 0), (1, 1, 1))})(sample)
    with pytest.raises(ConfigError, match="positive"):
        ToModelInput({"rgb": ((0, 0, 0), (1, 0, 1))})


def pipeline_outputs(seed, count=3):
    pipeline = train_pipeline((16, 16), ToModelInput.registry_normalization(ALL), modality_dropout=0.5, seed=seed)
    return [pipeline(coded_sample()) for _ in range(count)]


def same_samples(a, b):
    return all(
        list(x["inputs"]) == list(y["inputs"]) and torch.equal(x["label"], y["label"])
        and all(torch.equal(x["inputs"][m], y["inputs"][m]) for m in x["inputs"])
        for x, y in zip(a, b)
    )


def test_same_seed_same_augmentation():
    assert same_samples(pipeline_outputs(7), pipeline_outputs(7))
    assert not same_samples(pipeline_outputs(7), pipeline_outputs(8))


class CodedDataset(torch.utils.data.Dataset):
    def __init__(self, transform):
        self.transform = transform

    def __len__(self):
        return 6

    def __getitem__(self, index):
        return self.transform(coded_sample())


def loader_batches(loader_seed):
    dataset = CodedDataset(train_pipeline((16, 16), ToModelInput.registry_normalization(ALL), modality_dropout=0.5))
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2, worker_init_fn=seed_worker,
                                         collate_fn=common.Collate(ALL),
                                         generator=torch.Generator().manual_seed(loader_seed))
    return [(b["present"], b["label"], b["inputs"]["rgb"]) for b in loader]


def test_dataloader_workers_are_reproducible_with_a_seed():
    first, again, other = loader_batches(11), loader_batches(11), loader_batches(12)
    assert all(torch.equal(x, y) for a, b in zip(first, again) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for a, b in zip(first, other) for x, y in zip(a, b))
    # the two workers got different seeds: their batches differ
    assert not torch.equal(first[0][1], first[1][1])
