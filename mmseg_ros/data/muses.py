"""MUSES loader: frame camera + event camera and LiDAR projected into it, 19 Cityscapes train ids.

Layout (MUSES SDK README and `scripts/project_sensors_to_rgb.py`; the per-condition nesting as in public MUSES
dataset configs):

    <root>/frame_camera/<split>/<weather>/<time>/<name>_frame_camera.png
    <root>/gt_semantic/<split>/<weather>/<time>/<name>_gt_labelTrainIds.png          (train and val only)
    <root>/projected_to_rgb/event_camera/<split>/<weather>/<time>/<name>_event_camera.npz
    <root>/projected_to_rgb/lidar/<split>/<weather>/<time>/<name>_lidar.npz

weather in clear/fog/rain/snow, time in day/night. The projection script saves each image positionally with
`np.savez_compressed` (key `arr_0`) at 1920x1080: events as uint8 (H, W, 3) with the positive / negative counts of
the last 30 ms in channels 0 / 1; LiDAR as float32 (H, W, 3) = range (m), intensity, height, 0 where no point.
Assumption where the SDK does not say: projected images that are not the camera size are resized NEAREST to it.

What the node receives for LiDAR is a range image, so `lidar` is the range channel (float metres, 0 = no return);
intensity and height are not used. Test labels are withheld: test samples get an all-ignore (255) label and
meta["labelled"] = False (True elsewhere).
"""
from __future__ import annotations

import glob
import os
from typing import Iterable, Optional

import numpy as np

from .. import modalities
from ..errors import DataError
from . import common

WEATHERS = ("clear", "fog", "rain", "snow")
TIMES_OF_DAY = ("day", "night")
SPLITS = ("train", "val", "test")
LABELLED_SPLITS = ("train", "val")

CAMERA_SUFFIX = "_frame_camera"
LABEL_FOLDER, LABEL_SUFFIX = "gt_semantic", "_gt_labelTrainIds.png"
PROJECTED_FOLDER = "projected_to_rgb"
# modality -> (folder under projected_to_rgb, file suffix)
PROJECTED = {
    modalities.get("event").name: ("event_camera", "_event_camera.npz"),
    modalities.get("lidar").name: ("lidar", "_lidar.npz"),
}
LIDAR_RANGE_CHANNEL = 0


def _condition_filter(conditions) -> tuple:
    chosen = () if conditions is None else ((conditions,) if isinstance(conditions, str) else tuple(conditions))
    known = set(WEATHERS) | set(TIMES_OF_DAY) | {f"{w}_{t}" for w in WEATHERS for t in TIMES_OF_DAY}
    unknown = [c for c in chosen if c not in known]
    if unknown:
        raise DataError(f"MUSES: unknown condition {unknown}; use a weather {list(WEATHERS)}, a time of day "
                        f"{list(TIMES_OF_DAY)} or 'weather_time' such as 'fog_night'")
    return chosen


class Muses(common.RawFrameDataset):
    """MUSES frames as sample dicts (see data.common). `modalities`: any of rgb, event, lidar.

    `conditions`: None (all) or names such as 'fog', 'night', 'fog_night'; a frame is kept if any matches.
    meta["condition"] is '<weather>_<time>', meta["case"] is None.
    """

    dataset_name = "MUSES"
    available = (modalities.get("camera").name, *PROJECTED)

    def __init__(self, root: str | os.PathLike, split: str = "train", modalities: Optional[Iterable[str]] = None,
                 transform=None, conditions=None, class_set: str = "cityscapes"):
        if split not in SPLITS:
            raise DataError(f"MUSES: split must be one of {list(SPLITS)}, got {split!r}")
        super().__init__(common.select_modalities(modalities, self.available, self.dataset_name), class_set, transform)
        self.root = os.path.abspath(common.require_dir(root, "MUSES root"))
        camera_root = common.require_dir(os.path.join(self.root, "frame_camera", split), f"MUSES {split} camera")
        self.split, self.conditions = split, _condition_filter(conditions)
        pattern = os.path.join(camera_root, "*", "*", f"*{CAMERA_SUFFIX}.*")
        frames = []
        for path in sorted(glob.glob(pattern)):
            weather, time_of_day, file_name = os.path.relpath(path, camera_root).split(os.sep)
            condition = f"{weather}_{time_of_day}"
            if self.conditions and not {weather, time_of_day, condition} & set(self.conditions):
                continue
            frames.append((weather, time_of_day, file_name[: file_name.rindex(CAMERA_SUFFIX)], path))
        self.frames = frames
        self._require_frames(pattern + (f" for conditions {list(self.conditions)}" if self.conditions else ""))

    def _path(self, index: int, *folders_and_suffix: str) -> str:
        weather, time_of_day, name, _ = self.frames[index]
        *folders, suffix = folders_and_suffix
        return os.path.join(self.root, *folders, self.split, weather, time_of_day, name + suffix)

    def load_raw(self, index: int) -> dict:
        weather, time_of_day, name, camera_path = self.frames[index]
        camera = common.read_image(camera_path)
        height, width = camera.shape[:2]
        inputs = {}
        for modality in self.modalities:
            if modality not in PROJECTED:
                inputs[modality] = camera
                continue
            folder, suffix = PROJECTED[modality]
            array = common.read_array(self._path(index, PROJECTED_FOLDER, folder, suffix))
            if modality == modalities.get("lidar").name:
                array = np.ascontiguousarray(array[..., LIDAR_RANGE_CHANNEL] if array.ndim == 3 else array, np.float32)
            inputs[modality] = common.resize_nearest(array, height, width)
        labelled = self.split in LABELLED_SPLITS
        if labelled:
            label_path = self._path(index, LABEL_FOLDER, LABEL_SUFFIX)
            raw_label = common.read_image(label_path)
            if raw_label.shape[:2] != (height, width):
                raise DataError(f"{label_path}: size {raw_label.shape[:2]} != camera {(height, width)}")
            label = common.train_ids(raw_label if raw_label.ndim == 2 else raw_label[:, :, 0], self.num_classes)
        else:
            label = np.full((height, width), common.IGNORE_INDEX, np.uint8)
        meta = common.make_meta(f"{weather}_{time_of_day}", None, camera_path, f"{weather}/{time_of_day}/{name}",
                                labelled=labelled)
        return {"inputs": inputs, "label": label, "meta": meta}
