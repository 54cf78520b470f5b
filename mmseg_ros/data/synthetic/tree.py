"""Write generated drives as a DELIVER-layout tree that DELIVER loaders read unchanged:

    <root>/{img,hha,depth,event,lidar,semantic}/<condition>/<split>/<map>/<frame>_<rgb|depth|event|lidar|semantic>_front.png

`hha/` and `depth/` both use the `_depth_front` suffix (DELIVER's loader reads hha/ for depth; depth/ holds
millimetres for loaders that want metric depth). A failure case is encoded in the map folder name,
`MAP_<nn>_<failure>` (e.g. MAP_07_lidarjitter), because DELIVER selects cases by substring of the path.
`<root>/synthetic.json` records the plan (seeds, conditions, failures, splits) and the encodings.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, List, Sequence, Tuple

import cv2
import numpy as np

from ...atomic import atomic_open
from ...errors import ConfigError
from . import encode
from .config import CONDITIONS, FAILURES
from .generator import SceneGenerator
from .scene import class_set

SPLITS = ("train", "val", "test")
# folder -> file suffix, in DELIVER's naming
FOLDERS = {"img": "rgb", "hha": "depth", "depth": "depth", "event": "event", "lidar": "lidar", "semantic": "semantic"}


@dataclass(frozen=True)
class MapPlan:
    """One drive in the tree: a scene seed rendered under one condition (and maybe one failure)."""

    index: int
    seed: int
    condition: str
    failure: str | None
    split: str
    frames: Tuple[int, ...]  # camera frame indices of the drive that are written

    @property
    def name(self) -> str:
        return f"MAP_{self.index:02d}" + (f"_{self.failure}" if self.failure else "")


def split_counts(n: int, ratios: Sequence[float]) -> List[int]:
    """Largest-remainder split of n items by ratios; a split with a positive ratio gets at least one item when
    there are enough items for every such split."""
    ratios = np.asarray(ratios, np.float64)
    if len(ratios) != len(SPLITS) or (ratios < 0).any() or ratios.sum() <= 0:
        raise ConfigError(f"split ratios must be {len(SPLITS)} non-negative numbers ({'/'.join(SPLITS)}), "
                          f"got {list(ratios)}")
    share = ratios / ratios.sum() * n
    counts = np.floor(share).astype(int)
    for i in np.argsort(-(share - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    wanted = np.flatnonzero(ratios > 0)
    if n >= len(wanted):
        for i in wanted:
            if counts[i] == 0:
                counts[int(np.argmax(counts))] -= 1
                counts[i] = 1
    return counts.tolist()


def plan_maps(frames: int, frames_per_map: int = 10, frame_step: int = 5, conditions: Sequence[str] = CONDITIONS,
              failures: Sequence[str] = FAILURES, failure_every: int = 4, split_ratios=(0.7, 0.2, 0.1),
              seed: int = 0) -> List[MapPlan]:
    """Spread `frames` frames over drives: conditions cycle map by map, every `failure_every`-th map carries the
    next failure, and whole rounds of conditions go to train/val/test so each split sees every condition."""
    if frames < 1 or frames_per_map < 1 or frame_step < 1:
        raise ConfigError(f"frames ({frames}), frames_per_map ({frames_per_map}) and frame_step ({frame_step}) "
                          f"must be >= 1")
    for c in conditions:
        if c not in CONDITIONS:
            raise ConfigError(f"unknown condition {c!r}; known: {', '.join(CONDITIONS)}")
    for f in failures:
        if f not in FAILURES:
            raise ConfigError(f"unknown failure {f!r}; known: {', '.join(FAILURES)}")
    if not conditions:
        raise ConfigError("at least one condition is required")
    n_maps = -(-frames // frames_per_map)
    rounds = -(-n_maps // len(conditions))
    split_of_round = [s for s, n in zip(SPLITS, split_counts(rounds, split_ratios)) for _ in range(n)]
    plans, left, failure_i = [], frames, 0
    for m in range(n_maps):
        failure = None
        if failures and failure_every > 0 and m % failure_every == failure_every - 1:
            failure = failures[failure_i % len(failures)]
            failure_i += 1
        count = min(frames_per_map, left)
        left -= count
        map_seed = int(np.random.SeedSequence([seed, m]).generate_state(1)[0])
        plans.append(MapPlan(m, map_seed, conditions[m % len(conditions)], failure,
                             split_of_round[m // len(conditions)], tuple(range(0, count * frame_step, frame_step))))
    return plans


def frame_paths(root, plan: MapPlan, index: int) -> dict:
    """folder -> path of every file of one frame."""
    return {folder: Path(root, folder, plan.condition, plan.split, plan.name, f"{index:06d}_{suffix}_front.png")
            for folder, suffix in FOLDERS.items()}


def write_frame(root, plan: MapPlan, frame: dict) -> None:
    meta = frame["meta"]
    paths = frame_paths(root, plan, meta["index"])
    num_classes = class_set().num_classes
    images = {
        "img": frame["rgb"][..., ::-1],  # OpenCV writes BGR
        "hha": encode.hha(frame["depth"], meta["intrinsics"], meta["ego_from_camera"])[..., ::-1],
        "depth": encode.millimetres(frame["depth"]),
        "event": frame["event"][..., ::-1],
        "lidar": encode.millimetres(frame["lidar"]),
        "semantic": encode.raw_labels(frame["labels"], num_classes),
    }
    for folder, image in images.items():
        paths[folder].parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(paths[folder]), np.ascontiguousarray(image), [cv2.IMWRITE_PNG_COMPRESSION, 1]):
            raise OSError(f"could not write {paths[folder]}")


def _render_map_chunk(task):
    root, size, overrides, plan, indices = task
    gen = SceneGenerator(plan.seed, size, plan.condition, plan.failure, overrides=overrides)
    for i in indices:
        write_frame(root, plan, gen.render_frame(i))
    return len(indices)


def write_tree(root, plans: Sequence[MapPlan], size: int, workers: int = 1, overrides: dict | None = None,
               chunk: int = 5) -> Iterable[int]:
    """Render and write every planned frame; yields the number of frames finished as work completes.
    Frames are independent (seeded by map and index), so the result does not depend on `workers`."""
    tasks = [(str(root), size, overrides, p, p.frames[i:i + chunk])
             for p in plans for i in range(0, len(p.frames), chunk)]
    if workers <= 1:
        for task in tasks:
            yield _render_map_chunk(task)
        return
    # Fresh interpreters, not forks: the caller may hold thread pools (torch, OpenCV) that a fork copies in a
    # locked state. Each worker renders on one core.
    with mp.get_context("spawn").Pool(workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        yield from pool.imap_unordered(_render_map_chunk, tasks)


def write_manifest(root, plans: Sequence[MapPlan], size: int, seed: int, generator: SceneGenerator) -> Path:
    """synthetic.json: what was generated and how it is encoded (for people and loaders)."""
    path = Path(root, "synthetic.json")
    cfg = generator.cfg
    manifest = dict(
        generator="mmseg_ros.data.synthetic", seed=seed, size=size, class_set="deliver",
        layout="{folder}/{condition}/{split}/{map}/{frame:06d}_{suffix}_front.png",
        folders=FOLDERS, failure_in_map_name="MAP_<nn>_<failure>",
        encodings=dict(
            depth="uint16 millimetres, 0 = no value", lidar="uint16 millimetres of camera z-depth, 0 = no return",
            hha=dict(disparity=f"{encode.HHA_DISPARITY} / depth_m", height=f"{encode.HHA_HEIGHT_PER_M} * metres",
                     angle=f"degrees + {encode.HHA_ANGLE_OFFSET}", no_value=0),
            event=f"rgb8: ch0 positive, ch1 negative counts x {cfg.rig.event.count_scale}",
            semantic="uint8 DELIVER raw id = train id + 1, 0 = ignore",
        ),
        intrinsics=generator.intrinsics.matrix().tolist(),
        camera_from_lidar=generator.camera_from_lidar.matrix().tolist(),
        ego_from_camera=generator.camera_mount.matrix().tolist(),
        rig=cfg.rig.to_dict(),
        maps=[dict(asdict(p), name=p.name, frames=list(p.frames)) for p in plans],
    )
    os.makedirs(root, exist_ok=True)
    with atomic_open(path, "w") as f:
        json.dump(manifest, f, indent=1)
    return path
