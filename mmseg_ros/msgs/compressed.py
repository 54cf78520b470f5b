"""sensor_msgs/CompressedImage <-> numpy in image_transport_plugins' wire formats (OpenCV decodes and encodes).

compressed transport (compressed_image_transport): `format` is "<encoding>; jpeg compressed <target>" or
"<encoding>; png compressed <target>", or the bare legacy "jpeg" / "png" (then 1 channel = mono8, 3 = bgr8). `data`
is the JPEG/PNG file. The compressed pixels are in BGR order when the target starts with "bgr" (what OpenCV writes),
else in RGB order; `<encoding>` is the Image the sender compressed.

compressedDepth transport (compressed_depth_image_transport): `format` is "<encoding>; compressedDepth png" (or
"...; compressedDepth", or just "<encoding>" from old senders; "...; compressedDepth rvl" is refused: not
implemented). `data` is a 12-byte ConfigHeader (little-endian int32 format, float32 depthParam[2]) then a 16-bit
grey PNG. 32FC1 depth is stored as quantised inverse depth v = A / depth + B (A, B = depthParam): decoding gives
depth = A / (v - B), and v = 0 means no return (NaN, as the reference subscriber gives it). 16UC1 (millimetres) is
the PNG itself.

Decoding never trusts the sender: the JPEG/PNG header is read first and its declared size is checked against the
caller's limit and against what the bytes could possibly hold (a decompression bomb is refused before OpenCV
allocates anything); truncated files, unknown formats and non-finite quantisation parameters raise MessageError.
"""
from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from ..errors import MessageError
from .image import pixel_format
from .types import bytes_of, field_of, new_message, payload, set_header

COMPRESSED, COMPRESSED_DEPTH = "compressed", "compressedDepth"
TRANSPORTS = ("raw", COMPRESSED, COMPRESSED_DEPTH)  # image_transport's names; topics: base + "/" + transport
CONFIG_HEADER = struct.Struct("<iff")  # compressed_depth_image_transport's ConfigHeader (12 bytes)
INV_DEPTH = 0  # ConfigHeader.format of inverse-depth coding
DEPTH_MAX_M = 10.0  # the reference publisher's defaults (parameters depth_max, depth_quantization)
DEPTH_QUANTIZATION = 100.0
MAX_PIXELS = 2**26  # as msgs.camera.MAX_CAMERA_PIXELS: beyond any camera
# Largest decoded/compressed size ratio accepted. Deflate cannot exceed ~1032:1, and a JPEG of one flat colour
# reaches a few hundred:1 (a 1920x1200 grey frame at quality 90 is ~ 30 KB); anything beyond is a lie or a bomb.
MAX_RATIO = 2048

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # IHDR colour type -> channels OpenCV decodes it to (palette = BGR)
_COMPRESSED_FORMAT = re.compile(r"(jpeg|png) compressed(?: +(\S+))?")
_COLOUR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "rgb16", "bgr16", "rgba16", "bgra16")


@dataclass(frozen=True)
class CompressedFormat:
    """A parsed CompressedImage.format. `encoding` None: a legacy bare "jpeg"/"png" (decided by the channels);
    `order` is the channel order of the compressed colour pixels ('bgr' or 'rgb')."""

    transport: str
    encoding: Optional[str]
    codec: str  # jpeg | png | rvl
    order: str = "bgr"


def parse_format(text) -> CompressedFormat:
    """CompressedImage.format -> CompressedFormat; MessageError for anything image_transport_plugins does not write."""
    if not isinstance(text, str):
        raise MessageError(f"CompressedImage.format must be a string, got {type(text).__name__}")
    head, sep, tail = text.partition(";")
    head, tail = head.strip(), tail.strip()
    if not sep:
        if head in ("jpeg", "png"):
            return CompressedFormat(COMPRESSED, None, head)
        if head and _is_depth_encoding(head):  # old compressedDepth publishers wrote only the encoding
            return CompressedFormat(COMPRESSED_DEPTH, head, "png")
        raise MessageError(f"CompressedImage.format {text!r} is not a known image_transport format (expected e.g. "
                           "'rgb8; jpeg compressed bgr8', '32FC1; compressedDepth png', 'jpeg' or 'png')")
    _known_encoding(head, text)
    if tail.startswith(COMPRESSED_DEPTH):
        codec = tail[len(COMPRESSED_DEPTH):].strip() or "png"
        if codec not in ("png", "rvl"):
            raise MessageError(f"CompressedImage.format {text!r}: compressedDepth codec {codec!r} is unknown "
                               "(png or rvl)")
        return CompressedFormat(COMPRESSED_DEPTH, head, codec)
    match = _COMPRESSED_FORMAT.fullmatch(tail)
    if not match:
        raise MessageError(f"CompressedImage.format {text!r}: expected '<encoding>; jpeg compressed <target>', "
                           "'<encoding>; png compressed <target>' or '<encoding>; compressedDepth png'")
    target = match.group(2) or ""
    return CompressedFormat(COMPRESSED, head, match.group(1), "bgr" if target.startswith("bgr") else "rgb")


def _known_encoding(encoding: str, text: str) -> None:
    try:
        pixel_format(encoding)
    except MessageError:
        raise MessageError(f"CompressedImage.format {text!r}: {encoding!r} is not an Image encoding") from None


def _is_depth_encoding(encoding: str) -> bool:
    try:
        fmt = pixel_format(encoding)
    except MessageError:
        return False
    return fmt.channels == 1 and fmt.dtype in ("u2", "f4")


def is_compressed(msg) -> bool:
    """Whether `msg` is a CompressedImage (it has `format`, an Image has `encoding`)."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


# -- reading the declared size before decoding ------------------------------------------------------------------------


@dataclass(frozen=True)
class FileInfo:
    """What a JPEG/PNG header declares: size, channels as OpenCV decodes them, bits per channel."""

    codec: str
    height: int
    width: int
    channels: int
    bits: int


def file_info(data: np.ndarray) -> FileInfo:
    """The JPEG SOF or PNG IHDR of `data` (uint8), without decoding; MessageError if neither is readable."""
    head = data[:8].tobytes()
    if head == _PNG_MAGIC:
        return _png_info(data)
    if head[:2] == b"\xff\xd8":
        return _jpeg_info(data)
    raise MessageError(f"CompressedImage.data is neither a PNG nor a JPEG file (starts with {head[:4].hex()})")


def _png_info(data: np.ndarray) -> FileInfo:
    if data.size < 33 or data[12:16].tobytes() != b"IHDR":
        raise MessageError(f"CompressedImage.data: a PNG of {data.size} bytes without a complete IHDR chunk")
    width, height = struct.unpack(">II", data[16:24].tobytes())
    bits, colour = int(data[24]), int(data[25])
    if colour not in _PNG_CHANNELS or bits not in (1, 2, 4, 8, 16):
        raise MessageError(f"CompressedImage.data: PNG colour type {colour} / bit depth {bits} is not valid")
    if data.size < 45 or data[-8:-4].tobytes() != b"IEND":  # every complete PNG ends with its IEND chunk
        raise MessageError(f"CompressedImage.data: PNG of {data.size} bytes is truncated (no IEND chunk at its end)")
    return FileInfo("png", height, width, _PNG_CHANNELS[colour], 16 if bits == 16 else 8)


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD9)}


def _jpeg_info(data: np.ndarray) -> FileInfo:
    raw, size, at = data.tobytes(), int(data.size), 2
    while True:
        while at < size and raw[at] == 0xFF and at + 1 < size and raw[at + 1] == 0xFF:  # fill bytes
            at += 1
        if at + 4 > size or raw[at] != 0xFF:
            raise MessageError(f"CompressedImage.data: JPEG of {size} bytes has no readable frame header")
        marker = raw[at + 1]
        if marker in _STANDALONE_MARKERS:
            at += 2
            continue
        if marker in (0xDA, 0xD9):
            raise MessageError("CompressedImage.data: JPEG scan data before any frame header")
        length = int.from_bytes(raw[at + 2:at + 4], "big")
        if marker in _SOF_MARKERS:
            if length < 8 or at + 10 > size:
                raise MessageError("CompressedImage.data: JPEG frame header cut short")
            bits, height, width, components = raw[at + 4], *struct.unpack(">HH", raw[at + 5:at + 9]), raw[at + 9]
            break
        if length < 2:
            raise MessageError(f"CompressedImage.data: JPEG segment 0xFF{marker:02X} has length {length}")
        at += 2 + length
    stripped = raw.rstrip(b"\x00")  # some encoders pad after the end marker
    if not stripped.endswith(b"\xff\xd9"):  # libjpeg would fill the missing rows with grey and only warn
        raise MessageError(f"CompressedImage.data: JPEG of {size} bytes is truncated (no end-of-image marker)")
    if components not in (1, 3):
        raise MessageError(f"CompressedImage.data: JPEG with {components} components is not supported (1 or 3)")
    return FileInfo("jpeg", height, width, components, 8 if bits <= 8 else 16)


def _check_size(info: FileInfo, compressed_bytes: int, max_pixels: Optional[int], size: Optional[Tuple[int, int]]):
    where = f"CompressedImage declares a {info.width}x{info.height} {info.codec}"
    if info.width == 0 or info.height == 0:
        raise MessageError(f"{where}: zero size")
    if size is not None and (info.height, info.width) != tuple(size):
        raise MessageError(f"{where}, expected {size[1]}x{size[0]}")
    limit = MAX_PIXELS if max_pixels is None else min(int(max_pixels), MAX_PIXELS)
    if info.height * info.width > limit:
        raise MessageError(f"{where}: more than the {limit} pixels accepted on this input (decompression bomb?)")
    decoded = info.height * info.width * info.channels * info.bits // 8
    if decoded > MAX_RATIO * compressed_bytes:
        raise MessageError(f"{where} ({decoded} bytes) from {compressed_bytes} bytes: more than {MAX_RATIO}:1, "
                           "which no real image reaches (decompression bomb?)")


def _decode_file(data: np.ndarray, info: FileInfo) -> np.ndarray:
    import cv2

    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise MessageError(f"CompressedImage.data: OpenCV cannot decode the {info.codec}: {exc}") from None
    if image is None:
        raise MessageError(f"CompressedImage.data: the {info.codec} cannot be decoded (corrupt?)")
    if image.shape[:2] != (info.height, info.width):  # a header that lied to its own decoder
        raise MessageError(f"CompressedImage.data: {info.codec} decoded to {image.shape[1]}x{image.shape[0]}, its "
                           f"header says {info.width}x{info.height}")
    return image


# -- decoding ---------------------------------------------------------------------------------------------------------


def compressed_to_numpy(msg, *, max_pixels: Optional[int] = None,
                        size: Optional[Tuple[int, int]] = None) -> Tuple[str, np.ndarray]:
    """CompressedImage (either transport) -> (encoding of the Image it carries, array for the model): colour in RGB
    order with alpha dropped, everything else as `image_to_numpy` would give that Image (32FC1 depth in metres with
    NaN for no return, 16UC1 millimetres, mono8, ...). `max_pixels` caps the declared size (the caller's expected
    size); `size` (height, width) demands it exactly. MessageError for anything else."""
    fmt = parse_format(field_of(msg, "format", "CompressedImage"))
    data = bytes_of(msg, "CompressedImage")
    if fmt.transport == COMPRESSED_DEPTH:
        return fmt.encoding, _decode_depth(fmt, data, max_pixels, size)
    info = file_info(data)
    _check_size(info, data.size, max_pixels, size)
    image = _decode_file(data, info)
    return _as_encoding(fmt, image)


def _as_encoding(fmt: CompressedFormat, image: np.ndarray) -> Tuple[str, np.ndarray]:
    channels = 1 if image.ndim == 2 else image.shape[2]
    wide = image.dtype == np.uint16
    encoding = fmt.encoding
    if encoding is None:  # legacy: as the reference subscriber names it
        names = {1: "mono16" if wide else "mono8", 3: "bgr16" if wide else "bgr8", 4: "bgra16" if wide else "bgra8"}
        if channels not in names:
            raise MessageError(f"CompressedImage ({fmt.codec}) decoded to {channels} channels: not an image encoding")
        encoding = names[channels]
    want = pixel_format(encoding)
    if np.dtype(want.dtype) != image.dtype:
        raise MessageError(f"CompressedImage {fmt.codec} holds {image.dtype} pixels, encoding {encoding!r} is "
                           f"{np.dtype(want.dtype).name}")
    if encoding in _COLOUR_ENCODINGS and channels in (3, 4):
        rgb = image[:, :, 2::-1] if fmt.order == "bgr" else image[:, :, :3]
        return encoding, rgb
    if channels != want.channels:
        raise MessageError(f"CompressedImage {fmt.codec} decoded to {channels} channel(s), encoding {encoding!r} "
                           f"has {want.channels}")
    return encoding, image


def _decode_depth(fmt: CompressedFormat, data: np.ndarray, max_pixels, size) -> np.ndarray:
    if fmt.codec != "png":
        raise MessageError(f"compressedDepth {fmt.codec} is not supported (png only)")
    if data.size <= CONFIG_HEADER.size:
        raise MessageError(f"compressedDepth data has {data.size} bytes: no room for the {CONFIG_HEADER.size}-byte "
                           "header and an image")
    _, quant_a, quant_b = CONFIG_HEADER.unpack(data[:CONFIG_HEADER.size].tobytes())
    want = pixel_format(fmt.encoding)
    if want.channels != 1 or want.dtype not in ("u2", "f4"):
        raise MessageError(f"compressedDepth carries 16-bit or 32FC1 single-channel depth, not {fmt.encoding!r}")
    if want.dtype == "f4" and not (math.isfinite(quant_a) and math.isfinite(quant_b) and quant_a != 0):
        raise MessageError(f"compressedDepth depthParam [{quant_a}, {quant_b}] must be finite with A != 0")
    png = data[CONFIG_HEADER.size:]
    info = file_info(png)
    if info.codec != "png" or info.channels != 1 or info.bits != 16:
        raise MessageError(f"compressedDepth payload must be a 16-bit grey PNG, got a {info.bits}-bit "
                           f"{info.channels}-channel {info.codec}")
    _check_size(info, png.size, max_pixels, size)
    inverse = _decode_file(png, info)
    if want.dtype == "u2":
        return inverse
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        depth = (np.float32(quant_a) / (inverse.astype(np.float32) - np.float32(quant_b))).astype(np.float32)
    depth[inverse == 0] = np.nan
    return depth


# -- encoding (bag writers, tests, benchmarks) ------------------------------------------------------------------------


def numpy_to_compressed(image, encoding: str, codec: str = "jpeg", *, quality: int = 90, png_level: int = 1,
                        header=None, ros: bool | None = None):
    """(H, W[, C]) array of `encoding` -> CompressedImage as compressed_image_transport publishes it: colour is
    converted to BGR for OpenCV and the format says so ("rgb8; jpeg compressed bgr8"); other encodings are
    compressed as they are ("mono8; png compressed mono8"). JPEG takes 8-bit 1- or 3-channel images only."""
    import cv2

    if codec not in ("jpeg", "png"):
        raise MessageError(f"codec must be jpeg or png, got {codec!r}")
    fmt = pixel_format(encoding)
    arr = np.asarray(image)
    if arr.dtype != np.dtype(fmt.dtype) or arr.shape[2:] != ((fmt.channels,) if fmt.channels > 1 else ()):
        raise MessageError(f"encoding {encoding!r} needs ({fmt.dtype}, {fmt.channels} channel) data, got "
                           f"{arr.dtype} {arr.shape}")
    target = encoding
    if encoding in _COLOUR_ENCODINGS:
        wide = fmt.dtype == "u2"
        keep_alpha = fmt.channels == 4 and codec == "png"
        bgr = arr if encoding.startswith("bgr") else arr[:, :, [2, 1, 0, 3][:fmt.channels]]
        arr = bgr if keep_alpha else bgr[:, :, :3]
        target = ("bgra" if keep_alpha else "bgr") + ("16" if wide else "8")
    if codec == "jpeg" and (arr.dtype != np.uint8 or arr.ndim == 3 and arr.shape[2] != 3):
        raise MessageError(f"JPEG holds 8-bit grey or colour images, not {encoding!r}")
    if codec == "png" and arr.dtype not in (np.uint8, np.uint16):
        raise MessageError(f"PNG holds 8- or 16-bit images, not {encoding!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if codec == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION,
                                                                              int(png_level)]
    return _message(_encode(arr, codec, params), f"{encoding}; {codec} compressed {target}", header, ros)


def numpy_to_compressed_depth(depth, encoding: str = "32FC1", *, depth_max: float = DEPTH_MAX_M,
                              depth_quantization: float = DEPTH_QUANTIZATION, png_level: int = 1, header=None,
                              ros: bool | None = None):
    """Depth -> CompressedImage as compressed_depth_image_transport publishes it ("<enc>; compressedDepth png").
    32FC1 metres: inverse-depth quantised, depths >= depth_max (and NaN, <= 0) become v = 0 (no return). 16UC1
    millimetres: values above depth_max metres become 0, the rest stored as they are."""
    import cv2

    arr = np.asarray(depth)
    params = [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)]
    if encoding == "16UC1" and arr.dtype == np.uint16 and arr.ndim == 2:
        limit = min(int(depth_max * 1000.0), np.iinfo(np.uint16).max)
        config = CONFIG_HEADER.pack(INV_DEPTH, 0.0, 0.0)
        stored = np.where(arr > limit, 0, arr).astype(np.uint16)
    elif encoding == "32FC1" and arr.dtype == np.float32 and arr.ndim == 2:
        quant_a = np.float32(depth_quantization * (depth_quantization + 1.0))
        quant_b = np.float32(1.0 - quant_a / np.float32(depth_max))
        config = CONFIG_HEADER.pack(INV_DEPTH, float(quant_a), float(quant_b))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            valid = np.isfinite(arr) & (arr > 0) & (arr < depth_max)
            inverse = np.where(valid, quant_a / np.where(valid, arr, 1.0) + quant_b, 0.0)
        # The reference converts float -> unsigned short by truncation; values past 65535 (depth below ~15 cm at the
        # defaults) saturate here instead of wrapping.
        stored = np.clip(inverse, 0, np.iinfo(np.uint16).max).astype(np.uint16)
    else:
        raise MessageError(f"compressedDepth takes (H, W) float32 32FC1 or uint16 16UC1 depth, got {arr.dtype} "
                           f"{arr.shape} as {encoding!r}")
    return _message(config + _encode(stored, "png", params), f"{encoding}; compressedDepth png", header, ros)


def _encode(arr: np.ndarray, codec: str, params) -> bytes:
    import cv2

    if arr.ndim < 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise MessageError(f"cannot compress an empty image of shape {arr.shape}")
    ok, buffer = cv2.imencode("." + ("jpg" if codec == "jpeg" else "png"), np.ascontiguousarray(arr), params)
    if not ok:
        raise MessageError(f"OpenCV could not encode a {arr.dtype} {arr.shape} image as {codec}")
    return buffer.tobytes()


def _message(data: bytes, fmt: str, header, ros):
    msg = new_message("CompressedImage", ros)
    set_header(msg, header)
    msg.format = fmt
    msg.data = payload(msg, np.frombuffer(data, np.uint8))
    return msg
