"""Sensor models: how the frame camera, the event camera and the LiDAR turn the rendered scene into data, and how
each suffers its weather and its failure (only the sensor that would really suffer it is touched)."""
from __future__ import annotations

import cv2
import numpy as np

from ...classes import IGNORE_INDEX
from .camera import Intrinsics, Pose

LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)


# -- frame camera -----------------------------------------------------------------------------------------------

def camera_image(radiance, cond, failure, failures_cfg, rng, intrinsics: Intrinsics, blur_scale: float) -> np.ndarray:
    """Linear radiance -> rgb8: exposure (and over/under-exposure), motion blur, sensor noise, tone curve, rain."""
    exposure = cond.exposure
    if failure == "overexposure":
        exposure *= failures_cfg.overexposure.gain
    elif failure == "underexposure":
        exposure *= failures_cfg.underexposure.gain
    signal = radiance * exposure
    if failure == "motionblur":
        signal = zoom_blur(signal, failures_cfg.motionblur.samples, failures_cfg.motionblur.zoom * blur_scale,
                           intrinsics.cx, intrinsics.cy)
    sigma = cond.read_noise + 0.01 * np.sqrt(np.maximum(signal, 0.0))
    signal = signal + rng.standard_normal(signal.shape).astype(np.float32) * sigma
    display = np.power(tone_curve(np.maximum(signal, 0.0)), 1 / 2.2)
    if cond.get("streaks_per_mpx", 0) > 0:
        display = rain_streaks(display, rng, cond.streaks_per_mpx)
    return np.clip(np.round(display * 255.0), 0, 255).astype(np.uint8)


def tone_curve(x, white: float = 2.5):
    """Extended Reinhard: soft shoulder, hard saturation at `white` (what over-exposure runs into)."""
    return np.minimum(x * (1.0 + x / (white * white)) / (1.0 + x), 1.0)


def zoom_blur(image, samples: int, zoom: float, cx: float, cy: float):
    """Blur of forward motion: the average of the image zoomed about the focus of expansion."""
    h, w = image.shape[:2]
    acc = np.zeros_like(image)
    for i in range(samples):
        s = 1.0 + zoom * i / max(samples - 1, 1)
        m = np.array([[s, 0.0, (1 - s) * cx], [0.0, s, (1 - s) * cy]], np.float32)
        acc += cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return acc / samples


def rain_streaks(display, rng, per_mpx: float):
    h, w = display.shape[:2]
    layer = np.zeros((h, w), np.float32)
    count = int(per_mpx * h * w / 1e6)
    x0 = rng.uniform(0, w, count)
    y0 = rng.uniform(0, h, count)
    length = rng.uniform(0.03, 0.08, count) * h
    angle = np.radians(rng.normal(100.0, 4.0, count))
    strength = rng.uniform(0.15, 0.4, count)
    for x, y, n, a, s in zip(x0, y0, length, angle, strength):
        end = (int(x + n * np.cos(a)), int(y + n * np.sin(a)))
        cv2.line(layer, (int(x), int(y)), end, float(s), 1, cv2.LINE_AA)
    layer = cv2.GaussianBlur(layer, (3, 3), 0)[..., None]
    return display * (1 - layer) + 0.85 * layer


# -- event camera -----------------------------------------------------------------------------------------------

def log_intensity(radiance, dark_level: float, factor: int = 1):
    luminance = radiance @ LUMA
    if factor > 1:
        h, w = luminance.shape
        luminance = cv2.resize(luminance, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
    return np.log(luminance + dark_level)


def event_frame(log_before, log_after, event_cfg, shape, rng=None, noise_rate: float = 0.0) -> np.ndarray:
    """Pos/neg threshold crossings between two log-intensity images -> uint8 (H, W, 3): channel 0 positive,
    channel 1 negative counts times `count_scale` (clipped at 255), channel 2 zero."""
    change = log_after - log_before
    positive = np.floor(np.maximum(change, 0.0) / event_cfg.threshold)
    negative = np.floor(np.maximum(-change, 0.0) / event_cfg.threshold)
    if noise_rate > 0 and rng is not None:
        spurious = rng.random(change.shape) < noise_rate
        sign = rng.random(change.shape) < 0.5
        positive += spurious & sign
        negative += spurious & ~sign
    counts = np.stack([positive, negative], axis=-1)
    if counts.shape[:2] != tuple(shape):
        counts = cv2.resize(counts, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    out = np.zeros(tuple(shape) + (3,), np.uint8)
    out[..., :2] = np.minimum(counts * event_cfg.count_scale, 255)
    return out


# -- LiDAR ------------------------------------------------------------------------------------------------------

def scan_angles(lidar_cfg, intrinsics: Intrinsics):
    """Beam elevations (top first) and the azimuths (left to right) that can land in the camera's view."""
    lo, hi = lidar_cfg.elevation_deg
    elevations = np.linspace(hi, lo, lidar_cfg.beams)
    half_fov = np.degrees(np.arctan(intrinsics.width / 2 / intrinsics.fx)) + 8.0
    step = lidar_cfg.azimuth_step_deg
    azimuths = np.arange(np.floor(half_fov / step) * step, -half_fov, -step)
    return elevations, azimuths


def jittered_mount(mount: Pose, jitter_cfg, rng) -> Pose:
    """Where a loose or vibrating scanner really sits this frame (its data still claim the nominal mount)."""
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = np.radians(jitter_cfg.angle_deg) * rng.standard_normal()
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    shift = rng.standard_normal(3) * jitter_cfg.mount_shift_m
    return Pose(mount.rotation @ rotation, mount.position + shift)


def returns(ranges, local_dirs, reflect, incidence, lidar_cfg, cond, range_noise, rng, classes=None):
    """Measured points (N, 4: x, y, z, intensity) in the scanner's frame from true ranges along its beams; with
    `classes` (train id per beam) also each point's true class (IGNORE_INDEX for clutter: it hit no surface)."""
    r = ranges.copy()
    valid = np.isfinite(r) & (r <= lidar_cfg.max_range_m)
    r = r + rng.standard_normal(r.shape) * range_noise
    drop = cond.get("lidar_dropout", 0.0)
    if drop > 0:
        valid &= rng.random(r.shape) >= drop
    far_drop = cond.get("lidar_far_dropout", 0.0)
    if far_drop > 0:
        valid &= rng.random(r.shape) >= far_drop * np.where(np.isfinite(r), r, 0.0) / lidar_cfg.max_range_m
    intensity = reflect * np.abs(incidence)
    clutter = cond.get("lidar_clutter", 0.0)
    if clutter > 0:  # droplets right in front of the scanner
        spurious = rng.random(r.shape) < clutter
        r = np.where(spurious, rng.uniform(1.0, 6.0, r.shape), r)
        intensity = np.where(spurious, 0.05, intensity)
        valid |= spurious
    valid &= r > 0.3
    xyz = local_dirs[valid] * r[valid][:, None]
    points = np.concatenate([xyz, intensity[valid][:, None]], axis=1).astype(np.float32)
    if classes is None:
        return points
    truth = np.asarray(classes, np.uint8).copy()
    if clutter > 0:
        truth[spurious] = IGNORE_INDEX
    return points, truth[valid]


def project_points(points_lidar, camera_from_lidar: Pose, intrinsics: Intrinsics, max_range: float) -> np.ndarray:
    """LiDAR points -> sparse (H, W) float32 image holding the depth of the nearest return along the camera's
    optical axis (metres); 0 where no return lands."""
    k = intrinsics
    cam = camera_from_lidar.to_parent(points_lidar[:, :3].astype(np.float64))
    z = cam[:, 2]
    front = (z > 0.1) & (z <= max_range)
    u = np.floor(k.fx * cam[front, 0] / z[front] + k.cx).astype(np.int64)
    v = np.floor(k.fy * cam[front, 1] / z[front] + k.cy).astype(np.int64)
    inside = (u >= 0) & (u < k.width) & (v >= 0) & (v < k.height)
    image = np.full((k.height, k.width), np.inf)
    np.minimum.at(image, (v[inside], u[inside]), z[front][inside])
    image[~np.isfinite(image)] = 0.0
    return image.astype(np.float32)
