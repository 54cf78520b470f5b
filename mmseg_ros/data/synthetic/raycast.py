"""Vectorised ray casting of the ground plane and the scene's solids (boxes, vertical cylinders, ellipsoids).

Rays come in regular grids (a pinhole camera, a spinning LiDAR's beams x azimuths, an orthographic sun view).
Each grid knows how to bound a solid's rays from its box corners, so a solid is only tested against the rectangle
of rays that can hit it; a z-buffer keeps the nearest hit. Ray parameters: for the pinhole grid the direction has
unit optical-axis component, so `t` is the z-depth; for the other grids directions are unit vectors (t = range).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import Intrinsics, Pose
from .scene import BOX, CYLINDER, ELLIPSOID, Solids

EPS = 1e-6
NEAR = 0.05
SKY, GROUND = -1, -2  # `index` values of rays that hit nothing / the ground plane


class PinholeGrid:
    def __init__(self, pose: Pose, intrinsics: Intrinsics):
        k = intrinsics
        u = (np.arange(k.width) + 0.5 - k.cx) / k.fx
        v = (np.arange(k.height) + 0.5 - k.cy) / k.fy
        optical = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))), axis=-1)
        self.pose, self.k = pose, k
        self.shape = (k.height, k.width)
        self.origin = pose.position
        self.dirs = (optical @ pose.rotation.T).astype(np.float32)

    def bounds(self, corners: np.ndarray):
        p, valid = _clip_front(self.pose.to_local(corners), axis=2)  # optical frame, z = depth
        z = np.where(valid, p[..., 2], 1.0)
        u = self.k.fx * p[..., 0] / z + self.k.cx - 0.5
        v = self.k.fy * p[..., 1] / z + self.k.cy - 0.5
        return _rect(_span(v, valid), _span(u, valid), valid.any(1), self.shape)


class ScanGrid:
    """A spinning LiDAR's rays: rows = beams from the highest elevation down, columns = azimuth from left to right."""

    def __init__(self, pose: Pose, elevations_deg, azimuths_deg):
        el = np.radians(np.asarray(elevations_deg, np.float64))[:, None]
        az = np.radians(np.asarray(azimuths_deg, np.float64))[None, :]
        local = np.stack(np.broadcast_arrays(np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)), axis=-1)
        self.pose = pose
        self.el, self.az = el[:, 0], az[0]
        self.shape = local.shape[:2]
        self.origin = pose.position
        self.dirs = (local @ pose.rotation.T).astype(np.float32)

    def bounds(self, corners: np.ndarray):
        # Through a virtual pinhole (a = y/x, b = z/x) the box bound is exact; then azimuth = atan(a) and a beam of
        # elevation e meets b = tan(e) / cos(azimuth) - widened over the columns' cosine range.
        p, valid = _clip_front(self.pose.to_local(corners), axis=0)
        x = np.where(valid, p[..., 0], 1.0)
        (a_lo, a_hi), (b_lo, b_hi) = _span(p[..., 1] / x, valid).T, _span(p[..., 2] / x, valid).T
        az_lo, az_hi = np.arctan(a_lo), np.arctan(a_hi)
        cos_min = np.cos(np.maximum(np.abs(az_lo), np.abs(az_hi)))
        el_hi = np.arctan(np.maximum(b_hi, b_hi * cos_min))
        el_lo = np.arctan(np.minimum(b_lo, b_lo * cos_min))
        step_az = self.az[0] - self.az[1]
        step_el = self.el[0] - self.el[1] if len(self.el) > 1 else 1.0
        cols = np.stack([(self.az[0] - az_hi) / step_az, (self.az[0] - az_lo) / step_az], axis=1)
        rows = np.stack([(self.el[0] - el_hi) / step_el, (self.el[0] - el_lo) / step_el], axis=1)
        return _rect(rows, cols, valid.any(1), self.shape)


class OrthoGrid:
    """Parallel rays along `direction` through a rectangle (for the sun's shadow map)."""

    def __init__(self, center, direction, extent_m: float, resolution: int, lift_m: float = 200.0):
        d = np.asarray(direction, np.float64)
        d = d / np.linalg.norm(d)
        e1 = np.cross(d, [0.0, 0.0, 1.0])
        e1 = e1 / np.linalg.norm(e1) if np.linalg.norm(e1) > 1e-6 else np.array([1.0, 0.0, 0.0])
        e2 = np.cross(e1, d)
        s = (np.arange(resolution) + 0.5) / resolution * extent_m - extent_m / 2
        self.e1, self.e2, self.d = e1, e2, d
        self.cell = extent_m / resolution
        self.start = np.asarray(center, np.float64) - d * lift_m - (e1 + e2) * extent_m / 2
        self.shape = (resolution, resolution)
        self.origin = (np.asarray(center, np.float64)[None, None] - d * lift_m
                       + s[:, None, None] * e2 + s[None, :, None] * e1)
        self.dirs = np.broadcast_to(d, self.shape + (3,))

    def bounds(self, corners: np.ndarray):
        rel = corners - self.start
        cols = rel @ self.e1 / self.cell - 0.5
        rows = rel @ self.e2 / self.cell - 0.5
        every = np.ones(rows.shape, bool)
        return _rect(_span(rows, every), _span(cols, every), every[:, 0], self.shape)

    def coords(self, points: np.ndarray):
        """(row, col, distance along the rays) of world points in this grid."""
        rel = points - self.start
        return rel @ self.e2 / self.cell - 0.5, rel @ self.e1 / self.cell - 0.5, rel @ self.d


# The 12 edges of a box whose corners are ordered by (x, y, z) sign bits.
_EDGES = np.array([(i, i | bit) for bit in (1, 2, 4) for i in range(8) if not i & bit])


def _clip_front(p: np.ndarray, axis: int):
    """Corners (N, 8, 3) in a sensor frame -> the vertices of each box's part in front of the near plane (corners
    in front plus edge crossings of the plane), (N, 20, 3), with a validity mask."""
    depth = p[..., axis]
    a, b = p[:, _EDGES[:, 0]], p[:, _EDGES[:, 1]]
    da, db = depth[:, _EDGES[:, 0]], depth[:, _EDGES[:, 1]]
    crosses = (da - NEAR) * (db - NEAR) < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(crosses, (NEAR - da) / (db - da), 0.0)
    cut = a + f[..., None] * (b - a)
    cut[..., axis] = NEAR * 1.0001
    return np.concatenate([p, cut], axis=1), np.concatenate([depth > NEAR, crosses], axis=1)


def _span(values, valid):
    """(N, 2) min and max over each row's valid entries (0, 0 for rows without any)."""
    lo = np.min(values, axis=1, initial=np.inf, where=valid)
    hi = np.max(values, axis=1, initial=-np.inf, where=valid)
    seen = valid.any(1)
    return np.stack([np.where(seen, lo, 0.0), np.where(seen, hi, 0.0)], axis=1)


def _rect(rows, cols, seen, shape):
    """Row/column bounds (exclusive ends) per solid from (N, 2) coordinate ranges; unseen solids get none."""
    h, w = shape
    r0 = np.clip(np.floor(rows[:, 0]), 0, h).astype(int)
    r1 = np.clip(np.floor(rows[:, 1]) + 2, 0, h).astype(int)
    c0 = np.clip(np.floor(cols[:, 0]), 0, w).astype(int)
    c1 = np.clip(np.floor(cols[:, 1]) + 2, 0, w).astype(int)
    r1[~seen] = r0[~seen]
    return np.stack([r0, r1, c0, c1], axis=1)


@dataclass
class Hits:
    """Nearest hit per ray. index: solid row, GROUND or SKY; local: hit point in the solid's (or world) frame;
    face: 0..5 = box faces -x,+x,-y,+y,-z,+z; 6 = curved side; 7 = cylinder cap. Only t and index are set when
    the cast was asked for distances alone."""

    t: np.ndarray
    index: np.ndarray
    normal: np.ndarray
    local: np.ndarray
    face: np.ndarray
    points: np.ndarray  # world hit points (inf where nothing was hit)


def cast(grid, solids: Solids, ground: bool = True, surface: bool = True) -> Hits:
    """Nearest hit of every ray of `grid`. All (ray, solid) pairs inside the solids' bounding rectangles are
    intersected in one vectorised pass per solid kind (distance only); a scatter-min keeps the nearest per ray, and
    normals, faces and local points are worked out for those winners only. `surface=False` skips them (and the
    world points) when only distances matter (shadow maps)."""
    shape = grid.shape
    dirs = grid.dirs.reshape(-1, 3)
    per_ray_origin = np.ndim(grid.origin) > 1
    origin = grid.origin.reshape(-1, 3) if per_ray_origin else np.asarray(grid.origin, np.float64)
    n_rays = dirs.shape[0]
    t = np.full(n_rays, np.inf)
    index = np.full(n_rays, SKY, np.int32)
    oz = origin[:, 2] if per_ray_origin else origin[2]
    if ground:
        dz = dirs[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            tg = np.where(dz < -1e-9, -oz / dz, np.inf)
        hit = np.isfinite(tg) & (tg > EPS)
        t[hit], index[hit] = tg[hit], GROUND
    ray = k = np.zeros(0, np.int64)
    if len(solids):
        ray, k, tk = _nearest_solids(grid.bounds(solids.corners()), solids, origin, dirs, shape, t)
        t[ray], index[ray] = tk, k
    if not surface:
        return Hits(t.reshape(shape), index.reshape(shape), None, None, None, None)
    normal = np.zeros((n_rays, 3), np.float32)
    local = np.zeros((n_rays, 3), np.float64)
    face = np.full(n_rays, 5, np.int8)
    finite = np.isfinite(t)
    points = np.full((n_rays, 3), np.inf)
    points[finite] = (origin[finite] if per_ray_origin else origin) + t[finite][:, None] * dirs[finite]
    on_ground = index == GROUND
    normal[on_ground] = (0.0, 0.0, 1.0)
    local[on_ground] = points[on_ground]
    if len(ray):
        _surface(ray, k, solids, points[ray], dirs[ray], normal, local, face)
    return Hits(t.reshape(shape), index.reshape(shape), normal.reshape(shape + (3,)), local.reshape(shape + (3,)),
                face.reshape(shape), points.reshape(shape + (3,)))


def _pairs(rects, shape):
    """Flat ray indices and solid indices of every ray inside every solid's rectangle."""
    heights = np.maximum(rects[:, 1] - rects[:, 0], 0)
    widths = np.maximum(rects[:, 3] - rects[:, 2], 0)
    areas = heights * widths
    total = int(areas.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    k = np.repeat(np.arange(len(rects)), areas)
    offset = np.arange(total) - np.repeat(np.cumsum(areas) - areas, areas)
    w = widths[k]
    rows = rects[k, 0] + offset // w
    cols = rects[k, 2] + offset % w
    return rows * shape[1] + cols, k


def _to_local(solids, k, origin, dirs, ray):
    """Ray origins and directions of pairs in their solid's frame, as six float32 component arrays. Coordinates
    relative to a solid are small, so single precision is exact enough (sub-millimetre) and fast."""
    c = np.cos(solids.yaw).astype(np.float32)[k]
    s = np.sin(solids.yaw).astype(np.float32)[k]
    if np.ndim(origin) == 1:
        rel = (origin - solids.center).astype(np.float32)[k]
    else:
        rel = (origin[ray] - solids.center[k]).astype(np.float32)
    d = dirs[ray].astype(np.float32, copy=False)
    rx, ry, dx, dy = rel[:, 0], rel[:, 1], d[:, 0], d[:, 1]
    return (c * rx + s * ry, c * ry - s * rx, rel[:, 2]), (c * dx + s * dy, c * dy - s * dx, d[:, 2])


def _nearest_solids(rects, solids, origin, dirs, shape, t):
    """(ray, solid, distance) of the nearest solid hit of every ray where it beats `t` (ground or nothing)."""
    half = solids.half.astype(np.float32)
    rays, ks, ts = [], [], []
    for kind, distance in _DISTANCE.items():
        of_kind = solids.kind == kind
        if not of_kind.any():
            continue
        ray, k = _pairs(np.where(of_kind[:, None], rects, 0), shape)
        if not len(ray):
            continue
        o, d = _to_local(solids, k, origin, dirs, ray)
        tk = distance(o, d, half[k])
        nearer = tk < t[ray]
        rays.append(ray[nearer])
        ks.append(k[nearer])
        ts.append(tk[nearer])
    if not rays:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    ray, k, tk = np.concatenate(rays), np.concatenate(ks), np.concatenate(ts)
    # Scatter-min by relaxation: write any candidate per ray, keep those still nearer, repeat. Each round retires
    # the pair just written, so it ends after as many rounds as the most candidates one ray has.
    nearest = t.copy()
    pending = np.arange(len(ray))
    while len(pending):
        nearest[ray[pending]] = tk[pending]
        pending = pending[tk[pending] < nearest[ray[pending]]]
    winners = np.flatnonzero(tk == nearest[ray])
    owner = np.full(len(t), -1, np.int64)
    owner[ray[winners]] = winners
    win = owner[owner >= 0]  # one pair per ray, ties resolved by the last write
    return ray[win], k[win], tk[win]


def _surface(ray, k, solids, points, dirs, normal, local, face):
    """Normals (world), hit points in the solid's frame and face codes for the rays' winning solids."""
    c, s = np.cos(solids.yaw[k]), np.sin(solids.yaw[k])
    rel = points - solids.center[k]
    p = np.stack([c * rel[:, 0] + s * rel[:, 1], c * rel[:, 1] - s * rel[:, 0], rel[:, 2]], -1)
    half = solids.half[k]
    n = np.zeros_like(p)
    f = np.zeros(len(k), np.int8)
    kinds = solids.kind[k]
    box = kinds == BOX
    if box.any():  # the face is the axis where the point is farthest out, relative to the half size
        q = p[box] / half[box]
        axis = np.abs(q).argmax(-1)
        positive = np.take_along_axis(q, axis[:, None], -1)[:, 0] > 0
        nb = np.zeros_like(q)
        nb[np.arange(len(q)), axis] = np.where(positive, 1.0, -1.0)
        n[box], f[box] = nb, axis * 2 + positive
    cyl = kinds == CYLINDER
    if cyl.any():
        pc, hc = p[cyl], half[cyl]
        radial = np.hypot(pc[:, 0], pc[:, 1]) / hc[:, 0]
        cap = np.abs(pc[:, 2]) / hc[:, 2] > radial
        side = np.stack([pc[:, 0] / hc[:, 0], pc[:, 1] / hc[:, 0], np.zeros(len(pc))], -1)
        cap_n = np.stack([np.zeros(len(pc)), np.zeros(len(pc)), np.sign(pc[:, 2])], -1)
        n[cyl], f[cyl] = np.where(cap[:, None], cap_n, side), np.where(cap, 7, 6)
    ell = kinds == ELLIPSOID
    if ell.any():
        n[ell], f[ell] = p[ell] / half[ell] ** 2, 6
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    normal[ray] = np.stack([c * n[:, 0] - s * n[:, 1], s * n[:, 0] + c * n[:, 1], n[:, 2]], -1)
    local[ray] = p
    face[ray] = f


def _box(o, d, half):
    """Slab test: distance along each ray to the box (inf if missed or starting inside)."""
    t_near = np.full(len(o[0]), -np.inf, np.float32)
    t_far = np.full(len(o[0]), np.inf, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in range(3):
            inv = 1.0 / np.where(np.abs(d[axis]) < 1e-12, np.float32(1e-12), d[axis])
            t1 = (-half[:, axis] - o[axis]) * inv
            t2 = (half[:, axis] - o[axis]) * inv
            np.maximum(t_near, np.minimum(t1, t2), out=t_near)
            np.minimum(t_far, np.maximum(t1, t2), out=t_far)
    return np.where((t_near <= t_far) & (t_near > EPS), t_near, np.inf)


def _cylinder(o, d, half):
    """Vertical cylinder (radius half[0], half height half[2]): side or cap, the nearer."""
    ox, oy, oz = o
    dx, dy, dz = d
    r, hh = half[:, 0], half[:, 2]
    a = dx * dx + dy * dy
    b = 2 * (ox * dx + oy * dy)
    c = ox * ox + oy * oy - r * r
    disc = b * b - 4 * a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        ts = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
        side = (disc >= 0) & (a > 1e-12) & (ts > EPS) & (np.abs(oz + ts * dz) <= hh)
        tc = (np.where(dz < 0, hh, -hh) - oz) / dz
        cap = (np.abs(dz) > 1e-12) & (tc > EPS) & ((ox + tc * dx) ** 2 + (oy + tc * dy) ** 2 <= r * r)
    return np.minimum(np.where(side, ts, np.inf), np.where(cap, tc, np.inf))


def _ellipsoid(o, d, radii):
    ox, oy, oz = (o[i] / radii[:, i] for i in range(3))
    dx, dy, dz = (d[i] / radii[:, i] for i in range(3))
    a = dx * dx + dy * dy + dz * dz
    b = 2 * (ox * dx + oy * dy + oz * dz)
    c = ox * ox + oy * oy + oz * oz - 1.0
    disc = b * b - 4 * a * c
    t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    return np.where((disc >= 0) & (t > EPS), t, np.inf)


_DISTANCE = {BOX: _box, CYLINDER: _cylinder, ELLIPSOID: _ellipsoid}
