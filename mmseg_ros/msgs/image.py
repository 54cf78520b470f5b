"""sensor_msgs/Image <-> numpy: encodings, zero-copy decoding, and the builders of the node's output images."""

import re
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from ..errors import MessageError
from .types import byte_order, bytes_of, count_of, field_of, new_message, payload, set_header

# --------------------------------------------------------------------------------------------------------------------
# Image encodings.


@dataclass(frozen=True)
class PixelFormat:
    """Channel dtype (without byte order) and channel count of an Image encoding."""

    dtype: str
    channels: int

    @property
    def bytes_per_pixel(self) -> int:
        return np.dtype(self.dtype).itemsize * self.channels


_NAMED_ENCODINGS = {
    "rgb8": PixelFormat("u1", 3), "bgr8": PixelFormat("u1", 3),
    "rgba8": PixelFormat("u1", 4), "bgra8": PixelFormat("u1", 4),
    "rgb16": PixelFormat("u2", 3), "bgr16": PixelFormat("u2", 3),
    "rgba16": PixelFormat("u2", 4), "bgra16": PixelFormat("u2", 4),
    "mono8": PixelFormat("u1", 1), "mono16": PixelFormat("u2", 1),
}
# OpenCV-style names (8UC3, 32FC1, ...): the depths sensor_msgs/image_encodings defines.
_GENERIC_ENCODING = re.compile(r"(8U|8S|16U|16S|32S|32F|64F)C([1-9][0-9]*)")
_GENERIC_DTYPES = {"8U": "u1", "8S": "i1", "16U": "u2", "16S": "i2", "32S": "i4", "32F": "f4", "64F": "f8"}
# Channel slices that turn a colour encoding into RGB without copying (BGR reversed, alpha cut).
_TO_RGB = {
    "bgr8": slice(None, None, -1), "bgr16": slice(None, None, -1), "bgra8": slice(2, None, -1),
    "bgra16": slice(2, None, -1), "rgba8": slice(0, 3), "rgba16": slice(0, 3),
}


def pixel_format(encoding: str) -> PixelFormat:
    """The PixelFormat of a sensor_msgs/Image encoding; unknown ones (bayer, yuv422, typos) raise MessageError."""
    if isinstance(encoding, str) and encoding in _NAMED_ENCODINGS:  # (a list or bytes is not hashable)
        return _NAMED_ENCODINGS[encoding]
    match = _GENERIC_ENCODING.fullmatch(encoding) if isinstance(encoding, str) else None
    if match:
        return PixelFormat(_GENERIC_DTYPES[match.group(1)], int(match.group(2)))
    raise MessageError(
        f"Image.encoding {encoding!r} is not supported; supported: {', '.join(_NAMED_ENCODINGS)} and "
        "<8U|8S|16U|16S|32S|32F|64F>C<n> (e.g. 8UC3, 16UC1, 32FC1)"
    )


def image_to_numpy(msg) -> np.ndarray:
    """Image -> (H, W) or (H, W, C) array of the encoding's dtype in native byte order, honouring `step` padding.
    A view of msg.data (read-only if the buffer is) unless the byte order had to be swapped."""
    encoding = field_of(msg, "encoding", "Image")
    fmt = pixel_format(encoding)
    height, width, step = (count_of(msg, name, "Image") for name in ("height", "width", "step"))
    if height == 0 or width == 0:
        raise MessageError(f"Image has zero size: height={height}, width={width}")
    row_bytes = width * fmt.bytes_per_pixel
    if step < row_bytes:
        raise MessageError(
            f"Image.step={step} is smaller than width*bytes_per_pixel={width}*{fmt.bytes_per_pixel}={row_bytes} "
            f"for encoding {encoding!r}"
        )
    data = bytes_of(msg, "Image")
    if data.size < height * step:
        raise MessageError(f"Image.data has {data.size} bytes, height*step={height}*{step}={height * step} needed")
    dtype = np.dtype(fmt.dtype).newbyteorder(byte_order(field_of(msg, "is_bigendian", "Image")))
    itemsize = dtype.itemsize
    image = np.ndarray(
        shape=(height, width, fmt.channels), dtype=dtype, buffer=data,
        strides=(step, fmt.channels * itemsize, itemsize),
    )
    if not dtype.isnative:
        image = image.astype(dtype.newbyteorder("="))
    return image[:, :, 0] if fmt.channels == 1 else image


def image_for_model(msg) -> np.ndarray:
    """Image -> array ready for `preprocess.to_unit`: colour encodings in RGB order with alpha dropped (still a view;
    np.ascontiguousarray it where a contiguous array is needed); everything else (mono, depth, 2-channel event
    counts, float) as `image_to_numpy` gives it."""
    image = image_to_numpy(msg)
    channels = _TO_RGB.get(msg.encoding)
    return image[:, :, channels] if channels is not None else image


def numpy_to_image(image, encoding: str, header=None, *, step: int | None = None, is_bigendian: bool = False,
                   ros: bool | None = None):
    """(H, W) or (H, W, C) array -> Image of `encoding`. The array's dtype must match the encoding (no silent
    casts). `step` adds row padding and `is_bigendian` writes big-endian data (both for tests and odd consumers)."""
    fmt = pixel_format(encoding)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] != fmt.channels:
        raise MessageError(f"encoding {encoding!r} needs shape (H, W, {fmt.channels}), got {np.shape(image)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise MessageError(f"cannot encode an empty image of shape {np.shape(image)}")
    want = np.dtype(fmt.dtype)
    if arr.dtype.kind != want.kind or arr.dtype.itemsize != want.itemsize:
        raise MessageError(f"encoding {encoding!r} needs {want.name} data, got {arr.dtype}")
    height, width = arr.shape[:2]
    row_bytes = width * fmt.bytes_per_pixel
    step = row_bytes if step is None else int(step)
    if step < row_bytes:
        raise MessageError(f"step={step} is smaller than width*bytes_per_pixel={row_bytes} for {encoding!r}")
    wire = np.ascontiguousarray(arr, dtype=want.newbyteorder(byte_order(is_bigendian)))
    if step != row_bytes:
        padded = np.zeros((height, step), dtype=np.uint8)
        padded[:, :row_bytes] = wire.view(np.uint8).reshape(height, row_bytes)
        wire = padded
    msg = new_message("Image", ros, checked=True)  # data is set from an array('B'): kept, not copied again
    set_header(msg, header)
    msg.height, msg.width, msg.encoding, msg.step = int(height), int(width), str(encoding), int(step)
    msg.is_bigendian = int(bool(is_bigendian) and want.itemsize > 1)
    msg.data = payload(msg, wire)
    return msg


def label_encoding(num_classes: int) -> Tuple[str, int]:
    """(encoding, unlabeled value) for a label image of `num_classes` classes: mono8/255 up to 255 classes,
    mono16/65535 above (docs: the node's ~/labels)."""
    if not isinstance(num_classes, (int, np.integer)) or not 0 < num_classes < 65535:
        raise MessageError(f"num_classes must be an integer in [1, 65534], got {num_classes!r}")
    return ("mono8", 255) if num_classes <= 255 else ("mono16", 65535)


def labels_to_image(labels, num_classes: int, header=None, *, ros: bool | None = None):
    """(H, W) integer class ids (the unlabeled value allowed) -> mono8 or mono16 Image."""
    encoding, unlabeled = label_encoding(num_classes)
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iub" or arr.ndim != 2:
        raise MessageError(f"labels must be an (H, W) integer array, got shape {arr.shape} dtype {arr.dtype}")
    if arr.size and ((arr.dtype.kind == "i" and arr.min() < 0) or arr.max() >= num_classes):  # unsigned: max only
        bad = (arr < 0) | ((arr >= num_classes) & (arr != unlabeled))
        if bad.any():
            raise MessageError(
                f"labels hold {arr[bad][0]} which is outside [0, {num_classes}) and not the unlabeled value {unlabeled}"
            )
    wire_dtype = np.uint8 if encoding == "mono8" else np.uint16
    return numpy_to_image(arr.astype(wire_dtype, copy=False), encoding, header, ros=ros)


def confidence_to_image(confidence, header=None, *, ros: bool | None = None):
    """(H, W) float confidence -> 32FC1 Image."""
    arr = np.asarray(confidence)
    if arr.dtype.kind != "f" or arr.ndim != 2:
        raise MessageError(f"confidence must be an (H, W) float array, got shape {arr.shape} dtype {arr.dtype}")
    return numpy_to_image(arr.astype(np.float32, copy=False), "32FC1", header, ros=ros)


def color_to_image(color, header=None, *, ros: bool | None = None):
    """(H, W, 3) uint8 RGB -> rgb8 Image."""
    return numpy_to_image(color, "rgb8", header, ros=ros)

