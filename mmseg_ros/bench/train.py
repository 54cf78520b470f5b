"""`mmseg bench train`: training step throughput per card, number of present modalities and batch size.

One step is what the trainer does per optimiser step without data loading (mmseg_ros/training/trainer.py): the
model in train mode on a batch of random inputs (the first n of the card's modalities, all present), the model's
own loss (`compute_loss`: OHEM on both paths for MLE-SAM, OHEM + SPMM for MemorySAM) against random labels,
backward, then AdamW on the trained parameters and zero_grad. Timed per step: forward + loss + backward ("fwd+bwd")
and the whole step; samples/s = batch / step time. Medians over --repeat steps after --warmup, every cell in one
run, with the 1-minute load average before and after (on a shared CPU it moves the figures as much as the model).

Defaults stay small (a shared 2-core CPU): the tiny test card and the node's default card at their input sizes,
batch 1 and 4, 1..M modalities, 5 steps. Frozen SAM2 weights are random (the card's official file is not loaded):
the time does not depend on their values.
"""
from __future__ import annotations

import os
import sys

from .. import precision as precisions

DEFAULT_CARDS = ["test_tiny_mle_sam", "default"]


def configure(parser) -> None:
    parser.add_argument("--cards", nargs="+", default=DEFAULT_CARDS, help="model cards (names or paths)")
    parser.add_argument("--size", type=int, default=None, help="square input size in px (default: each card's)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4], help="samples per step")
    parser.add_argument("--modalities", nargs="+", type=int, default=None,
                        help="numbers of present modalities (the first n of the card's; default 1..M)")
    parser.add_argument("--repeat", type=int, default=5, help="timed steps per cell (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per cell")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--precision", default="fp32", choices=precisions.NAMES,
                        help="autocast dtype as the trainer's train.amp (half precisions on CUDA only; fp16 with a "
                             "grad scaler)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")


def main(args) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see mmseg_ros/__init__.py: busy-waiting hurts a shared CPU
    import time

    import torch

    from .. import cards, modalities
    from ..engine import resolve_device
    from ..errors import ConfigError
    from ..nn.build import build_model
    from ..reporting import markdown_table, median_ms
    from .timing import autocast

    _check(args, ConfigError)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    autocast(device, args.precision)  # refuse a half precision on the CPU before building anything
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    load_before = os.getloadavg()[0]
    rows = []
    for ref in args.cards:
        base = cards.load(ref)
        size = args.size or base.input_size[0]
        card = cards.derive(base, input_size=[size, size], sam2={"checkpoint": None}, checkpoint=None)
        counts = args.modalities or range(1, len(card.modalities) + 1)
        if max(counts) > len(card.modalities):
            raise ConfigError(f"--modalities {max(counts)}: card {card.name!r} has {len(card.modalities)}")
        torch.manual_seed(0)
        model = build_model(card).to(device).train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
        scaler = torch.amp.GradScaler(device.type, enabled=precisions.needs_grad_scaling(args.precision))
        trained_m = sum(p.numel() for p in params) / 1e6
        for n in counts:
            names = card.modalities[:n]
            for batch in args.batch_sizes:
                gen = torch.Generator().manual_seed(n * 1000 + batch)
                inputs = {m: torch.randn(batch, 3, size, size, generator=gen).to(device) for m in names}
                labels = torch.randint(0, card.num_classes, (batch, size, size), generator=gen).to(device)
                fwd_bwd, whole = [], []
                for i in range(args.warmup + args.repeat):
                    sync()
                    t0 = time.perf_counter()
                    with autocast(device, args.precision):
                        loss, _ = model.compute_loss(model(inputs), labels)
                    scaler.scale(loss).backward()
                    sync()
                    t1 = time.perf_counter()
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    sync()
                    t2 = time.perf_counter()
                    if i >= args.warmup:
                        fwd_bwd.append(t1 - t0)
                        whole.append(t2 - t0)
                step_ms = median_ms(whole)
                rows.append((card.name, size, f"{trained_m:.2f}", batch, n, modalities.short_code(names),
                             median_ms(fwd_bwd), step_ms - median_ms(fwd_bwd), step_ms, 1e3 * batch / step_ms))
                print(f"{card.name} {size}px batch {batch} {modalities.short_code(names)}: {step_ms:.1f} ms/step",
                      file=sys.stderr, flush=True)
        del model, optimizer, scaler
    load_after = os.getloadavg()[0]
    print(f"## Training step ({device}, {args.precision}, {args.threads} threads, median of {args.repeat} steps after "
          f"{args.warmup}, {os.cpu_count()} CPUs, load average 1 min {load_before:.1f} before / {load_after:.1f} "
          f"after)\n")
    print(markdown_table(["card", "size", "trained M params", "batch", "present", "modalities", "fwd+bwd ms",
                          "optimizer ms", "step ms", "samples/s"], rows))
    return 0


def _check(args, error) -> None:
    for name in ("repeat", "threads"):
        if getattr(args, name) < 1:
            raise error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise error(f"--warmup must be >= 0, got {args.warmup}")
    if any(b < 1 for b in args.batch_sizes):
        raise error(f"--batch-sizes must be >= 1, got {args.batch_sizes}")
    if args.modalities is not None and any(n < 1 for n in args.modalities):
        raise error(f"--modalities must be >= 1, got {args.modalities}")
    if args.size is not None and (args.size < 32 or args.size % 32):
        raise error(f"--size must be a positive multiple of 32, got {args.size}")
