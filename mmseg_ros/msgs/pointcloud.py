"""sensor_msgs/PointCloud2 <-> numpy: structured dtypes from PointField lists, zero-copy decoding, building."""

import sys
from typing import Sequence

import numpy as np

from ..errors import MessageError
from .types import PointField, byte_order, bytes_of, count_of, field_of, new_message, payload, set_header

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
        name = field_of(pf, "name", kind)
        offset, datatype, count = (count_of(pf, attr, kind) for attr in ("offset", "datatype", "count"))
        if not isinstance(name, str) or not name:
            raise MessageError(f"{kind}.name must be a non-empty string, got {name!r}")
        if name in names:
            raise MessageError(f"PointCloud2.fields name {name!r} appears twice")
        if datatype not in POINT_FIELD_DTYPES:
            raise MessageError(f"{kind} ({name!r}).datatype={datatype} is not a PointField type (1..8)")
        if count == 0:
            raise MessageError(f"{kind} ({name!r}).count=0; a field holds at least one value")
        base = np.dtype(POINT_FIELD_DTYPES[datatype]).newbyteorder(byte_order(is_bigendian))
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
        count_of(msg, name, "PointCloud2") for name in ("height", "width", "point_step", "row_step")
    )
    if point_step == 0:
        raise MessageError("PointCloud2.point_step=0")
    dtype = pointcloud_dtype(field_of(msg, "fields", "PointCloud2"), point_step,
                             field_of(msg, "is_bigendian", "PointCloud2"))
    if height * width == 0:
        return np.zeros(0, dtype=dtype.newbyteorder("="))
    if row_step < width * point_step:
        raise MessageError(
            f"PointCloud2.row_step={row_step} is smaller than width*point_step={width}*{point_step}="
            f"{width * point_step}"
        )
    data = bytes_of(msg, "PointCloud2")
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
        pf = new_message("PointField", ros)
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
    msg = new_message("PointCloud2", ros)
    set_header(msg, header)
    msg.height, msg.width, msg.fields = height, width, fields
    msg.is_bigendian = orders == {">"}
    msg.point_step, msg.row_step, msg.is_dense = point_step, row_step, bool(is_dense)
    msg.data = payload(msg, wire)
    return msg

