"""DELIVER loader (layout and label mapping of jamycheung/DELIVER, semseg/datasets/deliver.py).

Tree: `<root>/{img,hha,depth,event,lidar,semantic}/<condition>/<split>/<scene>/<frame>_<kind>_front.png`. Frames
are the sorted `img/*/<split>/*/*.png`; every other file is found by swapping the top folder (`img` -> `hha`, ...)
and the `_rgb` in the file name for the folder's kind (`_depth`, `_event`, `_lidar`, `_semantic`).

* depth: the HHA encoding by default (`depth_source='hha'`, 8-bit, what the public models use); `'depth'` reads
  the `depth/` folder, which our generator writes as 16-bit millimetres (metric, the node's 16UC1 form).
* event: resized NEAREST to the camera size (DELIVER stores it at a lower resolution).
* lidar: 8-bit PNGs in DELIVER itself (rendered images), 16-bit millimetres from our generator; both are kept as
  stored, `preprocess.to_unit` tells them apart by dtype.
* label: channel 0 of the semantic PNG; raw 0 -> 255 (ignore), raw k in 1..K -> k - 1, anything above -> 255.
* cases: the public loader keeps the files whose full path contains the case name. Failure cases are marked by
  their name in the scene folder (e.g. `MAP_10_point102_lidarjitter`) and are matched as substrings of the path
  below the split folder; conditions are matched as the folder under `img/` (a bare substring would take every
  `train` frame for 'rain', and a root such as `/data/sunny/` for 'sun').
"""
from __future__ import annotations

import glob
import os
from typing import Iterable, Optional, Sequence

from .. import modalities
from ..errors import DataError
from . import common

CONDITIONS = ("cloud", "fog", "night", "rain", "sun")
FAILURES = ("motionblur", "overexposure", "underexposure", "lidarjitter", "eventlowres")
CASES = CONDITIONS + FAILURES
SPLITS = ("train", "val", "test")
DEPTH_SOURCES = ("hha", "depth")

CAMERA_FOLDER, CAMERA_KIND = "img", "_rgb"
LABEL_FOLDER, LABEL_KIND = "semantic", "_semantic"
LABEL_OFFSET = 1  # DELIVER stores class k as k + 1; 0 is unlabeled


def _folder_of(modality: str, depth_source: str) -> str:
    """DELIVER's folder names are registry aliases (img -> rgb, hha -> depth); depth has two folders."""
    name = modalities.get(modality).name
    if name == modalities.get(CAMERA_FOLDER).name:
        return CAMERA_FOLDER
    if name == modalities.get(DEPTH_SOURCES[0]).name:
        return depth_source
    return name


def _kind_of(folder: str) -> str:
    return CAMERA_KIND if folder == CAMERA_FOLDER else "_" + ("depth" if folder in DEPTH_SOURCES else folder)


def _cases(case) -> tuple:
    chosen = () if case is None else ((case,) if isinstance(case, str) else tuple(case))
    unknown = [c for c in chosen if c not in CASES]
    if unknown:
        raise DataError(f"DELIVER: unknown case {unknown}; known: {list(CASES)}")
    return chosen


class Deliver(common.RawFrameDataset):
    """DELIVER frames as sample dicts (see data.common). `modalities`: any of rgb, depth, event, lidar.

    `case`: None (all), one name or a list of names from CASES; a frame is kept if it matches any of them.
    """

    dataset_name = "DELIVER"
    available = tuple(modalities.get(folder).name for folder in (CAMERA_FOLDER, "hha", "event", "lidar"))

    def __init__(self, root: str | os.PathLike, split: str = "train", modalities: Optional[Iterable[str]] = None,
                 transform=None, case=None, depth_source: str = "hha", class_set: str = "deliver"):
        if split not in SPLITS:
            raise DataError(f"DELIVER: split must be one of {list(SPLITS)}, got {split!r}")
        if depth_source not in DEPTH_SOURCES:
            raise DataError(f"DELIVER: depth_source must be one of {list(DEPTH_SOURCES)}, got {depth_source!r}")
        super().__init__(common.select_modalities(modalities, self.available, self.dataset_name), class_set, transform)
        self.root = os.path.abspath(common.require_dir(root, "DELIVER root"))
        common.require_dir(os.path.join(self.root, CAMERA_FOLDER), "DELIVER camera folder")
        self.split, self.depth_source, self.cases = split, depth_source, _cases(case)
        pattern = os.path.join(self.root, CAMERA_FOLDER, "*", split, "*", "*.png")
        relative = sorted(os.path.relpath(p, self.root) for p in glob.glob(pattern))
        if self.cases:
            relative = [r for r in relative if _matches(r, self.cases)]
        self.frames = relative
        self._require_frames(f"{pattern}" + (f" for cases {list(self.cases)}" if self.cases else ""))

    def file_for(self, index: int, folder: str) -> str:
        """Path of frame `index` in another top folder (hha, depth, event, lidar, semantic)."""
        relative = self.frames[index]
        head, file_name = os.path.split(relative.split(os.sep, 1)[1])
        return os.path.join(self.root, folder, head, file_name.replace(CAMERA_KIND, _kind_of(folder), 1))

    def load_raw(self, index: int) -> dict:
        camera_path = os.path.join(self.root, self.frames[index])
        camera = common.read_image(camera_path)
        height, width = camera.shape[:2]
        inputs = {}
        for name in self.modalities:
            folder = _folder_of(name, self.depth_source)
            array = camera if folder == CAMERA_FOLDER else common.read_image(self.file_for(index, folder))
            if folder == "event":
                array = common.resize_nearest(array, height, width)
            elif array.shape[:2] != (height, width):
                raise DataError(f"{self.file_for(index, folder)}: size {array.shape[:2]} != camera {(height, width)}")
            inputs[name] = array
        raw_label = common.read_image(self.file_for(index, LABEL_FOLDER))
        raw_label = raw_label[:, :, 0] if raw_label.ndim == 3 else raw_label
        if raw_label.shape != (height, width):
            raise DataError(f"{self.file_for(index, LABEL_FOLDER)}: size {raw_label.shape} != camera {(height, width)}")
        return {"inputs": inputs, "label": common.train_ids(raw_label, self.num_classes, LABEL_OFFSET),
                "meta": self._meta(index, camera_path)}

    def _meta(self, index: int, camera_path: str) -> dict:
        parts = self.frames[index].split(os.sep)  # img, condition, split, scene, file
        name = "/".join(parts[1:])[: -len(".png")]
        return common.make_meta(parts[1], case_of(os.path.join(*parts[3:])), camera_path, name)


def case_of(scene_and_file: str) -> Optional[str]:
    """The failure case named in a DELIVER scene folder / file name, or None."""
    return next((f for f in FAILURES if f in scene_and_file), None)


def _matches(relative: str, cases: Sequence[str]) -> bool:
    parts = relative.split(os.sep)  # img, condition, split, scene, file
    below_split = os.path.join(*parts[3:])
    return any(parts[1] == c if c in CONDITIONS else c in below_split for c in cases)


def scene_folder(scene: str, failure: Optional[str]) -> str:
    """Scene folder name marking a failure case the way DELIVER's case selection finds it."""
    if failure is not None and failure not in FAILURES:
        raise DataError(f"DELIVER: unknown failure case {failure!r}; known: {list(FAILURES)}")
    return scene if failure is None else f"{scene}_{failure}"


def frame_file(frame: str, folder: str) -> str:
    """File name of frame `frame` (e.g. '000123') in a top folder: '000123_rgb_front.png', '..._depth_front.png'."""
    return f"{frame}{_kind_of(folder)}_front.png"


__all__: Sequence[str] = ("Deliver", "CONDITIONS", "FAILURES", "CASES", "case_of", "scene_folder", "frame_file")
