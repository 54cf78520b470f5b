"""How generated arrays are stored, in one place: the DELIVER tree and the rosbag2 writer both call these, so a
model trained on the tree sees the same numbers as one replaying the bag (through mmseg_ros.preprocess).

    depth, lidar  tree: 16-bit PNG, millimetres, 0 = no value   bag: 32FC1 metres, 0 = no value
                  (z-depth along the camera axis; values beyond 65.535 m cannot be stored and are never produced)
    hha           tree only: 3 x 8 bit (Gupta et al. 2014), see `hha`
    event         uint8 (H, W, 3): channel 0 positive, 1 negative counts x count_scale, clipped; same bytes in both
    labels        tree: 8-bit PNG of DELIVER raw ids (train id + 1, 0 = ignore)   bag: mono8 train ids, 255 ignore
"""
from __future__ import annotations

import numpy as np

from ...classes import IGNORE_INDEX

MM_PER_M = 1000.0
# HHA scales: disparity 310 / depth[m] (Gupta's 31000 / depth[cm]); height above ground 10 per metre (0..25.5 m);
# angle between the surface normal and "up" in degrees, offset like Gupta's: horizontal 38, vertical 128.
HHA_DISPARITY = 310.0
HHA_HEIGHT_PER_M = 10.0
HHA_ANGLE_OFFSET = 38.0


def metres(image: np.ndarray) -> np.ndarray:
    """Float metres with 0 for "no value" (sky, beyond range, no LiDAR return): the bag's 32FC1 payload."""
    out = np.asarray(image, np.float32).copy()
    out[~np.isfinite(out) | (out < 0)] = 0.0
    return out


def millimetres(image: np.ndarray) -> np.ndarray:
    """Float metres (inf/0 = no value) -> uint16 millimetres, 0 = no value (the tree's 16-bit PNGs)."""
    m = metres(image)
    return np.clip(np.round(m * MM_PER_M), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def raw_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Train ids (IGNORE_INDEX or anything >= num_classes = ignore) -> DELIVER raw ids (id + 1, 0 = ignore)."""
    labels = np.asarray(labels)
    return np.where(labels < num_classes, labels.astype(np.int32) + 1, 0).astype(np.uint8)


def train_ids(raw: np.ndarray) -> np.ndarray:
    """DELIVER raw ids -> train ids (the inverse of raw_labels)."""
    raw = np.asarray(raw).astype(np.int32)
    return np.where(raw == 0, IGNORE_INDEX, raw - 1).astype(np.uint8)


def hha(depth: np.ndarray, intrinsics, ego_from_camera: np.ndarray) -> np.ndarray:
    """HHA image (H, W, 3) uint8 from z-depth in metres, the camera matrix and the camera's mounting pose
    (4x4, camera optical frame -> ego frame whose z is up and whose origin is on the ground).
    Channels: horizontal disparity, height above ground, angle of the surface normal with gravity; 0 = no depth."""
    k = np.asarray(intrinsics, np.float64)
    h, w = depth.shape
    z = np.asarray(depth, np.float64)
    valid = np.isfinite(z) & (z > 0)
    z = np.where(valid, z, np.nan)
    u = (np.arange(w) + 0.5 - k[0, 2]) / k[0, 0]
    v = (np.arange(h) + 0.5 - k[1, 2]) / k[1, 1]
    camera = np.stack([u[None, :] * z, v[:, None] * z, z], axis=-1)
    ego = camera @ ego_from_camera[:3, :3].T + ego_from_camera[:3, 3]
    # Normals from neighbouring points; at depth edges the cross product is meaningless and gets dropped (NaN).
    du = np.gradient(ego, axis=1)
    dv = np.gradient(ego, axis=0)
    normal = np.cross(du, dv)
    length = np.linalg.norm(normal, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        normal = normal / length
        toward = ego_from_camera[:3, 3] - ego
        normal *= np.where((normal * toward).sum(-1, keepdims=True) < 0, -1.0, 1.0)
        angle = np.degrees(np.arccos(np.clip(normal[..., 2], -1.0, 1.0)))
        channels = [HHA_DISPARITY / z, ego[..., 2] * HHA_HEIGHT_PER_M, angle + HHA_ANGLE_OFFSET]
    out = np.zeros((h, w, 3), np.uint8)
    for i, c in enumerate(channels):
        ok = valid & np.isfinite(c)
        out[..., i][ok] = np.clip(np.round(c[ok]), 1, 255)  # 0 stays "no value"
    return out
