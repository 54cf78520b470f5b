"""Plain stand-ins for the sensor_msgs types, builders of real messages when sensor_msgs is importable, and field
access whose errors name the field. No rclpy, no torch."""

import array
from dataclasses import dataclass, field
from functools import lru_cache
from typing import List

import numpy as np

from ..errors import MessageError
from .buffers import backing_bytes

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
class RegionOfInterest:
    x_offset: int = 0
    y_offset: int = 0
    height: int = 0
    width: int = 0
    do_rectify: bool = False


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
    roi: RegionOfInterest = field(default_factory=RegionOfInterest)


@dataclass
class CompressedImage:
    header: Header = field(default_factory=Header)
    format: str = ""
    data: bytes = b""


_PLAIN = {"Image": Image, "PointCloud2": PointCloud2, "PointField": PointField, "CameraInfo": CameraInfo,
          "CompressedImage": CompressedImage, "RegionOfInterest": RegionOfInterest}
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


def new_message(name: str, ros, *, checked: bool = False):
    """A new message of type `name`: real sensor_msgs if `ros` is True or (None and importable), else plain.

    `checked` builds a real message with rosidl's field checks on (`check_fields=True`): its uint8[] setter then
    keeps a given array('B') as it is, where the unchecked setter (the default unless ROS_PYTHON_CHECK_FIELDS=1)
    copies it; for an image's data that copy is the size of the frame. The caller must then set every field with
    its exact type."""
    types = _ros_types() if ros is not False else None
    if ros and types is None:
        raise MessageError(f"a sensor_msgs/{name} was requested but sensor_msgs is not importable")
    if not types:
        return _PLAIN[name]()
    kind = getattr(types[0], name)
    if checked and "_check_fields" in getattr(kind, "__slots__", ()):
        return kind(check_fields=True)
    return kind()


def set_header(msg, header) -> None:
    if header is None:
        return
    types = _ros_types()
    if types and not isinstance(msg, _PLAIN_TYPES) and not isinstance(header, types[1]):
        # A real message needs a real std_msgs/Header: copy the stamp and frame of whatever the caller passed.
        ros_header, stamp = types[1](), field_of(header, "stamp", "Header")
        ros_header.stamp.sec = int(field_of(stamp, "sec", "Header.stamp"))
        ros_header.stamp.nanosec = int(field_of(stamp, "nanosec", "Header.stamp"))
        ros_header.frame_id = str(field_of(header, "frame_id", "Header"))
        header = ros_header
    msg.header = header


def payload(msg, raw: bytes | np.ndarray):
    """`raw` as the value for msg.data. Real messages store uint8[] as array('B'); handing them one directly skips
    rclpy's per-element checks (and the ~200 ms cost of assigning an ndarray to a 3 MB image). An array that is an
    array('B')'s bytes (`buffers.MessageBuffers`) is handed over as it is, so the message shares its memory."""
    flat = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    if isinstance(msg, _PLAIN_TYPES):
        return flat.tobytes()
    backing = backing_bytes(flat)
    if backing is not None:  # already an array('B') of exactly these bytes (MessageBuffers): no copy
        return backing
    out = array.array("B")
    out.frombytes(flat)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Field access with errors that name the field.


def field_of(msg, name: str, kind: str):
    try:
        return getattr(msg, name)
    except AttributeError:
        raise MessageError(f"{kind} has no field {name!r} (got a {type(msg).__name__})") from None


def count_of(msg, name: str, kind: str) -> int:
    value = field_of(msg, name, kind)
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise MessageError(f"{kind}.{name} must be an integer, got {value!r}")
    if value < 0:
        raise MessageError(f"{kind}.{name} must be a non-negative integer, got {value!r}")
    return int(value)


def bytes_of(msg, kind: str) -> np.ndarray:
    data = field_of(msg, "data", kind)
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


def byte_order(big_endian) -> str:
    return ">" if big_endian else "<"
