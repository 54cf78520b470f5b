"""Light transport, kept simple: sun with a shadow map, sky dome, headlights and street lamps, gloss that mirrors
the sky, emissive lamps and windows, and fog that blends toward the air colour with distance.

Radiance is linear (a white surface in full sun ~ 2); the camera model in sensors.py turns it into pixels and the
event model into log intensity.
"""
from __future__ import annotations

import numpy as np

from .raycast import OrthoGrid, cast
from .textures import Surface, fbm

SUN_COLOR = np.array([1.0, 0.95, 0.86], np.float32)
LAMP_COLOR = np.array([1.0, 0.85, 0.62], np.float32)
HEADLIGHT_COLOR = np.array([0.95, 0.95, 1.0], np.float32)
HEADLIGHTS_EGO = np.array([[2.2, 0.75, 0.7], [2.2, -0.75, 0.7]])


def sun_direction(rng) -> np.ndarray:
    elevation = np.radians(rng.uniform(25.0, 60.0))
    azimuth = rng.uniform(0.0, 2 * np.pi)
    return np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])


def sky(dirs: np.ndarray, cond, sun_dir: np.ndarray) -> np.ndarray:
    """Radiance of the sky seen along unit-or-not directions (..., 3)."""
    d = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    up = np.clip(d[..., 2], 0.0, 1.0)[..., None]
    top, horizon = np.asarray(cond.sky_top, np.float32), np.asarray(cond.sky_horizon, np.float32)
    radiance = horizon + (top - horizon) * np.sqrt(up)
    # Clouds: a noise layer on the dome (projected onto a plane overhead); heavy when the sun is weak.
    elev = np.maximum(d[..., 2], 0.03)
    cover = fbm(d[..., 0] / elev * 1.5 + 50.0, d[..., 1] / elev * 1.5, 4)
    amount = np.clip((cover - 0.55) * 4.0, 0.0, 1.0)[..., None] * min(1.0, cond.sun + 0.25)
    cloud = (horizon + 0.2 * cond.sun) * (0.9 + 0.2 * cover[..., None])
    radiance = radiance * (1 - amount) + cloud * amount
    if cond.sun > 0:
        c = np.clip((d * sun_dir).sum(-1), 0.0, 1.0)[..., None]
        radiance = radiance + cond.sun * (2.0 * c ** 400 + 0.15 * c ** 8) * SUN_COLOR
    return radiance.astype(np.float32)


class ShadowMap:
    """Depth of the first surface seen from the sun over a square around `center`."""

    def __init__(self, solids, center, sun_dir: np.ndarray, extent_m: float = 140.0, resolution: int = 192):
        self.grid = OrthoGrid(center, -sun_dir, extent_m, resolution)
        self.depth = cast(self.grid, solids, ground=True, surface=False).t
        self.bias = 0.3 + self.grid.cell

    def visibility(self, points: np.ndarray) -> np.ndarray:
        """Share of sunlight reaching each point (bilinear percentage-closer filtering)."""
        rows, cols, dist = self.grid.coords(points)
        h, w = self.depth.shape
        # A border of "nothing in the way" lets every tap index the map without masks.
        padded = np.pad(self.depth, ((1, 2), (1, 2)), constant_values=np.inf)
        r0 = np.clip(np.floor(rows), -1, h).astype(np.int64)
        c0 = np.clip(np.floor(cols), -1, w).astype(np.int64)
        fr = np.clip(rows - r0, 0.0, 1.0).astype(np.float32)
        fc = np.clip(cols - c0, 0.0, 1.0).astype(np.float32)
        reach = dist - self.bias
        lit = np.zeros(len(points), np.float32)
        for dr, dc, weight in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc),
                               (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
            lit += weight * (reach <= padded[r0 + 1 + dr, c0 + 1 + dc])
        return lit


def radiance(hits, surface: Surface, dirs, cond, sun_dir, shadows: ShadowMap | None, ego_pose, lamps) -> np.ndarray:
    """Linear radiance (H, W, 3) toward the camera, fog included. Computed on whole images (cheaper than gathering
    the hit pixels); sky pixels are overwritten at the end."""
    hit = np.isfinite(hits.t)
    n = hits.normal
    sky_mean = (np.asarray(cond.sky_top, np.float32) + np.asarray(cond.sky_horizon, np.float32)) / 2
    irradiance = (np.float32(cond.sky) * (0.55 + 0.45 * n[..., 2]))[..., None] * (sky_mean / max(sky_mean.mean(), 1e-6))
    if cond.sun > 0:
        facing = np.clip(n @ sun_dir.astype(np.float32), 0.0, None)
        if shadows is not None:
            facing[hit] *= shadows.visibility(hits.points[hit])
        irradiance += (np.float32(cond.sun) * facing)[..., None] * SUN_COLOR
    lights_on = np.float32(cond.get("lights_on", 0.0))
    if lights_on > 0:
        p, nh = hits.points[hit], n[hit]
        irradiance[hit] += lights_on * (_headlights(p, nh, ego_pose, cond)
                                        + _lamps(p, nh, lamps, cond)).astype(np.float32)
    gloss = surface.gloss
    out = surface.albedo * irradiance * (1 - 0.5 * gloss)[..., None] + surface.signal + lights_on * surface.night
    shiny = hit & (gloss > 0)
    if shiny.any():
        view = dirs[shiny]
        view = view / np.linalg.norm(view, axis=-1, keepdims=True)
        ns = n[shiny]
        cos_view = (view * ns).sum(-1, keepdims=True)
        fresnel = 0.04 + 0.96 * (1 - np.abs(cos_view)) ** 5
        mirror = view - 2 * cos_view * ns
        mirror[:, 2] = np.abs(mirror[:, 2])  # reflections below the horizon would see the ground: fold them up
        out[shiny] += gloss[shiny][:, None] * sky(mirror, cond, sun_dir) * (0.15 + 0.85 * fresnel)
    out[~hit] = sky(dirs[~hit], cond, sun_dir)
    if cond.fog_m > 0:
        distance = np.where(hit, hits.t * np.linalg.norm(dirs, axis=-1), np.inf)
        transmit = np.exp(-3.0 * distance / cond.fog_m).astype(np.float32)[..., None]
        out = out * transmit + np.asarray(cond.fog_color, np.float32) * (1 - transmit)
    return out.astype(np.float32, copy=False)


def _headlights(p, n, ego_pose, cond):
    forward = ego_pose.rotation[:, 0]
    total = np.zeros((len(p), 3))
    for lamp in ego_pose.to_parent(HEADLIGHTS_EGO):
        v = p - lamp
        dist = np.maximum(np.linalg.norm(v, axis=-1), 0.5)
        v = v / dist[:, None]
        aim = v @ (forward - np.array([0.0, 0.0, 0.03]))
        cone = np.clip((aim - 0.86) / 0.135, 0.0, 1.0) ** 3 + 0.005 * np.clip(aim, 0.0, 1.0)
        total += (cond.headlights * cone * np.clip(-(v * n).sum(-1), 0.0, None) / dist ** 2)[:, None]
    return total * HEADLIGHT_COLOR


def _lamps(p, n, lamps, cond):
    total = np.zeros((len(p), 3))
    for lamp in lamps:
        v = p - lamp
        dist = np.maximum(np.linalg.norm(v, axis=-1), 0.5)
        v = v / dist[:, None]
        down = np.clip(-v[:, 2], 0.0, 1.0) ** 0.8  # the lamp shines downward
        total += (cond.street_lamps * down * np.clip(-(v * n).sum(-1), 0.0, None) / dist ** 2)[:, None]
    return total * LAMP_COLOR
