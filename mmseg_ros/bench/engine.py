"""`mmseg bench engine`: what the node pays per frame, `Segmenter.segment` end to end, for shipped cards.

For each card (with its checkpoint when it names one) and camera size: one frame of generated sensor data in the
sensors' own encodings (uint8 camera, metric depth and LiDAR in metres, event counts) with all of the card's
modalities, then `segment` (preprocess: conversion + resize to the model input + normalisation; forward; postprocess:
logits upsampled to the camera size, softmax, labels + confidence) timed --repeat times after --warmup. Medians per
stage and the total, and the 1-minute load average before and after, because on a shared CPU the load decides the
numbers as much as the model does.
"""
from __future__ import annotations

import os

from .. import precision as precisions

DEFAULT_CARDS = ["default"]


def configure(parser) -> None:
    parser.add_argument("--cards", nargs="+", default=DEFAULT_CARDS, help="model cards (names or paths)")
    parser.add_argument("--camera-size", type=int, default=256, help="square camera image size in px")
    parser.add_argument("--repeat", type=int, default=20, help="timed frames per card (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed frames per card")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--precision", default="fp32", choices=precisions.NAMES,
                        help="autocast precision (half precisions on CUDA only)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")


def main(args) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/model.py: busy-waiting hurts a shared CPU
    import warnings

    import torch

    from .. import cards
    from ..data.synthetic import SceneGenerator
    from ..engine import Segmenter
    from ..reporting import markdown_table, median_ms

    torch.set_num_threads(args.threads)
    frame = SceneGenerator(seed=0, size=args.camera_size, condition="sun").render_frame(0)
    rows = []
    for ref in args.cards:
        card = cards.load(ref)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a card without checkpoint times the same network
            segmenter = Segmenter(card, device=args.device, precision=args.precision)
        images = {m: frame[m] for m in card.modalities}
        for _ in range(args.warmup):
            segmenter.segment(images)
        load_before = os.getloadavg()[0]
        stages = {}
        for _ in range(args.repeat):
            for stage, ms in segmenter.segment(images).timing.items():
                stages.setdefault(stage, []).append(ms / 1e3)
        load_after = os.getloadavg()[0]
        rows.append((card.name, f"{args.camera_size}->{card.input_size[0]}", len(images),
                     *(median_ms(stages[s]) for s in ("preprocess", "forward", "postprocess", "total")),
                     f"{load_before:.1f} / {load_after:.1f}"))
    print(f"## Segmenter.segment per frame ({segmenter.device}, {segmenter.precision}, {args.threads} threads, "
          f"median of {args.repeat}, {os.cpu_count()} CPUs)\n")
    print(markdown_table(["card", "camera->model px", "inputs", "preprocess ms", "forward ms", "postprocess ms",
                          "total ms", "load 1 min before / after"], rows))
    return 0


if __name__ == "__main__":  # `python -m mmseg_ros.bench.engine` (also `mmseg bench engine` once registered)
    import argparse

    _parser = argparse.ArgumentParser(prog="mmseg bench engine", description=__doc__.splitlines()[0])
    configure(_parser)
    raise SystemExit(main(_parser.parse_args()))
