"""`mmseg train --config train/X.yaml [--resume [STATE]] [--out DIR] [--set key=value ...]`

One process trains on the CPU or the first GPU; under `torchrun --nproc_per_node=N -m mmseg_ros.cli train ...`
every process takes its part (DDP). Only rank 0 prints and writes files.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="recipe YAML (a path, or a name in the package's train/)")
    parser.add_argument("--out", default=None, help="run folder (default: runs/<recipe name>)")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="STATE",
                        help="continue the run in --out from its latest.pt (or from the training-state file STATE)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set schedule.epochs=2 (repeatable)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def main(args) -> int:
    from . import config, distributed
    from .run import run

    recipe = config.load(args.config, args.overrides)
    out_dir = Path(args.out) if args.out else Path("runs") / recipe.name
    ctx = distributed.init(args.device)
    try:
        _, progress = run(recipe, out_dir, resume=args.resume, ctx=ctx)
    finally:
        distributed.shutdown(ctx)
    if ctx.is_main:
        best = "n/a" if progress.best_miou is None else f"{progress.best_miou:.2f} (epoch {progress.best_epoch})"
        print(f"{recipe.name}: {progress.iteration} steps done, best val mIoU {best}; run folder {out_dir}",
              file=sys.stderr)
    return 0
