"""rosbag2 in and out with `rosbags` (mcap and sqlite3; no ROS install).

`InputBag` opens a recording and yields (topic, log time ns, message) in log-time order; every way a bag can be
unusable (no such folder, not a rosbag2, truncated or corrupt storage, a topic that is not there) ends in a
DataError naming the bag and what is wrong. `OutputBag` writes into a hidden sibling folder and renames it into place
when complete, so no half-written bag is ever left where a reader would take it (as the drive-bag writer does).

Messages written here are the plain `msgs` dataclasses (or anything with the same fields); they are converted to the
typestore's classes for serialisation.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Iterable, Iterator, Mapping, Optional, Tuple

import numpy as np
import yaml

from ..errors import ConfigError, DataError

STORAGES = ("mcap", "sqlite3")
IMAGE_TYPE = "sensor_msgs/msg/Image"
POINTS_TYPE = "sensor_msgs/msg/PointCloud2"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
TF_TYPE = "tf2_msgs/msg/TFMessage"
METADATA = "metadata.yaml"


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


class InputBag:
    """A rosbag2 opened for reading. Use as a context manager."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"bag {self.path} does not exist")
        if self.path.is_file():  # the storage file itself was given: the bag is its folder
            self.path = self.path.parent
        if not (self.path / METADATA).is_file():
            raise DataError(f"{self.path} is not a rosbag2 folder (no {METADATA})")
        self.metadata = _read_metadata(self.path)
        self._reader = None

    def __enter__(self) -> "InputBag":
        from rosbags.highlevel import AnyReader

        try:
            self._reader = AnyReader([self.path], default_typestore=_typestore())
            self._reader.open()
        except Exception as exc:  # rosbags raises many types (reader, storage, sqlite, mcap parse errors)
            raise DataError(f"bag {self.path} cannot be opened (unreadable or truncated?): "
                            f"{type(exc).__name__}: {exc}") from None
        return self

    def __exit__(self, *exc) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:  # closing a broken storage must not hide the error being raised
                pass
            self._reader = None

    # -- what is in it ----------------------------------------------------------------------------------------------

    @property
    def storage(self) -> str:
        return str(self.metadata.get("storage_identifier") or "unknown")

    @property
    def topics(self) -> Dict[str, str]:
        """topic -> message type, e.g. {'/rgb/image': 'sensor_msgs/msg/Image'}."""
        return {c.topic: c.msgtype for c in self._reader.connections}

    @property
    def start_ns(self) -> int:
        return int(self._reader.start_time)

    @property
    def end_ns(self) -> int:
        return int(self._reader.end_time)

    @property
    def custom_data(self) -> Dict[str, str]:
        return {str(k): str(v) for k, v in (self.metadata.get("custom_data") or {}).items()}

    def message_count(self, topic: str) -> int:
        return sum(c.msgcount for c in self._reader.connections if c.topic == topic)

    def require(self, expected: Mapping[str, str], why: str) -> None:
        """DataError naming the topics (topic -> message type) the bag lacks or carries with another type, and
        listing what it has."""
        have = self.topics
        missing = [t for t in expected if t not in have]
        if missing:
            listing = ", ".join(f"{t} ({m})" for t, m in sorted(have.items())) or "nothing"
            raise DataError(f"bag {self.path} has no {', '.join(missing)} ({why}); it has: {listing}")
        wrong = [f"{t} is {have[t]}, expected {m}" for t, m in expected.items() if have[t] != m]
        if wrong:
            raise DataError(f"bag {self.path}: {'; '.join(wrong)}")

    # -- reading ----------------------------------------------------------------------------------------------------

    def messages(self, topics: Iterable[str]) -> Iterator[Tuple[str, int, object]]:
        """(topic, log time ns, deserialised message) of `topics`, in log-time order."""
        wanted = set(topics)
        connections = [c for c in self._reader.connections if c.topic in wanted]
        if not connections:
            return
        stream = self._reader.messages(connections=connections)
        while True:
            try:
                connection, log_ns, raw = next(stream)
                message = self._reader.deserialize(raw, connection.msgtype)
            except StopIteration:
                return
            except Exception as exc:  # a storage cut short or corrupt fails here, with any of many types
                raise DataError(f"bag {self.path} is unreadable past this point (truncated or corrupt?): "
                                f"{type(exc).__name__}: {exc}") from None
            yield connection.topic, int(log_ns), message


def _read_metadata(path: Path) -> dict:
    try:
        with open(path / METADATA) as f:
            info = (yaml.safe_load(f) or {}).get("rosbag2_bagfile_information")
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"bag {path}: {METADATA} is unreadable: {exc}") from None
    if not isinstance(info, dict):
        raise DataError(f"bag {path}: {METADATA} has no rosbag2_bagfile_information")
    return info


class OutputBag:
    """A new rosbag2 of sensor_msgs/Image (and PointCloud2) topics, complete or absent. Use as a context manager:

        with OutputBag(path, "mcap", ["/segment_node/labels", ...], custom_data={...}) as bag:
            bag.write("/segment_node/labels", log_ns, image_msg)

    An existing bag at `path` is replaced only once the new one is complete."""

    def __init__(self, path, storage: str, topics: Iterable[str], custom_data: Optional[Mapping[str, str]] = None,
                 types: Optional[Mapping[str, str]] = None):
        """`topics` are Images unless `types` names another message type (POINTS_TYPE) for them."""
        if storage not in STORAGES:
            raise ConfigError(f"output storage must be one of {list(STORAGES)}, got {storage!r}")
        self.path = Path(path)
        self.storage = storage
        self.types = {t: (types or {}).get(t, IMAGE_TYPE) for t in topics}
        unknown = {t: kind for t, kind in self.types.items() if kind not in (IMAGE_TYPE, POINTS_TYPE)}
        if unknown:
            raise ConfigError(f"output topics of unsupported types: {unknown}")
        self.topics = tuple(self.types)
        self.custom_data = dict(custom_data or {})
        self.counts: Dict[str, int] = {t: 0 for t in self.topics}

    def __enter__(self) -> "OutputBag":
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._staging = Path(tempfile.mkdtemp(prefix=f".tmp-{self.path.name}-", dir=self.path.parent))
        try:  # __exit__ does not run when __enter__ fails (e.g. disk full as the storage file is created)
            self._store = _typestore()
            plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[self.storage]
            self._writer = Writer(self._staging / self.path.name, version=Writer.VERSION_LATEST, storage_plugin=plugin)
            self._writer.open()
            self._connections = {t: self._writer.add_connection(t, kind, typestore=self._store)
                                 for t, kind in self.types.items()}
        except BaseException:
            shutil.rmtree(self._staging, ignore_errors=True)
            raise
        return self

    def write(self, topic: str, log_ns: int, message) -> None:
        kind = self.types[topic]
        typed = self._image(message) if kind == IMAGE_TYPE else self._cloud(message)
        data = self._store.serialize_cdr(typed, kind)
        self._writer.write(self._connections[topic], int(log_ns), data)
        self.counts[topic] += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                for key, value in self.custom_data.items():
                    self._writer.set_custom_data(key, str(value))
            self._writer.close()
            if exc_type is None:
                self._publish()
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)

    def _publish(self) -> None:
        """Rename the finished bag into place; an older bag there goes only after the new one is in."""
        old = None
        if self.path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".old-{self.path.name}-", dir=self.path.parent))
            os.replace(self.path, old / self.path.name)
        os.replace(self._staging / self.path.name, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _header(self, msg):
        t = self._store.types
        stamp = msg.header.stamp
        return t["std_msgs/msg/Header"](
            stamp=t["builtin_interfaces/msg/Time"](sec=int(stamp.sec), nanosec=int(stamp.nanosec)),
            frame_id=str(msg.header.frame_id))

    def _cloud(self, msg):
        t = self._store.types
        fields = [t["sensor_msgs/msg/PointField"](name=str(f.name), offset=int(f.offset), datatype=int(f.datatype),
                                                   count=int(f.count)) for f in msg.fields]
        return t["sensor_msgs/msg/PointCloud2"](
            header=self._header(msg), height=int(msg.height), width=int(msg.width), fields=fields,
            is_bigendian=bool(msg.is_bigendian), point_step=int(msg.point_step), row_step=int(msg.row_step),
            data=np.frombuffer(bytes(msg.data), np.uint8), is_dense=bool(msg.is_dense))

    def _image(self, msg):
        t = self._store.types
        header = self._header(msg)
        return t["sensor_msgs/msg/Image"](
            header=header, height=int(msg.height), width=int(msg.width), encoding=str(msg.encoding),
            is_bigendian=int(msg.is_bigendian), step=int(msg.step), data=np.frombuffer(bytes(msg.data), np.uint8))
