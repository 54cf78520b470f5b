"""LiDAR points into a camera: per-point pixels with a z-buffer, and the sparse range/depth image the models take.

One projection serves both directions: `project_cloud` says where every point of a cloud lands (in the cloud's own
point order, -1 where it lands nowhere: behind the camera, outside the image, beyond the distortion model's fold, or
hidden behind a nearer point at the same pixel), so the same pixels that built the LiDAR image can carry the
segmentation back onto the points, and which of those points the camera sees (`footprint_deg`: not hidden behind a
nearer return's footprint). `project_points` is the image-only path (no per-point arrays).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import MessageError
from .camera import Camera, camera_from_info
from .pointcloud import pointcloud_xyz

PROJECTION_VALUES = ("range", "depth")


def _extrinsic(matrix) -> np.ndarray:
    t = np.asarray(matrix, dtype=np.float64)
    if t.shape != (4, 4) or not np.isfinite(t).all() or not np.allclose(t[3], [0.0, 0.0, 0.0, 1.0]):
        raise MessageError(
            f"extrinsic must be a finite 4x4 rigid transform with last row [0, 0, 0, 1], got {t.tolist()}"
        )
    return t


def _visible(pts: np.ndarray, camera: Camera, extrinsic, min_depth: float):
    """(winners, flat pixels, camera z of all points): the indices of the points that own a pixel (in front, inside
    the image and the distortion model's fold, nearest at their pixel), and those pixels. NaN points never win."""
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise MessageError(f"points must have shape (N, 3), got {pts.shape}")
    t = _extrinsic(extrinsic)
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
        return hit, hit, z
    pixel = v[hit].astype(np.int64) * camera.width + u[hit].astype(np.int64)
    depth = z[hit]
    # One sort groups the points by pixel with the nearest first: the key is the pixel index plus the depth scaled
    # into [0, 1) (float64 keeps depth differences above ~1e-9 of the largest depth apart).
    order = np.argsort(pixel + depth / (depth.max() * (1 + 1e-6)))
    sorted_pixels = pixel[order]
    first = np.ones(order.size, dtype=bool)
    np.not_equal(sorted_pixels[1:], sorted_pixels[:-1], out=first[1:])
    return hit[order[first]], sorted_pixels[first], z


def _values(pts: np.ndarray, z: np.ndarray, winners: np.ndarray, value: str) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        if value == "range":
            w = pts[winners]
            values = np.sqrt(w[:, 0] ** 2 + w[:, 1] ** 2 + w[:, 2] ** 2).astype(np.float32)
        else:
            values = z[winners].astype(np.float32)
    values[~np.isfinite(values)] = 0.0  # beyond float32 (a broken driver's 1e39 m): no return, as documented
    return values


def _check_value(value: str) -> None:
    if value not in PROJECTION_VALUES:
        raise MessageError(f"value must be one of {PROJECTION_VALUES}, got {value!r}")


def project_points(points, camera: Camera, extrinsic, *, value: str = "range", min_depth: float = 1e-3) -> np.ndarray:
    """Project (N, 3) LiDAR points into `camera` as a float32 (height, width) image, 0 where no point lands.

    extrinsic: 4x4 transform taking LiDAR-frame points to the camera optical frame (z forward, x right, y down).
    value: 'range' writes the distance the LiDAR measured (norm in the LiDAR frame), 'depth' the camera z.
    Points with camera z <= min_depth (behind the camera) or beyond the distortion model's fold are dropped; where
    several points hit a pixel the one nearest to the camera (smallest z) wins.
    """
    _check_value(value)
    pts = np.asarray(points, dtype=np.float64)
    winners, pixels, z = _visible(pts, camera, extrinsic, min_depth)
    image = np.zeros((camera.height, camera.width), dtype=np.float32)
    if winners.size:
        image.reshape(-1)[pixels] = _values(pts, z, winners, value)
    return image


@dataclass(frozen=True)
class Projection:
    """Where each point of a cloud lands in a camera image, in the cloud's point order: `rows` / `cols` are -1 for
    a point that lands nowhere (behind, outside, past the fold, NaN, or hidden behind a nearer point)."""

    rows: np.ndarray  # (N,) int64
    cols: np.ndarray  # (N,) int64
    height: int
    width: int
    winners: np.ndarray  # indices of the visible points
    values: np.ndarray  # their image values (float32)
    seen: np.ndarray  # the winners the camera sees (not hidden behind a nearer return's footprint), in winners' order

    @property
    def visible(self) -> np.ndarray:
        return self.rows >= 0

    def image(self) -> np.ndarray:
        """The sparse image of the projected values, 0 where no point landed (what `project_points` returns)."""
        image = np.zeros((self.height, self.width), dtype=np.float32)
        image[self.rows[self.winners], self.cols[self.winners]] = self.values
        return image


def project_cloud(points, camera: Camera, extrinsic, *, value: str = "depth", min_depth: float = 1e-3,
                  footprint_deg: float = 0.0) -> Projection:
    """`project_points` keeping, for every point (NaN coordinates allowed: they land nowhere), the pixel it owns, and
    which of those points the camera sees when each return covers `footprint_deg` (see `hidden_behind_footprints`;
    0 = the z-buffer's pixel only: every winner is seen). The image (`winners`, `values`) does not depend on it."""
    _check_value(value)
    pts = np.asarray(points, dtype=np.float64)
    winners, pixels, z = _visible(pts, camera, extrinsic, min_depth)
    rows = np.full(len(pts), -1, dtype=np.int64)
    cols = np.full(len(pts), -1, dtype=np.int64)
    rows[winners], cols[winners] = np.divmod(pixels, camera.width)
    seen = winners
    radii = footprint_radii(camera, footprint_deg)
    if winners.size and any(radii):
        seen = winners[~hidden_behind_footprints(pixels, z[winners], camera.height, camera.width, radii)]
    return Projection(rows, cols, camera.height, camera.width, winners, _values(pts, z, winners, value), seen)


# A point counts as hidden behind a nearer return when it is farther by more than both of these: 0.5 m keeps the
# returns of one surface together at short range (range noise, and a car's or a wall's own relief within a
# footprint), 15 % keeps a surface seen at a slant together farther out, where one footprint spans more depth.
OCCLUSION_MARGIN_M = 0.5
OCCLUSION_MARGIN_RELATIVE = 0.15


def footprint_radii(camera: Camera, footprint_deg: float) -> tuple:
    """(rows, cols): the half-size in pixels of a return's footprint `footprint_deg` wide, through the camera's focal
    lengths (at the image centre: the footprint is an approximation, not a beam model)."""
    if footprint_deg <= 0:
        return 0, 0
    half = np.tan(np.radians(footprint_deg) / 2)
    return int(np.floor(camera.k[1, 1] * half + 0.5)), int(np.floor(camera.k[0, 0] * half + 0.5))


def hidden_behind_footprints(pixels: np.ndarray, depths: np.ndarray, height: int, width: int,
                             radii: tuple) -> np.ndarray:
    """Which of the points at flat `pixels` (one per pixel, camera z `depths`) are hidden from the camera: a nearer
    return within (rows, cols) `radii` pixels, nearer by more than the occlusion margins. LiDAR returns are sparse
    in the image (a beam every few pixels), so the z-buffer alone lets a point behind a thin or near object, seen
    by the LiDAR past it from its other mount, keep the label of the object the camera sees there; giving each
    return a footprint fills the gaps between beams with the nearest surface."""
    import cv2

    nearest = np.full(height * width, np.inf, dtype=np.float32)
    nearest[pixels] = depths
    rows, cols = radii
    # Erosion is a minimum filter: the nearest return within the footprint, infinity where there is none.
    nearest = cv2.erode(nearest.reshape(height, width), np.ones((2 * rows + 1, 2 * cols + 1), np.uint8),
                        borderType=cv2.BORDER_REPLICATE).reshape(-1)
    margin = np.maximum(OCCLUSION_MARGIN_M, OCCLUSION_MARGIN_RELATIVE * depths)
    return depths - nearest[pixels] > margin


def cloud_xyz(points: np.ndarray, names: Sequence[str] = ("x", "y", "z")) -> np.ndarray:
    """(N, 3) float64 coordinates of every point of a decoded cloud, NaN ones included (the point order is what
    painted clouds keep)."""
    available = points.dtype.names or ()
    missing = [n for n in names if n not in available]
    if missing:
        raise MessageError(f"PointCloud2 has no field(s) {missing}; fields: {list(available)}")
    xyz = np.empty((points.size, 3), dtype=np.float64)
    for column, name in enumerate(names):
        if points.dtype[name].shape:
            raise MessageError(f"PointCloud2 field {name!r} has count {points.dtype[name].shape[0]}, expected 1")
        with np.errstate(invalid="ignore"):
            xyz[:, column] = points[name]
    return xyz


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
