"""Segmenter: raw sensor arrays of any size and subset -> labels/confidence at the input size; clear errors."""
import itertools
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mmseg_ros import area_average, cards, modalities, preprocess
from mmseg_ros.engine import Segmenter, class_softmax, resolve_device
from mmseg_ros.upsampling import upsample_argmax
from mmseg_ros.errors import ConfigError
from mmseg_ros.nn.build import build_model
from mmseg_ros.nn.checkpoint import read_checkpoint, save_checkpoint
from mmseg_ros.nn.sam2_backbone import build_sam2

CARD = "test_tiny_mle_sam"
MODS = ("rgb", "depth", "event", "lidar")


def raw_images(height=37, width=53, seed=0):
    """What the codecs deliver: rgb8, depth metres with holes, 2-channel event counts, LiDAR millimetres."""
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 60.0, (height, width)).astype(np.float32)
    depth[0, :5] = np.nan
    depth[1, :5] = np.inf
    depth[2, :5] = 0.0
    lidar = np.zeros((height, width), np.uint16)
    lidar[::4] = rng.integers(1000, 65000, (len(range(0, height, 4)), width), dtype=np.uint16)
    return {
        "rgb": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "depth": depth,
        "event": rng.integers(0, 4, (height, width, 2), dtype=np.uint8),
        "lidar": lidar,
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model with non-trivial trained parts, saved as a project checkpoint."""
    torch.manual_seed(0)
    model = build_model(CARD)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
    path = save_checkpoint(model, tmp_path_factory.mktemp("engine") / "tiny.pt")
    return model.eval(), path


@pytest.fixture(scope="module")
def segmenter(trained):
    return Segmenter(CARD, checkpoint=trained[1], device="cpu")


def test_odd_sizes_every_subset(segmenter):
    raw = raw_images()
    for subset in (s for r in range(1, 5) for s in itertools.combinations(MODS, r)):
        result = segmenter.segment({m: raw[m] for m in subset})
        assert result.labels.shape == result.confidence.shape == (37, 53)
        assert result.labels.dtype == np.uint8 and result.confidence.dtype == np.float32
        assert result.labels.max() < 25
        assert (result.confidence >= 1 / 25 - 1e-6).all() and (result.confidence <= 1 + 1e-6).all()
        assert result.modalities == subset
        for level, weights in result.router_weights.items():
            assert list(weights) == list(subset)
            assert sum(weights.values()) == pytest.approx(1.0, abs=1e-5)
        assert set(result.timing) == {"preprocess", "forward", "postprocess", "total"}
        assert all(v >= 0 for v in result.timing.values())


def test_engine_matches_the_model_on_the_same_inputs(segmenter, trained):
    model, _ = trained
    raw = raw_images(70, 45, seed=3)
    names, inputs, size = segmenter.preprocess({"rgb": raw["rgb"], "lidar": raw["lidar"]})
    assert names == ["rgb", "lidar"] and size == (70, 45)
    assert all(t.shape == (1, 3, 64, 64) for t in inputs.values())
    with torch.no_grad():  # the engine's contract: softmax at model size, probabilities upsampled bilinearly
        probs = F.interpolate(torch.softmax(model(inputs)["logits"], 1), size=size, mode="bilinear",
                              align_corners=False)[0]
    result = segmenter.segment({"lidar": raw["lidar"], "rgb": raw["rgb"]})
    np.testing.assert_array_equal(result.labels, probs.argmax(0).numpy())
    np.testing.assert_allclose(result.confidence, probs.max(0).values.numpy(), rtol=1e-5, atol=1e-6)
    # at the card's size nothing is resized: rgb is /255 then ImageNet mean/std (registry default via the card)
    rgb = raw_images(64, 64, seed=7)["rgb"]
    _, inputs, _ = segmenter.preprocess({"rgb": rgb})
    mean, std = cards.load(CARD).normalization("rgb")
    unit = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)
    expected = (unit - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    torch.testing.assert_close(inputs["rgb"][0], expected)


@pytest.mark.parametrize("card_name", ["test_tiny_mle_sam", "test_tiny_memory_sam"])
def test_reload_on_official_sam2_weights_gives_the_saved_model(tmp_path, card_name):
    """A model built on an official-format SAM2 file, saved and reloaded through the engine under another seed, is
    the same model: everything it initialised itself and did not train is in the checkpoint."""
    base = cards.load(card_name)
    torch.manual_seed(11)
    official = tmp_path / "sam2_official.pt"
    torch.save({"model": build_sam2(base).state_dict()}, official)  # the official format: {"model": state dict}
    card = cards.derive(base, sam2={"checkpoint": str(official)})
    torch.manual_seed(1)
    model = build_model(card).eval()
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
    path = save_checkpoint(model, tmp_path / "trained.pt")
    assert read_checkpoint(path)["stores_frozen"] is False
    torch.manual_seed(3)  # the reload draws other random numbers for whatever is not loaded
    segmenter = Segmenter(card, checkpoint=path, device="cpu")
    raw = raw_images(64, 64, seed=8)
    names, inputs, size = segmenter.preprocess(raw)
    assert names == list(MODS)
    with torch.no_grad():
        expected = model(inputs)["logits"]
        torch.testing.assert_close(segmenter.model(inputs)["logits"], expected, rtol=0, atol=0)
    result = segmenter.segment(raw)
    np.testing.assert_array_equal(result.labels, torch.softmax(expected, 1)[0].argmax(0).numpy())


def test_metric_inputs_in_metres_or_millimetres_agree(segmenter):
    raw = raw_images(64, 64, seed=4)
    metres = raw["lidar"].astype(np.float32) / 1000.0
    metres[raw["lidar"] == 0] = np.nan  # "no return" in either encoding
    a = segmenter.segment({"lidar": raw["lidar"]})
    b = segmenter.segment({"lidar": metres})
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.confidence, b.confidence, rtol=1e-5)


def test_output_size_and_single_channel_inputs(segmenter):
    gray = np.random.default_rng(5).integers(0, 256, (48, 80), dtype=np.uint8)
    result = segmenter.segment({"rgb": gray, "event": None}, output_size=(20, 30))
    assert result.labels.shape == (20, 30) and result.modalities == ("rgb",)


def test_errors_are_clear(segmenter):
    raw = raw_images()
    with pytest.raises(ConfigError, match="unknown modality 'radar'"):
        segmenter.segment({"rgb": raw["rgb"], "radar": raw["depth"]})
    with pytest.raises(ConfigError, match="'aolp' is not one of"):
        segmenter.segment({"aolp": raw["rgb"]})
    with pytest.raises(ConfigError, match="no image given"):
        segmenter.segment({})
    with pytest.raises(ConfigError, match="no image given"):
        segmenter.segment({"rgb": None})
    with pytest.raises(ConfigError, match="rgb"):
        segmenter.segment({"rgb": np.zeros((2, 3, 4, 5), np.uint8)})
    with pytest.raises(ConfigError, match="given twice"):
        segmenter.segment({"rgb": raw["rgb"], "camera": raw["rgb"]})


def test_construction_errors_and_fallbacks(trained):
    with pytest.raises(ConfigError, match="precision"):
        Segmenter(CARD, checkpoint=trained[1], device="cpu", precision="int8")
    with pytest.raises(ConfigError, match="device"):
        Segmenter(CARD, checkpoint=trained[1], device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
        assert resolve_device("auto").type == "cpu"
        with pytest.warns(UserWarning, match="fp32"):
            seg = Segmenter(CARD, checkpoint=trained[1], device="auto", precision="bf16")
        assert seg.precision == "fp32"
    with pytest.warns(UserWarning, match="randomly initialised"):
        Segmenter(CARD, device="cpu")


def test_more_than_255_classes_give_uint16_labels():
    many = {"name": "many", "classes": [{"name": f"c{i}", "color": [i % 256, 0, 0]} for i in range(300)]}
    card = cards.derive(cards.load(CARD), classes=many)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = Segmenter(card, device="cpu")
    result = seg.segment({"rgb": raw_images()["rgb"]})
    assert result.labels.dtype == np.uint16 and result.labels.shape == (37, 53)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_matches_cpu(trained, segmenter, precision):
    gpu = Segmenter(CARD, checkpoint=trained[1], device="cuda", precision=precision)
    raw = raw_images(96, 80, seed=6)
    a, b = segmenter.segment(raw), gpu.segment(raw)
    agreement = (a.labels == b.labels).mean()
    assert agreement > (0.999 if precision == "fp32" else 0.9)
    assert np.abs(a.confidence - b.confidence).max() < (1e-3 if precision == "fp32" else 0.05)


# -- postprocess: the exact shortcut against the full upsampling ---------------------------------------------------


CV2_MAX_CHANNELS = 128  # OpenCV 5 maps at most this many channels of a numpy array to one image (measured)


def full_upsampling(probabilities: np.ndarray, size):
    """The postprocess before the shortcut, as the reference: all K probability maps upsampled bilinearly (cv2 up to
    its channel limit, torch beyond), then max and argmax."""
    height, width = size
    if probabilities.shape[2] <= CV2_MAX_CHANNELS:
        up = cv2.resize(probabilities, (width, height), interpolation=cv2.INTER_LINEAR).reshape(height, width, -1)
    else:
        chw = torch.from_numpy(probabilities).permute(2, 0, 1)[None]
        up = F.interpolate(chw, size=(height, width), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
        up = up.numpy()
    return up.argmax(axis=2), up.max(axis=2), up


def chw(probabilities: np.ndarray) -> np.ndarray:
    """(h, w, K) -> (K, h, w), the layout upsample_argmax takes (torch's)."""
    return np.ascontiguousarray(probabilities.transpose(2, 0, 1))


def random_probabilities(rng, h, w, classes, block, sharpness):
    """Softmax of logits that are constant over block x block regions plus noise: large agreeing areas with class
    boundaries between them (what a segmentation looks like), or pure noise with block 1."""
    coarse = rng.normal(0.0, sharpness, (-(-h // block), -(-w // block), classes))
    logits = np.repeat(np.repeat(coarse, block, 0), block, 1)[:h, :w] + rng.normal(0.0, 0.3, (h, w, classes))
    return torch.softmax(torch.from_numpy(logits.astype(np.float32)), dim=2).numpy()


@settings(max_examples=150, deadline=None)
@given(h=st.integers(1, 14), w=st.integers(1, 14), classes=st.sampled_from([1, 2, 3, 5, 25, 130]),
       height=st.integers(1, 90), width=st.integers(1, 90), block=st.integers(1, 5),
       sharpness=st.sampled_from([0.05, 1.0, 6.0]), seed=st.integers(0, 2**16))
def test_upsample_argmax_equals_the_full_upsampling(h, w, classes, height, width, block, sharpness, seed):
    """Labels as the full K-map upsampling gives them except where two classes tie to rounding; confidence within
    1e-5. Shrinking sizes (height < h) are included: the same bilinear taps."""
    probabilities = random_probabilities(np.random.default_rng(seed), h, w, classes, block, sharpness)
    labels, confidence = upsample_argmax(chw(probabilities), (height, width))
    ref_labels, ref_confidence, up = full_upsampling(probabilities, (height, width))
    assert labels.shape == (height, width) and labels.dtype == np.uint8 and confidence.dtype == np.float32
    assert np.abs(confidence - ref_confidence).max() <= 1e-5
    differ = labels != ref_labels
    if differ.any():  # only where the reference's best and our label's probability tie (to float32 rounding)
        ours = np.take_along_axis(up, labels[..., None].astype(np.intp), axis=2)[..., 0]
        assert (ref_confidence - ours)[differ].max() <= 1e-6


def test_upsample_argmax_uint16_labels_and_an_unchanged_size():
    rng = np.random.default_rng(3)
    probabilities = random_probabilities(rng, 6, 7, 300, 2, 4.0)
    labels, confidence = upsample_argmax(chw(probabilities), (40, 33), np.uint16)
    ref_labels, ref_confidence, _ = full_upsampling(probabilities, (40, 33))
    assert labels.dtype == np.uint16 and (labels == ref_labels).mean() > 0.999
    assert np.abs(confidence - ref_confidence).max() <= 1e-5
    same, peak = upsample_argmax(chw(probabilities), (6, 7), np.uint16)
    assert (same == probabilities.argmax(2)).all() and (peak == probabilities.max(2)).all()


def test_class_softmax_is_torchs():
    logits = torch.randn(2, 25, 9, 7, generator=torch.Generator().manual_seed(1)) * 30
    logits[0, 3, 0, 0] = 1e4  # one overwhelming class: no overflow
    probabilities = class_softmax(logits)
    assert torch.allclose(probabilities, torch.softmax(logits, dim=1), rtol=0, atol=1e-6)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(2, 9, 7), atol=1e-6)


def test_a_class_that_wins_no_source_can_win_the_blend():
    """Between four sources won by A and B, C (second everywhere) wins the middle: the cell's rival is blended."""
    a, b, c = [0.50, 0.05, 0.50, 0.05], [0.05, 0.50, 0.05, 0.50], [0.45, 0.45, 0.45, 0.45]  # TL, TR, BL, BR
    probabilities = np.array([a, b, c], np.float32).reshape(3, 2, 2)
    labels, confidence = upsample_argmax(probabilities, (8, 8))
    ref_labels, ref_confidence, _ = full_upsampling(probabilities.transpose(1, 2, 0), (8, 8))
    assert (labels[:, 3:5] == 2).all() and labels[0, 0] == 0 and labels[0, 7] == 1
    assert (labels == ref_labels).all() and np.abs(confidence - ref_confidence).max() <= 1e-6


def test_upsample_argmax_writes_into_given_arrays():
    """The node's message buffers: the same result written in place (stale contents overwritten), a wrong shape or
    dtype refused."""
    probabilities = chw(random_probabilities(np.random.default_rng(8), 9, 11, 25, 3, 4.0))
    expected = upsample_argmax(probabilities, (50, 37))
    out = (np.full((50, 37), 7, np.uint8), np.full((50, 37), -1.0, np.float32))
    labels, confidence = upsample_argmax(probabilities, (50, 37), out=out)
    assert labels is out[0] and confidence is out[1]
    assert np.array_equal(labels, expected[0]) and np.array_equal(confidence, expected[1])
    with pytest.raises(ValueError, match="out must be"):
        upsample_argmax(probabilities, (50, 37), out=(np.empty((50, 37), np.uint16), out[1]))


@pytest.mark.parametrize("size", [(61, 47), (20, 18), (12, 10)])  # the shortcut, a small upsampling, none
def test_engine_postprocess_is_the_full_upsampling(segmenter, size):
    logits = torch.randn(1, segmenter.num_classes, 12, 10, generator=torch.Generator().manual_seed(4)) * 3
    labels, confidence = segmenter.postprocess(logits, size)
    probabilities = torch.softmax(logits, dim=1)[0].permute(1, 2, 0).contiguous().numpy()
    ref_labels, ref_confidence, _ = full_upsampling(probabilities, size)
    assert labels.dtype == np.uint8 and confidence.dtype == np.float32
    assert (labels == ref_labels).all() and np.abs(confidence - ref_confidence).max() <= 1e-5


# -- preprocess: resize the raw array first, with the training transforms' interpolation ----------------------------


def test_interpolation_policy_per_modality():
    metric = [m for m in modalities.REGISTRY if modalities.get(m).value_range is not None]
    dense = [m for m in modalities.REGISTRY if modalities.get(m).value_range is None and not modalities.get(m).sparse]
    sparse = [m for m in modalities.REGISTRY if modalities.get(m).value_range is None and modalities.get(m).sparse]
    assert metric and dense and sparse
    for name in metric:  # "no return" (0) must never be blended with a return, at any scale
        assert preprocess.interpolation(name, (1200, 1920), (128, 128)) == cv2.INTER_NEAREST_EXACT
        assert preprocess.interpolation(name, (64, 64), (128, 128)) == cv2.INTER_NEAREST_EXACT
    for name in dense + sparse:
        assert preprocess.interpolation(name, (1200, 1920), (128, 128)) == cv2.INTER_AREA
    assert {preprocess.interpolation(n, (64, 64), (128, 96)) for n in dense} == {cv2.INTER_LINEAR}
    assert {preprocess.interpolation(n, (64, 64), (128, 96)) for n in sparse} == {cv2.INTER_NEAREST_EXACT}


@pytest.mark.parametrize("source, target", [((130, 192, 3), (40, 64)), ((128, 190), (64, 50)),
                                            ((150, 190, 2), (64, 64)), ((96, 120, 3), (24, 30)),
                                            ((256, 192, 3), (32, 24)), ((96, 64), (24, 16)),
                                            ((1200, 1920, 3), (128, 128)), ((97, 101, 3), (96, 7)),
                                            ((40, 40, 3), (40, 40)), ((33, 65, 4), (1, 1))])
def test_area_average_is_the_exact_average_rounded_to_the_dtype(source, target):
    """Fractional and whole factors, one axis unchanged, a single output pixel: uint8 within half a step of cv2's
    float64 average (plus float32 accumulation), float images within float32 rounding."""
    rng = np.random.default_rng(sum(source))
    image = rng.integers(0, 256, source, dtype=np.uint8)
    exact = cv2.resize(image.astype(np.float64), target[::-1], interpolation=cv2.INTER_AREA)
    if exact.ndim < image.ndim:  # cv2 drops a single channel
        exact = exact[:, :, None]
    averaged = preprocess.area(image, target)
    assert averaged.dtype == np.uint8 and averaged.shape == exact.shape
    assert np.abs(averaged - exact).max() <= 0.5 + 1e-3
    unit = preprocess.area(image.astype(np.float32) / 255, target)
    assert unit.dtype == np.float32 and np.abs(unit * 255 - exact).max() <= 1e-3
    wide = preprocess.area(image.astype(np.uint16) * 257, target)
    assert wide.dtype == np.uint16 and np.abs(wide / 257.0 - exact).max() <= 0.5 / 257 + 1e-3


def test_area_average_leaves_a_growing_axis_to_cv2():
    """The training transforms' random scale may grow one axis while the other shrinks: cv2.INTER_AREA's result."""
    image = np.random.default_rng(0).integers(0, 256, (60, 40, 3), dtype=np.uint8)
    expected = cv2.resize(image, (50, 30), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(preprocess.area(image, (30, 50)), expected)
    with pytest.raises(ValueError, match="enlarges"):
        area_average.shrink(image, (30, 50))


def test_preprocess_converts_the_downscaled_image(segmenter):
    """Metric images: picking pixels commutes with the conversion, so resizing first is exact (holes stay 0). The
    camera is the area average of the full frame, to the raw dtype's step."""
    raw = raw_images(150, 190, seed=7)
    names, inputs, _ = segmenter.preprocess(raw)
    height, width = segmenter.card.input_size
    for name in names:
        mean, std = segmenter.card.normalization(name)
        unit = inputs[name][0].numpy() * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean)[:, None, None]
        full = preprocess.to_unit(name, raw[name])
        flag = preprocess.interpolation(name, full.shape[:2], (height, width))
        expected = cv2.resize(full, (width, height), interpolation=flag).transpose(2, 0, 1)
        tolerance = 1e-6 if flag == cv2.INTER_NEAREST_EXACT else 1 / 255 + 1e-6  # area: within one uint8 step
        assert np.abs(unit - expected).max() <= tolerance, name


@pytest.mark.parametrize("name", sorted(modalities.REGISTRY))
def test_model_input_is_to_unit_then_normalisation_to_the_bit(name):
    """The engine's one-pass conversion against `to_unit` + `normalize_chw` (what training uses), for every dtype
    and channel count a message gives, with the values that take each branch: 0, the top of the range, NaN, +-inf,
    -0.0, negative metres, tiny values."""
    rng = np.random.default_rng(len(name))
    mean, std = rng.normal(0.0, 1.0, 3), rng.uniform(0.1, 2.0, 3)
    for dtype in (np.uint8, np.uint16, np.float16, np.float32, np.float64):
        for shape in ((7, 9), (7, 9, 1), (7, 9, 2), (7, 9, 3), (7, 9, 4)):
            if np.issubdtype(dtype, np.integer):
                image = rng.integers(0, np.iinfo(dtype).max + 1, shape).astype(dtype)
                image.flat[:3] = [0, np.iinfo(dtype).max, 1]
            else:
                image = rng.normal(0.5, 40.0, shape).astype(dtype)
                image.flat[:7] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -3.0]
            expected = preprocess.normalize_chw(preprocess.to_unit(name, image).transpose(2, 0, 1), mean, std)
            converted = preprocess.model_input(name, image, mean, std)
            assert converted.dtype == np.float32 and converted.flags.c_contiguous, (dtype, shape)
            np.testing.assert_array_equal(converted, expected, err_msg=f"{name} {np.dtype(dtype).name} {shape}")
    with pytest.raises(ConfigError, match="3 channels"):
        preprocess.model_input(name, np.zeros((4, 4, 5), np.uint8), mean, std)


def test_core_never_imports_rclpy():
    code = ("import sys, mmseg_ros.engine, mmseg_ros.nn.build, mmseg_ros.nn.mle_sam, mmseg_ros.nn.checkpoint, "
            "mmseg_ros.nn.info, mmseg_ros.bench.model; assert 'rclpy' not in sys.modules, 'rclpy imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
