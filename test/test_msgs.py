"""Codecs for sensor_msgs Image / PointCloud2 / CameraInfo and the LiDAR -> camera projection.

Wire bytes are built here independently of the encoder (numpy dtypes with explicit byte order, rows padded by
hand), so a decoder and encoder that were wrong in the same way could not pass by agreeing with each other.
"""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mmseg_ros import msgs
from mmseg_ros.errors import MessageError

ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "8UC1", "8UC2", "8UC3", "16UC1", "32FC1",
             "rgb16", "16SC1", "32SC1", "64FC1", "8UC4"]
SETTINGS = settings(max_examples=40, deadline=None)


def wire_image(array: np.ndarray, encoding: str, pad: int, big_endian: bool, fill: int = 0xAB) -> msgs.Image:
    """A plain Image whose bytes are laid out by hand: each row in the requested byte order, then `pad` bytes."""
    order = ">" if big_endian else "<"
    rows = [row.astype(row.dtype.newbyteorder(order)).tobytes() + bytes([fill]) * pad for row in array]
    h, w = array.shape[:2]
    return msgs.Image(height=h, width=w, encoding=encoding, is_bigendian=int(big_endian),
                      step=len(rows[0]), data=b"".join(rows))


def random_array(rng: np.random.Generator, encoding: str, h: int, w: int) -> np.ndarray:
    """Every bit pattern is fair game, NaNs and infinities included, so values come from random bytes."""
    fmt = msgs.pixel_format(encoding)
    shape = (h, w) if fmt.channels == 1 else (h, w, fmt.channels)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * np.dtype(fmt.dtype).itemsize, dtype=np.uint8)
    return raw.view(fmt.dtype).reshape(shape)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equality (NaN payloads too)."""
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == np.ascontiguousarray(b).tobytes()


image_cases = st.tuples(
    st.sampled_from(ENCODINGS), st.integers(1, 9), st.integers(1, 9), st.integers(0, 7), st.booleans(),
    st.integers(0, 2**32 - 1),
)


# ---- Image ------------------------------------------------------------------------------------------------------

@SETTINGS
@given(image_cases)
def test_decode_hand_built_images(case):
    encoding, h, w, pad, big_endian, seed = case
    expected = random_array(np.random.default_rng(seed), encoding, h, w)
    decoded = msgs.image_to_numpy(wire_image(expected, encoding, pad, big_endian))
    assert decoded.dtype.isnative
    assert same_bits(decoded.astype(expected.dtype), expected)


@SETTINGS
@given(image_cases)
def test_encode_matches_hand_built_wire_and_round_trips(case):
    encoding, h, w, pad, big_endian, seed = case
    array = random_array(np.random.default_rng(seed), encoding, h, w)
    row_bytes = w * msgs.pixel_format(encoding).bytes_per_pixel
    msg = msgs.numpy_to_image(array, encoding, step=row_bytes + pad, is_bigendian=big_endian, ros=False)
    reference = wire_image(array, encoding, pad, big_endian, fill=0)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (h, w, reference.step, encoding)
    if array.dtype.itemsize > 1:
        assert msg.is_bigendian == int(big_endian)
    assert bytes(msg.data) == reference.data
    assert same_bits(msgs.image_to_numpy(msg), array)


def test_decode_is_a_zero_copy_view_for_native_byte_order():
    array = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    msg = wire_image(array, "rgb8", pad=3, big_endian=False)
    decoded = msgs.image_to_numpy(msg)
    assert np.shares_memory(decoded, np.frombuffer(msg.data, np.uint8))
    assert np.array_equal(decoded, array)


@pytest.mark.parametrize("encoding, order", [("rgb8", [0, 1, 2]), ("bgr8", [2, 1, 0]), ("rgba8", [0, 1, 2]),
                                             ("bgra8", [2, 1, 0])])
def test_image_for_model_gives_rgb(encoding, order):
    red, green, blue, alpha = 200, 100, 50, 7
    channels = {"r": red, "g": green, "b": blue, "a": alpha}
    pixel = [channels[c] for c in encoding[: -1]]
    array = np.tile(np.array(pixel, np.uint8), (2, 3, 1))
    rgb = msgs.image_for_model(msgs.numpy_to_image(array, encoding, ros=False))
    assert rgb.shape == (2, 3, 3) and rgb[1, 2].tolist() == [red, green, blue]
    assert array[0, 0, order].tolist() == [red, green, blue]  # the table in msgs agrees with the encoding's name


def test_image_for_model_keeps_single_channel_and_float():
    depth = np.full((3, 4), 2.5, np.float32)
    out = msgs.image_for_model(msgs.numpy_to_image(depth, "32FC1", ros=False))
    assert out.shape == (3, 4) and out.dtype == np.float32 and np.all(out == 2.5)


def test_data_given_as_a_list_of_ints():
    msg = msgs.Image(height=1, width=2, encoding="mono8", step=2, data=[3, 250])
    assert msgs.image_to_numpy(msg).tolist() == [[3, 250]]


# ---- Output images (labels, confidence, colour) -------------------------------------------------------------------

def test_labels_mono8_with_unlabeled():
    labels = np.array([[0, 24, 255], [3, 4, 5]])
    msg = msgs.labels_to_image(labels, num_classes=25, ros=False)
    assert msg.encoding == "mono8"
    assert msgs.image_to_numpy(msg).tolist() == labels.tolist()


def test_labels_mono16_above_255_classes():
    labels = np.array([[0, 299, 65535]], dtype=np.int32)
    msg = msgs.labels_to_image(labels, num_classes=300, ros=False)
    assert msg.encoding == "mono16" and msg.step == 6
    assert msgs.image_to_numpy(msg).tolist() == labels.tolist()
    assert msgs.label_encoding(255) == ("mono8", 255) and msgs.label_encoding(256) == ("mono16", 65535)


@pytest.mark.parametrize("labels, k, match", [
    (np.array([[0, 25]]), 25, "25 which is outside"),
    (np.array([[-1, 0]]), 25, "-1 which is outside"),
    (np.array([[0.5]]), 25, "integer array"),
    (np.array([1, 2]), 25, "integer array"),
    (np.array([[1]]), 0, "num_classes"),
])
def test_bad_labels(labels, k, match):
    with pytest.raises(MessageError, match=match):
        msgs.labels_to_image(labels, num_classes=k, ros=False)


def test_confidence_and_color():
    conf = np.array([[0.25, 1.0]], dtype=np.float64)
    msg = msgs.confidence_to_image(conf, ros=False)
    assert msg.encoding == "32FC1" and msgs.image_to_numpy(msg).tolist() == [[0.25, 1.0]]
    color = np.arange(12, dtype=np.uint8).reshape(1, 4, 3)
    msg = msgs.color_to_image(color, ros=False)
    assert msg.encoding == "rgb8" and np.array_equal(msgs.image_to_numpy(msg), color)
    with pytest.raises(MessageError, match="uint8"):
        msgs.color_to_image(color.astype(np.float32), ros=False)
    with pytest.raises(MessageError, match="float array"):
        msgs.confidence_to_image(np.zeros((2, 2), np.uint8), ros=False)


def test_message_buffers_rotate_and_reallocate():
    buffers = msgs.MessageBuffers(depth=2)
    first, second = buffers.take("conf", (4, 5), np.float32), buffers.take("conf", (4, 5), np.float32)
    assert first.shape == (4, 5) and first.dtype == np.float32 and not np.shares_memory(first, second)
    assert buffers.take("conf", (4, 5), np.float32) is first  # the ring comes round after `depth` sets
    assert buffers.take("labels", (4, 5), np.uint8).dtype == np.uint8  # another output: its own ring
    wider = buffers.take("conf", (4, 6), np.float32)
    assert wider.shape == (4, 6) and not np.shares_memory(wider, first)
    assert msgs.backing_bytes(first) is not None and msgs.backing_bytes(wider) is not msgs.backing_bytes(first)
    for partial in (first[1:], first.T, first[:, :2], np.zeros((4, 5), np.float32)):
        assert msgs.backing_bytes(partial) is None
    with pytest.raises(ValueError, match="depth"):
        msgs.MessageBuffers(depth=0)


@pytest.mark.skipif(not msgs.ros_messages_available(), reason="sensor_msgs is not importable in this environment")
def test_buffer_arrays_become_image_data_without_a_copy():
    """A real Image carries the buffer itself (written later, the message shows it); any other array is copied once,
    and a plain message always gets its own bytes."""
    buffers = msgs.MessageBuffers()
    confidence = buffers.take("confidence", (3, 4), np.float32)
    confidence[:] = 0.25
    msg = msgs.confidence_to_image(confidence, msgs.Header())
    assert msg.data is msgs.backing_bytes(confidence)
    confidence[0, 0] = 0.75
    assert msgs.image_to_numpy(msg)[0, 0] == 0.75
    color = buffers.take("color", (3, 4, 3), np.uint8)
    color[:] = 7
    assert msgs.color_to_image(color, msgs.Header()).data is msgs.backing_bytes(color)
    own = np.full((3, 4), 0.5, np.float32)
    copied = msgs.confidence_to_image(own, msgs.Header())
    own[0, 0] = 0.0
    assert msgs.image_to_numpy(copied)[0, 0] == 0.5
    plain = msgs.confidence_to_image(confidence, ros=False)
    confidence[0, 0] = 0.0
    assert isinstance(plain.data, bytes) and msgs.image_to_numpy(plain)[0, 0] == 0.75


def test_header_is_the_callers():
    header = msgs.Header(stamp=msgs.Time(sec=12, nanosec=345), frame_id="cam")
    msg = msgs.confidence_to_image(np.zeros((1, 1), np.float32), header, ros=False)
    assert msg.header is header


# ---- Malformed images ---------------------------------------------------------------------------------------------

def good_image(**changes) -> msgs.Image:
    msg = msgs.Image(height=2, width=3, encoding="rgb8", is_bigendian=0, step=9, data=bytes(18))
    for name, value in changes.items():
        setattr(msg, name, value)
    return msg


@pytest.mark.parametrize("changes, match", [
    ({"encoding": "bayer_rggb8"}, r"Image.encoding 'bayer_rggb8' is not supported"),
    ({"encoding": "32UC1"}, r"Image.encoding '32UC1'"),
    ({"data": bytes(17)}, r"Image.data has 17 bytes, height\*step=2\*9=18"),
    ({"step": 8}, r"Image.step=8 is smaller than width\*bytes_per_pixel=3\*3=9"),
    ({"height": 0, "data": b""}, r"zero size: height=0, width=3"),
    ({"width": 0}, r"zero size: height=2, width=0"),
    ({"height": -2}, r"Image.height must be a non-negative integer, got -2"),
    ({"width": "3"}, r"Image.width must be an integer, got '3'"),
    ({"step": 9.5}, r"Image.step must be an integer, got 9.5"),
    ({"data": "not bytes"}, r"Image.data is not a byte buffer \(got str\)"),
    ({"data": [1, 300] * 9}, r"Image.data is not a byte buffer"),
])
def test_malformed_images_raise_message_error(changes, match):
    with pytest.raises(MessageError, match=match):
        msgs.image_to_numpy(good_image(**changes))


def test_missing_field_is_named():
    class NoStep:
        header, height, width, encoding, is_bigendian, data = None, 1, 1, "mono8", 0, b"\0"

    with pytest.raises(MessageError, match=r"Image has no field 'step' \(got a NoStep\)"):
        msgs.image_to_numpy(NoStep())


@pytest.mark.parametrize("array, encoding, kwargs, match", [
    (np.zeros((2, 2, 3), np.uint8), "mono8", {}, r"needs shape \(H, W, 1\), got \(2, 2, 3\)"),
    (np.zeros((2, 2), np.float64), "32FC1", {}, "needs float32 data, got float64"),
    (np.zeros((0, 2), np.uint8), "mono8", {}, "empty image"),
    (np.zeros((2, 2), np.uint8), "mono8", {"step": 1}, "step=1 is smaller"),
    (np.zeros((2, 2), np.uint8), "yuv422", {}, "not supported"),
])
def test_encoder_rejects_mismatches(array, encoding, kwargs, match):
    with pytest.raises(MessageError, match=match):
        msgs.numpy_to_image(array, encoding, ros=False, **kwargs)


# ---- PointCloud2 --------------------------------------------------------------------------------------------------

FIELD_TYPES = {"x": "f4", "y": "f4", "z": "f4", "intensity": "f4", "ring": "u2", "time": "f8", "tag": "i1"}
DATATYPE = {"f4": 7, "f8": 8, "u2": 4, "i1": 1, "u1": 2, "i2": 3, "i4": 5, "u4": 6}


def cloud_layout(order, gaps):
    """Field offsets for the given field order with `gaps` padding bytes before each field, and the point step."""
    offsets, at = {}, 0
    for name, gap in zip(order, gaps):
        at += gap
        offsets[name] = at
        at += np.dtype(FIELD_TYPES[name]).itemsize
    return offsets, at + gaps[-1]


@SETTINGS
@given(st.permutations(list(FIELD_TYPES)), st.lists(st.integers(0, 5), min_size=len(FIELD_TYPES) + 1,
                                                     max_size=len(FIELD_TYPES) + 1),
       st.booleans(), st.integers(0, 9), st.integers(1, 3), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_pointcloud_any_field_order_padding_and_byte_order(order, gaps, big_endian, row_pad, height, width, seed):
    rng = np.random.default_rng(seed)
    offsets, point_step = cloud_layout(order, gaps)
    bo = ">" if big_endian else "<"
    wire_dtype = np.dtype({"names": list(offsets), "formats": [bo + FIELD_TYPES[n] for n in offsets],
                           "offsets": list(offsets.values()), "itemsize": point_step})
    values = np.zeros(height * width, dtype=wire_dtype)
    for name in offsets:
        low = 0 if FIELD_TYPES[name].startswith("u") else -100
        values[name] = rng.integers(low, 100, size=values.size)
    values["x"][0] = np.nan  # an invalid point, as drivers send with is_dense=False
    row_step = width * point_step + row_pad
    data = b"".join(values[r * width:(r + 1) * width].tobytes() + b"\xee" * row_pad for r in range(height))
    fields = [msgs.PointField(name=n, offset=o, datatype=DATATYPE[FIELD_TYPES[n]], count=1) for n, o in offsets.items()]
    rng.shuffle(fields)  # the order of the fields list is free too
    msg = msgs.PointCloud2(height=height, width=width, fields=fields, is_bigendian=big_endian, point_step=point_step,
                           row_step=row_step, data=data, is_dense=False)
    decoded = msgs.pointcloud_to_numpy(msg)
    assert decoded.shape == (height * width,)
    for name in offsets:
        assert decoded.dtype[name].isnative
        np.testing.assert_array_equal(decoded[name], values[name].astype(FIELD_TYPES[name]))
    xyz = msgs.pointcloud_xyz(msg)
    assert xyz.shape == (height * width - 1, 3)  # the NaN point is dropped
    np.testing.assert_array_equal(xyz[:, 2], values["z"][1:].astype(np.float64))
    # The builder writes the same layout back (padding bytes aside).
    rebuilt = msgs.numpy_to_pointcloud(values, height=height, row_step=row_step, ros=False)
    assert (rebuilt.point_step, rebuilt.row_step, rebuilt.is_bigendian, rebuilt.is_dense) == (
        point_step, row_step, big_endian, False)
    assert {(f.name, f.offset, f.datatype, f.count) for f in rebuilt.fields} == {
        (f.name, f.offset, f.datatype, f.count) for f in fields}
    again = msgs.pointcloud_to_numpy(rebuilt)
    assert all(same_bits(again[name], decoded[name]) for name in offsets)


def test_pointcloud_count_greater_than_one_and_xyz_shortcut():
    dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("normal", "<f4", (3,))])
    points = np.zeros(2, dtype)
    points["normal"] = [[0, 0, 1], [1, 0, 0]]
    msg = msgs.numpy_to_pointcloud(points, ros=False)
    assert [(f.name, f.count) for f in msg.fields][-1] == ("normal", 3)
    assert msgs.pointcloud_to_numpy(msg)["normal"].tolist() == [[0, 0, 1], [1, 0, 0]]
    simple = msgs.numpy_to_pointcloud(np.array([[1.0, 2.0, 3.0]]), ros=False)
    assert simple.point_step == 12 and simple.is_dense
    assert msgs.pointcloud_xyz(simple).tolist() == [[1.0, 2.0, 3.0]]


def test_empty_pointcloud_is_not_an_error():
    msg = msgs.numpy_to_pointcloud(np.zeros((0, 3)), ros=False)
    assert msgs.pointcloud_to_numpy(msg).size == 0 and msgs.pointcloud_xyz(msg).shape == (0, 3)


def good_cloud(**changes) -> msgs.PointCloud2:
    msg = msgs.numpy_to_pointcloud(np.ones((4, 3)), ros=False)
    for name, value in changes.items():
        setattr(msg, name, value)
    return msg


def field(name, offset, datatype=7, count=1):
    return msgs.PointField(name=name, offset=offset, datatype=datatype, count=count)


@pytest.mark.parametrize("changes, match", [
    ({"fields": [field("x", 0), field("y", 4), field("z", 10)]},
     r"\('z'\) spans bytes \[10, 14\) beyond point_step=12"),
    ({"fields": [field("x", 0), field("x", 4)]}, "name 'x' appears twice"),
    ({"fields": [field("x", 0, datatype=9)]}, r"\('x'\).datatype=9 is not a PointField type"),
    ({"fields": [field("x", 0, count=0)]}, r"count=0"),
    ({"fields": []}, "fields is empty"),
    ({"fields": [field("", 0)]}, "name must be a non-empty string"),
    ({"row_step": 40}, r"row_step=40 is smaller than width\*point_step=4\*12=48"),
    ({"data": bytes(47)}, r"data has 47 bytes, height\*row_step=1\*48=48"),
    ({"point_step": 0}, "point_step=0"),
])
def test_malformed_pointclouds_raise_message_error(changes, match):
    with pytest.raises(MessageError, match=match):
        msgs.pointcloud_to_numpy(good_cloud(**changes))


def test_missing_xyz_fields_are_named():
    msg = good_cloud(fields=[field("x", 0), field("y", 4), field("intensity", 8)])
    with pytest.raises(MessageError, match=r"no field\(s\) \['z'\]; fields: \['x', 'y', 'intensity'\]"):
        msgs.pointcloud_xyz(msg)


def test_builder_rejects_mixed_byte_orders():
    with pytest.raises(MessageError, match="mix byte orders"):
        msgs.numpy_to_pointcloud(np.zeros(2, [("x", ">f4"), ("y", "<f4")]), ros=False)


# ---- Camera and projection ----------------------------------------------------------------------------------------

# LiDAR frame (x forward, y left, z up) -> camera optical frame (x right, y down, z forward), camera 0.5 m behind
# and 0.2 m above the LiDAR: cam = (-y, -z - 0.2, x + 0.5).
LIDAR_TO_CAMERA = np.array([[0, -1, 0, 0.0], [0, 0, -1, -0.2], [1, 0, 0, 0.5], [0, 0, 0, 1]], dtype=float)
K = [50.0, 0.0, 40.0, 0.0, 50.0, 20.0, 0.0, 0.0, 1.0]


def camera(d=(), model="plumb_bob"):
    info = msgs.numpy_to_camera_info(K, width=80, height=40, d=d, distortion_model=model, ros=False)
    return msgs.camera_from_info(info)


def lidar_point(cam_xyz):
    """The LiDAR-frame point that LIDAR_TO_CAMERA maps to the given camera-frame point."""
    x, y, z = cam_xyz
    return [z - 0.5, -x, -(y + 0.2)]


def test_projection_hand_computed_pinhole():
    points = np.array([lidar_point((0.0, 0.0, 10.0)),    # optical axis: pixel (40, 20)
                       lidar_point((1.0, 0.5, 2.0))])     # u = 40 + 50*0.5 = 65, v = 20 + 50*0.25 = 32.5 -> 33
    image = msgs.project_points(points, camera(), LIDAR_TO_CAMERA)
    assert image.dtype == np.float32 and image.shape == (40, 80)
    assert np.count_nonzero(image) == 2
    assert image[20, 40] == pytest.approx(math.sqrt(9.5 ** 2 + 0.2 ** 2), rel=1e-6)  # range seen by the LiDAR
    assert image[33, 65] == pytest.approx(math.sqrt(1.5 ** 2 + 1.0 ** 2 + 0.7 ** 2), rel=1e-6)
    depth = msgs.project_points(points, camera(), LIDAR_TO_CAMERA, value="depth")
    assert depth[20, 40] == pytest.approx(10.0) and depth[33, 65] == pytest.approx(2.0)


def test_projection_hand_computed_plumb_bob():
    d = (-0.2, 0.05, 0.01, -0.02, 0.0)
    # x = 0.5, y = 0.25: r2 = 0.3125, radial = 1 - 0.2*0.3125 + 0.05*0.3125^2 = 0.94238281
    # xd = 0.5*radial + 2*0.01*0.125 - 0.02*(0.3125 + 2*0.25) = 0.45744141 -> u = 40 + 50*xd = 62.87 -> 63
    # yd = 0.25*radial + 0.01*(0.3125 + 2*0.0625) - 2*0.02*0.125 = 0.23497070 -> v = 20 + 50*yd = 31.75 -> 32
    image = msgs.project_points(np.array([lidar_point((1.0, 0.5, 2.0))]), camera(d), LIDAR_TO_CAMERA, value="depth")
    assert np.argwhere(image).tolist() == [[32, 63]]
    assert image[32, 63] == pytest.approx(2.0)


def test_distortion_fold_ignores_negligible_coefficients():
    """A denormal k2 (the fuzzer's find) made the fold's polynomial overflow numpy's companion matrix: coefficients
    below 1e-12 of the largest count as zero, so the fold is the one without them."""
    def fold(d):
        info = msgs.numpy_to_camera_info([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1]], 1, 1, d=d,
                                         distortion_model="rational_polynomial", ros=False)
        return msgs.camera_from_info(info).fold_radius2()

    assert fold([0.0, 2.2250738585072014e-308, 0, 0, 0, 0, 0, 1.0]) == pytest.approx(fold([0, 0, 0, 0, 0, 0, 0, 1.0]))
    assert fold([-0.5, 1e-300, 0, 0, 0, 0, 0, 0]) == pytest.approx(1 / 1.5)


def test_projection_drops_points_beyond_the_distortion_fold():
    cam = camera((-0.5, 0.0, 0.0, 0.0, 0.0))
    assert cam.fold_radius2() == pytest.approx(1 / 1.5)  # d/dr r(1 - 0.5 r^2) = 1 - 1.5 r^2
    # Normalised x = 1.2 is past the fold: the polynomial would put it at 1.2*(1 - 0.72) = 0.336 -> u = 56.8, in view.
    points = np.array([lidar_point((2.4, 0.0, 2.0)), lidar_point((0.6, 0.0, 2.0))])
    image = msgs.project_points(points, cam, LIDAR_TO_CAMERA, value="depth")
    # The in-view point: x = 0.3 -> 0.3*(1 - 0.5*0.09) = 0.2865 -> u = 40 + 14.3 -> 54; y = 0 -> v = 20.
    assert np.argwhere(image).tolist() == [[20, 54]]


def test_projection_nearest_wins_in_any_order_and_drops_points_behind():
    near, far = lidar_point((0.0, 0.0, 4.0)), lidar_point((0.0, 0.0, 10.0))
    behind = lidar_point((0.0, 0.0, -3.0))  # would land on the same pixel if not dropped
    for points in ([far, near, behind], [behind, near, far], [near, far]):
        depth = msgs.project_points(np.array(points), camera(), LIDAR_TO_CAMERA, value="depth")
        assert np.count_nonzero(depth) == 1 and depth[20, 40] == pytest.approx(4.0)


def test_pointcloud_to_range_image_skips_nan_points():
    points = np.array([lidar_point((0.0, 0.0, 10.0)), [np.nan, 0.0, 0.0]])
    cloud = msgs.numpy_to_pointcloud(points, ros=False)
    assert not cloud.is_dense
    info = msgs.numpy_to_camera_info(K, 80, 40, ros=False)
    image = msgs.pointcloud_to_range_image(cloud, info, LIDAR_TO_CAMERA, value="depth")
    assert np.count_nonzero(image) == 1 and image[20, 40] == pytest.approx(10.0)


def test_projection_of_many_points_matches_a_per_point_loop():
    rng = np.random.default_rng(0)
    cam_points = np.stack([rng.uniform(-3, 3, 3000), rng.uniform(-2, 2, 3000), rng.uniform(-1, 8, 3000)], axis=1)
    lidar_points = np.array([lidar_point(p) for p in cam_points])
    image = msgs.project_points(lidar_points, camera(), LIDAR_TO_CAMERA, value="depth")
    expected = np.zeros((40, 80), np.float32)
    for x, y, z in cam_points:
        if z <= 1e-3:
            continue
        u, v = math.floor(50 * x / z + 40 + 0.5), math.floor(50 * y / z + 20 + 0.5)
        if 0 <= u < 80 and 0 <= v < 40 and (expected[v, u] == 0 or z < expected[v, u]):
            expected[v, u] = z
    np.testing.assert_allclose(image, expected, rtol=1e-6)


@pytest.mark.parametrize("info_changes, match", [
    ({"k": [0.0] * 9}, "all zero"),
    ({"k": [1.0] * 8}, "9 finite numbers"),
    ({"k": [-50.0, 0, 40, 0, 50, 20, 0, 0, 1]}, r"fx, fy > 0, got \[-50.0"),
    ({"k": [50.0, 0, 40, 0, 50, 20, 0, 0, 2]}, "must be"),
    ({"k": [np.nan, 0, 40, 0, 50, 20, 0, 0, 1]}, "finite"),
    ({"d": [0.1, 0.0, 0.0]}, r"d has 3 coefficients, plumb_bob needs 5"),
    ({"d": [0.1, 0, 0, 0, 0], "distortion_model": "equidistant"}, "'equidistant' is not supported"),
    ({"d": [np.inf, 0, 0, 0, 0]}, "d must be finite"),
    ({"width": 0}, "zero size: width=0"),
])
def test_bad_camera_info_raises_message_error(info_changes, match):
    info = msgs.CameraInfo(width=80, height=40, distortion_model="plumb_bob", d=[0.0] * 5, k=list(K))
    for name, value in info_changes.items():
        setattr(info, name, value)
    with pytest.raises(MessageError, match=match):
        msgs.camera_from_info(info)


@pytest.mark.parametrize("extrinsic", [np.eye(3), np.full((4, 4), np.nan), np.ones((4, 4))])
def test_bad_extrinsic_raises_message_error(extrinsic):
    with pytest.raises(MessageError, match="extrinsic must be a finite 4x4"):
        msgs.project_points(np.zeros((1, 3)), camera(), extrinsic)


# ---- ROS-free import, and real sensor_msgs through real CDR ---------------------------------------------------------

def test_module_imports_without_rclpy():
    code = "import sys, mmseg_ros.msgs, mmseg_ros.ros.dds; assert 'rclpy' not in sys.modules, 'rclpy imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.ros
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_real_image_round_trips_through_cdr(encoding):
    serialization = pytest.importorskip("rclpy.serialization")
    from sensor_msgs.msg import Image

    array = random_array(np.random.default_rng(1), encoding, 5, 7)
    header = msgs.Header(stamp=msgs.Time(sec=3, nanosec=9), frame_id="camera_optical")
    msg = msgs.numpy_to_image(array, encoding, header, step=7 * msgs.pixel_format(encoding).bytes_per_pixel + 2,
                              is_bigendian=True, ros=True)
    assert isinstance(msg, Image)
    back = serialization.deserialize_message(serialization.serialize_message(msg), Image)
    assert (back.header.stamp.sec, back.header.stamp.nanosec, back.header.frame_id) == (3, 9, "camera_optical")
    assert same_bits(msgs.image_to_numpy(back), array)


@pytest.mark.ros
def test_real_pointcloud_and_camera_info_round_trip_through_cdr():
    serialization = pytest.importorskip("rclpy.serialization")
    from sensor_msgs.msg import CameraInfo, PointCloud2

    points = np.zeros(3, np.dtype({"names": ["intensity", "x", "y", "z"], "formats": [">u2", ">f4", ">f4", ">f4"],
                                   "offsets": [0, 4, 8, 12], "itemsize": 20}))
    points["x"], points["z"], points["intensity"] = [1, 2, np.nan], [3, 4, 5], [7, 8, 9]
    msg = msgs.numpy_to_pointcloud(points, row_step=64, ros=True)
    back = serialization.deserialize_message(serialization.serialize_message(msg), PointCloud2)
    decoded = msgs.pointcloud_to_numpy(back)
    assert back.is_bigendian and not back.is_dense
    assert decoded["intensity"].tolist() == [7, 8, 9] and decoded["z"].tolist() == [3, 4, 5]
    assert msgs.pointcloud_xyz(back).tolist() == [[1, 0, 3], [2, 0, 4]]

    info = msgs.numpy_to_camera_info(K, 80, 40, d=(-0.2, 0.05, 0.01, -0.02, 0.0), ros=True)
    back = serialization.deserialize_message(serialization.serialize_message(info), CameraInfo)
    cam = msgs.camera_from_info(back)
    assert cam.k.tolist() == np.reshape(K, (3, 3)).tolist() and cam.d.tolist() == [-0.2, 0.05, 0.01, -0.02, 0.0]
    assert list(back.p) == [50.0, 0.0, 40.0, 0.0, 0.0, 50.0, 20.0, 0.0, 0.0, 0.0, 1.0, 0.0]


@pytest.mark.ros
def test_rosbags_messages_decode_and_their_cdr_reads_in_rclpy():
    """Bag replay hands us rosbags' message objects (data as numpy) or raw CDR for rclpy; both must decode."""
    typesys = pytest.importorskip("rosbags.typesys")
    serialization = pytest.importorskip("rclpy.serialization")
    from sensor_msgs.msg import Image as RosImage, PointCloud2 as RosPointCloud2

    store = typesys.get_typestore(typesys.Stores.ROS2_KILTED)
    types = store.types
    header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=5, nanosec=6), frame_id="f")
    depth = np.arange(12, dtype=np.float32).reshape(3, 4) / 4
    plain = msgs.numpy_to_image(depth, "32FC1", step=20, is_bigendian=True, ros=False)
    bag_image = types["sensor_msgs/msg/Image"](header=header, height=plain.height, width=plain.width,
                                                encoding=plain.encoding, is_bigendian=plain.is_bigendian,
                                                step=plain.step, data=np.frombuffer(plain.data, np.uint8))
    raw = store.serialize_cdr(bag_image, bag_image.__msgtype__)
    assert np.array_equal(msgs.image_to_numpy(store.deserialize_cdr(raw, bag_image.__msgtype__)), depth)
    assert np.array_equal(msgs.image_to_numpy(serialization.deserialize_message(bytes(raw), RosImage)), depth)

    points = np.array([[1.0, 2.0, 3.0], [4.0, np.nan, 6.0]])
    plain = msgs.numpy_to_pointcloud(points, ros=False)
    bag_fields = [types["sensor_msgs/msg/PointField"](name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
                  for f in plain.fields]
    bag_cloud = types["sensor_msgs/msg/PointCloud2"](
        header=header, height=plain.height, width=plain.width, fields=bag_fields, is_bigendian=plain.is_bigendian,
        point_step=plain.point_step, row_step=plain.row_step, data=np.frombuffer(plain.data, np.uint8),
        is_dense=plain.is_dense)
    raw = store.serialize_cdr(bag_cloud, bag_cloud.__msgtype__)
    for decoded in (store.deserialize_cdr(raw, bag_cloud.__msgtype__),
                    serialization.deserialize_message(bytes(raw), RosPointCloud2)):
        assert msgs.pointcloud_xyz(decoded).tolist() == [[1.0, 2.0, 3.0]]
