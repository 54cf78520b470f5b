"""Synthetic multi-sensor driving scenes (see docs/synthetic.md): a seeded procedural street ray-cast in numpy to RGB,
depth, events, LiDAR and DELIVER labels, under five weather conditions and five sensor failures."""
from .config import CONDITIONS, FAILURES
from .generator import SceneGenerator

__all__ = ["CONDITIONS", "FAILURES", "SceneGenerator"]
