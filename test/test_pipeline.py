"""segment_node's ROS-free parts: parameter validation, input checks, the latest-wins hand-off, statistics and the
diagnostics it assembles. Runs without rclpy (checked)."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from mmseg_ros import modalities, msgs, preprocess
from mmseg_ros.pipeline import checks, handoff, outputs, stats
from mmseg_ros.pipeline import config as node_config
from mmseg_ros.pipeline import diagnostics as diag
from mmseg_ros.errors import ConfigError, MessageError
from mmseg_ros.pipeline.config import NodeConfig
from mmseg_ros.sync import InputCounts, InputState, InputStatus

TINY = "test_tiny_mle_sam"


def test_no_rclpy_in_the_core():
    code = ("import sys; import mmseg_ros.pipeline, mmseg_ros.pipeline.checks, mmseg_ros.pipeline.diagnostics; "
            "assert 'rclpy' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- parameters -------------------------------------------------------------------------------------------------------


def test_defaults_validate_and_follow_the_card():
    cfg = NodeConfig.from_values({"model.card": TINY})
    assert cfg.card.name == TINY
    assert cfg.modalities == cfg.card.modalities
    assert cfg.anchor == cfg.modalities[0] and cfg.fallback == cfg.modalities[1:]
    assert cfg.checkpoint is None and cfg.lidar_extrinsic is None  # unset: from TF
    assert set(cfg.transports.values()) == {"raw"} and cfg.camera_model == "auto"


def test_subset_anchor_fallback_and_input_size():
    cfg = NodeConfig.from_values({"model.card": TINY, "modalities": ["lidar", "img"], "sync.anchor": "lidar",
                                  "model.input_size": 96})
    assert cfg.modalities == ("rgb", "lidar")  # card order, aliases resolved
    assert cfg.anchor == "lidar" and cfg.fallback == ("rgb",)
    assert cfg.card.input_size == (96, 96)


@pytest.mark.parametrize("values, match", [
    ({"model.precision": "fp64"}, "model.precision"),
    ({"model.device": "tpu"}, "model.device"),
    ({"model.input_size": 100}, "multiple of 32"),
    ({"sync.slop": -0.1}, r"sync.slop.*\[0.0, 10.0\]"),
    ({"sync.min_modalities": 5}, "exceeds"),
    ({"modalities": ["rgb", "thermal"]}, "thermal"),
    ({"modalities": ["aolp"]}, "not handled by model"),
    ({"sync.anchor": "depth", "modalities": ["rgb"]}, "sync.anchor"),
    ({"sync.fallback_order": ["depth", "depth"]}, "distinct"),
    ({"sync.fallback_order": ["rgb"]}, "other than the anchor"),
    ({"inputs.lidar_extrinsic": [1.0] * 12}, "16 finite"),
    ({"inputs.lidar_extrinsic": [1.0] * 16}, "last row"),
    ({"inputs.qos": "fast"}, "inputs.qos"),
    ({"inputs.transport.rgb": "theora"}, "inputs.transport.rgb"),
    ({"inputs.transport.rgb": "compressedDepth"}, "compressedDepth carries"),
    ({"inputs.transport.lidar": "compressed", "inputs.lidar_source": "points"}, "PointCloud2"),
    ({"inputs.camera_model": "fisheye"}, "inputs.camera_model"),
    ({"outputs.color": "yes"}, "true or false"),
    ({"model.card": "no_such_card"}, "not found"),
    ({"sync.slopp": 0.1}, "unknown parameter"),
])
def test_bad_values_name_the_parameter(values, match):
    with pytest.raises(ConfigError, match=match):
        NodeConfig.from_values({"model.card": TINY, **values})


def test_device_choice_and_cpu_fallback():
    assert node_config.choose_device("auto", False, True) == ("cuda", None)
    assert node_config.choose_device("auto", False, False) == ("cpu", None)
    assert node_config.choose_device("cuda:1", False, True) == ("cuda:1", None)
    device, warning = node_config.choose_device("cuda", True, False)
    assert device == "cpu" and "not available" in warning
    with pytest.raises(ConfigError, match="allow_cpu_fallback"):
        node_config.choose_device("cuda", False, False)
    assert NodeConfig.from_values({"model.card": TINY, "model.device": "cuda:0"}).device == "cuda:0"


def test_parameter_table_is_consistent():
    assert len(set(node_config.PARAMETER_NAMES)) == len(node_config.PARAMETERS)
    for p in node_config.PARAMETERS:
        assert p.description, p.name
        if p.default is not None:
            node_config._checked(p, p.default)  # every default passes its own checks
        if p.low is not None:
            assert p.type in (node_config.INTEGER, node_config.DOUBLE) and p.high > p.low, p.name


def test_input_topics_come_from_the_registry():
    names = ("rgb", "depth", "lidar")
    assert node_config.input_topics(names) == {n: modalities.get(n).topic for n in names}
    points = node_config.input_topics(names, "points")[node_config.LIDAR]
    assert points.rsplit("/", 1)[0] == modalities.get("lidar").topic.rsplit("/", 1)[0] and points.endswith("/points")
    assert node_config.camera_info_topic().startswith(modalities.get("rgb").topic.rsplit("/", 1)[0] + "/")


# -- input checks -----------------------------------------------------------------------------------------------------


def _image(array, encoding):
    return msgs.numpy_to_image(np.ascontiguousarray(array), encoding, ros=False)


def test_decode_accepts_registry_encodings_and_nan_holes():
    depth = np.full((8, 8), 4.0, np.float32)
    depth[:4] = np.nan  # "no return" pixels are fine
    out = checks.decode_input("depth", _image(depth, "32FC1"))
    assert out.shape == (8, 8) and np.isnan(out[0, 0]) and out[7, 7] == 4.0
    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[..., 0] = 7  # blue
    assert checks.decode_input("rgb", _image(bgr, "bgr8"))[0, 0].tolist() == [0, 0, 7]
    assert checks.decode_input("event", _image(np.zeros((4, 4, 2), np.uint8), "8UC2")).shape == (4, 4, 2)


@pytest.mark.parametrize("modality, array, encoding, match", [
    ("rgb", np.zeros((4, 4), np.uint16), "mono16", "not accepted"),
    ("depth", np.full((4, 4), np.nan, np.float32), "32FC1", "no valid return"),
    ("lidar", np.zeros((4, 4), np.float32), "32FC1", "no valid return"),
])
def test_decode_rejects_bad_images(modality, array, encoding, match):
    with pytest.raises(MessageError, match=match):
        checks.decode_input(modality, _image(array, encoding))


def test_valid_returns_finds_a_single_return_off_the_sampled_grid():
    depth = np.full((64, 64), np.nan, np.float32)
    depth[0, :8] = np.inf  # on the sampled grid, but not a return
    assert not checks.valid_returns(depth)
    depth[37, 21] = 3.5  # off every 8th row and column
    assert checks.valid_returns(depth)
    assert checks.valid_returns(np.full((3, 5), 2.0, np.float32)[:, ::2])


def test_decode_rejects_unknown_encoding_and_truncated_data():
    msg = _image(np.zeros((4, 4, 3), np.uint8), "rgb8")
    msg.encoding = "yuv_mystery"
    with pytest.raises(MessageError, match="yuv_mystery"):
        checks.decode_input("rgb", msg)
    msg = _image(np.zeros((4, 4, 3), np.uint8), "rgb8")
    msg.data = msg.data[:10]
    with pytest.raises(MessageError, match="bytes"):
        checks.decode_input("rgb", msg)


def test_size_guard_rejects_odd_frames_and_learns_a_new_size():
    guard = checks.SizeGuard(confirm=3)
    full, half = np.zeros((8, 8)), np.zeros((4, 4))
    assert guard.check("rgb", full) is None
    assert "4x4 differs from the 8x8" in guard.check("rgb", half)
    assert guard.check("rgb", full) is None and guard.check("depth", half) is None  # per input
    assert guard.check("rgb", half) and guard.check("rgb", half)
    assert guard.check("rgb", half) is None  # third in a row: the new usual size
    assert guard.check("rgb", half) is None and guard.check("rgb", full) is not None


def test_size_mismatch_and_stamp_order():
    assert checks.size_mismatch("depth", np.zeros((4, 4)), "rgb", (4, 4)) is None
    assert "differs from the anchor rgb's 8x4" in checks.size_mismatch("depth", np.zeros((4, 4)), "rgb", (4, 8))
    order = checks.StampOrder()
    assert order.check("rgb", 100) is None and order.check("rgb", 200) is None
    assert "backwards by" in order.check("rgb", 150)
    assert order.check("rgb", 160) is None and order.check("depth", 1) is None


# -- hand-off, statistics ---------------------------------------------------------------------------------------------


def test_latest_slot_keeps_the_newest_and_counts_the_rest():
    slot = handoff.LatestSlot()
    assert slot.take(0.0) is None
    slot.put_all([1, 2, 3])
    assert slot.take(0.0) == 3 and slot.superseded == 2 and slot.take(0.0) is None
    got = []
    waiter = threading.Thread(target=lambda: got.append(slot.take(5.0)))
    waiter.start()
    time.sleep(0.05)
    slot.put(4)
    waiter.join(2.0)
    assert got == [4] and slot.taken == 2 and slot.put_count == 4
    slot.close()
    started = time.monotonic()
    assert slot.take(5.0) is None and time.monotonic() - started < 1.0  # closed: no waiting


def test_rate_meter_and_latency_window():
    meter = stats.RateMeter(window=5, stale_s=1.0)
    assert meter.rate(0) is None
    for i in range(5):
        meter.tick(i * 100_000_000)  # 10 Hz
    assert meter.rate(400_000_000) == pytest.approx(10.0)
    assert meter.rate(2_000_000_000) is None  # nothing for over a second
    window = stats.LatencyWindow(size=100)
    assert window.percentiles() is None
    for ms in range(1, 101):
        window.add(ms)
    p50, p95 = window.percentiles()
    assert 49 <= p50 <= 51 and 94 <= p95 <= 96


def test_input_health_holds_errors_for_a_while():
    health = stats.InputHealth(["rgb"])
    assert health.recent("rgb", 0, 5.0) is None
    health.record("rgb", "bad", 1_000_000_000)
    assert health.recent("rgb", 3_000_000_000, 5.0) == "bad"
    assert health.recent("rgb", 7_000_000_000, 5.0) is None
    assert health.get("rgb").count == 1 and health.get("rgb").last_error == "bad"


def test_overlay_blends_with_a_matching_camera_image():
    color = np.full((2, 2, 3), 200, np.uint8)
    camera = np.zeros((2, 2, 3), np.uint8)
    assert outputs.overlay(color, camera, 0.5).tolist() == np.full((2, 2, 3), 100).tolist()
    assert outputs.overlay(color, camera, 0.0) is color
    assert outputs.overlay(color, None, 0.5) is color
    assert outputs.overlay(color, np.zeros((3, 3), np.uint8), 0.5) is color  # another size: palette only
    mono = np.full((2, 2), 255, np.uint8)
    assert outputs.overlay(color, mono, 1.0).tolist() == np.full((2, 2, 3), 255).tolist()


def test_colorize_through_the_lookup_table_is_the_class_sets():
    card = NodeConfig.from_values({"model.card": TINY}).card
    rng = np.random.default_rng(2)
    labels = rng.integers(0, card.num_classes, (37, 53)).astype(np.uint8)
    labels[0, :4] = 255  # unlabeled
    assert np.array_equal(outputs.colorize(labels, card.class_set), card.class_set.colorize(labels))
    wide = labels.astype(np.uint16)  # uint16 ids take numpy's lookup
    assert np.array_equal(outputs.colorize(wide, card.class_set), card.class_set.colorize(wide))


def test_overlay_in_uint8_is_the_float_blend_to_one_level():
    rng = np.random.default_rng(4)
    color = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    for camera in (rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), rng.integers(0, 256, (40, 50), dtype=np.uint8),
                   rng.integers(0, 65536, (40, 50, 3), dtype=np.uint16)):
        for alpha in (0.3, 0.5, 0.9):
            unit = preprocess.to_unit("rgb", camera)
            reference = np.clip((1 - alpha) * color + alpha * 255.0 * unit + 0.5, 0, 255).astype(np.uint8)
            blended = outputs.overlay(color, camera, alpha)
            assert blended.dtype == np.uint8 and np.abs(blended.astype(int) - reference).max() <= 1


def test_labels_overlay_is_the_palette_blended_with_the_camera_to_one_level():
    """The single-pass overlay against colorize + the float blend, for every camera layout a message gives (rgb8,
    bgr8 and bgra8 views, mono8, 16-bit), alphas at the ends and between, and written into a given buffer."""
    card = NodeConfig.from_values({"model.card": TINY}).card
    rng = np.random.default_rng(5)
    labels = rng.integers(0, card.num_classes, (31, 45)).astype(np.uint8)
    labels[0, :3] = 255  # unlabeled: the lookup table's black
    palette = outputs.colorize(labels, card.class_set)
    raw = rng.integers(0, 256, (31, 45, 4), dtype=np.uint8)
    rgb = np.ascontiguousarray(raw[:, :, :3])
    cameras = {"rgb8": rgb, "bgr8 view": rgb[:, :, ::-1], "bgra8 view": raw[:, :, 2::-1], "mono8": raw[:, :, 0].copy(),
               "rgb16": rng.integers(0, 65536, (31, 45, 3), dtype=np.uint16)}
    for width in (45, 48):  # compared with the row above pixel by pixel, and in words of 8 labels
        blocks = np.repeat(np.repeat(rng.integers(0, card.num_classes, (4, 6)), 8, 0), 9, 1)[:31, :width]
        blocks = blocks.astype(np.uint8)
        blocks[10, 7:30] = 1  # a row that differs from the rows above and below in a stretch (a mixed cell's pixels)
        blocks[20, 13] = blocks[20, 13] ^ 1  # one label inside a word
        blocks[25, width - 1] = blocks[25, width - 1] ^ 1  # the last one
        camera = np.ascontiguousarray(raw[:, :width, :3]) if width <= 45 else rng.integers(0, 256, (31, width, 3),
                                                                                            dtype=np.uint8)
        for block_labels in (blocks, blocks[::-1].copy()):  # the overlay reuses the row above where labels repeat
            expected = outputs.overlay(outputs.colorize(block_labels, card.class_set), camera, 0.4).astype(int)
            assert np.abs(outputs.labels_overlay(block_labels, camera, card.class_set, 0.4) - expected).max() <= 1
    for name, camera in cameras.items():
        unit = preprocess.to_unit("rgb", camera)
        for alpha in (0.0, 0.3, 0.5, 0.9, 1.0):
            reference = (1 - alpha) * palette + alpha * 255.0 * unit  # the exact blend
            blended = outputs.labels_overlay(labels, camera, card.class_set, alpha)
            assert blended.dtype == np.uint8 and blended.shape == (31, 45, 3), name
            assert np.abs(blended - reference).max() <= 1, (name, alpha)
    buffer = np.zeros((31, 45, 3), np.uint8)
    result = outputs.labels_overlay(labels, cameras["rgb8"], card.class_set, 0.5, out=buffer)
    assert result is buffer and buffer.any()
    assert np.array_equal(outputs.labels_overlay(labels, None, card.class_set, 0.5), palette)
    with pytest.raises(ValueError, match="contiguous"):
        outputs.labels_overlay(labels, cameras["rgb8"], card.class_set, 0.5, out=np.zeros((45, 31, 3), np.uint8))


def test_scaled_camera_info_maps_pixel_centres():
    k = [[400.0, 0.0, 319.5], [0.0, 410.0, 239.5], [0.0, 0.0, 1.0]]
    info = msgs.numpy_to_camera_info(k, 640, 480, d=(0.1, -0.05, 0.0, 0.0, 0.01), ros=False)
    info.p = [400.0, 0.0, 319.5, -40.0, 0.0, 410.0, 239.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    scaled = outputs.scaled_camera_info(info, (120, 160), ros=False)
    assert (scaled.width, scaled.height) == (160, 120) and list(scaled.d) == list(info.d) and scaled.r == info.r
    # x: 160 / 640 = 1/4, y: 120 / 480 = 1/4; the centre of the image stays the centre: (319.5 + 0.5) / 4 - 0.5
    assert np.allclose(np.reshape(scaled.k, (3, 3)), [[100.0, 0.0, 79.5], [0.0, 102.5, 59.5], [0.0, 0.0, 1.0]])
    assert np.allclose(np.reshape(scaled.p, (3, 4))[0], [100.0, 0.0, 79.5, -10.0])
    msgs.camera_from_info(scaled)  # a valid CameraInfo


def test_model_resolution_outputs_and_camera_info():
    pipeline = _pipeline(**{"outputs.resolution": "model"})
    size = tuple(pipeline.config.card.input_size)
    info = msgs.numpy_to_camera_info([[30.0, 0, 15.5], [0, 30.0, 15.5], [0, 0, 1]], 32, 32, ros=False)
    pipeline.add_camera_info(info, 0)
    ready = _frame(pipeline, "rgb", 0, "camera_optical", 1) + _frame(pipeline, "depth", 0, "depth_optical", 2)
    output = pipeline.process(ready[0], 3 * 10**6)
    assert output.labels.shape == size and output.confidence.shape == size and output.color.shape == (*size, 3)
    camera = preprocess.resize("rgb", output.images["rgb"], size)  # as the engine resized it for the model
    palette = outputs.colorize(output.labels, pipeline.config.card.class_set)
    expected = outputs.overlay(palette, camera, pipeline.config.color_alpha).astype(int)
    assert np.abs(output.color.astype(int) - expected).max() <= 1
    out = outputs.to_messages(output, pipeline.config, ros=False)
    assert set(out) == {"labels", "confidence", "color", "camera_info"}
    assert (out["camera_info"].width, out["camera_info"].height) == (size[1], size[0])
    assert out["camera_info"].header.frame_id == "camera_optical"
    at_camera = _pipeline()  # the default: camera resolution, no ~/camera_info even with a CameraInfo seen
    at_camera.add_camera_info(info, 0)
    ready = _frame(at_camera, "rgb", 0, "camera_optical", 1) + _frame(at_camera, "depth", 0, "depth_optical", 2)
    output = at_camera.process(ready[0], 3 * 10**6)
    assert output.labels.shape == (32, 32)
    assert set(outputs.to_messages(output, at_camera.config, ros=False)) == {"labels", "confidence", "color"}


# -- diagnostics ------------------------------------------------------------------------------------------------------

NS = 1_000_000_000


def _input(name, state, error=None, last_arrival=9 * NS, publishers=None, lost=0):
    status = InputStatus(name, state, name == "rgb", 9 * NS, last_arrival, 10.0, 0)
    return diag.InputReport(name, f"/{name}/image", status, InputCounts(received=5), error, int(bool(error)),
                            error or "", used_in_last_output=state == InputState.OK, publishers=publishers,
                            lost_recent=lost, lost_total=lost)


def _report(used=("rgb", "depth"), age=0.1, published=20):
    return diag.NodeReport("tiny", "cpu", "rgb", 10.0, 9.5, published, 22, 2, 0, (80.0, 120.0), (15.0, 30.0),
                           (60.0, 90.0), used, age, output_timeout_s=3.0, hardware_id="/car/n",
                           extra={"router.sfm.rgb": 0.6})


def test_input_statuses():
    now = 10 * NS
    ok = diag.input_status("/n", _input("rgb", InputState.OK), now)
    assert ok.level == diag.OK and ok.name == "/n: rgb input" and ok.value("rate_hz") == "10.000"
    assert ok.value("used_in_last_output") == "true"
    missing = diag.input_status("/n", _input("depth", InputState.MISSING, last_arrival=7 * NS), now)
    assert missing.level == diag.ERROR and missing.message == "missing: nothing received for 3.0 s"
    # the same input while outputs still flow from the others: degraded, not an emergency
    flowing = diag.input_status("/n", _input("depth", InputState.MISSING, last_arrival=7 * NS), now, True)
    assert flowing.level == diag.WARN and flowing.message == missing.message
    never = diag.input_status("/n", _input("depth", InputState.MISSING, last_arrival=None), now)
    assert never.level == diag.ERROR and "nothing received yet" in never.message
    lost = diag.input_status("/n", _input("depth", InputState.MISSING, last_arrival=None, publishers=1, lost=7), now)
    assert "1 publisher(s) exist and 7 message(s) were lost" in lost.message and "mmseg dds env" in lost.message
    partial = diag.input_status("/n", _input("depth", InputState.OK, publishers=1, lost=3), now, True)
    assert partial.level == diag.WARN and partial.message.startswith("transport: 3 message(s) lost")
    assert "mmseg dds env" in partial.message and partial.value("lost_total") == "3"
    stale = diag.input_status("/n", _input("depth", InputState.STALE), now)
    assert stale.level == diag.WARN
    bad = diag.input_status("/n", _input("depth", InputState.OK, error="depth: no valid return"), now)
    assert bad.level == diag.ERROR and bad.message == "bad input: depth: no valid return"
    assert bad.value("bad_messages") == "1"


def test_node_status_levels():
    inputs = [_input("rgb", InputState.OK), _input("depth", InputState.OK)]
    ok = diag.node_status("/n", _report(), inputs, 1.0)
    assert ok.level == diag.OK and ok.message.startswith("ok: all 2 inputs")
    assert ok.value("modalities_used") == "rgb,depth" and ok.value("latency_p95_ms") == "120.000"
    assert ok.value("wait_p50_ms") == "15.000" and ok.value("model_p95_ms") == "90.000"
    assert ok.value("router.sfm.rgb") == "0.6" and ok.value("dropped_superseded") == "2"
    degraded = diag.node_status("/n", _report(used=("rgb",)), inputs, 1.0)
    assert degraded.level == diag.WARN and "without depth" in degraded.message
    quiet = diag.node_status("/n", _report(age=5.0), inputs, 1.0)  # longer than diagnostics.output_timeout
    assert quiet.level == diag.ERROR and quiet.message.startswith("no output for 5.0 s")
    starting = diag.node_status("/n", _report(age=1.0, published=0), inputs, 1.0)
    assert starting.level == diag.WARN and "no output yet" in starting.message
    never = diag.node_status("/n", _report(age=4.0, published=0), inputs, 1.0)
    assert never.level == diag.ERROR and never.message.startswith("no output yet for 4.0 s")
    dead = [_input("rgb", InputState.MISSING), _input("depth", InputState.MISSING)]
    none = diag.node_status("/n", _report(age=5.0), dead, 1.0)
    assert none.level == diag.ERROR and none.message.startswith("no input: all 2 inputs missing")
    assert none.value("missing_inputs") == "rgb,depth"
    everything = diag.statuses("n", _report(), inputs, 10 * NS, 1.0)
    assert [s.name for s in everything] == ["n: segmentation", "n: rgb input", "n: depth input"]
    assert {s.hardware_id for s in everything} == {"/car/n"}


def test_projected_point_cloud_matches_the_lidar_image_the_models_are_trained_on():
    # A PointCloud2 projected by the node (or the replay) must give the same kind of values as the generator's
    # LiDAR image (camera z-depth), or a model trained on one sees ranges ~1.4x too far from the other.
    from mmseg_ros.data.synthetic import SceneGenerator

    frame = SceneGenerator(seed=3, size=96).render_frame(2)
    meta = frame["meta"]
    info = msgs.numpy_to_camera_info(meta["intrinsics"], width=96, height=96, d=(0.0,) * 5, ros=False)
    cloud = msgs.numpy_to_pointcloud(np.ascontiguousarray(frame["lidar_points"][:, :3]), ros=False)
    image = checks.lidar_image(msgs.pointcloud_to_numpy(cloud), msgs.camera_from_info(info),
                                  meta["camera_from_lidar"], "camera_info")
    both = (image > 0) & (frame["lidar"] > 0)
    assert both.sum() > 50
    ratio = np.median(image[both] / frame["lidar"][both])
    assert abs(ratio - 1.0) < 0.02, ratio
    with pytest.raises(MessageError, match="CameraInfo"):
        checks.lidar_image(msgs.pointcloud_to_numpy(cloud), None, meta["camera_from_lidar"], "camera_info")


# -- the Pipeline itself --------------------------------------------------------------------------------------------


def _pipeline(**values):
    from mmseg_ros.engine import Segmenter
    from mmseg_ros.pipeline import Pipeline

    config = NodeConfig.from_values({"model.card": TINY, "modalities": ["rgb", "depth"], **values})
    return Pipeline(config, Segmenter(config.card, device="cpu"), started_ns=0)


def _frame(pipeline, name, stamp_ms, frame_id, now_ms):
    encoding = {"rgb": "rgb8", "depth": "32FC1"}[name]
    array = np.full((32, 32, 3), 90, np.uint8) if name == "rgb" else np.full((32, 32), 4.0, np.float32)
    header = msgs.Header(stamp=msgs.Time(sec=stamp_ms // 1000, nanosec=(stamp_ms % 1000) * 10**6), frame_id=frame_id)
    return pipeline.add(name, msgs.numpy_to_image(array, encoding, header, ros=False), now_ms * 10**6)


def test_pipeline_writes_outputs_into_message_buffers():
    """segment_node's pipeline: the same labels, confidence and overlay as a pipeline that allocates its own, in
    arrays the output messages carry without a copy, reused two sets later."""
    from mmseg_ros.engine import Segmenter
    from mmseg_ros.pipeline import Pipeline

    config = NodeConfig.from_values({"model.card": TINY, "modalities": ["rgb", "depth"]})
    segmenter = Segmenter(config.card, device="cpu")
    own = Pipeline(config, segmenter, started_ns=0)
    buffered = Pipeline(config, segmenter, started_ns=0, output_buffers=msgs.MessageBuffers(depth=2))
    results = []
    for t in range(3):
        pair = []
        for pipeline in (own, buffered):
            ready = _frame(pipeline, "rgb", 100 * t, "camera_optical", 100 * t + 1)
            ready += _frame(pipeline, "depth", 100 * t, "depth_optical", 100 * t + 2)
            pair.append(pipeline.process(ready[0], (100 * t + 3) * 10**6))
        expected, output = pair
        for name in ("labels", "confidence", "color"):
            assert np.array_equal(getattr(output, name), getattr(expected, name)), name
            assert msgs.backing_bytes(getattr(output, name)) is not None, name
        results.append(output)
    assert np.shares_memory(results[0].labels, results[2].labels)  # the ring of two came round
    assert not np.shares_memory(results[0].labels, results[1].labels)


def test_pipeline_outputs_keep_the_camera_frame_when_another_input_anchors():
    pipeline = _pipeline()
    outputs = []
    for i in range(12):  # 10 Hz; the camera stops after 0.3 s and depth takes the anchor role
        t = 100 * i
        ready = _frame(pipeline, "depth", t, "depth_optical", t + 1)
        if i < 4:
            ready += _frame(pipeline, "rgb", t, "camera_optical", t + 2)
        ready += pipeline.poll((t + 50) * 10**6)
        outputs += [pipeline.process(s, (t + 50) * 10**6) for s in ready]
    outputs = [o for o in outputs if o is not None]
    by_anchor = {o.anchor for o in outputs}
    assert by_anchor == {"rgb", "depth"}, by_anchor
    assert {o.header.frame_id for o in outputs} == {"camera_optical"}
    assert all(o.labels.shape == (32, 32) for o in outputs)
    override = _pipeline(**{"outputs.frame_id": "base_camera"})
    ready = _frame(override, "rgb", 0, "camera_optical", 1) + _frame(override, "depth", 0, "depth_optical", 2)
    assert [override.process(s, 3 * 10**6).header.frame_id for s in ready] == ["base_camera"]


def test_pipeline_reports_transport_loss_and_output_timeout():
    pipeline = _pipeline(**{"diagnostics.output_timeout": 1.0})
    pipeline.note_publishers("depth", 2)
    pipeline.note_lost("depth", 5, 10**9)
    statuses = {s.name: s for s in pipeline.report(2 * 10**9, "segment_node", {"rgb": "/rgb/image"}, "/car/node")}
    depth = statuses["segment_node: depth input"]
    assert depth.level == diag.ERROR and "2 publisher(s) exist and 5 message(s) were lost" in depth.message
    node = statuses["segment_node: segmentation"]
    assert node.level == diag.ERROR and node.message.startswith("no input")  # nothing ever arrived
    assert {s.hardware_id for s in statuses.values()} == {"/car/node"}
