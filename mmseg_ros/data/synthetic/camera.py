"""Poses, intrinsics and the ego trajectory.

Frames: world and ego are x forward, y left, z up (ROS body convention); the camera's optical frame is OpenCV's
(x right, y down, z forward), the LiDAR frame is the ROS body convention at the scanner centre.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Columns: the optical frame's x, y, z axes written in the body frame (x forward, y left, z up).
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


@dataclass(frozen=True)
class Pose:
    """Rigid transform: `rotation` holds the frame's axes in the parent frame, `position` its origin."""

    rotation: np.ndarray
    position: np.ndarray

    def compose(self, child: "Pose") -> "Pose":
        """Pose of `child` (given in this frame) in this frame's parent."""
        return Pose(self.rotation @ child.rotation, self.rotation @ child.position + self.position)

    def inverse(self) -> "Pose":
        return Pose(self.rotation.T, -self.rotation.T @ self.position)

    def to_local(self, points: np.ndarray) -> np.ndarray:
        return (points - self.position) @ self.rotation

    def to_parent(self, points: np.ndarray) -> np.ndarray:
        return points @ self.rotation.T + self.position

    def matrix(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.position
        return m


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @staticmethod
    def square(size: int, fov_deg: float) -> "Intrinsics":
        f = size / 2.0 / np.tan(np.radians(fov_deg) / 2.0)
        return Intrinsics(f, f, size / 2.0, size / 2.0, size, size)

    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, factor: float) -> "Intrinsics":
        return Intrinsics(self.fx * factor, self.fy * factor, self.cx * factor, self.cy * factor,
                          int(round(self.width * factor)), int(round(self.height * factor)))


def camera_mount(mount, pitch_deg: float) -> Pose:
    """Ego -> camera optical frame. Negative pitch looks down."""
    body = rot_y(-np.radians(pitch_deg))
    return Pose(body @ BODY_FROM_OPTICAL, np.asarray(mount, np.float64))


def lidar_mount(mount, roll_deg: float = 0.0, pitch_deg: float = 0.0, yaw_deg: float = 0.0) -> Pose:
    rotation = rot_z(np.radians(yaw_deg)) @ rot_y(-np.radians(pitch_deg)) @ rot_x(np.radians(roll_deg))
    return Pose(rotation, np.asarray(mount, np.float64))


@dataclass(frozen=True)
class Trajectory:
    """The ego drives along its lane with a gentle lane-keeping sway and suspension pitch."""

    x0: float
    lane_y: float
    speed: float
    sway_m: float
    sway_period_s: float
    pitch_bounce_deg: float
    bounce_hz: float

    def pose(self, time: float) -> Pose:
        if self.speed <= 0:  # parked: engine off, no sway, no bounce
            return Pose(np.eye(3), np.array([self.x0, self.lane_y, 0.0]))
        w = 2 * np.pi / self.sway_period_s
        y = self.lane_y + self.sway_m * np.sin(w * time)
        heading = np.arctan2(self.sway_m * w * np.cos(w * time), self.speed)
        pitch = np.radians(self.pitch_bounce_deg) * np.sin(2 * np.pi * self.bounce_hz * time)
        return Pose(rot_z(heading) @ rot_y(pitch), np.array([self.x0 + self.speed * time, y, 0.0]))
