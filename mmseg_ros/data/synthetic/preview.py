"""Contact sheets: RGB | depth | events | LiDAR | labels side by side, one row per frame, for people to look at."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ...atomic import atomic_path
from .scene import class_set

COLUMNS = ("rgb", "depth", "event", "lidar", "labels")


def metric_to_color(metres: np.ndarray, max_m: float, dilate: int = 0) -> np.ndarray:
    """Metric image -> rgb8 (near = bright); no value (0, inf) = black. `dilate` grows sparse points."""
    valid = np.isfinite(metres) & (metres > 0)
    scaled = np.zeros(metres.shape, np.float32)
    scaled[valid] = 1.0 - np.log(np.clip(metres[valid], 1.0, max_m)) / np.log(max_m)
    color = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1].copy()
    color[~valid] = 0
    if dilate > 0:
        kernel = np.ones((dilate, dilate), np.uint8)
        grown = cv2.dilate(np.where(valid[..., None], color, 0).astype(np.uint8), kernel)
        color = np.where(cv2.dilate(valid.astype(np.uint8), kernel)[..., None] > 0, grown, color)
    return color


def frame_row(frame: dict, max_m: float = 65.0) -> np.ndarray:
    """One frame as a row of tiles (H, 5 W, 3) uint8."""
    palette = class_set()
    size = frame["rgb"].shape[0]
    lidar = metric_to_color(frame["lidar"], max_m, dilate=max(2, size // 128))
    tiles = [frame["rgb"], metric_to_color(frame["depth"], max_m), frame["event"], lidar,
             palette.colorize(frame["labels"])]
    return np.concatenate(tiles, axis=1)


def contact_sheet(rows, titles=None, tile: int | None = None) -> np.ndarray:
    """Stack frame rows; optional left-hand titles (e.g. the condition) and tile size for a smaller sheet."""
    out = []
    for i, row in enumerate(rows):
        if tile is not None and row.shape[0] != tile:
            row = cv2.resize(row, (tile * len(COLUMNS), tile), interpolation=cv2.INTER_AREA)
        row = row.copy()
        if titles is not None:
            cv2.putText(row, titles[i], (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(row, titles[i], (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        out.append(row)
    return np.concatenate(out, axis=0)


def write_png(path, image_rgb: np.ndarray) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(image_rgb[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
            raise OSError(f"could not write {path}")
        os.chmod(tmp, 0o644)  # a picture for people, not a private temp file


def write_previews(path, conditions, seed: int = 0, size: int = 256, tile: int = 160, failures=(), frame: int = 10,
                   scenes: int = 2):
    """PATH: one row per condition (same street, same instant) at `tile` px; PATH_<condition>.png: `scenes`
    streets under that condition at `size` px; PATH_failures.png: one row per failure (sun). Returns the paths."""
    from .generator import SceneGenerator

    path = Path(path)
    stem, suffix = path.with_suffix(""), path.suffix or ".png"
    written = []
    combined = []
    for condition in conditions:
        rows = [frame_row(SceneGenerator(seed + s, size, condition).render_frame(frame)) for s in range(scenes)]
        combined.append(rows[0])
        out = Path(f"{stem}_{condition}{suffix}")
        write_png(out, contact_sheet(rows, [f"{condition} seed {seed + s}" for s in range(scenes)]))
        written.append(out)
    write_png(path, contact_sheet(combined, list(conditions), tile))
    written.insert(0, path)
    if failures:
        rows = [frame_row(SceneGenerator(seed, size, "sun", f).render_frame(frame)) for f in failures]
        out = Path(f"{stem}_failures{suffix}")
        write_png(out, contact_sheet(rows, list(failures), tile))
        written.append(out)
    return written
