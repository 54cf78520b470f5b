"""Fuzzing (hypothesis): random and adversarial Image / PointCloud2 / CameraInfo messages through the codecs and the
node's input checks, random input sequences through the synchronizer, and fuzzed messages into a running node.

The contract under test: for any message, a codec returns a well-formed result or raises a project error
(mmseg_ros.errors.MMSegError); nothing else escapes (no IndexError / ValueError / TypeError / struct.error, no
numpy allocation sized by a lying header). Every run is deterministic (derandomize, no example database), so CI
sees the same cases each time; the example counts below sum to more than 12,000.
"""
from __future__ import annotations

import random
import struct
import time
from typing import List

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmseg_ros import modalities, msgs
from mmseg_ros.pipeline import checks
from mmseg_ros.errors import MMSegError
from mmseg_ros.sync import Missing, SyncConfig, Synchronizer, stamp_to_ns

FUZZ = dict(derandomize=True, database=None, deadline=None, print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
# No decode may allocate more than this: a header claiming gigabytes with a few bytes of data must be refused.
MAX_RESULT_BYTES = 1 << 20

# Integers a sender can put in a size field: small honest ones, boundaries of the wire types (uint32 on the wire,
# unbounded for the plain dataclasses), negatives and non-integers.
SIZES = st.one_of(st.integers(0, 9), st.sampled_from([2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**40, 2**63, 2**64 + 3]))
LYING_INTS = st.one_of(SIZES, st.integers(-2**64, -1), st.just(True), st.floats(allow_nan=True), st.none(),
                       st.text(max_size=3), st.just(np.int64(3)), st.just(np.uint32(2**32 - 1)))

ENCODINGS = sorted({*msgs.image._NAMED_ENCODINGS, "8UC1", "8UC2", "8UC3", "8SC4", "16UC1", "16SC2", "32SC1", "32FC1",
                    "32FC3", "64FC1", "64FC9", "8UC999999999", "8UC0", "32FC", "bayer_rggb8", "yuv422", "",
                    "mmseg_unknown", "RGB8", " rgb8", "rgb8\x00", "16UC1\n"})
ODD_ENCODINGS = st.one_of(st.none(), st.integers(), st.binary(max_size=4), st.lists(st.integers(), max_size=2),
                          st.text(max_size=6))
# Strategies are built once here: building them inside the generators costs more than the codecs under test.
UINT32 = st.one_of(st.integers(0, 9), st.sampled_from([2**31 - 1, 2**31, 2**32 - 1]))
UINT32_STEP = st.one_of(UINT32, st.integers(0, 64))
BYTE = st.integers(0, 255)
DATA = st.binary(max_size=300)
ENCODING = st.sampled_from(ENCODINGS)
ANY_SIZE = st.one_of(SIZES, LYING_INTS)
ANY_STEP = st.one_of(st.integers(-8, 80), SIZES, LYING_INTS)
ANY_ENCODING = st.one_of(ENCODING, ODD_ENCODINGS)
ANY_FLAG = st.one_of(st.booleans(), st.integers(-2, 3))
ANY_DATA = st.one_of(DATA, st.lists(st.integers(-1, 300), max_size=20), st.text(max_size=8), st.none(),
                     st.builds(lambda: bytearray(b"\x01" * 64)),
                     st.builds(lambda: memoryview(np.arange(16, dtype=np.float32))))


def _assert_only_project_errors(call, *args):
    """call(*args) -> its result, or None if it raised a project error; any other exception fails the test."""
    try:
        return call(*args)
    except MMSegError:
        return None


# -- Image -------------------------------------------------------------------------------------------------------------


@st.composite
def random_images(draw, ros: bool = False):
    """An Image whose every field is drawn independently: mostly nonsense, sometimes accidentally valid."""
    msg = msgs.new_message("Image", ros)
    if ros:  # rclpy's setters accept only values of the wire types (uint32 sizes, str encoding, uint8 bytes)
        msg.height, msg.width, msg.step = draw(UINT32), draw(UINT32), draw(UINT32_STEP)
        msg.encoding = draw(ENCODING)
        msg.is_bigendian = draw(BYTE)
        msg.data = draw(DATA)
        return msg
    msg.height, msg.width, msg.step = draw(ANY_SIZE), draw(ANY_SIZE), draw(ANY_STEP)
    msg.encoding = draw(ANY_ENCODING)
    msg.is_bigendian = draw(ANY_FLAG)
    msg.data = draw(ANY_DATA)
    return msg


VALID_ENCODING = st.sampled_from(sorted({*msgs.image._NAMED_ENCODINGS, "8UC2", "16UC1", "32FC1", "64FC1", "16SC3"}))
IMAGE_MUTATION = st.sampled_from(["none", "truncate", "extend", "height", "width", "step", "encoding", "huge"])
HUGE_IMAGE = st.sampled_from([(2**16, 2**16), (2**31, 1), (1, 2**32 - 1)])


@st.composite
def mutated_images(draw, ros: bool = False):
    """A valid image (random encoding, size and padding) with one field then corrupted in a plausible way."""
    encoding = draw(VALID_ENCODING)
    fmt = msgs.pixel_format(encoding)
    height, width = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    shape = (height, width) if fmt.channels == 1 else (height, width, fmt.channels)
    raw = draw(st.binary(min_size=int(np.prod(shape)) * np.dtype(fmt.dtype).itemsize,
                         max_size=int(np.prod(shape)) * np.dtype(fmt.dtype).itemsize))
    pixels = np.frombuffer(raw, dtype=fmt.dtype).reshape(shape)
    padding = draw(st.integers(0, 5))
    msg = msgs.numpy_to_image(pixels, encoding, step=width * fmt.bytes_per_pixel + padding,
                              is_bigendian=draw(st.booleans()), ros=ros)
    kind = draw(IMAGE_MUTATION)
    if kind == "truncate":
        msg.data = bytes(msg.data)[:draw(st.integers(0, max(0, len(msg.data) - 1)))]
    elif kind == "extend":
        msg.data = bytes(msg.data) + draw(st.binary(min_size=1, max_size=40))
    elif kind == "height":
        msg.height = draw(st.integers(0, 2**32 - 1))
    elif kind == "width":
        msg.width = draw(st.integers(0, 2**32 - 1))
    elif kind == "step":  # smaller, not a multiple of the pixel size, or past the data
        msg.step = draw(st.integers(0, 2**32 - 1))
    elif kind == "encoding":
        msg.encoding = draw(st.sampled_from(ENCODINGS))
    elif kind == "huge":  # gigapixels announced, a few bytes delivered
        msg.height, msg.width = draw(HUGE_IMAGE)
        msg.step = msg.width * fmt.bytes_per_pixel if msg.width * fmt.bytes_per_pixel < 2**32 else 2**32 - 1
    return kind, pixels, msg


def _check_image_result(msg, image):
    if image is None:
        return
    assert isinstance(image, np.ndarray) and image.ndim in (2, 3)
    assert image.shape[:2] == (msg.height, msg.width)
    assert image.nbytes <= MAX_RESULT_BYTES
    assert image.dtype.isnative


@settings(max_examples=2000, **FUZZ)
@given(msg=random_images())
def test_random_plain_images_decode_or_raise_message_error(msg):
    _check_image_result(msg, _assert_only_project_errors(msgs.image_to_numpy, msg))
    _check_image_result(msg, _assert_only_project_errors(msgs.image_for_model, msg))
    for name in ("rgb", "depth", "event", "lidar"):
        _check_image_result(msg, _assert_only_project_errors(checks.decode_input, name, msg))


@settings(max_examples=1200, **FUZZ)
@given(case=mutated_images())
def test_mutated_images_decode_exactly_or_raise_message_error(case):
    kind, pixels, msg = case
    image = _assert_only_project_errors(msgs.image_to_numpy, msg)
    _check_image_result(msg, image)
    if kind in ("none", "extend"):  # still a valid message: the decode is exact
        assert image is not None and np.array_equal(image, pixels, equal_nan=pixels.dtype.kind == "f")
    if kind == "truncate":
        assert image is None, "a truncated image decoded"


@pytest.mark.ros
@settings(max_examples=400, **FUZZ)
@given(msg=random_images(ros=True), case=mutated_images(ros=True))
def test_real_sensor_msgs_images(msg, case):
    from sensor_msgs.msg import Image

    assert isinstance(msg, Image) and isinstance(case[2], Image)
    for m in (msg, case[2]):
        _check_image_result(m, _assert_only_project_errors(msgs.image_to_numpy, m))
        for name in ("rgb", "depth", "event", "lidar"):
            _check_image_result(m, _assert_only_project_errors(checks.decode_input, name, m))


# -- PointCloud2 -----------------------------------------------------------------------------------------------------


@st.composite
def point_fields(draw, ros: bool):
    pf = msgs.new_message("PointField", ros)
    pf.name = draw(FIELD_NAME)
    if ros:
        pf.offset = min(draw(OFFSET), 2**32 - 1)
        pf.datatype = draw(DATATYPE)
        pf.count = draw(COUNT)
    else:
        pf.offset = draw(st.one_of(OFFSET, LYING_INTS))
        pf.datatype = draw(st.one_of(DATATYPE, LYING_INTS))
        pf.count = draw(st.one_of(COUNT, LYING_INTS))
        if draw(st.booleans()) and pf.name:  # names numpy might choke on
            pf.name = draw(ODD_NAME)
    return pf


FIELD_NAME = st.one_of(st.sampled_from(["x", "y", "z", "intensity", "rgb"]), st.text(max_size=3))
ODD_NAME = st.sampled_from(["\x00", "a" * 300, "é", "0", "f0"])
OFFSET = st.one_of(st.integers(0, 48), st.just(2**32 - 1))
DATATYPE = st.integers(0, 12)
COUNT = st.one_of(st.integers(0, 4), st.just(2**32 - 1))
FIELDS = {ros: st.lists(point_fields(ros), max_size=5) for ros in (False, True)}
CLOUD_STEP = st.one_of(st.integers(0, 40), st.sampled_from([2**31 - 1, 2**31, 2**32 - 1]))
ANY_CLOUD_STEP = st.one_of(CLOUD_STEP, st.sampled_from([-4, -1, 2**40, 2**64]))
ROW_STEP = st.one_of(CLOUD_STEP, st.integers(0, 200))
CLOUD_DATA = st.binary(max_size=400)


@st.composite
def random_clouds(draw, ros: bool = False):
    """Fields overlapping or past point_step, unknown datatypes, count 0, lying sizes, short data."""
    msg = msgs.new_message("PointCloud2", ros)
    msg.point_step = draw(CLOUD_STEP if ros else ANY_CLOUD_STEP)
    msg.fields = draw(FIELDS[ros])
    msg.height, msg.width = draw(CLOUD_STEP), draw(CLOUD_STEP)
    msg.row_step = draw(ROW_STEP)
    msg.is_bigendian = draw(st.booleans())
    msg.is_dense = draw(st.booleans())
    msg.data = draw(CLOUD_DATA)
    if not ros and draw(st.integers(0, 9)) == 0:
        msg.height, msg.width, msg.row_step = draw(LYING_INTS), draw(LYING_INTS), draw(LYING_INTS)
    return msg


COORDINATE = st.floats(-1e3, 1e3, width=32) | st.sampled_from([np.nan, np.inf])
CLOUD_MUTATION = st.sampled_from(["none", "truncate", "point_step", "row_step", "offset", "overlap", "datatype",
                                  "count", "huge", "empty", "far"])
HUGE_CLOUD = st.sampled_from([(2**16, 2**16), (1, 2**32 - 1), (2**32 - 1, 2**32 - 1)])
EMPTY_CLOUD = st.sampled_from([(0, 5), (3, 0), (0, 0)])


@st.composite
def mutated_clouds(draw, ros: bool = False):
    """A valid x, y, z (+ intensity) cloud, organised or not, with padding, then one field corrupted."""
    n_rows, n_cols = draw(st.integers(1, 3)), draw(st.integers(0, 6))
    values = draw(st.lists(COORDINATE, min_size=n_rows * n_cols * 4, max_size=n_rows * n_cols * 4))
    dtype = np.dtype({"names": ["x", "y", "z", "intensity"], "formats": ["<f4"] * 4,
                      "offsets": [0, 4, 8, 16], "itemsize": 20 + draw(st.integers(0, 4))})
    points = np.zeros(n_rows * n_cols, dtype=dtype)
    for i, name in enumerate(dtype.names):
        points[name] = np.asarray(values[i::4], dtype=np.float32)
    msg = msgs.numpy_to_pointcloud(points, height=n_rows, row_step=dtype.itemsize * n_cols + draw(st.integers(0, 7)),
                                   ros=ros)
    kind = draw(CLOUD_MUTATION)
    if kind == "far" and points.size:  # finite coordinates whose range overflows float32, inside the image
        far = points.copy()
        far[0]["x"], far[0]["y"], far[0]["z"] = (np.float32(c * draw(FAR)) for c in (0.5, 0.5, 1.0))
        msg = msgs.numpy_to_pointcloud(far, height=n_rows, row_step=msg.row_step, ros=ros)
    fields = list(msg.fields)
    if kind == "truncate":
        msg.data = bytes(msg.data)[:draw(st.integers(0, max(0, len(msg.data) - 1)))]
    elif kind == "point_step":
        msg.point_step = draw(st.integers(0, 64))
    elif kind == "row_step":
        msg.row_step = draw(st.integers(0, 200))
    elif kind in ("offset", "overlap", "datatype", "count"):
        pf = fields[draw(st.integers(0, len(fields) - 1))]
        if kind == "offset":
            pf.offset = draw(st.integers(0, 2**32 - 1))
        elif kind == "overlap":
            pf.offset = draw(st.integers(0, 3))
        elif kind == "datatype":
            pf.datatype = draw(st.integers(0, 255))
        else:
            pf.count = draw(st.integers(0, 8))
        msg.fields = fields
    elif kind == "huge":
        msg.height, msg.width = draw(HUGE_CLOUD)
    elif kind == "empty":
        msg.height, msg.width, msg.data = draw(EMPTY_CLOUD) + (b"",)
    return kind, points, msg


CAMERA = msgs.camera_from_info(msgs.numpy_to_camera_info([40.0, 0.0, 32.0, 0.0, 40.0, 24.0, 0.0, 0.0, 1.0], 64, 48,
                                                          ros=False))


EXTRINSIC = np.eye(4)


FAR = st.sampled_from([1e30, 2.5e38, 3.4e38])


def _check_cloud(msg):
    points = _assert_only_project_errors(msgs.pointcloud_to_numpy, msg)
    if points is not None:
        assert points.ndim == 1 and points.size == msg.height * msg.width
        assert points.nbytes <= MAX_RESULT_BYTES and points.dtype.isnative
    xyz = _assert_only_project_errors(msgs.pointcloud_xyz, msg)
    if xyz is not None:
        assert xyz.ndim == 2 and xyz.shape[1] == 3 and np.isfinite(xyz).all() and points is not None
        assert xyz.shape[0] <= points.size
    image = _assert_only_project_errors(msgs.pointcloud_to_range_image, msg, CAMERA, EXTRINSIC)
    if image is not None:
        assert image.shape == (48, 64) and image.dtype == np.float32
        assert np.isfinite(image).all() and (image >= 0).all()
    return points, xyz


@settings(max_examples=1500, **FUZZ)
@given(msg=random_clouds())
def test_random_plain_clouds_decode_or_raise_message_error(msg):
    _check_cloud(msg)


@settings(max_examples=1000, **FUZZ)
@given(case=mutated_clouds())
def test_mutated_clouds_decode_exactly_or_raise_message_error(case):
    kind, points, msg = case
    decoded, xyz = _check_cloud(msg)
    if kind == "none":
        assert decoded is not None
        for name in points.dtype.names:
            assert np.array_equal(decoded[name], points[name], equal_nan=True)
        finite = np.isfinite(points["x"]) & np.isfinite(points["y"]) & np.isfinite(points["z"])
        assert xyz.shape == (int(finite.sum()), 3)
    if kind == "truncate" and points.size:
        assert decoded is None, "a truncated cloud decoded"
    if kind == "empty":
        assert decoded is not None and decoded.size == 0 and xyz.shape == (0, 3)


@pytest.mark.ros
@settings(max_examples=400, **FUZZ)
@given(msg=random_clouds(ros=True), case=mutated_clouds(ros=True))
def test_real_sensor_msgs_clouds(msg, case):
    from sensor_msgs.msg import PointCloud2

    assert isinstance(msg, PointCloud2) and isinstance(case[2], PointCloud2)
    _check_cloud(msg)
    _check_cloud(case[2])


# -- CameraInfo ------------------------------------------------------------------------------------------------------

ODD_FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e-300, 1e300]))


FOCAL = st.one_of(st.floats(1e-3, 1e4), ODD_FLOATS)
CENTRE = st.one_of(st.floats(-100, 200), ODD_FLOATS)
SKEW = st.one_of(st.just(0.0), ODD_FLOATS)
NINE_ODD = st.lists(ODD_FLOATS, min_size=9, max_size=9)
D_SIZE = st.sampled_from([0, 4, 5, 8, 12, 14])
COEFFICIENT = st.floats(-1.0, 1.0)
ODD_COEFFICIENT = st.one_of(COEFFICIENT, ODD_FLOATS)
DISTORTION_MODEL = st.sampled_from(["plumb_bob", "rational_polynomial", "equidistant", "", "PLUMB_BOB"])
CAMERA_SIDE = st.integers(0, 80)
ODD_K = st.one_of(st.lists(ODD_FLOATS, max_size=12), st.none(), st.text(max_size=3), st.just([["a"]] * 9),
                  st.builds(lambda: np.full((3, 3), 2.0)))
ODD_D = st.one_of(st.none(), st.text(max_size=3), st.just([None] * 5))
ODD_MODEL = st.one_of(st.none(), st.integers(), st.lists(st.integers(), max_size=1))


@st.composite
def camera_infos(draw, ros: bool = False):
    """Plausible intrinsics with NaN / inf / zero / huge entries, distortion vectors of every length and model."""
    msg = msgs.new_message("CameraInfo", ros)
    honest = draw(st.booleans())
    k = [draw(FOCAL), draw(SKEW), draw(CENTRE), 0.0, draw(FOCAL), draw(CENTRE), 0.0, 0.0, 1.0]
    if not honest:
        k = draw(NINE_ODD) if draw(st.booleans()) else k
        if draw(st.booleans()):
            k[draw(st.integers(0, 8))] = draw(ODD_FLOATS)
    coefficient = COEFFICIENT if honest else ODD_COEFFICIENT
    d = [draw(coefficient) for _ in range(draw(D_SIZE))]
    model = draw(DISTORTION_MODEL)
    if ros:
        msg.k, msg.d = [float(v) for v in k], [float(v) for v in d]
        msg.width, msg.height = draw(CAMERA_SIDE), draw(CAMERA_SIDE)
        msg.distortion_model = model
        return msg
    msg.k = k if draw(st.integers(0, 4)) else draw(ODD_K)
    msg.d = d if draw(st.integers(0, 4)) else draw(ODD_D)
    msg.width, msg.height = draw(st.one_of(CAMERA_SIDE, LYING_INTS)), draw(st.one_of(CAMERA_SIDE, LYING_INTS))
    msg.distortion_model = model if draw(st.integers(0, 4)) else draw(ODD_MODEL)
    return msg


POINTS = np.random.default_rng(0).uniform(-20, 20, (400, 3))


def _check_camera(info):
    camera = _assert_only_project_errors(msgs.camera_from_info, info)
    if camera is None:
        return
    assert np.isfinite(camera.k).all() and camera.k[0, 0] > 0 and camera.k[1, 1] > 0
    assert isinstance(camera.fold_radius2(), float)
    pixels = camera.width * camera.height
    image = _assert_only_project_errors(msgs.project_points, POINTS, camera, EXTRINSIC)
    if pixels <= MAX_RESULT_BYTES // 4:
        assert image is not None and image.shape == (camera.height, camera.width)
        assert np.isfinite(image).all() and (image >= 0).all()


@settings(max_examples=1200, **FUZZ)
@given(info=camera_infos())
def test_random_plain_camera_infos_validate_or_raise_message_error(info):
    _check_camera(info)


@pytest.mark.ros
@settings(max_examples=400, **FUZZ)
@given(info=camera_infos(ros=True))
def test_real_sensor_msgs_camera_infos(info):
    from sensor_msgs.msg import CameraInfo

    assert isinstance(info, CameraInfo)
    _check_camera(info)


STAMP_PART = st.one_of(st.integers(-2**40, 2**70), LYING_INTS, ODD_FLOATS)


@settings(max_examples=400, **FUZZ)
@given(sec=STAMP_PART, nanosec=STAMP_PART)
def test_stamps_convert_or_raise_message_error(sec, nanosec):
    stamp = _assert_only_project_errors(stamp_to_ns, msgs.Time(sec, nanosec))
    assert stamp is None or type(stamp) is int


# -- CompressedImage (compressed / compressedDepth) -----------------------------------------------------------------

FORMATS = ["rgb8; jpeg compressed bgr8", "bgr8; jpeg compressed bgr8", "rgb8; png compressed rgb8", "mono8; png "
           "compressed mono8", "16UC1; png compressed 16UC1", "jpeg", "png", "32FC1; compressedDepth png",
           "16UC1; compressedDepth", "32FC1; compressedDepth rvl", "32FC1", "rgba8; png compressed bgra8",
           "8UC2; png compressed 8UC2", "32FC1; jpeg compressed 32FC1", "", ";", "rgb8;jpeg compressed", "bogus; png",
           "rgb8; compressedDepth png", "rgb8; jpeg compressed bgr8 extra", "\x00", "mono16; compressedDepth png"]
ANY_FORMAT = st.one_of(st.sampled_from(FORMATS), st.text(max_size=30), st.none(), st.integers(), st.binary(max_size=8))
COMPRESSED_KIND = st.sampled_from(["jpeg", "png", "png16", "depth32", "depth16"])
FILE_MUTATION = st.sampled_from(["none", "truncate", "flip", "dims", "params", "splice", "header_only"])
FILE_SEED = st.integers(0, 2**32 - 1)


def _compressed_sample(kind: str, rng: np.random.Generator):
    """A valid small CompressedImage of `kind` (random size and content)."""
    h, w = int(rng.integers(1, 24)), int(rng.integers(1, 24))
    if kind in ("jpeg", "png"):
        return msgs.numpy_to_compressed(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "rgb8", kind, ros=False)
    if kind == "png16":
        return msgs.numpy_to_compressed(rng.integers(0, 65536, (h, w), dtype=np.uint16), "16UC1", "png", ros=False)
    if kind == "depth32":
        return msgs.numpy_to_compressed_depth(rng.uniform(0.0, 12.0, (h, w)).astype(np.float32), ros=False)
    return msgs.numpy_to_compressed_depth(rng.integers(0, 20000, (h, w), dtype=np.uint16), "16UC1", ros=False)


def _check_compressed_result(result):
    if result is not None:
        encoding, image = result
        assert isinstance(encoding, str) and isinstance(image, np.ndarray) and image.nbytes <= MAX_RESULT_BYTES


@settings(max_examples=1000, **FUZZ)
@given(ANY_FORMAT, ANY_DATA)
def test_random_compressed_images_decode_or_raise_message_error(fmt, data):
    msg = msgs.CompressedImage(format=fmt, data=data)
    _check_compressed_result(_assert_only_project_errors(msgs.compressed_to_numpy, msg))
    for modality in ("rgb", "depth"):
        _assert_only_project_errors(checks.decode_input, modality, msg)


@settings(max_examples=1500, **FUZZ)
@given(COMPRESSED_KIND, FILE_MUTATION, st.sampled_from(FORMATS + [None]), FILE_SEED, st.integers(0, 2**16 - 1),
       st.integers(0, 2**16 - 1), st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.0, 1e30, -3.0]))
def test_mutated_compressed_files_decode_or_raise_message_error(kind, mutation, fmt, seed, width, height, param):
    """Real JPEG / PNG / compressedDepth data, then cut, bit-flipped, given other declared sizes (bombs), other
    quantisation parameters, spliced with another file, or reduced to its header; under its own or another format."""
    rng = np.random.default_rng(seed)
    msg = _compressed_sample(kind, rng)
    data = bytearray(msg.data)
    offset = 12 if kind.startswith("depth") else 0
    if mutation == "truncate":
        data = data[:int(rng.integers(0, len(data)))]
    elif mutation == "flip":
        for at in rng.integers(0, len(data), int(rng.integers(1, 8))):
            data[at] ^= 1 << int(rng.integers(0, 8))
    elif mutation == "dims":  # the PNG IHDR or the JPEG SOF0 announce another size
        if kind == "jpeg":
            at = bytes(data).find(b"\xff\xc0")
            data[at + 5:at + 9] = struct.pack(">HH", height, width)
        else:
            data[offset + 16:offset + 24] = struct.pack(">II", width, height)
    elif mutation == "params" and offset:
        data[4:12] = struct.pack("<ff", param, float(rng.choice([param, 1.0])))
    elif mutation == "splice":
        other = bytes(_compressed_sample(str(rng.choice(["jpeg", "png", "depth32"])), rng).data)
        cut = int(rng.integers(0, len(data)))
        data = data[:cut] + other[int(rng.integers(0, len(other))):]
    elif mutation == "header_only":
        data = data[:offset + int(rng.integers(8, 40))]
    msg.data = bytes(data)
    if fmt is not None:
        msg.format = fmt
    limit = int(rng.choice([0, 16, 4 * 24 * 24])) or None
    _check_compressed_result(_assert_only_project_errors(
        lambda: msgs.compressed_to_numpy(msg, max_pixels=limit)))
    _assert_only_project_errors(checks.decode_input, "depth" if offset else "rgb", msg)


@settings(max_examples=300, **FUZZ)
@given(COMPRESSED_KIND, FILE_SEED)
def test_real_sensor_msgs_compressed_images(kind, seed):
    rng = np.random.default_rng(seed)
    plain = _compressed_sample(kind, rng)
    msg = msgs.new_message("CompressedImage", True)
    msg.format = plain.format
    data = bytes(plain.data)
    msg.data = data[:int(rng.integers(0, len(data) + 1))]
    _check_compressed_result(_assert_only_project_errors(msgs.compressed_to_numpy, msg))


# -- synchronizer ----------------------------------------------------------------------------------------------------

NAMES = ("rgb", "depth", "event", "lidar")
MS = 1_000_000


INPUT_SETS = st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True)
SLOP_MS, WAIT_MS, TIMEOUT_MS, JUMP_MS = st.integers(0, 80), st.integers(0, 200), st.integers(1, 600), \
    st.integers(1, 2000)
MIN_INPUTS, BUFFER, OPS = st.integers(1, 4), st.integers(2, 8), st.integers(1, 60)
SEED = st.integers(0, 2**32 - 1)
P_BACK, P_JUMP, P_ODD = st.sampled_from([0.0, 0.05, 0.3]), st.sampled_from([0.0, 0.02, 0.1]), \
    st.sampled_from([0.0, 0.02])


@st.composite
def sync_runs(draw):
    """A configuration and a sequence of adds / polls / resets: jittered and reordered stamps, duplicates,
    stamp jumps both ways, arrival clocks going backwards, unknown input names and bad stamp types. Hypothesis draws
    the configuration and how the sequence misbehaves; the sequence itself comes from a seeded generator (drawing
    every step through hypothesis costs ten times more than the synchronizer)."""
    used = draw(INPUT_SETS)
    config = SyncConfig(tuple(used), slop_ns=draw(SLOP_MS) * MS, max_wait_ns=draw(WAIT_MS) * MS,
                        silence_timeout_ns=draw(TIMEOUT_MS) * MS, min_modalities=min(draw(MIN_INPUTS), len(used)),
                        buffer_size=draw(BUFFER), jump_threshold_ns=draw(JUMP_MS) * MS)
    rng = random.Random(draw(SEED))
    p_back, p_jump, p_odd = draw(P_BACK), draw(P_JUMP), draw(P_ODD)
    ops = []
    stamp, now = rng.randrange(10**12), rng.randrange(10**12)
    for _ in range(draw(OPS)):
        r = rng.random()
        now += (rng.randint(-50, 0) if rng.random() < p_back else rng.randint(0, 120)) * MS
        if rng.random() < p_jump:
            now += rng.choice([-5000, 3000]) * MS
        if r < 0.05:
            ops.append(("poll", None, None, now))
        elif r < 0.05 + p_jump:
            ops.append(("reset", None, None, now))
        elif r < 0.05 + p_jump + p_odd:
            odd = rng.choice([stamp, float(stamp), None, np.int64(stamp), -stamp, 2**70, "1"])
            ops.append(("add", rng.choice([*used, "nir", ""]), odd, now))
        else:
            stamp += (rng.randint(-80, 0) if rng.random() < p_back else rng.randint(0, 60)) * MS
            if rng.random() < p_jump:
                stamp += rng.choice([-3000, 5000]) * MS
            jitter = rng.choice([0, rng.randint(-30, 30)]) * MS  # 0: equal stamps, duplicates included
            ops.append(("add", rng.choice(used), stamp + jitter, now))
    return config, ops


@settings(max_examples=2000, **FUZZ)
@given(run=sync_runs())
def test_synchronizer_survives_any_input_sequence_and_keeps_its_promises(run):
    config, ops = run
    sync = Synchronizer(config)
    emitted = []
    for op, name, stamp, now in ops:
        try:
            if op == "add":
                ready = sync.add(name, stamp, (name, stamp), now)
            elif op == "poll":
                ready = sync.poll(now)
            else:
                sync.reset()
                ready = []
        except MMSegError:
            continue
        if ready:
            resets = sync.stats().resets
            emitted.extend((resets, s) for s in ready)
    sync.poll(ops[-1][3] + 10**12)  # everything still waiting runs out
    stats = sync.stats()
    for name, counts in stats.inputs.items():
        fates = counts.used + counts.superseded + sum(counts.dropped.values()) + counts.buffered
        assert counts.received == fates, (name, counts)
    assert stats.sets_emitted >= len(emitted)
    for i, (resets, s) in enumerate(emitted):
        assert s.seq == i  # one sequence number per emitted set, none skipped
        assert s.anchor in s.messages and s.messages[s.anchor].stamp_ns == s.stamp_ns
        assert set(s.messages) | set(s.missing) == set(config.modalities) and not set(s.messages) & set(s.missing)
        assert len(s.messages) >= config.min_modalities
        assert all(isinstance(reason, Missing) for reason in s.missing.values())
        for m in s.messages.values():
            assert abs(m.stamp_ns - s.stamp_ns) <= config.slop_ns
            assert m.payload[1] == m.stamp_ns  # the payload handed in with that stamp, untouched
        if i and emitted[i - 1][0] == resets:  # between resets no instant is emitted twice
            assert s.stamp_ns > emitted[i - 1][1].stamp_ns


# -- a running node --------------------------------------------------------------------------------------------------

NS = 1_000_000_000
NODE_NS = "/fuzz"
SIZE = 64
SETS = 30  # valid sets, at SET_HZ
SET_HZ = 5.0
BAD_PER_SET = 2  # at most; fewer than SizeGuard.confirm, so wrong-size images never become the usual size
IMAGE_ENCODINGS = {"rgb": "rgb8", "depth": "32FC1", "event": "rgb8"}
K = [float(SIZE), 0.0, SIZE / 2, 0.0, float(SIZE), SIZE / 2, 0.0, 0.0, 1.0]


def _valid_image(name: str, rng: np.random.Generator) -> np.ndarray:
    if IMAGE_ENCODINGS[name] == "32FC1":
        return rng.uniform(1.0, 60.0, (SIZE, SIZE)).astype(np.float32)
    return rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def _valid_cloud(rng: np.random.Generator) -> np.ndarray:
    """Points 5-20 m ahead of the camera (identity extrinsic), spread over the image; x, y, z float32."""
    z = rng.uniform(5, 20, 500)
    return np.stack([rng.uniform(-0.45, 0.45, 500) * z, rng.uniform(-0.45, 0.45, 500) * z, z], 1).astype(np.float32)


def fuzzed_invalid_image(name: str, rng: np.random.Generator):
    """A real sensor_msgs/Image for input `name` that the node must reject, drawn from the adversarial cases above:
    (kind, message)."""
    kinds = ["truncated", "empty", "unknown_encoding", "foreign_encoding", "short_step", "odd_step", "huge",
             "zero_size", "wrong_size"] + (["no_return"] if IMAGE_ENCODINGS[name] == "32FC1" else [])
    kind = str(rng.choice(kinds))
    msg = msgs.numpy_to_image(_valid_image(name, rng), IMAGE_ENCODINGS[name], ros=True)
    row = msg.step
    if kind == "truncated":
        msg.data = bytes(msg.data)[:int(rng.integers(0, len(msg.data)))]
    elif kind == "empty":
        msg.data = b""
    elif kind == "unknown_encoding":
        msg.encoding = str(rng.choice(["mmseg_unknown", "bayer_rggb8", "", "RGB8", "8UC0"]))
    elif kind == "foreign_encoding":  # decodable, but not what this input accepts
        msg.encoding = next(e for e in ("64FC1", "16SC1", "32SC1") if e not in modalities.get(name).encodings)
    elif kind == "short_step":
        msg.step = int(rng.integers(0, row))
    elif kind == "odd_step":  # not a multiple of the pixel size, data one row short
        msg.step = row + int(rng.integers(1, 4))
    elif kind == "huge":
        msg.height, msg.width = [(2**31, 1), (2**16, 2**16), (1, 2**30)][int(rng.integers(0, 3))]
        msg.step = min(msg.width * msgs.pixel_format(msg.encoding).bytes_per_pixel, 2**32 - 1)
    elif kind == "zero_size":
        msg.height, msg.width = (0, SIZE) if rng.random() < 0.5 else (SIZE, 0)
    elif kind == "wrong_size":
        half = _valid_image(name, rng)[::2, ::2]
        msg = msgs.numpy_to_image(np.ascontiguousarray(half), IMAGE_ENCODINGS[name], ros=True)
    elif kind == "no_return":
        msg = msgs.numpy_to_image(np.full((SIZE, SIZE), rng.choice([np.nan, -1.0, np.inf, 0.0]), np.float32),
                                  "32FC1", ros=True)
    if kind != "wrong_size":  # (rejected by the node's size guard, not by decoding)
        with pytest.raises(MMSegError):
            checks.decode_input(name, msg)
    return "image:" + kind, msg


def fuzzed_invalid_cloud(rng: np.random.Generator):
    """A real PointCloud2 the node must reject on arrival: (kind, message)."""
    kind = str(rng.choice(["truncated", "point_step_zero", "point_step_huge", "offset_beyond", "unknown_datatype",
                           "count_zero", "duplicate_name", "short_row_step", "huge", "no_fields"]))
    msg = msgs.numpy_to_pointcloud(_valid_cloud(rng), ros=True)
    fields = list(msg.fields)
    if kind == "truncated":
        msg.data = bytes(msg.data)[:int(rng.integers(0, len(msg.data)))]
    elif kind == "point_step_zero":
        msg.point_step = 0
    elif kind == "point_step_huge":
        msg.point_step = 2**31 + int(rng.integers(0, 2**31 - 1))
    elif kind == "offset_beyond":
        fields[int(rng.integers(0, 3))].offset = msg.point_step - int(rng.integers(0, 4))
    elif kind == "unknown_datatype":
        fields[int(rng.integers(0, 3))].datatype = int(rng.choice([0, 9, 200]))
    elif kind == "count_zero":
        fields[int(rng.integers(0, 3))].count = 0
    elif kind == "duplicate_name":
        fields[2].name = fields[0].name
    elif kind == "short_row_step":
        msg.row_step = int(rng.integers(0, msg.row_step))
    elif kind == "huge":
        msg.height, msg.width = 2**16, 2**16
    elif kind == "no_fields":
        fields = []
    msg.fields = fields
    with pytest.raises(MMSegError):
        msgs.pointcloud_to_numpy(msg)
    return "cloud:" + kind, msg


def fuzzed_invalid_camera_info(rng: np.random.Generator):
    """A real CameraInfo the node must reject (reported on the LiDAR input, whose projection needs it)."""
    kind = str(rng.choice(["nan_k", "inf_k", "zero_focal", "not_homogeneous", "nan_d", "d_length", "unknown_model",
                           "zero_size", "huge"]))
    msg = msgs.numpy_to_camera_info(K, SIZE, SIZE, ros=True)
    k, d = list(msg.k), [0.01, -0.02, 0.0, 0.0, 0.001]
    if kind == "nan_k":
        k[int(rng.integers(0, 9))] = float("nan")
    elif kind == "inf_k":
        k[int(rng.choice([0, 2, 4, 5]))] = float("inf")
    elif kind == "zero_focal":
        k[int(rng.choice([0, 4]))] = 0.0
    elif kind == "not_homogeneous":
        k[8] = 0.0
    elif kind == "nan_d":
        d[int(rng.integers(0, 5))] = float("nan")
    elif kind == "d_length":
        d = d[:int(rng.integers(1, 5))]
    elif kind == "unknown_model":
        msg.distortion_model = "equidistant"
    elif kind == "zero_size":
        msg.width = 0
    elif kind == "huge":
        msg.width, msg.height = 2**16, 2**16
    msg.k, msg.d = k, d
    with pytest.raises(MMSegError):
        msgs.camera_from_info(msg)
    return "camera_info:" + kind, msg


@pytest.mark.ros
def test_running_node_keeps_publishing_through_fuzzed_inputs(tmp_path):
    """A node with a PointCloud2 LiDAR gets valid sets (camera, depth, events, cloud + CameraInfo) at 5 Hz, each
    followed by up to two fuzzed invalid messages (images, clouds, camera infos) on random inputs, all reliable so
    every message reaches the node: every valid set gets labels unless counted as superseded, no rejected message
    ever produces an output, and each input reports exactly its bad messages in diagnostics."""
    import test_node as live  # the node tests' listener and process helpers

    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from mmseg_ros.pipeline import config as node_config

    listener = live.Listener()
    labels_topic = f"{NODE_NS}/{live.NODE}/labels"
    listener.watch_images(labels_topic, live.check_labels)
    listener.watch_latched(f"{NODE_NS}/{live.NODE}/class_names")
    listener.watch_diagnostics(f"{NODE_NS}/{live.NODE}")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    topics = node_config.input_topics(["rgb", "depth", "event", "lidar"], "points")
    publishers = {name: listener.node.create_publisher(PointCloud2 if name == "lidar" else Image,
                                                       f"{NODE_NS}/{topic}", qos) for name, topic in topics.items()}
    info_publisher = listener.node.create_publisher(CameraInfo, f"{NODE_NS}/{node_config.camera_info_topic()}", qos)
    log = tmp_path / "node.log"
    node = live.start_node(log, NODE_NS, "inputs.qos:=reliable", "inputs.lidar_source:=points",
                           "outputs.color:=false")
    rng = np.random.default_rng(8)
    valid_stamps: List[int] = []
    bad_stamps: List[int] = []
    bad_sent = dict.fromkeys(topics, 0)
    kinds = set()
    try:
        live.wait_for(lambda: listener.strings[f"{NODE_NS}/{live.NODE}/class_names"], live.START_TIMEOUT_S,
                      "the node to become active", node, log)
        live.wait_for(lambda: all(p.get_subscription_count() for p in [*publishers.values(), info_publisher]),
                      30.0, "the node to subscribe", node, log)
        time.sleep(0.5)  # the node's readers finish matching a moment after the writers see them
        images = {m: _valid_image(m, rng) for m in IMAGE_ENCODINGS}
        cloud = _valid_cloud(rng)
        start = time.monotonic()
        for k in range(SETS):
            stamp = listener.node.get_clock().now().nanoseconds
            header = msgs.Header(msgs.Time(*divmod(stamp, NS)), "fuzz_camera")
            info_publisher.publish(msgs.numpy_to_camera_info(K, SIZE, SIZE, header=header, ros=True))
            for name, pixels in images.items():
                publishers[name].publish(msgs.numpy_to_image(pixels, IMAGE_ENCODINGS[name], header, ros=True))
            publishers["lidar"].publish(msgs.numpy_to_pointcloud(cloud, header, ros=True))
            valid_stamps.append(stamp)
            for i in range(int(rng.integers(0, BAD_PER_SET + 1))):
                name = str(rng.choice(list(topics)))
                if name != "lidar":
                    kind, msg = fuzzed_invalid_image(name, rng)
                elif rng.random() < 0.6:
                    kind, msg = fuzzed_invalid_cloud(rng)
                else:
                    kind, msg = fuzzed_invalid_camera_info(rng)
                bad_stamp = stamp + (i + 1) * 1_000_000  # 1 ms apart, never a valid set's stamp
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(bad_stamp, NS)
                (info_publisher if kind.startswith("camera_info") else publishers[name]).publish(msg)
                bad_stamps.append(bad_stamp)
                bad_sent[name] += 1
                kinds.add(kind)
            time.sleep(max(0.0, start + (k + 1) / SET_HZ - time.monotonic()))
        live.wait_for(lambda: any(s.stamp == valid_stamps[-1] for s in listener.seen(labels_topic)), 10.0,
                      "labels for the last valid set", node, log)
        time.sleep(2 * 0.25)  # two more diagnostics periods (start_node sets 0.25 s)
        alive = node.poll() is None
        code, _ = live.stop(node)
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(5.0)
        listener.close()
    text = log.read_text(errors="replace")
    assert alive and code == 0, text[-2000:]
    assert "Traceback" not in text
    assert len(kinds) >= 12 and {k.split(":")[0] for k in kinds} == {"image", "cloud", "camera_info"}, kinds
    outputs = listener.seen(labels_topic)
    answered = {o.stamp for o in outputs}
    assert answered <= set(valid_stamps), "an output carries the stamp of a rejected message"
    assert all(o.ok and (o.width, o.height, o.frame_id) == (SIZE, SIZE, "fuzz_camera") for o in outputs)
    diags = listener.diagnostics(f"{NODE_NS}/{live.NODE}")
    node_values = [d.statuses[f"{live.NODE}: segmentation"][2] for d in diags
                   if f"{live.NODE}: segmentation" in d.statuses]
    final = node_values[-1]
    lost = len(valid_stamps) - len(answered)
    assert lost <= int(final["dropped_superseded"]) + 1, (lost, final)  # every lost set is counted
    assert len(answered) >= SETS // 2, f"labels for {len(answered)} of {SETS} valid sets"
    assert any(v["modalities_used"] == "rgb,depth,event,lidar" for v in node_values)  # the projected cloud too
    for name, sent in bad_sent.items():
        reports = [d.statuses[f"{live.NODE}: {name} input"] for d in diags
                   if f"{live.NODE}: {name} input" in d.statuses]
        assert int(reports[-1][2]["bad_messages"]) == sent, (name, sent, reports[-1])
        if sent:
            assert any(level == 2 and message.startswith("bad input") for level, message, _ in reports), name
    print(f"\nnode under fuzz: {SETS} valid sets, {sum(bad_sent.values())} bad messages ({len(kinds)} kinds), "
          f"labels for {len(answered)}, superseded {final['dropped_superseded']}")
