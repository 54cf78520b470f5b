"""CompressedImage codecs (image_transport's compressed and compressedDepth formats).

Wire data for the decoder is built here without the project's encoder where it matters (the ConfigHeader packed by
hand, the inverse depth quantised by hand, PNG/JPEG written by OpenCV directly), so an encoder and decoder that were
wrong in the same way could not pass by agreeing with each other.
"""
from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from mmseg_ros import msgs
from mmseg_ros.errors import MessageError
from mmseg_ros.pipeline import checks


def smooth_rgb(h=48, w=64):
    """A smooth colour image (JPEG keeps it within a few levels) with distinct channels, so an R/B swap shows."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([200 * x / w + 20, 120 + 0 * x, 220 - 200 * y / h], -1).astype(np.uint8)


def plain(data: bytes, fmt: str) -> msgs.CompressedImage:
    return msgs.CompressedImage(format=fmt, data=data)


def png(array, level=1) -> bytes:
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, level])
    assert ok
    return buf.tobytes()


def jpeg(array, quality=95) -> bytes:
    ok, buf = cv2.imencode(".jpg", array, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def png_header_only(width: int, height: int, bits=8, colour=2) -> bytes:
    """A syntactically complete PNG (IHDR, one tiny IDAT, IEND) that declares any size: a decompression bomb."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, bits, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# -- formats ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("rgb8; jpeg compressed bgr8", ("compressed", "rgb8", "jpeg", "bgr")),
    ("bgr8; png compressed bgr8", ("compressed", "bgr8", "png", "bgr")),
    ("rgb8; jpeg compressed rgb8", ("compressed", "rgb8", "jpeg", "rgb")),
    ("mono8; jpeg compressed mono8", ("compressed", "mono8", "jpeg", "rgb")),
    ("16UC1; png compressed 16UC1", ("compressed", "16UC1", "png", "rgb")),
    ("jpeg", ("compressed", None, "jpeg", "bgr")),
    ("png", ("compressed", None, "png", "bgr")),
    ("32FC1; compressedDepth png", ("compressedDepth", "32FC1", "png", "bgr")),
    ("16UC1; compressedDepth", ("compressedDepth", "16UC1", "png", "bgr")),
    ("32FC1; compressedDepth rvl", ("compressedDepth", "32FC1", "rvl", "bgr")),
    ("32FC1", ("compressedDepth", "32FC1", "png", "bgr")),  # the oldest compressedDepth publishers
])
def test_formats_parse_as_image_transport_writes_them(text, expected):
    fmt = msgs.parse_format(text)
    assert (fmt.transport, fmt.encoding, fmt.codec, fmt.order) == expected


@pytest.mark.parametrize("text", ["", "gif", "rgb8; gif compressed bgr8", "rgb8;", "bogus8; jpeg compressed bgr8",
                                  "rgb8; compressedDepth lz4", "rgb8 jpeg compressed bgr8", "rgb8", None, 5])
def test_unknown_formats_are_refused(text):
    with pytest.raises(MessageError):
        msgs.parse_format(text)


# -- compressed transport ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_png_decodes_exactly_to_rgb_for_the_model(encoding):
    rgb = smooth_rgb()
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 77, np.uint8)])
    source = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "rgba8": rgba, "bgra8": rgba[:, :, [2, 1, 0, 3]]}[encoding]
    msg = msgs.numpy_to_compressed(source, encoding, "png")
    assert msg.format.startswith(f"{encoding}; png compressed bgr")
    got_encoding, image = msgs.compressed_to_numpy(msg)
    assert got_encoding == encoding and np.array_equal(image, rgb)
    raw = msgs.image_for_model(msgs.numpy_to_image(source, encoding))
    assert np.array_equal(image, raw)  # what the raw transport gives the model


def test_colour_order_follows_the_target_in_the_format():
    rgb = smooth_rgb()
    data = png(rgb[:, :, ::-1])  # OpenCV stores BGR: these file pixels are BGR slots
    assert np.array_equal(msgs.compressed_to_numpy(plain(data, "rgb8; png compressed bgr8"))[1], rgb)
    data = png(rgb)  # an encoder that wrote RGB into the file says so with an rgb8 target
    assert np.array_equal(msgs.compressed_to_numpy(plain(data, "rgb8; png compressed rgb8"))[1], rgb)
    assert np.array_equal(msgs.compressed_to_numpy(plain(png(rgb[:, :, ::-1]), "png"))[1], rgb)  # legacy: BGR


def test_jpeg_is_close_and_legacy_names_follow_the_channels():
    rgb = smooth_rgb()
    encoding, image = msgs.compressed_to_numpy(plain(jpeg(rgb[:, :, ::-1]), "jpeg"))
    assert encoding == "bgr8" and np.abs(image.astype(int) - rgb).mean() < 3
    encoding, image = msgs.compressed_to_numpy(plain(jpeg(rgb[:, :, 0]), "jpeg"))
    assert encoding == "mono8" and image.shape == rgb.shape[:2]
    msg = msgs.numpy_to_compressed(rgb, "rgb8", "jpeg", quality=95)
    assert msg.format == "rgb8; jpeg compressed bgr8"
    assert np.abs(msgs.compressed_to_numpy(msg)[1].astype(int) - rgb).mean() < 3


def test_sixteen_bit_png_and_grey_images():
    rng = np.random.default_rng(1)
    mm = rng.integers(0, 65535, (20, 30), dtype=np.uint16)
    assert np.array_equal(msgs.compressed_to_numpy(plain(png(mm), "16UC1; png compressed 16UC1"))[1], mm)
    grey = rng.integers(0, 255, (20, 30), dtype=np.uint8)
    assert np.array_equal(msgs.compressed_to_numpy(plain(png(grey), "mono8; png compressed mono8"))[1], grey)
    with pytest.raises(MessageError, match="uint16"):  # 8-bit file claimed to carry 16-bit depth
        msgs.compressed_to_numpy(plain(png(grey), "16UC1; png compressed 16UC1"))
    with pytest.raises(MessageError, match="channel"):  # colour file claimed to be mono
        msgs.compressed_to_numpy(plain(png(smooth_rgb()), "mono8; png compressed mono8"))


# -- compressedDepth --------------------------------------------------------------------------------------------------


def test_compressed_depth_32fc1_decodes_the_reference_wire_layout():
    """Header and quantisation by hand, as compressed_depth_image_transport's publisher does at its defaults."""
    rng = np.random.default_rng(2)
    depth = rng.uniform(0.3, 9.9, (24, 32)).astype(np.float32)
    depth[0, :5] = 0.0  # nothing there
    depth[1, :5] = 12.0  # beyond depth_max
    a = np.float32(100.0 * 101.0)
    b = np.float32(1.0 - a / np.float32(10.0))
    inverse = np.where((depth > 0) & (depth < 10.0), a / np.maximum(depth, 1e-6) + b, 0).astype(np.uint16)
    data = struct.pack("<iff", 0, a, b) + png(inverse)
    encoding, decoded = msgs.compressed_to_numpy(plain(data, "32FC1; compressedDepth png"))
    assert encoding == "32FC1" and decoded.dtype == np.float32
    assert np.isnan(decoded[:2, :5]).all()  # v = 0: no return
    valid = ~np.isnan(decoded)
    assert valid.sum() == depth.size - 10
    # Quantisation error of inverse depth: one step of v is A / d^2 metres^-1 -> d^2 / A metres
    assert np.all(np.abs(decoded[valid] - depth[valid]) <= depth[valid] ** 2 / a + 1e-4)
    ours = msgs.numpy_to_compressed_depth(depth)  # our encoder writes the same bytes
    assert bytes(ours.data[:12]) == data[:12] and ours.format == "32FC1; compressedDepth png"
    assert np.array_equal(msgs.compressed_to_numpy(ours)[1], decoded, equal_nan=True)


def test_compressed_depth_16uc1_is_the_png_itself():
    mm = np.arange(600, dtype=np.uint16).reshape(20, 30) * 100
    msg = msgs.numpy_to_compressed_depth(mm, "16UC1", depth_max=50.0)
    encoding, decoded = msgs.compressed_to_numpy(msg)
    assert encoding == "16UC1" and np.array_equal(decoded, np.where(mm > 50000, 0, mm))


@pytest.mark.parametrize("data, fmt, words", [
    (b"\0" * 12, "32FC1; compressedDepth png", "12-byte header"),
    (struct.pack("<iff", 0, float("nan"), 1.0) + png(np.ones((4, 4), np.uint16)), "32FC1; compressedDepth png",
     "finite"),
    (struct.pack("<iff", 0, 1.0, float("inf")) + png(np.ones((4, 4), np.uint16)), "32FC1; compressedDepth png",
     "finite"),
    (struct.pack("<iff", 0, 1.0, 1.0) + png(np.ones((4, 4), np.uint8)), "32FC1; compressedDepth png", "16-bit"),
    (struct.pack("<iff", 0, 1.0, 1.0) + png(np.ones((4, 4), np.uint16)), "32FC1; compressedDepth rvl", "rvl"),
    (struct.pack("<iff", 0, 1.0, 1.0) + png(np.ones((4, 4), np.uint16)), "rgb8; compressedDepth png", "16-bit"),
])
def test_bad_compressed_depth_is_a_message_error(data, fmt, words):
    with pytest.raises(MessageError, match=words):
        msgs.compressed_to_numpy(plain(data, fmt))


# -- bad input --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["jpeg", "png"])
@pytest.mark.parametrize("keep", [0.0, 0.3, 0.9, 0.999])
def test_truncated_files_are_refused(codec, keep):
    data = (jpeg if codec == "jpeg" else png)(smooth_rgb(96, 128))
    cut = data[:int(len(data) * keep)]
    with pytest.raises(MessageError):
        msgs.compressed_to_numpy(plain(cut, f"rgb8; {codec} compressed bgr8"))


def test_declared_sizes_are_checked_before_decoding():
    bomb = png_header_only(60000, 60000)
    with pytest.raises(MessageError, match="decompression bomb"):
        msgs.compressed_to_numpy(plain(bomb, "rgb8; png compressed bgr8"))
    small = png(smooth_rgb())
    with pytest.raises(MessageError, match="pixels accepted"):
        msgs.compressed_to_numpy(plain(small, "rgb8; png compressed bgr8"), max_pixels=1000)
    with pytest.raises(MessageError, match="expected 32x24"):
        msgs.compressed_to_numpy(plain(small, "rgb8; png compressed bgr8"), size=(24, 32))
    depth_bomb = struct.pack("<iff", 0, 1.0, 1.0) + png_header_only(40000, 40000, bits=16, colour=0)
    with pytest.raises(MessageError, match="decompression bomb"):
        msgs.compressed_to_numpy(plain(depth_bomb, "32FC1; compressedDepth png"))
    # A JPEG whose frame header claims 65000x65000: refused from the header
    data = bytearray(jpeg(smooth_rgb()))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 65000, 65000)
    with pytest.raises(MessageError, match="decompression bomb"):
        msgs.compressed_to_numpy(plain(bytes(data), "rgb8; jpeg compressed bgr8"))


@pytest.mark.parametrize("data", [b"", b"\xff\xd8", b"\x89PNG\r\n\x1a\n", b"GIF89a" + b"\0" * 40, b"\xff\xd8\xff\xda"])
def test_garbage_is_refused(data):
    with pytest.raises(MessageError):
        msgs.compressed_to_numpy(plain(data, "rgb8; jpeg compressed bgr8"))


def test_encoders_refuse_what_the_codec_cannot_hold():
    with pytest.raises(MessageError):
        msgs.numpy_to_compressed(np.zeros((4, 4), np.float32), "32FC1", "png")
    with pytest.raises(MessageError):
        msgs.numpy_to_compressed(np.zeros((4, 4), np.uint16), "16UC1", "jpeg")
    with pytest.raises(MessageError):
        msgs.numpy_to_compressed_depth(np.zeros((4, 4, 3), np.float32))


# -- the pipeline's input check ---------------------------------------------------------------------------------------


def test_decode_input_takes_compressed_images_like_raw_ones():
    rgb = smooth_rgb()
    raw = checks.decode_input("rgb", msgs.numpy_to_image(rgb, "rgb8"))
    compressed = checks.decode_input("rgb", msgs.numpy_to_compressed(rgb, "rgb8", "png"))
    assert np.array_equal(raw, compressed)
    depth = np.full((24, 32), 7.5, np.float32)
    decoded = checks.decode_input("depth", msgs.numpy_to_compressed_depth(depth, depth_max=80.0))
    assert np.allclose(decoded, depth, rtol=0.01)
    with pytest.raises(MessageError, match="not accepted on depth/image"):  # the wiring check applies as for raw
        checks.decode_input("depth", msgs.numpy_to_compressed(rgb[:, :, ::-1], "bgr8", "jpeg"))
    with pytest.raises(MessageError, match="no valid return"):
        checks.decode_input("depth", msgs.numpy_to_compressed_depth(np.zeros((8, 8), np.float32)))
    with pytest.raises(MessageError, match="pixels accepted"):
        checks.decode_input("rgb", msgs.numpy_to_compressed(rgb, "rgb8", "png"), max_pixels=100)


def test_real_sensor_msgs_compressed_images_round_trip():
    pytest.importorskip("sensor_msgs")
    msg = msgs.numpy_to_compressed(smooth_rgb(), "rgb8", "png", ros=True)
    assert type(msg).__module__.startswith("sensor_msgs")
    assert np.array_equal(msgs.compressed_to_numpy(msg)[1], smooth_rgb())
