"""SceneGenerator: one seeded drive down a procedural street, rendered frame by frame to every sensor.

`SceneGenerator(seed, size, condition, failure).render_frame(i)` returns camera frame i of the drive (time
i / camera_hz) as a dict of numpy arrays in the representations every consumer (DELIVER tree, rosbag2, live
publisher, training) shares:

    rgb     (S, S, 3) uint8      the frame camera, after weather and failure
    depth   (S, S)    float32    z-depth in metres, registered to the camera; inf = no value (sky, beyond range)
    event   (S, S, 3) uint8      events of the last 1/event_hz s: ch 0 positive, ch 1 negative counts * count_scale
    lidar   (S, S)    float32    depth (camera z, metres) of the LiDAR returns projected into the camera; 0 = none
    labels  (S, S)    uint8      DELIVER train ids; 255 = ignore
    lidar_points (N, 4) float32  x, y, z, intensity in the scanner's frame at its own time
    lidar_point_labels (N,) uint8  the true class of each of those points (255 = clutter, no surface)
    meta    dict                 times, condition, failure, intrinsics, extrinsics, frame ids, stamps, and
                                 odometry: [(stamp ns, 4x4 world <- ego)] at every sensor stamp of the frame

Everything random comes from the seed, the frame index and a fixed stream number, so any frame can be rendered
alone, in any order, in any process, with identical bytes.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ...errors import ConfigError
from . import config, lighting, sensors, textures
from .camera import Intrinsics, Pose, Trajectory, camera_mount, lidar_mount
from .raycast import PinholeGrid, ScanGrid, cast
from .scene import Material, Street

BEHIND_M = 15.0  # solids this far behind the ego are still gathered (they can cast shadows or be half in view)
# Random streams of a frame, so that changing one effect never reshuffles another.
_CAMERA, _EVENTS, _LIDAR, _JITTER, _STAMPS = 1, 2, 3, 4, 5


@dataclass
class View:
    """What the camera sees at one instant."""

    radiance: np.ndarray
    depth: np.ndarray
    labels: np.ndarray


class SceneGenerator:
    def __init__(self, seed: int = 0, size: int = 256, condition: str = "sun", failure: str | None = None, *,
                 ego_speed: float | None = None, dynamic: bool = True, overrides: dict | None = None):
        config.check_case(condition, failure)
        if int(size) < 16:
            raise ConfigError(f"size must be at least 16 pixels, got {size!r}")
        if int(seed) < 0:
            raise ConfigError(f"seed must be >= 0, got {seed!r}")
        self.seed, self.size, self.condition, self.failure = int(seed), int(size), condition, failure
        self.cfg = config.load(overrides)
        self.cond = self.cfg.conditions.get(condition)
        rig, drive = self.cfg.rig, self.cfg.drive
        rates = rig.rates
        if rates.event_hz % rates.camera_hz:
            raise ConfigError(f"rig.rates.event_hz ({rates.event_hz}) must be a multiple of "
                              f"camera_hz ({rates.camera_hz})")
        rng = np.random.default_rng([self.seed, 0])
        speed = float(rng.uniform(*drive.speed_mps)) if ego_speed is None else float(ego_speed)
        x0 = float(rng.uniform(0.0, 4000.0))
        self.street = Street(self.seed, x0, speed, dynamic=dynamic)
        self.trajectory = Trajectory(x0, self.street.layout.ego_y, speed, drive.sway_m, drive.sway_period_s,
                                     drive.pitch_bounce_deg, drive.bounce_hz)
        self.sun_dir = lighting.sun_direction(rng)
        self.intrinsics = Intrinsics.square(self.size, rig.camera.fov_deg)
        self.camera_mount = camera_mount(rig.camera.mount, rig.camera.pitch_deg)
        self.lidar_mount = lidar_mount(rig.lidar.mount)
        self.camera_from_lidar = self.camera_mount.inverse().compose(self.lidar_mount)
        self.elevations, self.azimuths = sensors.scan_angles(rig.lidar, self.intrinsics)
        self._views: OrderedDict = OrderedDict()
        self._shadow_key, self._shadow_map = None, None

    # -- public API -------------------------------------------------------------------------------------------
    @property
    def speed(self) -> float:
        return self.trajectory.speed

    def camera_time(self, index: int) -> float:
        return index / self.cfg.rig.rates.camera_hz

    def render_frame(self, index: int, all_events: bool = False) -> dict:
        """Camera frame `index`. With all_events, `events` lists every (time, event image) of the camera period
        (event_hz / camera_hz of them, oldest first), the last being `event`."""
        if int(index) < 0:
            raise ConfigError(f"frame index must be >= 0, got {index!r}")
        rates = self.cfg.rig.rates
        t = self.camera_time(index)
        view = self._view(t)
        rgb = sensors.camera_image(view.radiance, self.cond, self.failure, self.cfg.failures,
                                   self._rng(index, _CAMERA), self.intrinsics, blur_scale=self.speed / 10.0)
        windows = int(round(rates.event_hz / rates.camera_hz))
        event_ends = [t - j / rates.event_hz for j in reversed(range(windows))]
        events = [(end, self._events(index, windows - 1 - j)) for j, end in enumerate(event_ends)
                  if all_events or j == windows - 1]
        lidar_time = t + rates.lidar_offset_s
        points, point_labels = self._scan(index, lidar_time)
        lidar = sensors.project_points(points, self.camera_from_lidar, self.intrinsics, self.cfg.rig.lidar.max_range_m)
        meta = self._meta(index, t, lidar_time)
        meta["stamps"] = stamps = self._stamps(index, t, lidar_time, event_ends)
        # The ego's motion as the vehicle's odometry reports it, at every stamp a sensor of this frame carries: a
        # consumer relating two sensors' data (the LiDAR scanned 25 ms after the camera) looks the ego up there.
        sensor_stamps = sorted({stamps["rgb"], stamps["depth"], stamps["lidar"], *stamps["event"]})
        meta["odometry"] = [(stamp, self.ego_pose_at(stamp).matrix()) for stamp in sensor_stamps]
        # Copies: the view stays cached for the next frame's event window and must not change under the caller.
        frame = dict(rgb=rgb, depth=view.depth.copy(), event=events[-1][1], lidar=lidar, labels=view.labels.copy(),
                     lidar_points=points, lidar_point_labels=point_labels, meta=meta)
        if all_events:
            frame["events"] = events
        return frame

    def ego_pose_at(self, stamp_ns: int) -> Pose:
        """World <- ego at the time a header stamp names (the ego's odometry; the world frame is its fixed frame)."""
        return self.trajectory.pose((int(stamp_ns) - self._start_ns) / 1e9)

    def render_depth(self, time: float) -> np.ndarray:
        """The exact depth image at any time (e.g. the LiDAR's), for checks."""
        return self._view(time).depth.copy()

    # -- internals --------------------------------------------------------------------------------------------
    @property
    def _start_ns(self) -> int:
        """The header stamp of time 0 (integer ns since the epoch)."""
        return int(round(self.cfg.rig.rates.start_time_s * 1e9))

    def _rng(self, index: int, stream: int, sub: int = 0):
        return np.random.default_rng([self.seed, 7, index, stream, sub])

    def _gather(self, ego: Pose, time: float):
        x = ego.position[0]
        far = self.cfg.drive.far_m
        return (self.street.solids_near(x - BEHIND_M, x + far, time), self.street.crossings_near(x - BEHIND_M, x + far),
                self.street.lamps_near(x - BEHIND_M, x + 60.0))

    def _view(self, time: float) -> View:
        key = round(time, 6)
        cached = self._views.get(key)
        if cached is not None:
            return cached
        ego = self.trajectory.pose(time)
        solids, crossings, lamps = self._gather(ego, time)
        grid = PinholeGrid(ego.compose(self.camera_mount), self.intrinsics)
        hits = cast(grid, solids)
        surface = textures.describe(hits, solids, self.street.layout, crossings, self.cond.get("lit_windows", 0.0))
        wet = self.cond.get("wet", 0.0)
        if wet > 0:
            ground = np.isin(surface.material, (Material.ASPHALT, Material.MARKING, Material.PAVING))
            surface.albedo[ground] *= 1.0 - 0.45 * wet
            surface.gloss[ground] += 0.5 * wet
        shadows = self._shadows(time) if self.cond.sun > 0 else None
        radiance = lighting.radiance(hits, surface, grid.dirs, self.cond, self.sun_dir, shadows, ego, lamps)
        depth = hits.t.astype(np.float32)
        depth[depth > self.cfg.rig.depth.max_range_m] = np.inf
        view = View(radiance, depth, surface.label)
        self._views[key] = view
        while len(self._views) > 4:
            self._views.popitem(last=False)
        return view

    def _shadows(self, time: float) -> lighting.ShadowMap:
        """The sun's shadow map of the camera period that contains `time`, shared by the views rendered for it (the
        few centimetres things move within a period do not show at a shadow map's resolution)."""
        rate = self.cfg.rig.rates.camera_hz
        frame_time = np.ceil(round(time * rate, 6)) / rate
        if self._shadow_key != frame_time:
            ego = self.trajectory.pose(frame_time)
            solids, _, _ = self._gather(ego, frame_time)
            self._shadow_map = lighting.ShadowMap(solids, ego.position + ego.rotation[:, 0] * 55.0, self.sun_dir)
            self._shadow_key = frame_time
        return self._shadow_map

    def _events(self, index: int, back: int) -> np.ndarray:
        """Event image of the window that ends `back` event periods before camera frame `index`."""
        ev = self.cfg.rig.event
        period = 1.0 / self.cfg.rig.rates.event_hz
        end = self.camera_time(index) - back * period
        factor = int(self.cfg.failures.eventlowres.factor) if self.failure == "eventlowres" else 1
        before = sensors.log_intensity(self._view(end - period).radiance, ev.dark_level, factor)
        after = sensors.log_intensity(self._view(end).radiance, ev.dark_level, factor)
        rate = max(ev.noise_rate, self.cond.get("event_noise_rate", 0.0))
        return sensors.event_frame(before, after, ev, (self.size, self.size), self._rng(index, _EVENTS, back), rate)

    def _scan(self, index: int, time: float) -> np.ndarray:
        lidar_cfg = self.cfg.rig.lidar
        ego = self.trajectory.pose(time)
        mount = self.lidar_mount
        range_noise = lidar_cfg.range_noise_m
        if self.failure == "lidarjitter":
            jitter = self.cfg.failures.lidarjitter
            mount = sensors.jittered_mount(mount, jitter, self._rng(index, _JITTER))
            range_noise = jitter.range_noise_m
        solids, crossings, _ = self._gather(ego, time)
        grid = ScanGrid(ego.compose(mount), self.elevations, self.azimuths)
        hits = cast(grid, solids)
        material = textures.materials(hits, solids, self.street.layout, crossings)
        classes = textures.labels(hits, solids, self.street.layout, crossings)
        incidence = (grid.dirs * hits.normal).sum(-1)
        local_dirs = grid.dirs @ grid.pose.rotation  # beam directions in the scanner's own frame
        return sensors.returns(hits.t, local_dirs, textures.reflectivity(material), incidence, lidar_cfg, self.cond,
                               range_noise, self._rng(index, _LIDAR), classes=classes)

    def _stamps(self, index: int, time: float, lidar_time: float, event_ends) -> dict:
        """Header stamps (integer ns since the epoch) per sensor: nominal time + start offset + small jitter. Every
        event window of the camera period gets one, whether or not it was rendered."""
        rates = self.cfg.rig.rates
        rng = self._rng(index, _STAMPS)
        start_ns = self._start_ns

        def stamp(seconds):  # integer arithmetic on the epoch part: float64 cannot hold epoch nanoseconds
            return start_ns + int(round((seconds + rng.uniform(-1, 1) * rates.stamp_jitter_s) * 1e9))

        rgb = stamp(time)
        return dict(rgb=rgb, labels=rgb, depth=stamp(time), lidar=stamp(lidar_time),
                    event=[stamp(e) for e in event_ends])

    def _meta(self, index: int, time: float, lidar_time: float) -> dict:
        rig = self.cfg.rig
        return dict(
            seed=self.seed, index=index, time=time, lidar_time=lidar_time, condition=self.condition,
            failure=self.failure, size=self.size, speed=self.speed,
            intrinsics=self.intrinsics.matrix(),
            world_from_camera=self.trajectory.pose(time).compose(self.camera_mount).matrix(),
            camera_from_lidar=self.camera_from_lidar.matrix(),
            ego_from_camera=self.camera_mount.matrix(), ego_from_lidar=self.lidar_mount.matrix(),
            frame_ids=dict(rgb=rig.camera.frame_id, depth=rig.depth.frame_id, event=rig.event.frame_id,
                           lidar=rig.camera.frame_id, lidar_points=rig.lidar.frame_id),
            event_count_scale=rig.event.count_scale,
        )
