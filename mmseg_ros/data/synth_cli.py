"""`mmseg synth`: generate synthetic multi-sensor driving scenes as a DELIVER tree, a rosbag2 drive and/or
contact-sheet previews.

    mmseg synth --out DIR --frames 200 --size 256                  # DELIVER tree, all conditions and failures
    mmseg synth --bag drive.mcap --frames 100 --conditions night   # one continuous 10 Hz drive as a rosbag2
    mmseg synth --bag drive --compressed                           # JPEG / compressedDepth / PointCloud2 + TF
    mmseg synth --preview sheet.png                                # sheet.png + sheet_<condition>.png
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import ConfigError


def _names(text: str, known, what: str):
    if text.strip().lower() in ("", "none"):
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"--{what}: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def configure(parser) -> None:
    parser.add_argument("--out", type=Path, help="root of the DELIVER-layout tree to write")
    parser.add_argument("--frames", type=int, default=200, help="frames in the tree (or in the bag's drive)")
    parser.add_argument("--size", type=int, default=256, help="square image size in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conditions", default="sun,cloud,fog,night,rain",
                        help="comma-separated conditions; maps cycle through them (the bag uses the first)")
    parser.add_argument("--failures", default="motionblur,overexposure,underexposure,lidarjitter,eventlowres",
                        help="comma-separated sensor failures for the tree, or 'none'")
    parser.add_argument("--failure-every", type=int, default=4, help="every N-th map carries a failure")
    parser.add_argument("--frames-per-map", type=int, default=10, help="frames per drive (map folder)")
    parser.add_argument("--frame-step", type=int, default=5, help="camera frames between written tree frames")
    parser.add_argument("--splits", default="0.7,0.2,0.1", help="train,val,test ratios over rounds of conditions")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes for the tree")
    parser.add_argument("--bag", type=Path, help="also write one continuous drive of --frames frames as a rosbag2")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage plugin")
    parser.add_argument("--failure", default="none", help="sensor failure of the bag's drive (or 'none')")
    parser.add_argument("--no-points", action="store_true", help="leave /lidar/points out of the bag")
    parser.add_argument("--compressed", action="store_true",
                        help="record as vehicles do: camera JPEG (compressed), depth compressedDepth, events PNG, "
                             "LiDAR only as PointCloud2, its extrinsic only in /tf_static")
    parser.add_argument("--topic", action="append", default=[], metavar="KEY:=TOPIC",
                        help="rename a bag topic by key (rgb, depth, event, lidar, points, camera_info, labels, "
                             "tf_static), e.g. rgb:=/sensing/camera/front/image_raw/compressed (repeatable)")
    parser.add_argument("--preview", type=Path, help="write contact sheets: PATH and PATH_<condition>.png")
    parser.add_argument("--preview-size", type=int, default=160, help="tile size of the combined preview sheet")


def main(args) -> int:
    from tqdm import tqdm

    from .synthetic import CONDITIONS, FAILURES, SceneGenerator, tree

    if not (args.out or args.bag or args.preview):
        raise ConfigError("nothing to do: give --out, --bag and/or --preview")
    conditions = _names(args.conditions, CONDITIONS, "conditions")
    failures = _names(args.failures, FAILURES, "failures")
    bag_failure = (_names(args.failure, FAILURES, "failure") or (None,))[0]
    try:
        splits = [float(x) for x in args.splits.split(",")]
    except ValueError:
        raise ConfigError(f"--splits must be three numbers like 0.7,0.2,0.1, got {args.splits!r}") from None
    if not conditions:
        raise ConfigError("--conditions: at least one is required")

    if args.out:
        plans = tree.plan_maps(args.frames, args.frames_per_map, args.frame_step, conditions, failures,
                               args.failure_every, splits, args.seed)
        start = time.perf_counter()
        with tqdm(total=args.frames, unit="frame", desc="tree") as bar:
            for done in tree.write_tree(args.out, plans, args.size, args.workers):
                bar.update(done)
        tree.write_manifest(args.out, plans, args.size, args.seed, SceneGenerator(args.seed, args.size))
        print(f"wrote {args.frames} frames in {len(plans)} maps to {args.out} ({time.perf_counter() - start:.1f} s)")

    if args.bag:
        from .synthetic.bag import write_drive_bag

        gen = SceneGenerator(args.seed, args.size, conditions[0], bag_failure)
        frames = (gen.render_frame(i, all_events=True) for i in range(args.frames))
        start = time.perf_counter()
        topics = {}
        for text in args.topic:
            key, sep, name = text.partition(":=")
            if not sep or not key.strip() or not name.strip():
                raise ConfigError(f"--topic expects KEY:=TOPIC, got {text!r}")
            topics[key.strip()] = name.strip()
        counts = write_drive_bag(args.bag, tqdm(frames, total=args.frames, unit="frame", desc="bag"),
                                 storage=args.storage, points=not args.no_points, compressed=args.compressed,
                                 topics=topics)
        print(f"wrote {sum(counts.values())} messages to {args.bag} ({time.perf_counter() - start:.1f} s): "
              + ", ".join(f"{t} {n}" for t, n in counts.items()))

    if args.preview:
        from .synthetic import preview

        for path in preview.write_previews(args.preview, conditions, args.seed, args.size, args.preview_size, failures):
            print(f"wrote {path}")
    return 0
