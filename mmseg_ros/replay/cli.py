"""`mmseg replay BAG`: replay a recorded drive through the node's synchronizer and engine and score it.

    mmseg replay BAG [--remap rgb/image:=/camera/image_raw/compressed ...]
                     [--card default] [--checkpoint X] [--drop depth@2-4 ...] [--out DIR] [--storage mcap|sqlite3]
                     [--score-size input|model] [--param sync.slop=0.05 ...] [--labels-topic /gt/labels]

Offline (default): messages in bag-time order, deterministic, as fast as the model runs. --live [--rate F]
[--node-running]: plays the bag over DDS into segment_node and scores what it publishes (replay/live.py).
Writes to --out (default out/replay/<bag name>): `report.json`, `report.md` and the output bag `segmented/` with
segment_node's `labels`, `confidence` and `color` topics on the input stamps (log time = the anchor's log time).
Prints the Markdown report.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict

import yaml

from ..errors import ConfigError
from ..pipeline.config import NodeConfig
from ..drops import parse_drop

SCORE_SIZES = ("input", "model")


def configure(parser) -> None:
    parser.add_argument("bag", help="rosbag2 folder (mcap or sqlite3), e.g. one written by `mmseg synth --bag`")
    parser.add_argument("--card", default="default", help="model card name or path (default: the shipped default)")
    parser.add_argument("--checkpoint", help="project checkpoint; default: the card's")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--drop", action="append", default=[], metavar="MOD@T0-T1",
                        help="simulate MOD dropping out from T0 to T1 s after the bag start (repeatable)")
    parser.add_argument("--out", help="output folder (default out/replay/<bag name>)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), help="output bag storage (default: the input's)")
    parser.add_argument("--no-output-bag", action="store_true", help="write only the report")
    parser.add_argument("--score-size", choices=SCORE_SIZES, default="input",
                        help="score at the camera's resolution (input, default) or at the model's input size "
                             "(model: as `mmseg eval` scores; outputs are then that size too)")
    parser.add_argument("--remap", action="append", default=[], metavar="NAME:=TOPIC",
                        help="read the node's input NAME from the bag's TOPIC, e.g. rgb/image:=/sensing/camera/front/"
                             "image_raw/compressed, lidar/points:=/sensing/lidar/top/pointcloud, rgb/camera_info:=... "
                             "(repeatable; the message type comes from the bag: Image, CompressedImage, PointCloud2)")
    parser.add_argument("--labels-topic", help="ground-truth label topic (default /gt/labels when the bag has it)")
    parser.add_argument("--pictures", action="store_true",
                        help="also draw sheet.png (camera | ground truth | labels | confidence | sensors used) and "
                             "drive.gif into --out (offline)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="segment_node parameter, e.g. sync.slop=0.05 or modalities=[rgb,lidar] (repeatable)")
    live = parser.add_argument_group("live mode (plays the bag over DDS into segment_node)")
    live.add_argument("--live", action="store_true",
                      help="play the bag over DDS into segment_node at the recorded pace, record and score its outputs")
    live.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1: recorded rate)")
    live.add_argument("--node-running", action="store_true",
                      help="use the segment_node already running (same ROS_DOMAIN_ID) instead of starting one with "
                           "--card/--checkpoint/--param")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="do not print the report")


def node_config(args) -> NodeConfig:
    values: Dict = {"model.card": args.card, "model.checkpoint": args.checkpoint or "", "model.device": args.device}
    for pair in args.param:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"--param expects NAME=VALUE, got {pair!r}")
        values[name.strip()] = yaml.safe_load(text)
    return NodeConfig.from_values(values)


def main(args) -> int:
    from .bagio import InputBag
    from .run import OUTPUT_BAG, REPORT_JSON, REPORT_MD, closed_drops, replay_offline

    from .topics import parse_remaps

    config = node_config(args)
    remaps = parse_remaps(args.remap)
    with InputBag(args.bag) as bag:
        drops = closed_drops((parse_drop(text, config.modalities) for text in args.drop), bag)
    out = Path(args.out) if args.out else Path("out", "replay", Path(args.bag).resolve().name)
    if args.live:
        if config.lidar_source != "image":
            raise ConfigError("--live publishes image topics only: a LiDAR PointCloud2 replays offline")
        if args.score_size != "input":
            raise ConfigError("--live scores what the node publishes (camera resolution): --score-size input only")
        from .live import replay_live

        report = replay_live(
            args.bag, config, drops=drops, out=out, rate=args.rate, node_running=args.node_running,
            params=args.param, labels_topic=args.labels_topic, write_bag=not args.no_output_bag, remaps=remaps,
            progress=not args.no_progress, log=lambda text: print(text, file=sys.stderr))
    else:
        recorder = None
        if args.pictures:
            from . import pictures

            recorder = pictures.Recorder(config.card.class_set, config.modalities)
        report = replay_offline(
            args.bag, config, drops=drops, out=out, storage=args.storage, write_bag=not args.no_output_bag,
            score_size=args.score_size, labels_topic=args.labels_topic, progress=not args.no_progress,
            watch=recorder, remaps=remaps)
        if recorder is not None:
            labels_topic = report["bag"]["labels_topic"]
            truth = pictures.truth_from_bag(args.bag, labels_topic) if labels_topic else None
            title = f"{config.card.name}: {Path(args.bag).name}" + "".join(f", {d.label}" for d in drops)
            for path in pictures.write_pictures(recorder, out, drops, title, truth=truth):
                print(f"wrote {path}", file=sys.stderr)
    if not args.quiet:
        from .report import to_markdown

        print(to_markdown(report))
    print(f"wrote {out / REPORT_JSON}, {out / REPORT_MD}" +
          (f" and the bag {out / OUTPUT_BAG}" if not args.no_output_bag else ""), file=sys.stderr)
    return 0
