"""What each hit surface is: its DELIVER label, albedo texture, gloss, light it emits and its LiDAR reflectivity.

Textures are functions of the hit point in the solid's own frame (world frame for the ground), so a surface looks
the same from every pose and moving objects carry their texture with them - events then come from real motion and
edges, never from texture flicker.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .raycast import GROUND, Hits
from .scene import Layout, Material, Solids, label_id

# A periodic random lattice, lightly smoothed so that bilinear lookups show no lattice creases.
_LATTICE = cv2.GaussianBlur(np.pad(np.random.default_rng(20240611).random((256, 256)).astype(np.float32), 8, "wrap"),
                            (0, 0), 0.8)[8:-8, 8:-8]
_LATTICE = (_LATTICE - _LATTICE.min()) / (_LATTICE.max() - _LATTICE.min())
_ROW = 1024  # cv2.remap wants 2-D maps under 32767 on a side: lookups go through rows of this length

# LiDAR reflectivity per material (lane paint is retro-reflective: bright in intensity, flat in range).
REFLECTIVITY = {
    Material.ASPHALT: 0.08, Material.MARKING: 0.7, Material.PAVING: 0.25, Material.GRASS: 0.3, Material.FACADE: 0.3,
    Material.CONCRETE: 0.3, Material.PAINT: 0.45, Material.GLASS: 0.05, Material.TIRE: 0.03, Material.METAL: 0.5,
    Material.SIGN: 0.95, Material.SIGNAL: 0.2, Material.LAMP: 0.5, Material.FOLIAGE: 0.35, Material.BARK: 0.2,
    Material.CLOTH: 0.25, Material.BUS: 0.45, Material.CARGO: 0.5, Material.CURB: 0.3,
}
SIGNAL_COLORS = np.array([[1.0, 0.08, 0.05], [1.0, 0.6, 0.05], [0.1, 1.0, 0.45]], np.float32)


def noise(u, v):
    """Smooth value noise in [0, 1], period 256 lattice cells (bilinear lookups in C through cv2.remap)."""
    u = np.asarray(u)
    n = u.size
    rows = -(-n // _ROW)
    maps = []
    for c in (u, v):
        flat = np.zeros(rows * _ROW, np.float32)
        flat[:n] = np.mod(np.ravel(c), 256.0)
        maps.append(flat.reshape(rows, _ROW))
    if n == 0:
        return np.zeros(u.shape, np.float32)
    out = cv2.remap(_LATTICE, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    return out.ravel()[:n].reshape(u.shape)


def fbm(u, v, octaves: int = 3):
    total, amp, norm = 0.0, 1.0, 0.0
    for i in range(octaves):
        total = total + amp * noise(u * (2 ** i) + 17.0 * i, v * (2 ** i) + 31.0 * i)
        norm += amp
        amp *= 0.5
    return total / norm


@dataclass
class Surface:
    label: np.ndarray        # (H, W) uint8 train ids
    material: np.ndarray     # (H, W) int16, -1 for sky
    albedo: np.ndarray       # (H, W, 3)
    gloss: np.ndarray        # (H, W) mirror-like share of reflection
    signal: np.ndarray       # (H, W, 3) light emitted day and night (traffic signals)
    night: np.ndarray        # (H, W, 3) light emitted when lights are on (windows, lamps, car lights)


def describe(hits: Hits, solids: Solids, layout: Layout, crossings, lit_windows: float) -> Surface:
    shape = hits.t.shape
    surface = Surface(
        label=np.full(shape, label_id("Sky"), np.uint8), material=np.full(shape, -1, np.int16),
        albedo=np.zeros(shape + (3,), np.float32), gloss=np.zeros(shape, np.float32),
        signal=np.zeros(shape + (3,), np.float32), night=np.zeros(shape + (3,), np.float32),
    )
    ground = hits.index == GROUND
    if ground.any():
        _ground(surface, ground, hits.local[ground], layout, crossings)
    solid = hits.index >= 0
    if solid.any():
        k = hits.index[solid]
        material = solids.material[k]
        surface.label[solid] = solids.label[k]
        surface.material[solid] = material
        rows, cols = np.nonzero(solid)
        for m in np.unique(material):
            sel = material == m
            where = rows[sel], cols[sel]
            ks = k[sel]
            p = _Patch(hits.local[where], hits.face[where], solids.half[ks], solids.center[ks], solids.color[ks],
                       solids.variant[ks], lit_windows)
            albedo, gloss, signal, night = _SHADERS[Material(int(m))](p)
            surface.albedo[where] = albedo
            surface.gloss[where] = gloss
            surface.signal[where] = signal
            surface.night[where] = night
    return surface


def reflectivity(material: np.ndarray) -> np.ndarray:
    lut = np.zeros(max(REFLECTIVITY) + 2, np.float32)
    for m, r in REFLECTIVITY.items():
        lut[m] = r
    return lut[material]  # sky (-1) reads the last entry, 0


@dataclass
class _Patch:
    p: np.ndarray        # hit point in the solid's frame (relative to its centre)
    face: np.ndarray
    half: np.ndarray
    center: np.ndarray   # the solid's centre in the world (for textures that continue across pieces)
    color: np.ndarray
    variant: np.ndarray
    lit_windows: float

    def facade_coords(self):
        """(along-face, height-above-bottom) coordinates on vertical faces."""
        along = (np.where(self.face // 2 == 0, self.p[:, 1], self.p[:, 0])
                 + np.where(self.face // 2 == 0, self.half[:, 1], self.half[:, 0]))
        return along, self.p[:, 2] + self.half[:, 2]

    def zeros(self):
        n = len(self.p)
        return np.zeros(n, np.float32), np.zeros((n, 3), np.float32), np.zeros((n, 3), np.float32)


def ground_classes(points, layout: Layout, crossings):
    """(label, material, yellow paint) of ground points from the street's cross-section and its crossings."""
    x, y = points[:, 0], points[:, 1]
    ay = np.abs(y)
    in_cross = np.zeros(len(x), bool)
    crosswalk = np.zeros(len(x), bool)
    stop = np.zeros(len(x), bool)
    drive_half = layout.lanes * layout.lane_w
    for xc, hwc in crossings:
        in_cross |= np.abs(x - xc) < hwc
        near = np.abs(np.abs(x - xc) - hwc - 2.5) < 1.5
        crosswalk |= near & (ay < drive_half) & (np.mod(y, 1.2) < 0.6)
        stop |= (np.abs(x - (xc - hwc - 4.6)) < 0.25) & (y < 0) & (y > -drive_half)
    road = (ay < layout.road_half) | in_cross
    walk = ~road & (ay < layout.road_half + layout.sidewalk_w)
    along = road & ~in_cross
    if layout.two_tone_center:
        center = np.abs(ay - 0.15) < 0.06
    else:
        center = (ay < 0.07) & (np.mod(x, 10.0) < 4.0)
    divider = (layout.lanes > 1) & (np.abs(ay - layout.lane_w) < 0.07) & (np.mod(x + 3.0, 10.0) < 3.0)
    edge = np.abs(ay - (drive_half if layout.parking_w > 0 else layout.road_half - 0.3)) < 0.075
    marking = along & (center | divider | edge | crosswalk | stop)
    label = np.select([marking, road, walk], [label_id("RoadLine"), label_id("Road"), label_id("SideWalk")],
                      label_id("Terrain")).astype(np.uint8)
    material = np.select([marking, road, walk], [Material.MARKING, Material.ASPHALT, Material.PAVING],
                         Material.GRASS).astype(np.int16)
    return label, material, marking & center & layout.two_tone_center


def labels(hits: Hits, solids: Solids, layout: Layout, crossings) -> np.ndarray:
    """DELIVER train id per ray (Sky where nothing was hit), without the cost of textures: the class of each LiDAR
    return, from the same surfaces the camera's labels come from."""
    label = np.full(hits.t.shape, label_id("Sky"), np.uint8)
    ground = hits.index == GROUND
    label[ground] = ground_classes(hits.local[ground], layout, crossings)[0]
    solid = hits.index >= 0
    label[solid] = solids.label[hits.index[solid]]
    return label


def materials(hits: Hits, solids: Solids, layout: Layout, crossings) -> np.ndarray:
    """Material per ray (-1 for sky), without the cost of textures (for the LiDAR)."""
    material = np.full(hits.t.shape, -1, np.int16)
    ground = hits.index == GROUND
    material[ground] = ground_classes(hits.local[ground], layout, crossings)[1]
    solid = hits.index >= 0
    material[solid] = solids.material[hits.index[solid]]
    return material


def _ground(surface, mask, points, layout: Layout, crossings):
    label, material, yellow = ground_classes(points, layout, crossings)
    x, y = points[:, 0].astype(np.float32), points[:, 1].astype(np.float32)
    albedo = np.empty((len(x), 3), np.float32)
    road = (material == Material.ASPHALT) | (material == Material.MARKING)
    xr, yr = x[road], y[road]
    asphalt = (0.13 + 0.07 * fbm(xr * 4.0, yr * 4.0, 2) + 0.05 * noise(xr * 0.15 + 40.0, yr * 0.15))[:, None] \
        * np.array([1.0, 1.0, 1.04], np.float32)
    paint_at = material[road] == Material.MARKING
    wear = (0.75 + 0.25 * noise(xr[paint_at] * 3.0, yr[paint_at] * 7.0))[:, None]
    paint = np.where(yellow[road][paint_at][:, None], np.float32([0.80, 0.62, 0.10]), np.float32([0.82, 0.82, 0.80]))
    asphalt[paint_at] = paint * wear + asphalt[paint_at] * (1 - wear)
    albedo[road] = asphalt
    grass = material == Material.GRASS
    g = fbm(x[grass] * 2.0, y[grass] * 2.0, 3)
    albedo[grass] = np.stack([0.16 + 0.12 * g, 0.26 + 0.12 * g, 0.08 + 0.04 * g], -1)
    paving = material == Material.PAVING
    albedo[paving] = (0.5 + 0.1 * noise(x[paving] * 4.0, y[paving] * 4.0))[:, None] * np.float32([1.0, 0.98, 0.94])
    surface.label[mask] = label
    surface.material[mask] = material
    surface.albedo[mask] = albedo
    surface.gloss[mask] = 0.0


# -- solids -----------------------------------------------------------------------------------------------------

def _paving(p: _Patch):
    gloss, signal, night = p.zeros()
    u, v = p.p[:, 0] + p.center[:, 0], p.p[:, 1] + p.center[:, 1]  # slabs are axis-aligned: world x, y
    grout = (np.mod(u, 0.6) < 0.03) | (np.mod(v, 0.6) < 0.03)
    tone = 0.85 + 0.15 * fbm(u * 5.0, v * 5.0)
    albedo = p.color * tone[:, None] * np.where(grout, 0.7, 1.0)[:, None]
    curb = p.face < 4  # the curb faces
    albedo[curb] = np.array([0.68, 0.67, 0.64], np.float32) * tone[curb, None]
    return albedo, gloss, signal, night


def _facade(p: _Patch):
    gloss, signal, night = p.zeros()
    along, height = p.facade_coords()
    rng_variant = p.variant.astype(np.int64)
    spacing = 2.6 + 0.8 * ((rng_variant >> 3) % 5) / 4.0
    floor_h = 3.0 + 0.4 * ((rng_variant >> 7) % 3) / 2.0
    col, row = np.floor(along / spacing), np.floor(height / floor_h)
    fu, fv = along / spacing - col, height / floor_h - row
    wide = ((rng_variant >> 9) % 2) == 1
    win_w = np.where(wide, 0.38, 0.26)
    window = (np.abs(fu - 0.5) < win_w) & (fv > 0.3) & (fv < 0.85)
    shop = (row == 0) & (np.abs(fu - 0.5) < 0.42) & (fv > 0.1) & (fv < 0.8)
    vertical = p.face < 4
    window = vertical & np.where(row == 0, shop, window)
    frame = vertical & ~window & (np.abs(fu - 0.5) < win_w + 0.04) & (fv > 0.26) & (fv < 0.89) & (row > 0)
    tone = 0.8 + 0.2 * fbm(along * 1.5, height * 1.5)
    albedo = p.color * tone[:, None]
    albedo[frame] = np.array([0.75, 0.74, 0.7], np.float32)
    glass = np.array([0.05, 0.07, 0.09], np.float32) * (0.7 + 0.6 * noise(col * 3.1, row * 2.7))[:, None]
    albedo[window] = glass[window]
    gloss[window] = 0.5
    roof = p.face == 5
    albedo[roof] = np.array([0.22, 0.21, 0.2], np.float32) * tone[roof, None]
    lit = window & (noise(col * 7.3 + p.variant * 0.01, row * 5.1) < p.lit_windows)
    night[lit] = np.array([1.0, 0.78, 0.45], np.float32) * (0.5 + 0.5 * noise(col * 2.0, row * 3.0))[lit, None]
    return albedo, gloss, signal, night


def _concrete(p: _Patch):
    gloss, signal, night = p.zeros()
    along, height = p.facade_coords()
    joint = np.mod(along, 2.0) < 0.04
    tone = 0.8 + 0.2 * fbm(along * 2.0, height * 2.0) - 0.15 * joint
    return p.color * tone[:, None], gloss, signal, night


def _paint(p: _Patch):
    gloss, signal, night = p.zeros()
    x, y, z = p.p[:, 0], p.p[:, 1], p.p[:, 2]
    albedo = p.color * (0.92 + 0.08 * noise(x * 3.0, z * 3.0))[:, None]
    albedo[z < -p.half[:, 2] + 0.12] *= 0.5  # rocker panel
    gloss[:] = 0.25
    front, rear = p.face == 1, p.face == 0
    lamp_zone = (z > p.half[:, 2] - 0.3) & (np.abs(np.abs(y) - p.half[:, 1] * 0.72) < p.half[:, 1] * 0.2)
    head = front & lamp_zone
    tail = rear & lamp_zone
    albedo[head] = (0.85, 0.85, 0.8)
    albedo[tail] = (0.6, 0.05, 0.04)
    night[head] = (6.0, 5.6, 4.8)
    night[tail] = (1.5, 0.05, 0.03)
    grille = front & (z < p.half[:, 2] - 0.3) & (np.abs(y) < p.half[:, 1] * 0.4)
    albedo[grille] = 0.06
    return albedo, gloss, signal, night


def _glass(p: _Patch):
    gloss, signal, night = p.zeros()
    x = p.p[:, 0]
    pillar = (np.abs(x) > p.half[:, 0] - 0.12) | (np.abs(np.abs(x) - p.half[:, 0] * 0.1) < 0.06)
    glass = (p.face < 4) & ~(pillar & (p.face >= 2))
    albedo = p.color.copy()
    albedo[glass] = np.array([0.04, 0.05, 0.06], np.float32)
    gloss[:] = np.where(glass, 0.6, 0.25)
    return albedo, gloss, signal, night


def _bus(p: _Patch):
    gloss, signal, night = p.zeros()
    x, y, z = p.p[:, 0], p.p[:, 1], p.p[:, 2]
    zb = z + p.half[:, 2]
    band = (zb > 1.1) & (zb < 2.3) & (p.face < 4)
    window = band & ((p.face < 2) | (np.mod(x, 1.3) > 0.12))
    albedo = p.color * (0.92 + 0.08 * noise(x * 2.0, z * 2.0))[:, None]
    albedo[zb < 0.25] *= 0.5
    albedo[window] = np.array([0.05, 0.06, 0.07], np.float32)
    gloss[:] = np.where(window, 0.6, 0.25)
    lights = (zb < 0.8) & (np.abs(np.abs(y) - p.half[:, 1] * 0.75) < 0.25)
    night[lights & (p.face == 1)] = (6.0, 5.6, 4.8)
    night[lights & (p.face == 0)] = (1.5, 0.05, 0.03)
    night[window & (p.face >= 2)] = (0.6, 0.6, 0.5)
    return albedo, gloss, signal, night


def _cargo(p: _Patch):
    gloss, signal, night = p.zeros()
    x, z = p.p[:, 0], p.p[:, 2]
    ribs = np.mod(x, 0.6) < 0.05
    albedo = p.color * (0.9 + 0.1 * noise(x * 2.0, z * 2.0) - 0.12 * ribs)[:, None]
    stripe = (np.abs(z) < 0.25) & (p.face >= 2) & (p.face < 4)
    albedo[stripe] = np.array([0.7, 0.1, 0.08], np.float32)
    return albedo, gloss, signal, night


def _flat(scale: float = 0.15, freq: float = 3.0, gloss_value: float = 0.0):
    def shade(p: _Patch):
        gloss, signal, night = p.zeros()
        n = noise(p.p[:, 0] * freq + p.p[:, 1] * freq, p.p[:, 2] * freq)
        gloss[:] = gloss_value
        return p.color * (1 - scale + scale * 2 * n)[:, None], gloss, signal, night
    return shade


def _sign(p: _Patch):
    gloss, signal, night = p.zeros()
    y, z = p.p[:, 1], p.p[:, 2]
    r = np.hypot(y, z)
    diamond = np.abs(y) + np.abs(z)
    front = p.face < 2
    albedo = np.tile(np.array([[0.45, 0.46, 0.47]], np.float32), (len(y), 1))
    kind = p.variant % 4
    white, red, blue, yellow, black = ((0.9, 0.9, 0.88), (0.75, 0.05, 0.05), (0.05, 0.2, 0.65), (0.9, 0.72, 0.08),
                                       (0.05, 0.05, 0.05))

    def paint(mask, color):
        albedo[front & mask] = color

    paint((kind == 0) & (r < 0.31), red)
    paint((kind == 0) & (r < 0.24), white)
    paint((kind == 0) & (r < 0.12) & (np.abs(y) < 0.08), black)
    paint((kind == 1) & (r < 0.31), blue)
    paint((kind == 1) & (np.abs(z) < 0.05) & (np.abs(y) < 0.2), white)
    paint((kind == 2) & (diamond < 0.44) & (np.maximum(np.abs(y), np.abs(z)) < 0.31), red)
    paint((kind == 2) & (np.abs(z) < 0.06) & (np.abs(y) < 0.22), white)
    paint((kind == 3) & (diamond < 0.32), black)
    paint((kind == 3) & (diamond < 0.27), yellow)
    gloss[:] = 0.1
    return albedo, gloss, signal, night


def _signal(p: _Patch):
    gloss, signal, night = p.zeros()
    y, z = p.p[:, 1], p.p[:, 2]
    albedo = np.tile(np.array([[0.05, 0.05, 0.05]], np.float32), (len(y), 1))
    front = p.face < 2
    for i, zc in enumerate((0.3, 0.0, -0.3)):
        lamp = front & (np.hypot(y, z - zc * p.half[:, 2] / 0.5) < 0.11)
        on = lamp & (p.variant % 3 == i)
        albedo[lamp] = SIGNAL_COLORS[i] * 0.15
        signal[on] = SIGNAL_COLORS[i] * 4.0
    return albedo, gloss, signal, night


def _lamp(p: _Patch):
    gloss, signal, night = p.zeros()
    albedo = np.tile(np.array([[0.5, 0.5, 0.48]], np.float32), (len(p.p), 1))
    bulb = p.face == 4
    albedo[bulb] = (0.9, 0.9, 0.85)
    night[bulb] = (8.0, 7.0, 5.0)
    return albedo, gloss, signal, night


def _foliage(p: _Patch):
    gloss, signal, night = p.zeros()
    x, y, z = p.p[:, 0], p.p[:, 1], p.p[:, 2]
    leaves = fbm((x + y) * 4.0 + p.variant * 1e-3, z * 4.0, 3)
    clumps = noise((x - y) * 0.9, z * 0.9)
    tone = 0.45 + 0.9 * leaves * (0.6 + 0.4 * clumps)
    hue = noise(x * 0.5 + 9.0, z * 0.5) * 0.3
    albedo = p.color * tone[:, None] + np.stack([hue * 0.08, hue * 0.04, np.zeros_like(hue)], -1)
    return albedo, gloss, signal, night


def _cloth(p: _Patch):
    gloss, signal, night = p.zeros()
    z = p.p[:, 2]
    skin = p.variant < 0
    albedo = p.color.copy()
    legs = ~skin & (z < -p.half[:, 2] * 0.1)
    albedo[legs] = np.where(((p.variant[legs] >> 2) % 2 == 0)[:, None], (0.1, 0.12, 0.25), (0.08, 0.08, 0.08))
    hair = skin & (z > 0.03)
    albedo[hair] = (0.12, 0.08, 0.05)
    albedo *= (0.9 + 0.2 * noise(p.p[:, 0] * 8.0 + p.p[:, 1] * 8.0, z * 8.0))[:, None]
    return albedo, gloss, signal, night


_SHADERS = {
    Material.PAVING: _paving, Material.FACADE: _facade, Material.CONCRETE: _concrete, Material.PAINT: _paint,
    Material.GLASS: _glass, Material.TIRE: _flat(0.05), Material.METAL: _flat(0.1, 2.0, 0.15), Material.SIGN: _sign,
    Material.SIGNAL: _signal, Material.LAMP: _lamp, Material.FOLIAGE: _foliage, Material.BARK: _flat(0.3, 6.0),
    Material.CLOTH: _cloth, Material.BUS: _bus, Material.CARGO: _cargo,
}
