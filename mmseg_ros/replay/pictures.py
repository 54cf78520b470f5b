"""Pictures of a replay: a PNG contact sheet (camera | labels | confidence | sensors used, a few rows across the
drop-outs) and an animated GIF of the drive (camera | labels over camera | sensors used).

`Recorder` is a `watch` callback for `replay_offline`: it keeps small tiles of every frame (a few tens of KB each),
so a drive of a few hundred frames costs a few MB.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .. import preprocess
from ..atomic import atomic_path
from ..pipeline.config import CAMERA
from ..drops import Drop
from ..pipeline import SegmentedSet

BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
USED, ABSENT = (40, 170, 80), (150, 40, 40)
FONT = cv2.FONT_HERSHEY_SIMPLEX
TRUTH_SLOP_NS = 50_000_000
BIRD_EYE_REACH_M = 40.0  # the bird's-eye tile shows this far ahead of the LiDAR


@dataclass
class Tiles:
    stamp_ns: int
    time_s: float
    anchor: str
    used: Tuple[str, ...]
    camera: np.ndarray  # RGB tiles, all tile x tile
    labels: np.ndarray
    overlay: np.ndarray
    confidence: np.ndarray
    sensors: np.ndarray
    points: Optional[np.ndarray] = None  # bird's-eye view of the painted LiDAR points (outputs.points)


class Recorder:
    def __init__(self, class_set, modalities: Sequence[str], tile: int = 128):
        self.class_set = class_set
        self.modalities = tuple(modalities)
        self.tile = int(tile)
        self.frames: List[Tiles] = []

    def __call__(self, frame: SegmentedSet, time_s: float) -> None:
        size = (self.tile, self.tile)
        camera = (frame.images or {}).get(CAMERA)
        if camera is not None:
            camera = np.clip(preprocess.to_unit(CAMERA, camera) * 255 + 0.5, 0, 255).astype(np.uint8)
            camera = cv2.resize(camera, size, interpolation=cv2.INTER_AREA)
        else:
            camera = _caption(np.full((self.tile, self.tile, 3), 60, np.uint8), "camera out", 0.5)
        labels = cv2.resize(self.class_set.colorize(frame.labels), size, interpolation=cv2.INTER_NEAREST)
        confidence = (np.clip(frame.confidence, 0, 1) * 255).astype(np.uint8)
        confidence = cv2.cvtColor(cv2.applyColorMap(confidence, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)
        confidence = cv2.resize(confidence, size, interpolation=cv2.INTER_AREA)
        overlay = labels if CAMERA not in frame.used else \
            (0.55 * labels + 0.45 * camera.astype(np.float32)).astype(np.uint8)
        points = None if frame.points is None else self._bird_eye(frame.points)
        self.frames.append(Tiles(frame.stamp_ns, time_s, frame.anchor, frame.used, camera, labels, overlay,
                                 confidence, self._sensors(frame, time_s), points))

    def _bird_eye(self, painted: np.ndarray, reach_m: float = BIRD_EYE_REACH_M) -> np.ndarray:
        """Painted points seen from above in the LiDAR's frame (x forward = up, y left = left), each in its class
        colour; unlabeled points (outside the camera's view) grey. `reach_m` metres ahead fill the tile."""
        tile = np.full((self.tile, self.tile, 3), BACKGROUND, np.uint8)
        x, y = painted["x"].astype(np.float64), painted["y"].astype(np.float64)
        scale = (self.tile - 1) / reach_m
        with np.errstate(invalid="ignore"):
            row = np.floor(self.tile - 1 - x * scale).astype(np.int64, copy=False)
            col = np.floor(self.tile / 2 - y * scale).astype(np.int64, copy=False)
            inside = np.isfinite(x) & np.isfinite(y) & (row >= 0) & (row < self.tile) & (col >= 0) & (col < self.tile)
        label = painted["label"].astype(np.int64)
        labelled = label < len(self.class_set.colors)
        palette = np.asarray(self.class_set.colors, np.uint8)
        grey = inside & ~labelled  # drawn first: the camera's labelled points go on top
        shown = inside & labelled
        for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1)):  # 2x2 dots: one pixel per point is hard to see
            r, c = np.minimum(row + dr, self.tile - 1), np.minimum(col + dc, self.tile - 1)
            tile[r[grey], c[grey]] = (90, 90, 90)
        for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1)):
            r, c = np.minimum(row + dr, self.tile - 1), np.minimum(col + dc, self.tile - 1)
            tile[r[shown], c[shown]] = palette[label[shown]]
        return tile

    def _sensors(self, frame: SegmentedSet, time_s: float) -> np.ndarray:
        """One bar per modality: green when the engine received it, red when not."""
        panel = np.full((self.tile, self.tile, 3), BACKGROUND, np.uint8)
        rows = len(self.modalities)
        height = self.tile // (rows + 1)
        for i, name in enumerate(self.modalities):
            top = (i + 1) * height - height // 2
            color = USED if name in frame.used else ABSENT
            cv2.rectangle(panel, (6, top), (self.tile - 6, top + height - 4), color, -1)
            label = name + (" *" if name == frame.anchor else "")
            cv2.putText(panel, label, (10, top + height - 10), FONT, 0.4, TEXT, 1, cv2.LINE_AA)
        cv2.putText(panel, f"t={time_s:.1f}s", (6, self.tile - 6), FONT, 0.35, TEXT, 1, cv2.LINE_AA)
        return panel

    # -- outputs --------------------------------------------------------------------------------------------------

    def pick(self, drops: Sequence[Drop], rows: int = 6) -> List[Tiles]:
        """Frames for the sheet: one before the first drop-out, two in each window, one between and one after."""
        if not self.frames:
            return []
        times = [f.time_s for f in self.frames]
        wanted = [times[0] + 0.3]
        ordered = sorted(drops, key=lambda d: d.start_s)
        for i, drop in enumerate(ordered):
            span = drop.end_s - drop.start_s
            wanted += [drop.start_s + 0.3 * span, drop.start_s + 0.8 * span]
            following = ordered[i + 1].start_s if i + 1 < len(ordered) else times[-1]
            if following - drop.end_s > 0.3:
                wanted.append(min(drop.end_s + 0.3, (drop.end_s + following) / 2))
        if not drops:
            wanted = list(np.linspace(times[0], times[-1], rows))
        picked = []
        for t in wanted:
            index = int(np.argmin([abs(x - t) for x in times]))
            if index not in picked:
                picked.append(index)
        return [self.frames[i] for i in sorted(picked)]

    def contact_sheet(self, path, drops: Sequence[Drop] = (), title: str = "",
                      truth: Optional[Dict[int, np.ndarray]] = None) -> Path:
        """`truth`: ground-truth label images by stamp (a column is added for the frames that have one)."""
        picked = self.pick(drops)
        bird_eye = any(t.points is not None for t in picked)
        columns = ("camera", *(("ground truth",) if truth else ()), "labels", "confidence", "sensors used",
                   *(("LiDAR points, top",) if bird_eye else ()))
        gap, margin, header = 4, 110, 22
        width = margin + len(columns) * (self.tile + gap)
        height = header + len(picked) * (self.tile + gap) + (18 if title else 0)
        sheet = np.full((height, width, 3), BACKGROUND, np.uint8)
        top = 0
        if title:
            cv2.putText(sheet, title, (6, 13), FONT, 0.42, TEXT, 1, cv2.LINE_AA)
            top = 18
        for c, name in enumerate(columns):
            cv2.putText(sheet, name, (margin + c * (self.tile + gap) + 4, top + 15), FONT, 0.45, TEXT, 1, cv2.LINE_AA)
        for r, tiles in enumerate(picked):
            y = top + header + r * (self.tile + gap)
            windows = [f"{d.sensor} out" for d in drops if d.during(tiles.time_s)]
            lines = [f"t = {tiles.time_s:.1f} s", *(windows or ["all sensors"])]
            for k, line in enumerate(lines):
                cv2.putText(sheet, line, (4, y + 20 + 16 * k), FONT, 0.42, TEXT, 1, cv2.LINE_AA)
            images = [tiles.camera, tiles.labels, tiles.confidence, tiles.sensors]
            if bird_eye:
                images.append(tiles.points if tiles.points is not None else
                              _caption(np.full((self.tile, self.tile, 3), 60, np.uint8), "no cloud", 0.45))
            if truth:
                nearest = min(truth, key=lambda stamp: abs(stamp - tiles.stamp_ns))
                near = abs(nearest - tiles.stamp_ns) <= TRUTH_SLOP_NS  # a depth-anchored frame is ~1 ms off
                images.insert(1, self._truth_tile(truth[nearest] if near else None))
            for c, image in enumerate(images):
                x = margin + c * (self.tile + gap)
                sheet[y:y + self.tile, x:x + self.tile] = image
        return _write_png(path, sheet)

    def _truth_tile(self, labels: Optional[np.ndarray]) -> np.ndarray:
        if labels is None:
            return _caption(np.full((self.tile, self.tile, 3), 60, np.uint8), "no ground truth", 0.4)
        return cv2.resize(self.class_set.colorize(labels), (self.tile, self.tile), interpolation=cv2.INTER_NEAREST)

    def animation(self, path, tile: Optional[int] = None, fps: float = 10.0) -> Path:
        """Animated GIF: camera | labels over the camera | sensors used, one image per frame."""
        from PIL import Image

        tile = tile or self.tile
        images = []
        for tiles in self.frames:
            row = np.concatenate([tiles.camera, tiles.overlay, tiles.sensors], axis=1)
            if tile != self.tile:
                row = cv2.resize(row, (3 * tile, tile), interpolation=cv2.INTER_AREA)
            images.append(Image.fromarray(row).quantize(colors=128, method=Image.Quantize.MEDIANCUT))
        if not images:
            raise ValueError("no frames recorded")
        with atomic_path(path, suffix=".gif") as tmp:
            images[0].save(tmp, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        return Path(path)


def _caption(image: np.ndarray, text: str, scale: float) -> np.ndarray:
    (w, h), _ = cv2.getTextSize(text, FONT, scale, 1)
    cv2.putText(image, text, ((image.shape[1] - w) // 2, (image.shape[0] + h) // 2), FONT, scale, TEXT, 1, cv2.LINE_AA)
    return image


def _write_png(path, rgb: np.ndarray) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(rgb[..., ::-1])):
            raise OSError(f"could not write {path}")
    return Path(path)


def truth_from_bag(bag, topic: str) -> Dict[int, np.ndarray]:
    """Ground-truth label images of a bag by stamp (for the contact sheet's ground-truth column)."""
    from ..sync import stamp_to_ns
    from .bagio import InputBag
    from .offline import decode_labels

    with InputBag(bag) as recorded:
        return {stamp_to_ns(m.header.stamp): decode_labels(m).copy() for _, _, m in recorded.messages([topic])}


def write_pictures(recorder: Recorder, out, drops: Sequence[Drop], title: str, truth=None, gif: bool = True,
                   prefix: str = "") -> List[Path]:
    """<out>/<prefix>sheet.png and, with gif, <out>/<prefix>drive.gif; returns the paths written."""
    written = [recorder.contact_sheet(Path(out) / f"{prefix}sheet.png", drops, title=title, truth=truth)]
    if gif:
        written.append(recorder.animation(Path(out) / f"{prefix}drive.gif"))
    return written
