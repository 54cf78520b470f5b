"""`mmseg bench model`: forward time per number of present modalities, and batched vs looped LoRA experts.

For each card and input size: the model's forward (batch 1 by default, inference mode) with the first n of the card's
modalities present, n = 1..M (medians over --repeat runs after --warmup), and, alternating with it in the same run,
a bare SAM2 image encoder (trunk + FPN neck of the card's SAM2, no LoRA) on the same n images as one batch: the
ratio ours / bare is the price of LoRA experts, fusion and the heads. "vs all present" is the forward time with n
modalities over the time with all M. For cards whose model has per-modality
experts (MLE-SAM), the trunk + neck with all M modalities is timed both ways in the same run, alternating: one
batched pass (each sample with its own expert) and a Python loop of M passes; the ratio is looped / batched.

Defaults stay small because this usually runs on a shared 2-core CPU: tiny + Hiera-T cards of both architectures
(MemorySAM where `build_model` can build it), 256 and 512 px, 3 repeats. Use --repeat, --sizes, --cards, --batch,
--device for more.
"""
from __future__ import annotations

import os
import sys

from .. import precision as precisions

DEFAULT_CARDS = ["test_tiny_mle_sam", "test_tiny_memory_sam", "mle_sam_hiera_t", "memory_sam_hiera_t"]


def configure(parser) -> None:
    parser.add_argument("--cards", nargs="+", default=DEFAULT_CARDS, help="model cards (names or paths)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512], help="square input sizes (multiples of 32)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per cell (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per cell")
    parser.add_argument("--batch", type=int, default=1, help="samples per forward")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--precision", default="fp32", choices=precisions.NAMES,
                        help="autocast dtype (half precisions on CUDA only)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--no-loop", action="store_true", help="skip the batched-vs-looped experts comparison")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare SAM2 image encoder comparison")


def main(args) -> int:
    # Busy-waiting OpenMP threads on an oversubscribed machine slow small ops down by 10-60x; passive waiting does not
    # cost anything measurable when the cores are free. Only effective if torch is not imported yet.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from .. import cards, modalities
    from ..engine import resolve_device
    from ..errors import MMSegError
    from ..nn.build import build_model
    from ..nn.sam2_backbone import build_sam2
    from ..reporting import markdown_table
    from .timing import autocast

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    autocast(device, args.precision)  # refuse a half precision on the CPU before building anything
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    forward_rows, loop_rows, skipped = [], [], []
    load_before = os.getloadavg()[0]
    for ref in args.cards:
        base = cards.load(ref)
        for size in args.sizes:
            try:
                card = cards.derive(base, input_size=[size, size], sam2={"checkpoint": None})
                torch.manual_seed(0)
                model = build_model(card).to(device).eval()
            except (MMSegError, ModuleNotFoundError) as exc:  # e.g. an architecture whose module is not there yet
                skipped.append(f"{base.name} @ {size}: {exc}")
                continue
            bare = None if args.no_bare else build_sam2(card, load_checkpoint=False).image_encoder.to(device).eval()
            images = {m: torch.randn(args.batch, 3, size, size, device=device) for m in card.modalities}
            for n in range(1, len(card.modalities) + 1):
                subset = {m: images[m] for m in card.modalities[:n]}
                stacked = torch.cat(list(subset.values()))

                def forward(subset=subset, model=model):
                    with torch.inference_mode(), autocast(device, args.precision):
                        model(subset)
                    sync()

                def encoder(stacked=stacked, bare=bare):
                    with torch.inference_mode(), autocast(device, args.precision):
                        bare(stacked)
                    sync()

                timed = {"ours": forward} if bare is None else {"ours": forward, "bare": encoder}
                ms = _alternating(timed, args.repeat, args.warmup)
                code = modalities.short_code(subset)
                if bare is None:
                    forward_rows.append((card.name, size, n, code, ms["ours"], ms["ours"] / n, "-", "-"))
                else:
                    forward_rows.append((card.name, size, n, code, ms["ours"], ms["ours"] / n, ms["bare"],
                                         ms["ours"] / ms["bare"]))
                print(f"{card.name} {size}px {code}: {ms['ours']:.1f} ms", file=sys.stderr, flush=True)
            del bare
            cell = forward_rows[-len(card.modalities):]  # n = 1..M of this card and size; the last has all M
            forward_rows[-len(card.modalities):] = [(*row[:5], row[4] / cell[-1][4], *row[5:]) for row in cell]
            experts = getattr(getattr(model, "backbone", None), "experts", None)
            if not args.no_loop and experts is not None and experts.num_experts > 1:
                batched, looped = _batched_vs_looped(model, images, args, sync, torch)
                loop_rows.append((card.name, size, len(images), batched, looped, looped / batched))
            del model

    load_after = os.getloadavg()[0]
    print(f"## Forward time per number of present modalities ({device}, {args.precision}, batch {args.batch}, "
          f"{args.threads} threads, "
          f"median of {args.repeat}, load average 1 min {load_before:.1f} before / {load_after:.1f} after)\n")
    print(markdown_table(["card", "size", "present", "modalities", "forward ms", "vs all present", "ms per modality",
                          "bare SAM2 encoder ms (same images)", "ours / bare"], forward_rows))
    if loop_rows:
        print("\n## LoRA experts: one batched trunk pass vs a loop over modalities (encoder only, same run)\n")
        print(markdown_table(["card", "size", "modalities", "batched ms", "looped ms", "looped / batched"], loop_rows))
    for line in skipped:
        print(f"\nskipped {line}")
    return 0


def _batched_vs_looped(model, images, args, sync, torch):
    """Median ms of the encoder with all modalities: one batched pass vs one pass per modality, interleaved."""
    from .timing import autocast

    names = list(images)
    ids = model.expert_ids(names)
    batch = args.batch
    stacked = torch.cat([images[m] for m in names])
    index = torch.tensor(ids, device=stacked.device).repeat_interleave(batch)
    device = stacked.device

    def batched():
        with torch.inference_mode(), autocast(device, args.precision):
            model.backbone(stacked, index)
        sync()

    def looped():
        with torch.inference_mode(), autocast(device, args.precision):
            for name, expert in zip(names, ids):
                model.backbone(images[name], torch.full((batch,), expert, device=stacked.device))
        sync()

    ms = _alternating({"batched": batched, "looped": looped}, args.repeat, warmup=1)
    return ms["batched"], ms["looped"]


def _alternating(calls, repeat: int, warmup: int):
    """Median ms per named call, timed in turn (all warmed up first) so every call sees the same machine load."""
    from ..reporting import median_ms
    from .timing import time_call

    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in calls}
    for _ in range(repeat):
        for name, fn in calls.items():
            times[name] += time_call(fn, repeat=1, warmup=0)
    return {name: median_ms(samples) for name, samples in times.items()}
