"""`mmseg eval`: score a checkpoint on a data set and print/save the paper-shaped tables.

    mmseg eval --checkpoint models/x.pt [--card models/x.yaml] --data DIR|synthetic:<spec> [--split val]
               [--subsets all|full|R-D,R-D-E-L] [--noise] [--conditions] [--size H [W]] [--out DIR]

Prints the Markdown report; with --out (default `eval/<model name>`) also writes results.json (schema in tables.py),
results.md, per_class_iou.png, confusion.png and, with several subsets, subsets.png.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import yaml

from .. import precision as precisions
from ..errors import ConfigError

SYNTHETIC = "synthetic:"
OUTPUT_FILES = {"json": "results.json", "markdown": "results.md", "iou": "per_class_iou.png",
                "confusion": "confusion.png", "subsets": "subsets.png"}


def configure(parser) -> None:
    parser.add_argument("--checkpoint", help="project checkpoint (.pt); default: the card's `checkpoint`")
    parser.add_argument("--card", help="model card name or path; default: the card stored in the checkpoint")
    parser.add_argument("--data", required=True,
                        help="dataset folder, or synthetic:<spec> to generate scenes, e.g. "
                             "synthetic:frames=100,seed=100 (keys: see docs/evaluation.md)")
    parser.add_argument("--dataset", default="deliver", help="loader for a folder: deliver, muses, mcubes")
    parser.add_argument("--cache", help="folder for generated synthetic trees (default ~/.cache/mmseg_ros/synthetic)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="loader keyword (e.g. depth_source=depth); default: the training recipe's, if stored")
    parser.add_argument("--subsets", default="full",
                        help="'full' (the trained set), 'all' (every non-empty subset, Table VI) or codes: R-D,R-D-E-L")
    parser.add_argument("--noise", action="store_true", help="Gaussian and uniform noise on one modality at a time")
    parser.add_argument("--noise-sigma", type=float, default=None, help="Gaussian sigma on 0..255 (paper: 50)")
    parser.add_argument("--noise-range", type=float, default=None, help="uniform half-width on 0..255 (paper: 100)")
    parser.add_argument("--noise-on", help="modalities to corrupt in turn, e.g. R,D or rgb,depth (default: all)")
    parser.add_argument("--conditions", action="store_true", help="split results by condition and failure case")
    parser.add_argument("--size", type=int, nargs="+", metavar="N", help="input size H [W]; default: the card's")
    parser.add_argument("--out", help="output folder (default eval/<model name>); '-' writes nothing")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader (and scene rendering) worker processes")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--precision", default="fp32", choices=precisions.NAMES, help="autocast on CUDA")
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    parser.add_argument("--max-samples", type=int, default=None, help="evaluate only the first N samples")
    parser.add_argument("--no-progress", action="store_true")


def main(args) -> int:
    import torch

    from . import plots, tables
    from .evaluate import evaluate, to_report
    from .subsets import modality_subsets, parse_subset, subset_code

    device = _device(args.device)
    model, card, checkpoint_path, meta = load_model(args.checkpoint, args.card)
    model.to(device)
    size = _size(args.size, card.input_size)
    options = _options(args.option, meta)
    dataset, source = open_dataset(args.data, args.dataset, args.split, card, size, options, args.cache,
                                   args.workers)

    trained = tuple(card.modalities)
    if args.subsets == "all":
        subsets = modality_subsets(trained)
    elif args.subsets == "full":
        subsets = [trained]
    else:
        subsets = [parse_subset(text, trained) for text in args.subsets.split(",")]
    noises = []
    if args.noise:
        from . import noise

        noises = [noise.make("gaussian", args.noise_sigma), noise.make("uniform", args.noise_range)]
    noise_on = parse_subset(args.noise_on, trained) if args.noise_on else None

    result = evaluate(
        model, dataset, modalities=trained, normalization={m: card.normalization(m) for m in trained},
        num_classes=card.num_classes, subsets=subsets, noises=noises, noise_on=noise_on, conditions=args.conditions,
        batch_size=args.batch_size, num_workers=args.workers, device=device, precision=args.precision,
        seed=args.seed, progress=not args.no_progress, max_samples=args.max_samples,
    )
    report = to_report(
        result, card.class_names, trained, seed=args.seed,
        model={"name": card.name, "architecture": card.architecture, "modalities": list(trained),
               "code": subset_code(trained), "card": str(card.path) if card.path else None,
               "checkpoint": str(checkpoint_path), "checkpoint_sha256": _sha256(checkpoint_path),
               "input_size": list(card.input_size)},
        data={"source": source, "dataset": "synthetic" if args.data.startswith(SYNTHETIC) else args.dataset,
              "split": args.split, "size": list(size), "options": options, "device": str(device),
              "precision": args.precision, "torch": torch.__version__},
    )
    markdown = tables.to_markdown(report)
    print(markdown)
    out = Path(args.out) if args.out else Path("eval") / card.name
    if args.out != "-":
        tables.save_json(report, out / OUTPUT_FILES["json"])
        from ..atomic import atomic_open

        with atomic_open(out / OUTPUT_FILES["markdown"], "w") as f:
            f.write(markdown)
        if "full" in report:
            plots.iou_bars(report["full"], card.class_names, out / OUTPUT_FILES["iou"],
                           title=f"{card.name}: per-class IoU ({report['full']['subset']})",
                           colors=card.class_set.palette())
            plots.confusion_matrix(report["full"]["confusion"], card.class_names, out / OUTPUT_FILES["confusion"],
                                   title=f"{card.name}: confusion matrix ({report['full']['subset']}, row-normalised)")
        if "subsets" in report:
            plots.subset_bars(report, out / OUTPUT_FILES["subsets"], title=f"{card.name}: mIoU per modality subset")
        print(f"wrote {out}/{{{','.join(OUTPUT_FILES.values())}}}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------------ helpers
def load_model(checkpoint, card_ref):
    """(model in eval mode, card, checkpoint path, checkpoint meta) from --checkpoint and/or --card."""
    from .. import cards
    from ..nn import checkpoint as ckpt_io
    from ..nn.build import build_model

    card = cards.load(card_ref) if card_ref else None
    if checkpoint is None:
        if card is None or card.checkpoint is None:
            raise ConfigError("--checkpoint is required unless --card names a card with a `checkpoint`")
        checkpoint = card.checkpoint
    stored = ckpt_io.read_checkpoint(checkpoint)
    if card is None:
        card = cards.from_dict(stored["card"], source=f"{checkpoint} (stored card)")
    model = build_model(card)
    meta = ckpt_io.load_trained_state(model, stored)
    return model.eval(), card, Path(checkpoint), meta


def open_dataset(data: str, dataset: str, split: str, card, size, options, cache=None, workers: int = 1):
    """The evaluation data set (unit inputs at `size`) and a description of where it came from."""
    from .evaluate import unit_pipeline

    transform = unit_pipeline(size, card.modalities)
    if data.startswith(SYNTHETIC):
        from . import synthetic_source

        return synthetic_source.open_dataset(data[len(SYNTHETIC):], split, card.modalities, transform,
                                             default_size=size[0], cache=cache, workers=max(1, workers),
                                             **options), data
    from ..data import registry

    factory = registry.factory(dataset, "--dataset", allow_import_path=False)
    try:
        return factory(data, split=split, modalities=card.modalities, transform=transform, **options), data
    except TypeError as exc:
        raise ConfigError(f"--option: {exc}") from None


def _options(pairs, meta) -> dict:
    """Loader keywords: those the model was trained with (checkpoint meta), then --option KEY=VALUE.

    Training on a generated tree with metric depth and evaluating on HHA would give silently wrong numbers, so the
    training data options are looked up: meta "data_options", else the stored recipe's data.options (the recipe
    itself, or its name in train/)."""
    options = dict(_trained_data_options(meta or {}))
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option expects KEY=VALUE, got {pair!r}")
        options[key] = yaml.safe_load(value)
    return options


def _trained_data_options(meta) -> dict:
    if isinstance(meta.get("data_options"), dict):
        return meta["data_options"]
    recipe = meta.get("recipe")
    if isinstance(recipe, dict):
        return dict((recipe.get("data") or {}).get("options") or {})
    if isinstance(recipe, str):
        from ..errors import MMSegError
        from ..training import config as recipes

        try:
            return dict(recipes.load(recipe).data.options)
        except (MMSegError, OSError) as exc:
            print(f"mmseg eval: note: training recipe {recipe!r} not found ({exc}); loader options default",
                  file=sys.stderr)
    return {}


def _size(values, default):
    if not values:
        return tuple(default)
    if len(values) > 2 or min(values) <= 0:
        raise ConfigError(f"--size takes one or two positive numbers (H [W]), got {values}")
    height, width = (values[0], values[-1])
    if height % 32 or width % 32:
        raise ConfigError(f"--size {height}x{width}: both must be multiples of 32 (the Hiera trunk's stride)")
    return height, width


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available here")
    return device


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
