"""sensor_msgs Image / PointCloud2 / CameraInfo <-> numpy, and LiDAR points -> sparse range image in a camera.

Works on any object that has the message's fields (rclpy messages, rosbags messages, the plain dataclasses below),
so it imports no rclpy and no torch. Builders return real `sensor_msgs.msg` messages when that package is importable
(imported lazily, only when a message is built) and the plain dataclasses otherwise.

Conventions:
* Decoding is zero-copy where the layout allows: the result is a (possibly read-only) numpy view of `msg.data`.
  A copy is made only to turn a foreign byte order into the machine's, or to drop PointCloud2 row padding.
* Single-channel images decode to (H, W), multi-channel ones to (H, W, C), channels in the encoding's order.
* Projected range images are float32 with 0 meaning "no return" (0 is never a valid range, stays finite through
  normalisation, and is what `preprocess` treats as missing); nearest point (smallest camera depth) wins a pixel.
* Anything malformed raises MessageError naming the field and the values.
"""
from __future__ import annotations

import array
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import List, Sequence, Tuple

import numpy as np
from numpy.polynomial import polynomial as poly

from .errors import MessageError

# --------------------------------------------------------------------------------------------------------------------
# Plain stand-ins for the sensor_msgs types (same field names), used when sensor_msgs is not importable.


@dataclass
class Time:
    sec: int = 0
    nanosec: int = 0


@dataclass
class Header:
    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@dataclass
class Image:
    header: Header = field(default_factory=Header)
    height: int = 0
    width: int = 0
    encoding: str = ""
    is_bigendian: int = 0
    step: int = 0
    data: bytes = b""


@dataclass
class PointField:
    INT8 = 1
    UINT8 = 2
    INT16 = 3
    UINT16 = 4
    INT32 = 5
    UINT32 = 6
    FLOAT32 = 7
    FLOAT64 = 8

    name: str = ""
    offset: int = 0
    datatype: int = 0
    count: int = 1


@dataclass
class PointCloud2:
    header: Header = field(default_factory=Header)
    height: int = 0
    width: int = 0
    fields: List[PointField] = field(default_factory=list)
    is_bigendian: bool = False
    point_step: int = 0
    row_step: int = 0
    data: bytes = b""
    is_dense: bool = False


@dataclass
class CameraInfo:
    header: Header = field(default_factory=Header)
    height: int = 0
    width: int = 0
    distortion_model: str = ""
    d: List[float] = field(default_factory=list)
    k: List[float] = field(default_factory=lambda: [0.0] * 9)
    r: List[float] = field(default_factory=lambda: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    p: List[float] = field(default_factory=lambda: [0.0] * 12)
    binning_x: int = 0
    binning_y: int = 0


_PLAIN = {"Image": Image, "PointCloud2": PointCloud2, "PointField": PointField, "CameraInfo": CameraInfo}
_PLAIN_TYPES = tuple(_PLAIN.values())


@lru_cache(maxsize=None)
def _ros_types():
    """(sensor_msgs.msg, std_msgs.msg Header) or None; imported on first build, never at module import."""
    try:
        from sensor_msgs import msg as sensor_msgs
        from std_msgs.msg import Header as RosHeader
    except ImportError:
        return None
    return sensor_msgs, RosHeader


def ros_messages_available() -> bool:
    """Whether builders here return real sensor_msgs messages (by default)."""
    return _ros_types() is not None


def _new(name: str, ros):
    """A new message of type `name`: real sensor_msgs if `ros` is True or (None and importable), else plain."""
    types = _ros_types() if ros is not False else None
    if ros and types is None:
        raise MessageError(f"a sensor_msgs/{name} was requested but sensor_msgs is not importable")
    return getattr(types[0], name)() if types else _PLAIN[name]()


def _set_header(msg, header) -> None:
    if header is None:
        return
    types = _ros_types()
    if types and not isinstance(msg, _PLAIN_TYPES) and not isinstance(header, types[1]):
        # A real message needs a real std_msgs/Header: copy the stamp and frame of whatever the caller passed.
        ros_header, stamp = types[1](), _get(header, "stamp", "Header")
        ros_header.stamp.sec = int(_get(stamp, "sec", "Header.stamp"))
        ros_header.stamp.nanosec = int(_get(stamp, "nanosec", "Header.stamp"))
        ros_header.frame_id = str(_get(header, "frame_id", "Header"))
        header = ros_header
    msg.header = header


def _payload(msg, raw: bytes | np.ndarray):
    """`raw` as the value for msg.data. Real messages store uint8[] as array('B'); handing them one directly skips
    rclpy's per-element checks (and the ~200 ms cost of assigning an ndarray, SPEC §3)."""
    flat = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    if isinstance(msg, _PLAIN_TYPES):
        return flat.tobytes()
    out = array.array("B")
    out.frombytes(flat)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Field access with errors that name the field.


def _get(msg, name: str, kind: str):
    try:
        return getattr(msg, name)
    except AttributeError:
        raise MessageError(f"{kind} has no field {name!r} (got a {type(msg).__name__})") from None


def _count(msg, name: str, kind: str) -> int:
    value = _get(msg, name, kind)
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise MessageError(f"{kind}.{name} must be an integer, got {value!r}")
    if value < 0:
        raise MessageError(f"{kind}.{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _bytes_of(msg, kind: str) -> np.ndarray:
    data = _get(msg, "data", kind)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        pass
    if isinstance(data, (list, tuple)):  # hand-made messages
        values = np.asarray(data) if data else np.zeros(0, dtype=np.uint8)
        in_range = not values.size or 0 <= values.min() <= values.max() < 256
        if values.ndim == 1 and values.dtype.kind in "iu" and in_range:
            return values.astype(np.uint8)
    raise MessageError(f"{kind}.data is not a byte buffer (got {type(data).__name__})")


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


def _byte_order(big_endian) -> str:
    return ">" if big_endian else "<"


def image_to_numpy(msg) -> np.ndarray:
    """Image -> (H, W) or (H, W, C) array of the encoding's dtype in native byte order, honouring `step` padding.
    A view of msg.data (read-only if the buffer is) unless the byte order had to be swapped."""
    encoding = _get(msg, "encoding", "Image")
    fmt = pixel_format(encoding)
    height, width, step = (_count(msg, name, "Image") for name in ("height", "width", "step"))
    if height == 0 or width == 0:
        raise MessageError(f"Image has zero size: height={height}, width={width}")
    row_bytes = width * fmt.bytes_per_pixel
    if step < row_bytes:
        raise MessageError(
            f"Image.step={step} is smaller than width*bytes_per_pixel={width}*{fmt.bytes_per_pixel}={row_bytes} "
            f"for encoding {encoding!r}"
        )
    data = _bytes_of(msg, "Image")
    if data.size < height * step:
        raise MessageError(f"Image.data has {data.size} bytes, height*step={height}*{step}={height * step} needed")
    dtype = np.dtype(fmt.dtype).newbyteorder(_byte_order(_get(msg, "is_bigendian", "Image")))
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
    wire = np.ascontiguousarray(arr, dtype=want.newbyteorder(_byte_order(is_bigendian)))
    if step != row_bytes:
        padded = np.zeros((height, step), dtype=np.uint8)
        padded[:, :row_bytes] = wire.view(np.uint8).reshape(height, row_bytes)
        wire = padded
    msg = _new("Image", ros)
    _set_header(msg, header)
    msg.height, msg.width, msg.encoding, msg.step = height, width, encoding, step
    msg.is_bigendian = int(bool(is_bigendian) and want.itemsize > 1)
    msg.data = _payload(msg, wire)
    return msg


def label_encoding(num_classes: int) -> Tuple[str, int]:
    """(encoding, unlabeled value) for a label image of `num_classes` classes: mono8/255 up to 255 classes,
    mono16/65535 above (SPEC §7)."""
    if not isinstance(num_classes, (int, np.integer)) or not 0 < num_classes < 65535:
        raise MessageError(f"num_classes must be an integer in [1, 65534], got {num_classes!r}")
    return ("mono8", 255) if num_classes <= 255 else ("mono16", 65535)


def labels_to_image(labels, num_classes: int, header=None, *, ros: bool | None = None):
    """(H, W) integer class ids (the unlabeled value allowed) -> mono8 or mono16 Image."""
    encoding, unlabeled = label_encoding(num_classes)
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iub" or arr.ndim != 2:
        raise MessageError(f"labels must be an (H, W) integer array, got shape {arr.shape} dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
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


# --------------------------------------------------------------------------------------------------------------------
# PointCloud2.

# sensor_msgs/PointField datatype constants -> numpy type codes (without byte order).
POINT_FIELD_DTYPES = {
    PointField.INT8: "i1", PointField.UINT8: "u1", PointField.INT16: "i2", PointField.UINT16: "u2",
    PointField.INT32: "i4", PointField.UINT32: "u4", PointField.FLOAT32: "f4", PointField.FLOAT64: "f8",
}
_DATATYPE_OF = {code: datatype for datatype, code in POINT_FIELD_DTYPES.items()}


MAX_POINT_STEP = 2**31 - 1


def pointcloud_dtype(fields: Sequence, point_step: int, is_bigendian: bool) -> np.dtype:
    """Structured dtype (itemsize point_step, fields at their offsets, any order) described by PointField list."""
    if point_step > MAX_POINT_STEP:  # numpy's itemsize is a C int; the wire's uint32 allows twice that
        raise MessageError(f"PointCloud2.point_step={point_step} exceeds the largest point numpy can describe "
                           f"({MAX_POINT_STEP} bytes)")
    names, formats, offsets = [], [], []
    for index, pf in enumerate(fields):
        kind = f"PointCloud2.fields[{index}]"
        name = _get(pf, "name", kind)
        offset, datatype, count = (_count(pf, attr, kind) for attr in ("offset", "datatype", "count"))
        if not isinstance(name, str) or not name:
            raise MessageError(f"{kind}.name must be a non-empty string, got {name!r}")
        if name in names:
            raise MessageError(f"PointCloud2.fields name {name!r} appears twice")
        if datatype not in POINT_FIELD_DTYPES:
            raise MessageError(f"{kind} ({name!r}).datatype={datatype} is not a PointField type (1..8)")
        if count == 0:
            raise MessageError(f"{kind} ({name!r}).count=0; a field holds at least one value")
        base = np.dtype(POINT_FIELD_DTYPES[datatype]).newbyteorder(_byte_order(is_bigendian))
        if offset + base.itemsize * count > point_step:
            raise MessageError(
                f"{kind} ({name!r}) spans bytes [{offset}, {offset + base.itemsize * count}) beyond "
                f"point_step={point_step}"
            )
        names.append(name)
        formats.append(base if count == 1 else (base, (count,)))
        offsets.append(offset)
    if not names:
        raise MessageError("PointCloud2.fields is empty")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})


def pointcloud_to_numpy(msg) -> np.ndarray:
    """PointCloud2 -> 1-D structured array of height*width points (organised clouds flattened row by row), fields
    named and typed as in msg.fields, native byte order. Invalid (NaN) points are kept; `pointcloud_xyz` drops
    them. A view of msg.data unless rows are padded or the byte order is foreign."""
    height, width, point_step, row_step = (
        _count(msg, name, "PointCloud2") for name in ("height", "width", "point_step", "row_step")
    )
    if point_step == 0:
        raise MessageError("PointCloud2.point_step=0")
    dtype = pointcloud_dtype(_get(msg, "fields", "PointCloud2"), point_step, _get(msg, "is_bigendian", "PointCloud2"))
    if height * width == 0:
        return np.zeros(0, dtype=dtype.newbyteorder("="))
    if row_step < width * point_step:
        raise MessageError(
            f"PointCloud2.row_step={row_step} is smaller than width*point_step={width}*{point_step}="
            f"{width * point_step}"
        )
    data = _bytes_of(msg, "PointCloud2")
    if data.size < height * row_step:
        raise MessageError(
            f"PointCloud2.data has {data.size} bytes, height*row_step={height}*{row_step}={height * row_step} needed"
        )
    grid = np.ndarray(shape=(height, width), dtype=dtype, buffer=data, strides=(row_step, point_step))
    points = grid.reshape(-1)  # a view when rows are unpadded, else a copy
    native = dtype.newbyteorder("=")
    return points if native == dtype else points.astype(native)


def pointcloud_xyz(msg_or_points, names: Sequence[str] = ("x", "y", "z")) -> np.ndarray:
    """(N, 3) float64 coordinates of the finite points of a PointCloud2 (or of its structured array)."""
    points = msg_or_points if isinstance(msg_or_points, np.ndarray) else pointcloud_to_numpy(msg_or_points)
    available = points.dtype.names or ()
    missing = [n for n in names if n not in available]
    if missing:
        raise MessageError(f"PointCloud2 has no field(s) {missing}; fields: {list(available)}")
    for name in names:
        if points.dtype[name].shape:
            raise MessageError(f"PointCloud2 field {name!r} has count {points.dtype[name].shape[0]}, expected 1")
    xyz = np.empty((points.size, 3), dtype=np.float64)
    finite = np.ones(points.size, dtype=bool)
    for column, name in enumerate(names):  # column by column: reductions over a length-3 axis are slow in numpy
        with np.errstate(invalid="ignore"):  # converting a signalling NaN warns; it is dropped as non-finite below
            xyz[:, column] = points[name]
        finite &= np.isfinite(xyz[:, column])
    return xyz[finite]


def numpy_to_pointcloud(points, header=None, *, height: int = 1, row_step: int | None = None,
                        is_dense: bool | None = None, ros: bool | None = None):
    """Structured array (any field order, padding via offsets/itemsize, one byte order) or (N, 3) float array
    (-> float32 x, y, z) -> PointCloud2. `height` > 1 makes an organised cloud; `row_step` adds row padding."""
    arr = np.asarray(points)
    if arr.dtype.names is None:
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise MessageError(f"points must be a structured array or (N, 3), got shape {arr.shape}")
        xyz = np.zeros(arr.shape[0], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
        for i, name in enumerate("xyz"):
            xyz[name] = arr[:, i]
        arr = xyz
    arr = arr.reshape(-1)
    if height < 1 or arr.size % height:
        raise MessageError(f"height={height} does not divide the {arr.size} points into rows")
    width = arr.size // height
    fields, orders = [], set()
    for name in arr.dtype.names:
        sub, offset = arr.dtype.fields[name][:2]
        base, shape = (sub.subdtype if sub.subdtype else (sub, ()))
        code = f"{base.kind}{base.itemsize}"
        if code not in _DATATYPE_OF:
            raise MessageError(f"field {name!r} has dtype {base}, which PointField cannot describe")
        if base.itemsize > 1:
            orders.add(base.byteorder.replace("=", "<" if sys.byteorder == "little" else ">"))
        pf = _new("PointField", ros)
        pf.name, pf.offset, pf.datatype = name, int(offset), _DATATYPE_OF[code]
        pf.count = int(np.prod(shape, dtype=int))
        fields.append(pf)
    if len(orders) > 1:
        raise MessageError(f"fields mix byte orders {sorted(orders)}; PointCloud2 has one is_bigendian flag")
    point_step = arr.dtype.itemsize
    row_bytes = width * point_step
    row_step = row_bytes if row_step is None else int(row_step)
    if row_step < row_bytes:
        raise MessageError(f"row_step={row_step} is smaller than width*point_step={row_bytes}")
    wire = np.ascontiguousarray(arr).view(np.uint8).reshape(height, row_bytes)
    if row_step != row_bytes:
        padded = np.zeros((height, row_step), dtype=np.uint8)
        padded[:, :row_bytes] = wire
        wire = padded
    if is_dense is None:
        floats = [n for n in arr.dtype.names if arr.dtype[n].base.kind == "f"]
        is_dense = all(bool(np.isfinite(arr[n]).all()) for n in floats)
    msg = _new("PointCloud2", ros)
    _set_header(msg, header)
    msg.height, msg.width, msg.fields = height, width, fields
    msg.is_bigendian = orders == {">"}
    msg.point_step, msg.row_step, msg.is_dense = point_step, row_step, bool(is_dense)
    msg.data = _payload(msg, wire)
    return msg


# --------------------------------------------------------------------------------------------------------------------
# Camera model and projection.

DISTORTION_MODELS = {"plumb_bob": 5, "rational_polynomial": 8}


@dataclass(frozen=True)
class Camera:
    """Validated pinhole intrinsics with optional plumb_bob / rational_polynomial distortion (OpenCV convention:
    pixel centres at integer coordinates)."""

    k: np.ndarray  # (3, 3)
    d: np.ndarray  # distortion coefficients (k1, k2, p1, p2, k3[, k4, k5, k6]) or empty
    distortion_model: str
    width: int
    height: int

    @property
    def distorted(self) -> bool:
        return bool(self.d.size) and bool(np.any(self.d))

    def fold_radius2(self) -> float:
        """Squared normalised radius beyond which the radial model stops growing (it folds back, mapping points far
        outside the field of view into the image); points there are dropped. inf when it never folds."""
        if not self.distorted:
            return np.inf
        k1, k2, _, _, k3, *rest = (list(self.d) + [0.0] * 8)[:8]
        num = np.array([1.0, k1, k2, k3])  # polynomials in s = r^2, lowest power first
        den = np.array([1.0, *rest[:3]]) if self.distortion_model == "rational_polynomial" else np.array([1.0])
        # d/dr [r * num(s) / den(s)] has the sign of (num + 2 s num') den - 2 s num den'.
        s = np.array([0.0, 1.0])
        growth = poly.polysub(
            poly.polymul(poly.polyadd(num, 2 * poly.polymul(s, poly.polyder(num))), den),
            2 * poly.polymul(poly.polymul(s, num), poly.polyder(den)),
        )
        roots = np.concatenate([poly.polyroots(poly.polytrim(growth)), poly.polyroots(poly.polytrim(den))])
        real = roots.real[(np.abs(roots.imag) < 1e-12) & (roots.real > 0)]
        return float(real.min()) if real.size else np.inf


MAX_CAMERA_PIXELS = 2**26  # 8192 x 8192: beyond any camera (8K video is 7680 x 4320); a 256 MiB range image


def _floats(info, name: str) -> np.ndarray:
    values = _get(info, name, "CameraInfo")
    try:
        return np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise MessageError(f"CameraInfo.{name} must be a list of numbers, got {values!r}") from None


def camera_from_info(info) -> Camera:
    """Validate a CameraInfo (K, D, distortion_model, width, height) into a Camera."""
    width, height = _count(info, "width", "CameraInfo"), _count(info, "height", "CameraInfo")
    if width == 0 or height == 0:
        raise MessageError(f"CameraInfo has zero size: width={width}, height={height}")
    if width * height > MAX_CAMERA_PIXELS:  # a projection allocates one float per pixel
        raise MessageError(f"CameraInfo size {width}x{height} exceeds {MAX_CAMERA_PIXELS} pixels")
    k = _floats(info, "k")
    if k.size != 9 or not np.isfinite(k).all():
        raise MessageError(f"CameraInfo.k must be 9 finite numbers, got {k.tolist()}")
    if not np.any(k):
        raise MessageError("CameraInfo.k is all zero (an uncalibrated camera); cannot project")
    if k[0] <= 0 or k[4] <= 0 or k[3] != 0 or k[6] != 0 or k[7] != 0 or k[8] != 1:
        raise MessageError(
            f"CameraInfo.k must be [fx, s, cx, 0, fy, cy, 0, 0, 1] with fx, fy > 0, got {k.tolist()}"
        )
    d = _floats(info, "d")
    model = _get(info, "distortion_model", "CameraInfo") or ""
    if not np.isfinite(d).all():
        raise MessageError(f"CameraInfo.d must be finite, got {d.tolist()}")
    if np.any(d):
        if model not in DISTORTION_MODELS:
            raise MessageError(
                f"CameraInfo.distortion_model {model!r} is not supported; supported: {', '.join(DISTORTION_MODELS)}"
            )
        if d.size != DISTORTION_MODELS[model]:
            raise MessageError(
                f"CameraInfo.d has {d.size} coefficients, {model} needs {DISTORTION_MODELS[model]}: {d.tolist()}"
            )
    return Camera(k.reshape(3, 3), d, model, width, height)


def numpy_to_camera_info(k, width: int, height: int, d=(), distortion_model: str = "plumb_bob", header=None, *,
                         ros: bool | None = None):
    """Build a CameraInfo (R identity, P = [K | 0]) and validate it like a received one."""
    msg = _new("CameraInfo", ros)
    _set_header(msg, header)
    k = np.asarray(k, dtype=np.float64).reshape(-1)
    msg.width, msg.height, msg.distortion_model = int(width), int(height), distortion_model
    msg.k = [float(v) for v in k]
    msg.d = [float(v) for v in np.asarray(d, dtype=np.float64).reshape(-1)]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    camera_from_info(msg)
    msg.p = [*k[0:3], 0.0, *k[3:6], 0.0, *k[6:9], 0.0]
    return msg


def _extrinsic(matrix) -> np.ndarray:
    t = np.asarray(matrix, dtype=np.float64)
    if t.shape != (4, 4) or not np.isfinite(t).all() or not np.allclose(t[3], [0.0, 0.0, 0.0, 1.0]):
        raise MessageError(
            f"extrinsic must be a finite 4x4 rigid transform with last row [0, 0, 0, 1], got {t.tolist()}"
        )
    return t


PROJECTION_VALUES = ("range", "depth")


def project_points(points, camera: Camera, extrinsic, *, value: str = "range", min_depth: float = 1e-3) -> np.ndarray:
    """Project (N, 3) LiDAR points into `camera` as a float32 (height, width) image, 0 where no point lands.

    extrinsic: 4x4 transform taking LiDAR-frame points to the camera optical frame (z forward, x right, y down).
    value: 'range' writes the distance the LiDAR measured (norm in the LiDAR frame), 'depth' the camera z.
    Points with camera z <= min_depth (behind the camera) or beyond the distortion model's fold are dropped; where
    several points hit a pixel the one nearest to the camera (smallest z) wins.
    """
    if value not in PROJECTION_VALUES:
        raise MessageError(f"value must be one of {PROJECTION_VALUES}, got {value!r}")
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise MessageError(f"points must have shape (N, 3), got {pts.shape}")
    t = _extrinsic(extrinsic)
    image = np.zeros((camera.height, camera.width), dtype=np.float32)
    # Written out per axis: a BLAS matmul with 3 columns is slower, and badly so when other processes hold the cores.
    px, py, pz = pts[:, 0], pts[:, 1], pts[:, 2]
    cx, cy, z = (t[i, 0] * px + t[i, 1] * py + t[i, 2] * pz + t[i, 3] for i in range(3))
    with np.errstate(divide="ignore", invalid="ignore"):  # points behind the camera or NaN are masked out here
        keep = z > min_depth
        x, y = cx / z, cy / z
        if camera.distorted:
            x, y, inside = _distort(x, y, camera)
            keep &= inside
        k = camera.k
        u = np.floor(k[0, 0] * x + k[0, 1] * y + k[0, 2] + 0.5)
        v = np.floor(k[1, 1] * y + k[1, 2] + 0.5)
        keep &= (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height)
    hit = np.flatnonzero(keep)
    if not hit.size:
        return image
    pixel = v[hit].astype(np.int64) * camera.width + u[hit].astype(np.int64)
    depth = z[hit]
    # One sort groups the points by pixel with the nearest first: the key is the pixel index plus the depth scaled
    # into [0, 1) (float64 keeps depth differences above ~1e-9 of the largest depth apart).
    order = np.argsort(pixel + depth / (depth.max() * (1 + 1e-6)))
    sorted_pixels = pixel[order]
    first = np.ones(order.size, dtype=bool)
    np.not_equal(sorted_pixels[1:], sorted_pixels[:-1], out=first[1:])
    winners = hit[order[first]]
    with np.errstate(over="ignore", invalid="ignore"):
        if value == "range":
            values = np.sqrt(px[winners] ** 2 + py[winners] ** 2 + pz[winners] ** 2).astype(np.float32)
        else:
            values = z[winners].astype(np.float32)
    values[~np.isfinite(values)] = 0.0  # beyond float32 (a broken driver's 1e39 m): no return, as documented
    image.reshape(-1)[sorted_pixels[first]] = values
    return image


def _distort(x: np.ndarray, y: np.ndarray, camera: Camera):
    """Apply plumb_bob / rational_polynomial to normalised coordinates; also the mask of points inside the fold."""
    k1, k2, p1, p2, k3, k4, k5, k6 = (list(camera.d) + [0.0] * 8)[:8]
    r2 = x * x + y * y
    inside = r2 < camera.fold_radius2()
    radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xy = x * y
    xd = x * radial + 2 * p1 * xy + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * xy
    return xd, yd, inside


def pointcloud_to_range_image(cloud, camera_info, extrinsic, *, value: str = "range",
                              names: Sequence[str] = ("x", "y", "z")) -> np.ndarray:
    """PointCloud2 + CameraInfo (or Camera) + 4x4 LiDAR->camera transform -> sparse float32 range image."""
    camera = camera_info if isinstance(camera_info, Camera) else camera_from_info(camera_info)
    return project_points(pointcloud_xyz(cloud, names), camera, extrinsic, value=value)
