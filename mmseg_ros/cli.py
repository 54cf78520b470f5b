"""`mmseg`: one console entry point, one sub-command per tool.

Sub-commands live in their own modules and are imported only when chosen, so `mmseg synth` never pays for
rclpy and `mmseg node` never pays for the data generator. Each module provides `configure(parser)` and
`main(args) -> int`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import MMSegError

# name -> (module, one-line help)
COMMANDS = {
    "demo": ("mmseg_ros.demo", "run the end-to-end demo on generated data"),
    "synth": ("mmseg_ros.data.synth_cli", "generate synthetic multi-sensor driving scenes (DELIVER tree, rosbag2)"),
    "info": ("mmseg_ros.nn.info", "print a model card's parameters per component"),
    "train": ("mmseg_ros.training.cli", "train a model from a recipe in train/"),
    "eval": ("mmseg_ros.evaluation.cli", "evaluate a checkpoint on a dataset (paper-style tables)"),
    "compare": ("mmseg_ros.evaluation.compare", "print several `mmseg eval` results side by side"),
    "replay": ("mmseg_ros.replay.cli", "replay a rosbag2 through the model and score it"),
    "node": ("mmseg_ros.ros.node", "run the segment node (same as segment_node)"),
    "sensors": ("mmseg_ros.ros.sensors", "publish synthetic sensor topics live over DDS"),
    "dds": ("mmseg_ros.ros.dds", "DDS set-up for camera drivers: `mmseg dds env` prints the lines their shell needs"),
    "bench": ("mmseg_ros.bench", "benchmarks: codec, model, node, train"),
}


def build_parser(argv) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmseg", description="mmseg_ros tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    # Only the chosen sub-command's module is imported and allowed to define its arguments.
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    if chosen:
        module = importlib.import_module(COMMANDS[chosen][0])
        sub_parser = argparse.ArgumentParser(prog=f"mmseg {chosen}", description=COMMANDS[chosen][1])
        module.configure(sub_parser)
        sub.choices[chosen] = sub_parser
        sub_parser.set_defaults(_module=module)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    if extra and not getattr(args, "_accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        return int(args._module.main(args) or 0)
    except MMSegError as exc:
        print(f"mmseg {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # disk full, permissions, missing files: the machine's problem, said in one line
        print(f"mmseg {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
