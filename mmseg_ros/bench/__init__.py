"""`mmseg bench <what>`: benchmarks that print tables (medians over repeated runs in one process).

Each benchmark is a module here with `configure(parser)` and `main(args)`; modules import heavy dependencies (torch,
rclpy) inside `main` so the menu stays cheap. See BENCHMARKS.md for recorded results.
"""
from __future__ import annotations

import importlib

BENCHMARKS = {
    "codec": "image/PointCloud2 decode, encode and projection",
    "model": "model forward per number of present modalities; batched vs looped experts",
    "engine": "Segmenter.segment per frame (preprocess, forward, postprocess) for shipped cards",
    "node": "node overhead vs bare DDS transport",
    "kernels": "the node's per-pixel steps on one core vs the library calls they replace",
    "train": "training step throughput",
    "soak": "the node for minutes at 2x sensor rate with random drop-outs: RSS growth, latency p95 drift, drops",
    "dds": "large images between processes per DDS profile placement; node answers with `mmseg dds env` set-up",
}


def configure(parser):
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, help_text in BENCHMARKS.items():
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:  # a benchmark not built yet: leave it out of the menu
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        p = sub.add_parser(name, help=help_text)
        module.configure(p)
        p.set_defaults(_bench=module)


def main(args) -> int:
    return int(args._bench.main(args) or 0)
