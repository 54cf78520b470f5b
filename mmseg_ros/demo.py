"""`mmseg demo`: the whole product on one generated drive, with sensors failing on purpose.

1. Render a short drive with the synthetic generator (camera, depth, events, LiDAR, ground truth) and record it as a
   rosbag2 in which the depth camera is dead for one stretch and the colour camera for another.
2. Replay the bag offline through segment_node's synchronizer and the shipped default model (`mmseg replay`).
3. Print the report (mIoU with all sensors and during each drop-out, which sensors were used, latency per stage) and
   draw a contact sheet (camera | labels | confidence | sensors used) and an animated GIF of the drive.

Everything lands in --out (default out/demo): drive/ (the input bag), replay/ (report.md, report.json, the output bag
segmented/), demo_sheet.png, demo_drive.gif.
"""
from __future__ import annotations

import math
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

from .errors import ConfigError

FALLBACK_CARD = "test_tiny_mle_sam"
RATE_HZ = 10.0  # the generator's camera rate
# Drop-outs as fractions of the drive: (sensor, start, end).
OUTAGES = (("depth", 0.25, 0.45), ("rgb", 0.6, 0.8))


def configure(parser) -> None:
    parser.add_argument("--seconds", type=float, default=8.0, help="drive length in seconds (default 8)")
    parser.add_argument("--size", type=int, default=256, help="camera image size in px (default 256)")
    parser.add_argument("--condition", default="night", help="sun, cloud, fog, night or rain (default night)")
    parser.add_argument("--seed", type=int, default=3, help="scene seed")
    parser.add_argument("--card", default="default", help="model card (default: the shipped default model)")
    parser.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--no-gif", action="store_true", help="skip the animated GIF")
    parser.add_argument("--compressed", action="store_true",
                        help="record the drive as vehicles do (JPEG camera, compressedDepth, PointCloud2 LiDAR with "
                             "its extrinsic in /tf_static) and replay that")
    parser.add_argument("--no-progress", action="store_true")


def main(args) -> int:
    started = time.perf_counter()
    frames = int(round(args.seconds * RATE_HZ))
    if frames < 10:
        raise ConfigError(f"--seconds {args.seconds}: the demo needs at least {10 / RATE_HZ:g} s (10 frames)")
    from .data.synthetic import CONDITIONS

    if args.condition not in CONDITIONS:
        raise ConfigError(f"--condition must be one of {list(CONDITIONS)}, got {args.condition!r}")
    out = Path(args.out)
    card = _card(args.card)
    outages = _outage_frames(frames)
    print(f"mmseg demo: {frames / RATE_HZ:g} s drive at {RATE_HZ:g} Hz, {args.size} px, {args.condition}, seed "
          f"{args.seed}; model {card.name}")
    for sensor, indices in outages.items():
        print(f"  {sensor} out for frames {indices[0]}-{indices[-1]}")

    bag = out / "drive"
    rgb_log_ns = _write_drive(bag, frames, args, outages)
    generated = time.perf_counter()

    from .data.synthetic.bag import LABELS_TOPIC
    from .pipeline.config import NodeConfig
    from .replay import pictures
    from .replay.bagio import InputBag
    from .replay.report import to_markdown
    from .replay.run import replay_offline

    with InputBag(bag) as recorded:
        start_ns = recorded.start_ns
    drops = _windows(outages, rgb_log_ns, start_ns)
    config = NodeConfig.from_values({"model.card": str(card.path)})
    recorder = pictures.Recorder(config.card.class_set, config.modalities)
    report = replay_offline(bag, config, drops=drops, out=out / "replay", progress=not args.no_progress,
                            watch=recorder)
    replayed = time.perf_counter()

    print()
    print(to_markdown(report, per_class=False))
    _summary(report)
    title = (f"{card.name}: {args.condition} drive, "
             + ", ".join(f"{d.sensor} out {d.start_s:.1f}-{d.end_s:.1f} s" for d in drops))
    truth = pictures.truth_from_bag(bag, LABELS_TOPIC)
    written = pictures.write_pictures(recorder, out, drops, title, truth=truth, gif=not args.no_gif, prefix="demo_")
    done = time.perf_counter()
    print(f"\nbag: {bag}\nreport: {out / 'replay' / 'report.md'}\npictures: " + ", ".join(map(str, written)))
    print(f"time: {done - started:.1f} s (drive {generated - started:.1f} s, replay {replayed - generated:.1f} s, "
          f"pictures {done - replayed:.1f} s)")
    return 0


def _card(name: str):
    """The card to run; the tiny test card (with a note) while the named card's trained checkpoint is missing."""
    from . import cards

    try:
        card = cards.load(name)
    except ConfigError as exc:
        if name != "default":
            raise
        problem = f"the default model card is not there ({exc})"
    else:
        if card.checkpoint is None or Path(card.checkpoint).is_file():
            return card
        problem = f"{card.name}'s checkpoint {card.checkpoint} is not there (not trained yet?)"
    print(f"mmseg demo: note: {problem}; running the untrained {FALLBACK_CARD} instead, so the scores mean nothing",
          file=sys.stderr)
    return cards.load(FALLBACK_CARD)


def _outage_frames(frames: int) -> Dict[str, List[int]]:
    return {sensor: list(range(int(math.floor(a * frames)), int(math.floor(b * frames))))
            for sensor, a, b in OUTAGES}


def _write_drive(bag: Path, frames: int, args, outages) -> List[int]:
    """Render and record the drive; returns each camera frame's log time (ns), dropped frames included."""
    from tqdm import tqdm

    from .data.synthetic import SceneGenerator
    from .data.synthetic.bag import LATENCY_S, write_drive_bag

    if bag.exists():
        shutil.rmtree(bag)  # the demo's own output of an earlier run
    gen = SceneGenerator(args.seed, args.size, args.condition)
    camera_log: List[int] = []

    def rendered():
        for i in tqdm(range(frames), unit="frame", desc="drive", disable=args.no_progress, leave=False):
            frame = gen.render_frame(i, all_events=True)
            camera_log.append(frame["meta"]["stamps"]["rgb"] + int(LATENCY_S["rgb"] * 1e9))
            yield frame

    write_drive_bag(bag, rendered(), storage=args.storage, drops=outages, compressed=args.compressed)
    return camera_log


def _windows(outages, camera_log: List[int], start_ns: int):
    """Each outage as a replay window in seconds from the bag start, half a frame wider than its frames on each side,
    so the report counts exactly the frames recorded without that sensor."""
    from .drops import Drop

    half = 0.5 / RATE_HZ
    windows = []
    for sensor, indices in outages.items():
        first, last = camera_log[indices[0]], camera_log[indices[-1]]
        start_s, end_s = (first - start_ns) / 1e9 - half, (last - start_ns) / 1e9 + half
        windows.append(Drop(sensor, round(max(0.0, start_s), 2), round(end_s, 2)))  # 10 ms steps: readable labels
    return windows


def _summary(report) -> None:
    """The three numbers the demo is about."""
    if "overall" not in report:
        return
    lines = []
    full = report.get("subsets", {}).get("-".join(_codes(report["model"]["modalities"])))
    if full:
        lines.append(f"mIoU with all sensors: {full['miou']:.1f} ({full['frames']} frames)")
    for window in report.get("windows", []):
        during = f"while {window['modality']} is out ({window['start_s']:.1f}-{window['end_s']:.1f} s)"
        if not window["frames"]:  # e.g. a camera outage shorter than sync.anchor_timeout: the node waited for it
            lines.append(f"no frame was segmented {during}")
            continue
        used = ", ".join(m for m, n in window["used"].items() if n)
        lines.append(f"mIoU {during}: {window['miou']:.1f} over {window['frames']} frames, sensors used: {used}")
    print("\n".join(["Summary:"] + ["  " + line for line in lines]))


def _codes(names) -> Tuple[str, ...]:
    from . import modalities

    return tuple(modalities.get(n).code for n in names)
