"""A seeded, endless procedural street: the ground layout plus solids (boxes, vertical cylinders, ellipsoids).

The street runs along +x. It is cut into blocks of BLOCK_M metres; each block's content depends only on
(seed, block index), so a drive of any length is reproducible and only the blocks near the ego are ever built.
Every solid carries its DELIVER class (train id from the class set, never a literal), a material for the shader,
and a velocity: moving things are at `center + velocity * (t - t_ref)`, with t_ref the time the ego passes their
block so that traffic is always around the ego, whatever its speed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache
from typing import List, Tuple

import numpy as np

from ... import classes

BLOCK_M = 40.0
BOX, CYLINDER, ELLIPSOID = 0, 1, 2
SEED_OFFSET = 2 ** 31  # block indices may be negative; seed sequences need non-negative entries
SWING_PERIOD_S = 30.0
SLAB_M = 8.0  # sidewalk slab pieces


class Material(IntEnum):
    ASPHALT = 0
    MARKING = 1
    PAVING = 2
    GRASS = 3
    FACADE = 4
    CONCRETE = 5
    PAINT = 6
    GLASS = 7
    TIRE = 8
    METAL = 9
    SIGN = 10
    SIGNAL = 11
    LAMP = 12
    FOLIAGE = 13
    BARK = 14
    CLOTH = 15
    BUS = 16
    CARGO = 17
    CURB = 18


@lru_cache(maxsize=None)
def class_set() -> classes.ClassSet:
    """The DELIVER class set (read once per process)."""
    return classes.load("deliver")


def label_id(name: str) -> int:
    """DELIVER train id of a class name."""
    return class_set().index(name)


@dataclass
class Solids:
    """Structure of arrays, one row per solid. `half` is the half extent (box), (r, r, half height) for a
    vertical cylinder, the radii for an ellipsoid; `yaw` turns the solid about z. Position at time t:
    `center + velocity * tau` (tau = t - t_ref), or for `swing` rows a sine of the same peak speed."""

    kind: np.ndarray
    center: np.ndarray
    half: np.ndarray
    yaw: np.ndarray
    velocity: np.ndarray
    t_ref: np.ndarray
    swing: np.ndarray
    label: np.ndarray
    material: np.ndarray
    color: np.ndarray
    variant: np.ndarray

    def __len__(self):
        return len(self.kind)

    @staticmethod
    def concat(parts: List["Solids"]) -> "Solids":
        parts = [p for p in parts if len(p)] or [_EMPTY]
        return Solids(*(np.concatenate([getattr(p, f) for p in parts]) for f in Solids.__dataclass_fields__))

    def select(self, mask) -> "Solids":
        return Solids(*(getattr(self, f)[mask] for f in Solids.__dataclass_fields__))

    def at(self, time: float) -> "Solids":
        """The same solids with their centres moved to `time`."""
        tau = time - self.t_ref
        omega = 2 * np.pi / SWING_PERIOD_S
        travel = np.where(self.swing, np.sin(omega * tau) / omega, tau)
        fields = {f: getattr(self, f) for f in Solids.__dataclass_fields__}
        fields["center"] = self.center + self.velocity * travel[:, None]
        return Solids(**fields)

    def corners(self) -> np.ndarray:
        """(N, 8, 3) corners of each solid's oriented bounding box."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
        local = signs[None] * self.half[:, None, :]
        c, s = np.cos(self.yaw)[:, None], np.sin(self.yaw)[:, None]
        x = local[..., 0] * c - local[..., 1] * s
        y = local[..., 0] * s + local[..., 1] * c
        return np.stack([x, y, local[..., 2]], axis=-1) + self.center[:, None, :]


class _Builder:
    def __init__(self):
        self.rows = []

    def add(self, kind, center, half, label, material, color, yaw=0.0, velocity=(0.0, 0.0, 0.0), variant=0,
            swing=False):
        self.rows.append((kind, center, half, yaw, velocity, swing, label_id(label), int(material), color, variant))

    def build(self, t_ref: float) -> Solids:
        if not self.rows:
            return _EMPTY
        kind, center, half, yaw, velocity, swing, label, material, color, variant = zip(*self.rows)
        n = len(kind)
        return Solids(
            np.asarray(kind, np.int8), np.asarray(center, np.float64), np.asarray(half, np.float64),
            np.asarray(yaw, np.float64), np.asarray(velocity, np.float64), np.full(n, t_ref, np.float64),
            np.asarray(swing, bool), np.asarray(label, np.int16), np.asarray(material, np.int16),
            np.asarray(color, np.float32), np.asarray(variant, np.int32),
        )


_EMPTY = Solids(np.zeros(0, np.int8), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros((0, 3)),
                np.zeros(0), np.zeros(0, bool), np.zeros(0, np.int16), np.zeros(0, np.int16),
                np.zeros((0, 3), np.float32), np.zeros(0, np.int32))


@dataclass(frozen=True)
class Layout:
    """Cross-section of the street, the same for every block of a scene."""

    lanes: int             # driving lanes per direction
    lane_w: float
    parking_w: float       # parking lane beside the curb (0 = none)
    sidewalk_w: float
    curb_h: float
    ego_lane: int          # 0 = the lane next to the centre line
    two_tone_center: bool  # double yellow centre line instead of a dashed white one

    @property
    def road_half(self) -> float:
        return self.lanes * self.lane_w + self.parking_w

    @property
    def ego_y(self) -> float:
        return -(self.ego_lane + 0.5) * self.lane_w


@dataclass
class Block:
    solids: Solids
    crossings: List[Tuple[float, float]] = field(default_factory=list)  # (x centre, half width) of cross streets
    lamps: List[Tuple[float, float, float]] = field(default_factory=list)  # street-lamp bulbs (world x, y, z)


FACADE_COLORS = ((0.62, 0.55, 0.47), (0.55, 0.33, 0.26), (0.72, 0.70, 0.66), (0.45, 0.46, 0.48),
                 (0.80, 0.74, 0.60), (0.50, 0.42, 0.36))
PAINT_COLORS = ((0.60, 0.05, 0.04), (0.05, 0.12, 0.45), (0.75, 0.75, 0.76), (0.08, 0.08, 0.09),
                (0.35, 0.36, 0.38), (0.85, 0.85, 0.82), (0.10, 0.30, 0.15), (0.70, 0.55, 0.10))
CLOTH_COLORS = ((0.10, 0.10, 0.12), (0.55, 0.10, 0.10), (0.15, 0.20, 0.45), (0.60, 0.58, 0.50),
                (0.25, 0.40, 0.25), (0.75, 0.70, 0.65))


class Street:
    """The endless street of one seed. `solids_near(x0, x1, time)` gathers what can be seen from there."""

    def __init__(self, seed: int, ego_x0: float, ego_speed: float, dynamic: bool = True):
        self.seed = int(seed)
        self.ego_x0 = float(ego_x0)
        self.ego_speed = float(ego_speed)
        self.dynamic = dynamic
        rng = np.random.default_rng([self.seed, 1])
        lanes = int(rng.choice([1, 2], p=[0.6, 0.4]))
        self.layout = Layout(
            lanes=lanes, lane_w=3.5, parking_w=float(rng.choice([0.0, 2.3], p=[0.4, 0.6])),
            sidewalk_w=float(rng.uniform(2.5, 4.5)), curb_h=0.15, ego_lane=int(rng.integers(lanes)),
            two_tone_center=bool(lanes == 2 or rng.random() < 0.3),
        )
        self.facade_style = float(rng.uniform(0, 1))
        # Traffic streams: (lane centre y, speed along x, yaw). Oncoming lanes first, then the ego's other lanes.
        self.streams = [((k + 0.5) * 3.5, -float(rng.uniform(8.0, 13.0)), np.pi) for k in range(lanes)]
        self.streams += [(-(k + 0.5) * 3.5, float(rng.uniform(6.0, 13.0)), 0.0)
                         for k in range(lanes) if k != self.layout.ego_lane]
        self._blocks = {}
        self._lead = self._lead_vehicle(rng)

    def _speed(self, u: float) -> float:
        return u if self.dynamic else 0.0

    # -- blocks -------------------------------------------------------------------------------------------
    def block(self, index: int, stream: int = -1) -> Block:
        """Block `index` of the static street (stream -1) or of traffic stream `stream` (in its moving frame)."""
        key = (stream, index)
        if key not in self._blocks:
            if len(self._blocks) > 256:
                self._blocks.clear()
            self._blocks[key] = self._build_block(index) if stream < 0 else self._stream_block(stream, index)
        return self._blocks[key]

    def _blocks_between(self, x0: float, x1: float, stream: int = -1) -> List[Block]:
        first, last = int(np.floor(x0 / BLOCK_M)), int(np.floor(x1 / BLOCK_M))
        return [self.block(b, stream) for b in range(first, last + 1)]

    def solids_near(self, x0: float, x1: float, time: float) -> Solids:
        """Solids whose box overlaps [x0, x1] along the street at `time`."""
        parts = [b.solids for b in self._blocks_between(x0 - BLOCK_M, x1 + BLOCK_M)] + [self._lead]
        for k, (_, u, _) in enumerate(self.streams):
            shift = self._speed(u) * time  # the stream's frame has moved this far
            parts += [b.solids for b in self._blocks_between(x0 - shift - BLOCK_M, x1 - shift + BLOCK_M, k)]
        solids = Solids.concat(parts).at(time)
        reach = np.abs(solids.half).max(axis=1)
        keep = (solids.center[:, 0] + reach > x0) & (solids.center[:, 0] - reach < x1)
        return solids.select(keep)

    def crossings_near(self, x0: float, x1: float):
        return [c for b in self._blocks_between(x0, x1) for c in b.crossings]

    def lamps_near(self, x0: float, x1: float) -> np.ndarray:
        lamps = [lamp for b in self._blocks_between(x0, x1) for lamp in b.lamps]
        return np.asarray(lamps, np.float64).reshape(-1, 3)

    # -- traffic ------------------------------------------------------------------------------------------
    def _lead_vehicle(self, rng) -> Solids:
        """A vehicle ahead in the ego lane at the ego's speed (a drive usually follows someone)."""
        b = _Builder()
        if rng.random() < 0.6:
            x = self.ego_x0 + rng.uniform(14.0, 35.0)
            _vehicle(b, rng, x, self.layout.ego_y, 0.0, (self._speed(self.ego_speed), 0.0, 0.0))
        return b.build(0.0)

    def _stream_block(self, stream: int, index: int) -> Block:
        rng = np.random.default_rng([self.seed, 3, stream, index + SEED_OFFSET])
        y, u, yaw = self.streams[stream]
        b = _Builder()
        s = index * BLOCK_M + float(rng.uniform(7.0, 20.0))
        while s < (index + 1) * BLOCK_M - 7.0:  # vehicles stay inside their block: no overlap across blocks
            if rng.random() < 0.5:
                _vehicle(b, rng, s, y, yaw, (self._speed(u), 0.0, 0.0))
            s += float(rng.uniform(15.0, 30.0))
        return Block(solids=b.build(0.0))

    # -- the static street ----------------------------------------------------------------------------------
    def _build_block(self, index: int) -> Block:
        rng = np.random.default_rng([self.seed, 2, index + SEED_OFFSET])
        lay = self.layout
        x0 = index * BLOCK_M
        x1 = x0 + BLOCK_M
        hw = lay.road_half
        sw = lay.sidewalk_w
        b = _Builder()
        block = Block(solids=_EMPTY)

        crossing = None
        if rng.random() < 0.3:
            crossing = (x0 + BLOCK_M / 2, float(rng.choice([5.0, 7.0])))
            block.crossings.append(crossing)
        # Stretches of curb-side street along x, interrupted by the cross street.
        spans = [(x0, x1)] if crossing is None else [(x0, crossing[0] - crossing[1]), (crossing[0] + crossing[1], x1)]

        for side in (-1.0, 1.0):
            for a, z in spans:
                # In pieces: a long slab seen at a grazing angle would have a huge bounding rectangle on screen.
                cuts = np.linspace(a, z, int(np.ceil((z - a) / SLAB_M)) + 1)
                for c0, c1 in zip(cuts[:-1], cuts[1:]):
                    b.add(BOX, ((c0 + c1) / 2, side * (hw + sw / 2), lay.curb_h / 2),
                          ((c1 - c0) / 2, sw / 2, lay.curb_h / 2), "SideWalk", Material.PAVING, (0.62, 0.61, 0.58))
            if crossing is not None:
                self._cross_street(b, rng, crossing, side)
            self._buildings(b, rng, x0, x1, crossing, side)
            self._furniture(b, rng, block, spans, side)
            self._pedestrians(b, rng, spans, side)
            self._parked(b, rng, x0, side)
        if crossing is not None:
            self._crosswalk_people(b, rng, crossing)
        # Pedestrians swing about where they are when the ego passes this block.
        t_ref = (x0 - self.ego_x0) / self.ego_speed if self.ego_speed > 0.5 else 0.0
        block.solids = b.build(t_ref)
        return block

    def _cross_street(self, b, rng, crossing, side):
        lay = self.layout
        xc, hwc = crossing
        y_from = lay.road_half + lay.sidewalk_w
        length = 70.0
        for sx in (-1.0, 1.0):
            b.add(BOX, (xc + sx * (hwc + lay.sidewalk_w / 2), side * (y_from + length / 2), lay.curb_h / 2),
                  (lay.sidewalk_w / 2, length / 2, lay.curb_h / 2), "SideWalk", Material.PAVING, (0.62, 0.61, 0.58))
            # Signals on each corner.
            y = side * (lay.road_half + 0.6)
            x = xc - sx * (hwc + 0.8)
            _pole(b, x, y, 4.2, 0.1)
            b.add(BOX, (x, y, 3.6), (0.16, 0.2, 0.5), "TrafficLight", Material.SIGNAL, (0.08, 0.08, 0.08),
                  variant=int(rng.integers(3)))
        if side < 0:  # a mast arm over the ego's lanes with a hanging signal
            x = xc - hwc - 1.0
            y0 = -(lay.road_half + 0.6)
            arm = lay.road_half * 0.8
            _pole(b, x, y0, 6.0, 0.14)
            b.add(BOX, (x, y0 + arm / 2, 5.9), (0.08, arm / 2, 0.08), "Pole", Material.METAL, (0.35, 0.36, 0.37))
            b.add(BOX, (x, y0 + arm * 0.85, 5.2), (0.18, 0.22, 0.55), "TrafficLight", Material.SIGNAL,
                  (0.08, 0.08, 0.08), variant=int(rng.integers(3)))

    def _buildings(self, b, rng, x0, x1, crossing, side):
        lay = self.layout
        front = lay.road_half + lay.sidewalk_w
        setback = 0.0 if rng.random() < 0.5 else float(rng.uniform(2.0, 6.0))
        x = x0 + float(rng.uniform(0.0, 3.0))
        keep_out = None if crossing is None else (crossing[0] - crossing[1] - 1.0, crossing[0] + crossing[1] + 1.0)
        while x < x1 - 4.0:
            length = float(min(rng.uniform(8.0, 24.0), x1 - x))
            a, z = x, x + length
            if keep_out is not None and z > keep_out[0] and a < keep_out[1]:
                a, z = (a, keep_out[0]) if a < keep_out[0] else (keep_out[1], z)
            if z - a > 3.0:
                tall = 1.0 + 2.0 * self.facade_style
                height = float(rng.uniform(7.0, 14.0 * tall))
                depth = float(rng.uniform(10.0, 18.0))
                color = FACADE_COLORS[int(rng.integers(len(FACADE_COLORS)))]
                b.add(BOX, ((a + z) / 2, side * (front + setback + depth / 2), height / 2),
                      ((z - a) / 2, depth / 2, height / 2), "Building", Material.FACADE, color,
                      variant=int(rng.integers(1 << 20)))
            gap = float(rng.uniform(0.0, 6.0)) if rng.random() < 0.45 else 0.3
            if gap > 2.0 and z + gap < x1:
                # A property wall or a hedge closes the gap between buildings.
                is_wall = rng.random() < 0.6
                h = float(rng.uniform(1.0, 2.6)) if is_wall else float(rng.uniform(0.8, 1.6))
                b.add(BOX, (z + gap / 2, side * (front + setback + 0.2), h / 2),
                      (gap / 2, 0.2 if is_wall else 0.5, h / 2), "Wall" if is_wall else "Vegetation",
                      Material.CONCRETE if is_wall else Material.FOLIAGE,
                      (0.58, 0.57, 0.54) if is_wall else (0.16, 0.30, 0.10), variant=int(rng.integers(1 << 20)))
            x = z + gap

    def _furniture(self, b, rng, block, spans, side):
        lay = self.layout
        curb_y = side * (lay.road_half + 0.45)
        top = lay.curb_h
        for a, z in spans:
            if z - a < 4.0:
                continue
            # Street lamps, arm reaching over the road.
            if rng.random() < 0.7:
                x = float(rng.uniform(a + 1.0, z - 1.0))
                _pole(b, x, curb_y, 7.5, 0.09, base=top)
                b.add(BOX, (x, curb_y - side * 0.8, 7.5), (0.06, 0.8, 0.05), "Pole", Material.METAL, (0.35, 0.36, 0.37))
                b.add(BOX, (x, curb_y - side * 1.5, 7.38), (0.25, 0.12, 0.07), "Pole", Material.LAMP, (0.8, 0.8, 0.75))
                block.lamps.append((x, curb_y - side * 1.5, 7.2))
            # Traffic signs facing the traffic on their side.
            if rng.random() < 0.55:
                x = float(rng.uniform(a + 0.5, z - 0.5))
                _pole(b, x, curb_y, 2.6, 0.045, base=top)
                b.add(BOX, (x + 0.06 * side, curb_y, top + 2.2), (0.03, 0.33, 0.33), "TrafficSign", Material.SIGN,
                      (0.9, 0.9, 0.9), variant=int(rng.integers(4)))
            # Trees on the outer edge of the sidewalk.
            x = a + float(rng.uniform(2.0, 9.0))
            while x < z - 1.0:
                if rng.random() < 0.6:
                    y = side * (lay.road_half + lay.sidewalk_w - 0.9)
                    trunk = float(rng.uniform(2.0, 3.2))
                    r = float(rng.uniform(1.4, 2.4))
                    _pole(b, x, y, trunk + 0.5, 0.16, base=top, label="Vegetation", material=Material.BARK,
                          color=(0.25, 0.18, 0.12))
                    b.add(ELLIPSOID, (x, y, top + trunk + r * 0.9), (r, r, r * float(rng.uniform(1.0, 1.4))),
                          "Vegetation", Material.FOLIAGE, (0.13, 0.28, 0.08), variant=int(rng.integers(1 << 20)))
                x += float(rng.uniform(7.0, 14.0))

    def _pedestrians(self, b, rng, spans, side):
        lay = self.layout
        for a, z in spans:
            for _ in range(int(rng.poisson(1.6 * (z - a) / BLOCK_M))):
                x = float(rng.uniform(a, z))
                y = side * (lay.road_half + float(rng.uniform(0.9, lay.sidewalk_w - 0.4)))
                walking = rng.random() < 0.7
                speed = float(rng.uniform(0.8, 1.6)) * float(rng.choice([-1.0, 1.0])) if walking else 0.0
                _person(b, rng, x, y, lay.curb_h, (self._speed(speed), 0.0, 0.0))

    def _crosswalk_people(self, b, rng, crossing):
        lay = self.layout
        xc, hwc = crossing
        for _ in range(int(rng.integers(0, 3))):
            x = xc - hwc - 2.5 + float(rng.uniform(-1.0, 1.0))
            y = float(rng.uniform(-lay.road_half, lay.road_half))
            speed = float(rng.uniform(1.0, 1.6)) * float(rng.choice([-1.0, 1.0]))
            _person(b, rng, x, y, 0.0, (0.0, self._speed(speed), 0.0))

    def _parked(self, b, rng, x0, side):
        lay = self.layout
        if lay.parking_w <= 0:
            return
        x = x0 + float(rng.uniform(0.0, 4.0))
        while x < x0 + BLOCK_M - 6.0:
            if rng.random() < 0.55:
                y = side * (lay.road_half - lay.parking_w / 2)
                _vehicle(b, rng, x + 2.5, y, 0.0 if side < 0 else np.pi, (0.0, 0.0, 0.0), parked=True)
            x += float(rng.uniform(5.5, 8.0))


def _pole(b, x, y, height, radius, base=0.0, label="Pole", material=Material.METAL, color=(0.35, 0.36, 0.37)):
    b.add(CYLINDER, (x, y, base + height / 2), (radius, radius, height / 2), label, material, color)


def _person(b, rng, x, y, ground, velocity):
    cloth = CLOTH_COLORS[int(rng.integers(len(CLOTH_COLORS)))]
    height = float(rng.uniform(1.5, 1.9))
    body = height - 0.26
    b.add(CYLINDER, (x, y, ground + body / 2), (0.21, 0.21, body / 2), "Pedestrian", Material.CLOTH, cloth,
          velocity=velocity, variant=int(rng.integers(1 << 20)), swing=True)
    b.add(ELLIPSOID, (x, y, ground + body + 0.13), (0.1, 0.1, 0.13), "Pedestrian", Material.CLOTH,
          (0.55, 0.40, 0.32), velocity=velocity, variant=-1, swing=True)


def _vehicle(b, rng, x, y, yaw, velocity, parked=False):
    """A car, bus or truck built from boxes; its local +x is its front."""
    kind = rng.choice(["Cars", "Bus", "Truck"], p=[0.9, 0.04, 0.06] if parked else [0.74, 0.12, 0.14])
    paint = PAINT_COLORS[int(rng.integers(len(PAINT_COLORS)))]
    c, s = np.cos(yaw), np.sin(yaw)

    def part(dx, half, z0, z1, material, color, label=kind):
        b.add(BOX, (x + c * dx, y + s * dx, (z0 + z1) / 2), (half[0], half[1], (z1 - z0) / 2), label, material,
              color, yaw=yaw, velocity=velocity, variant=int(rng.integers(1 << 20)))

    if kind == "Cars":
        length, width = float(rng.uniform(3.9, 4.8)), float(rng.uniform(1.7, 1.9))
        part(0.0, (length * 0.36, width * 0.42), 0.05, 0.4, Material.TIRE, (0.05, 0.05, 0.05))
        part(0.0, (length / 2, width / 2), 0.35, 1.0, Material.PAINT, paint)
        part(-0.25, (length * 0.27, width * 0.44), 1.0, float(rng.uniform(1.4, 1.55)), Material.GLASS, paint)
    elif kind == "Bus":
        length = float(rng.uniform(10.0, 12.0))
        part(0.0, (length * 0.42, 1.1), 0.05, 0.4, Material.TIRE, (0.05, 0.05, 0.05))
        part(0.0, (length / 2, 1.25), 0.35, 3.1, Material.BUS, paint)
    else:
        cargo = float(rng.uniform(4.5, 7.0))
        part(-0.6, ((cargo + 2.0) * 0.45, 1.05), 0.05, 0.5, Material.TIRE, (0.05, 0.05, 0.05))
        part(cargo / 2 + 0.2, (1.1, 1.2), 0.45, 2.8, Material.PAINT, paint)
        part(-1.0, (cargo / 2, 1.25), 0.55, float(rng.uniform(3.2, 3.8)), Material.CARGO, (0.82, 0.82, 0.80))
