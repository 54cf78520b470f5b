"""Write a generated drive as a rosbag2 (mcap or sqlite3) with `rosbags` - no ROS install needed.

Topics (absolute; the node's defaults are the same names relative to its namespace):
    /rgb/image          sensor_msgs/Image rgb8           camera rate
    /depth/image        sensor_msgs/Image 32FC1 metres   camera rate (0 = no value)
    /event/image        sensor_msgs/Image rgb8           event rate (ch 0 positive, ch 1 negative counts x k)
    /lidar/image        sensor_msgs/Image 32FC1          LiDAR rate (camera z-depth of returns, 0 = none)
    /lidar/points       sensor_msgs/PointCloud2          x, y, z, intensity float32 in the scanner frame,
                                                         gt_label uint8 (each point's true class)
    /rgb/camera_info    sensor_msgs/CameraInfo           with every rgb image
    /gt/labels          sensor_msgs/Image mono8          DELIVER train ids, 255 = ignore (ground truth)
    /tf_static          tf2_msgs/TFMessage               once: base_link -> camera optical frame, base_link -> LiDAR
    /tf                 tf2_msgs/TFMessage               odom -> base_link (the ego's odometry) at every sensor stamp
With `compressed=True` the drive is recorded as vehicles usually record one: the camera as CompressedImage JPEG
("rgb8; jpeg compressed bgr8") on /rgb/image/compressed, depth as compressedDepth ("32FC1; compressedDepth png") on
/depth/image/compressedDepth, events as lossless PNG on /event/image/compressed, the LiDAR only as PointCloud2 in its
own frame, and the camera <- LiDAR extrinsic only in /tf_static; `topics` renames any of them (e.g.
{"rgb": "/sensing/camera/front/image_raw/compressed"}).
Header stamps come from the generator (sensor rates, LiDAR offset, jitter); each record's log time is its stamp
plus a small per-sensor transport latency, and records are written in log-time order. The bag's metadata
(custom_data) holds the condition, failure, seed, the LiDAR->camera extrinsic and the frame ids.
"""
from __future__ import annotations

import heapq
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Optional

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from ... import modalities, msgs as codecs
from ...errors import ConfigError
from ...transforms import ODOM_FRAME, matrix_quaternion
from .encode import metres

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
LABELS_TOPIC = "/gt/labels"
# Transport latency per sensor (s): log time = header stamp + latency.
LATENCY_S = {"rgb": 0.004, "depth": 0.006, "event": 0.002, "lidar": 0.012}
# The odometry's latency: shorter than every sensor's, so the ego's pose at a sensor's stamp is in the bag (and in a
# replay's transform tree) before that sensor's message.
ODOMETRY_LATENCY_S = 0.001
_POINT_FIELDS = ("x", "y", "z", "intensity")
# Each LiDAR point's true class (DELIVER train id, 255 = clutter), from the generator's ray casting: scoring painted
# clouds needs it; consumers that do not know the field ignore it.
GT_LABEL_FIELD = "gt_label"
# Image encoding of each stream on the wire; the live publisher (mmseg sensors) sends the same, so a model trained on
# the tree runs on bags and live data alike.
ENCODINGS = {"rgb": "rgb8", "depth": "32FC1", "event": "rgb8", "lidar": "32FC1", "labels": "mono8"}


def cloud_records(xyzi: np.ndarray, labels: Optional[np.ndarray] = None) -> np.ndarray:
    """The synthetic LiDAR's PointCloud2 records: x, y, z, intensity (float32) and, when known, gt_label (uint8). One
    layout for bags and the live publisher."""
    fields = [(name, "<f4") for name in _POINT_FIELDS] + ([(GT_LABEL_FIELD, "u1")] if labels is not None else [])
    records = np.zeros(len(xyzi), dtype=fields)
    for column, name in enumerate(_POINT_FIELDS):
        records[name] = xyzi[:, column]
    if labels is not None:
        records[GT_LABEL_FIELD] = labels
    return records


TF_TYPE = "tf2_msgs/msg/TFMessage"


def topic(modality: str) -> str:
    return "/" + modalities.get(modality).topic


def sibling_topic(modality: str, name: str) -> str:
    """E.g. ('rgb', 'camera_info') -> /rgb/camera_info: beside the modality's image topic."""
    return topic(modality).rsplit("/", 1)[0] + "/" + name


TOPICS = {
    "rgb": (topic("rgb"), "sensor_msgs/msg/Image"),
    "camera_info": (sibling_topic("rgb", "camera_info"), "sensor_msgs/msg/CameraInfo"),
    "depth": (topic("depth"), "sensor_msgs/msg/Image"),
    "event": (topic("event"), "sensor_msgs/msg/Image"),
    "lidar": (topic("lidar"), "sensor_msgs/msg/Image"),
    "points": (sibling_topic("lidar", "points"), "sensor_msgs/msg/PointCloud2"),
    "labels": (LABELS_TOPIC, "sensor_msgs/msg/Image"),
    "tf_static": ("/tf_static", TF_TYPE),
    "tf": ("/tf", TF_TYPE),
}
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
BASE_FRAME = "base_link"  # the ego's body frame: the rig's mounts hang under it, odometry moves it in ODOM_FRAME
JPEG_QUALITY = 90
# compressedDepth quantisation (the publisher's depth_max / depth_quantization parameters): the generator's depth
# stays below 65.5 m, and depth_max must exceed it or the far returns are dropped (the reference default is 10 m).
DEPTH_MAX_M, DEPTH_QUANTIZATION = 100.0, 100.0
COMPRESSED_TOPICS = {
    "rgb": (topic("rgb") + "/compressed", COMPRESSED_TYPE),
    "camera_info": TOPICS["camera_info"],
    "depth": (topic("depth") + "/compressedDepth", COMPRESSED_TYPE),
    "event": (topic("event") + "/compressed", COMPRESSED_TYPE),
    "points": TOPICS["points"],
    "labels": TOPICS["labels"],
    "tf_static": TOPICS["tf_static"],
    "tf": TOPICS["tf"],
}


def layout(compressed: bool = False, topics: Mapping[str, str] | None = None) -> dict:
    """key -> (topic, message type) of a drive bag written raw (TOPICS) or compressed, with `topics` renaming."""
    table = dict(COMPRESSED_TOPICS if compressed else TOPICS)
    unknown = sorted(set(topics or {}) - set(table))
    if unknown:
        raise ConfigError(f"topics: unknown key(s) {unknown}; keys: {sorted(table)}")
    for key, name in (topics or {}).items():
        table[key] = ("/" + name.lstrip("/"), table[key][1])
    return table


class _Messages:
    """Builds rosbags message objects and serialises them to CDR."""

    def __init__(self):
        self.store = get_typestore(Stores.ROS2_KILTED)
        self.t = self.store.types

    def header(self, stamp_ns: int, frame_id: str):
        sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
        return self.t["std_msgs/msg/Header"](stamp=self.t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                             frame_id=frame_id)

    def image(self, array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> bytes:
        array = np.ascontiguousarray(array)
        h, w = array.shape[:2]
        msg = self.t["sensor_msgs/msg/Image"](
            header=self.header(stamp_ns, frame_id), height=h, width=w, encoding=encoding, is_bigendian=0,
            step=array.strides[0], data=np.frombuffer(array.tobytes(), np.uint8))
        return self.store.serialize_cdr(msg, "sensor_msgs/msg/Image")

    def camera_info(self, k: np.ndarray, width: int, height: int, stamp_ns: int, frame_id: str) -> bytes:
        p = np.zeros((3, 4))
        p[:, :3] = k
        msg = self.t["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp_ns, frame_id), height=height, width=width, distortion_model="plumb_bob",
            d=np.zeros(5), k=np.asarray(k, np.float64).ravel(), r=np.eye(3).ravel(), p=p.ravel(), binning_x=0,
            binning_y=0, roi=self.t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                                       do_rectify=False))
        return self.store.serialize_cdr(msg, "sensor_msgs/msg/CameraInfo")

    def compressed(self, msg, stamp_ns: int, frame_id: str) -> bytes:
        """A plain msgs.CompressedImage -> CDR."""
        out = self.t[COMPRESSED_TYPE](header=self.header(stamp_ns, frame_id), format=msg.format,
                                      data=np.frombuffer(bytes(msg.data), np.uint8))
        return self.store.serialize_cdr(out, COMPRESSED_TYPE)

    def transforms(self, transforms, stamp_ns: int) -> bytes:
        """[(parent, child, 4x4)] -> tf2_msgs/TFMessage CDR, every transform stamped `stamp_ns`."""
        t = self.t
        items = []
        for parent, child, matrix in transforms:
            m = np.asarray(matrix, np.float64)
            x, y, z, w = matrix_quaternion(m[:3, :3])
            items.append(t["geometry_msgs/msg/TransformStamped"](
                header=self.header(stamp_ns, parent), child_frame_id=child,
                transform=t["geometry_msgs/msg/Transform"](
                    translation=t["geometry_msgs/msg/Vector3"](x=m[0, 3], y=m[1, 3], z=m[2, 3]),
                    rotation=t["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w))))
        return self.store.serialize_cdr(t[TF_TYPE](transforms=items), TF_TYPE)

    def points(self, records: np.ndarray, stamp_ns: int, frame_id: str) -> bytes:
        field = self.t["sensor_msgs/msg/PointField"]
        datatype = {code: kind for kind, code in codecs.POINT_FIELD_DTYPES.items()}
        fields = [field(name=n, offset=records.dtype.fields[n][1], count=1,
                        datatype=datatype[records.dtype[n].str.lstrip("<>|=")]) for n in records.dtype.names]
        data = np.ascontiguousarray(records)
        msg = self.t["sensor_msgs/msg/PointCloud2"](
            header=self.header(stamp_ns, frame_id), height=1, width=len(data), fields=fields, is_bigendian=False,
            point_step=records.dtype.itemsize, row_step=data.nbytes, data=data.view(np.uint8).reshape(-1).copy(),
            is_dense=True)
        return self.store.serialize_cdr(msg, "sensor_msgs/msg/PointCloud2")


def _dropped(drops: Mapping | None, index: int, rng) -> set:
    """Modalities whose messages are left out of camera frame `index` (a sensor dropping out)."""
    out = set()
    for name, rule in (drops or {}).items():
        if isinstance(rule, float):
            if rng.random() < rule:
                out.add(name)
        elif index in rule:
            out.add(name)
    return out


def write_drive_bag(path, frames: Iterable[dict], storage: str = "mcap", drops: Mapping | None = None,
                    points: bool = True, drop_seed: int = 0, compressed: bool = False,
                    topics: Mapping[str, str] | None = None) -> dict:
    """Write frames from SceneGenerator.render_frame(i, all_events=True) (or any frames with the same keys) to a
    new rosbag2 at `path`. `drops` maps modality names ('rgb', 'depth', 'event', 'lidar') to frame indices (or a
    probability per frame) whose messages are left out; `compressed` records the drive as vehicles do (see the
    module doc), `topics` renames topics by key. Returns the number of messages written per topic."""
    if storage not in STORAGES:
        raise ConfigError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
    for name in drops or {}:
        if name not in LATENCY_S:
            raise ConfigError(f"drops: unknown sensor {name!r}; known: {sorted(LATENCY_S)}")
    path = Path(path)
    if path.exists():
        raise ConfigError(f"{path} exists already; rosbag2 writers never overwrite")
    msgs = _Messages()
    table = layout(compressed, topics)
    points = points or compressed  # a compressed drive has no projected LiDAR image: the cloud is the LiDAR
    counts = {t: 0 for t, _ in table.values()}
    rng = np.random.default_rng([drop_seed, 11])
    # Write into a hidden sibling folder and rename when complete: readers never see half a bag, and the storage
    # file inside keeps the bag's own name.
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    try:
        with Writer(staging / path.name, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage]) as writer:
            conns = {key: writer.add_connection(t, msgtype, typestore=msgs.store)
                     for key, (t, msgtype) in table.items() if points or key != "points"}
            pending, metadata = [], None
            for frame in frames:
                meta = frame["meta"]
                records = _frame_records(frame, msgs, _dropped(drops, meta["index"], rng), points, compressed)
                if metadata is None:  # the rig's extrinsics, once, before anything else
                    first = min((r[0] for r in records), default=meta["stamps"]["rgb"])
                    records.append((first - 1, -1, "tf_static", msgs.transforms(_rig(meta), first - 1)))
                metadata = metadata or meta
                if records:  # everything logged before this frame's first record is final
                    horizon = min(r[0] for r in records)
                    while pending and pending[0][0] <= horizon:
                        _write(writer, conns, counts, heapq.heappop(pending), table)
                for r in records:
                    heapq.heappush(pending, r)
            while pending:
                _write(writer, conns, counts, heapq.heappop(pending), table)
            for key, value in _custom_data(metadata, table, compressed).items():
                writer.set_custom_data(key, value)
        os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts


def _write(writer, conns, counts, record, table):
    log_ns, _, key, data = record
    writer.write(conns[key], log_ns, data)
    counts[table[key][0]] += 1


def _rig(meta: dict):
    """The /tf_static of the rig: base_link -> camera optical frame, base_link -> LiDAR frame."""
    ids = meta["frame_ids"]
    return [(BASE_FRAME, ids["rgb"], meta["ego_from_camera"]),
            (BASE_FRAME, ids["lidar_points"], meta["ego_from_lidar"])]


def _frame_records(frame: dict, msgs: _Messages, dropped: set, points: bool, compressed: bool = False):
    """(log time ns, tie-break, topic key, CDR bytes) for every message of one camera frame."""
    meta = frame["meta"]
    stamps, ids = meta["stamps"], meta["frame_ids"]
    out = []

    def add(sensor, key, stamp, data):
        out.append((stamp + int(LATENCY_S[sensor] * 1e9), len(out), key, data))

    def image(sensor, key, array):  # an image stream stamped and encoded as its key says, framed as its sensor
        add(sensor, key, stamps[key], msgs.image(array, ENCODINGS[key], stamps[key], ids[sensor]))

    def transported(sensor, key, array, stamp):  # the same through compressed / compressedDepth
        if key == "rgb":
            plain = codecs.numpy_to_compressed(array, ENCODINGS[key], "jpeg", quality=JPEG_QUALITY, ros=False)
        elif key == "depth":
            plain = codecs.numpy_to_compressed_depth(array, ENCODINGS[key], depth_max=DEPTH_MAX_M,
                                                     depth_quantization=DEPTH_QUANTIZATION, ros=False)
        else:  # event counts: lossless, a JPEG would smear the isolated events
            plain = codecs.numpy_to_compressed(array, ENCODINGS[key], "png", ros=False)
        add(sensor, key, stamp, msgs.compressed(plain, stamp, ids[sensor]))

    if "rgb" not in dropped:
        rgb = frame["rgb"]
        if compressed:
            transported("rgb", "rgb", rgb, stamps["rgb"])
        else:
            image("rgb", "rgb", rgb)
        add("rgb", "camera_info", stamps["rgb"],
            msgs.camera_info(meta["intrinsics"], rgb.shape[1], rgb.shape[0], stamps["rgb"], ids["rgb"]))
    image("rgb", "labels", frame["labels"])
    for stamp, world_from_ego in meta.get("odometry", ()):  # never dropped: odometry is not one of the sensors
        out.append((stamp + int(ODOMETRY_LATENCY_S * 1e9), len(out), "tf",
                    msgs.transforms([(ODOM_FRAME, BASE_FRAME, world_from_ego)], stamp)))
    if "depth" not in dropped:
        if compressed:
            transported("depth", "depth", metres(frame["depth"]), stamps["depth"])
        else:
            image("depth", "depth", metres(frame["depth"]))
    if "lidar" not in dropped:
        if not compressed:
            image("lidar", "lidar", metres(frame["lidar"]))
        if points:
            add("lidar", "points", stamps["lidar"],
                msgs.points(cloud_records(frame["lidar_points"], frame.get("lidar_point_labels")), stamps["lidar"],
                            ids["lidar_points"]))
    if "event" not in dropped:
        events = frame.get("events") or [(meta["time"], frame["event"])]
        for stamp, (_, image) in zip(stamps["event"][-len(events):], events):
            if compressed:
                transported("event", "event", image, stamp)
            else:
                add("event", "event", stamp, msgs.image(image, ENCODINGS["event"], stamp, ids["event"]))
    return out


def custom_data(path) -> dict:
    """The `mmseg.*` metadata of a bag written here (condition, failure, extrinsic, ...), from metadata.yaml."""
    import yaml

    meta_file = Path(path, "metadata.yaml")
    if not meta_file.is_file():
        raise ConfigError(f"{path} is not a rosbag2 folder (no metadata.yaml)")
    with open(meta_file) as f:
        info = (yaml.safe_load(f) or {}).get("rosbag2_bagfile_information", {})
    return dict(info.get("custom_data") or {})


def _custom_data(meta: dict | None, table: dict, compressed: bool) -> dict:
    if meta is None:
        return {}
    data = {
        "mmseg.generator": "mmseg_ros.data.synthetic",
        "mmseg.condition": str(meta["condition"]),
        "mmseg.failure": str(meta["failure"] or "none"),
        "mmseg.seed": str(meta["seed"]),
        "mmseg.class_set": "deliver",
        "mmseg.camera_from_lidar": json.dumps(np.asarray(meta["camera_from_lidar"]).round(9).tolist()),
        "mmseg.intrinsics": json.dumps(np.asarray(meta["intrinsics"]).round(9).tolist()),
        "mmseg.frame_ids": json.dumps(meta["frame_ids"]),
        "mmseg.event_count_scale": str(meta["event_count_scale"]),
        "mmseg.topics": json.dumps({k: t for k, (t, _) in table.items()}),
    }
    if compressed:  # the extrinsic is in /tf_static, as on a vehicle: nothing else tells it
        del data["mmseg.camera_from_lidar"]
    return data
