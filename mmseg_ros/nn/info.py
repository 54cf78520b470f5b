"""`mmseg info CARD`: total, frozen and trainable parameters per component of the card's model.

The model is built exactly as for training, but without loading the official SAM2 weights (counts do not depend on
them, and the file need not be present). If the card carries a `reference` with `trainable_params_m` (a published
figure), the trainable total is compared with it.
"""
from __future__ import annotations

from ..reporting import markdown_table
from ..cards import TRAINABLE_SETTINGS

MILLION = 1e6


def configure(parser) -> None:
    parser.add_argument("card", help="model card: a path or a name in models/")
    parser.add_argument("--trainable", choices=TRAINABLE_SETTINGS, default=None,
                        help="count for this trainable setting instead of the card's")


def main(args) -> int:
    from .. import cards
    from .build import build_model

    card = cards.load(args.card)
    changes = {"sam2": {"checkpoint": None}}
    if args.trainable:
        changes["trainable"] = args.trainable
    model = build_model(cards.derive(card, **changes))
    print(report(model))
    return 0


def report(model) -> str:
    card = model.card
    counts = model.parameter_counts()
    rows = [(name, _m(c["total"]), _m(c["frozen"]), _m(c["trainable"])) for name, c in counts.items() if c["total"]]
    totals = {k: sum(c[k] for c in counts.values()) for k in ("total", "frozen", "trainable")}
    rows.append(("**total**", _m(totals["total"]), _m(totals["frozen"]), _m(totals["trainable"])))
    lines = [
        f"{card.name}: {card.architecture} on {card.sam2_config}, {'-'.join(m[0].upper() for m in card.modalities)} "
        f"({', '.join(card.modalities)}), {card.num_classes} classes ({card.class_set.name}), "
        f"input {card.input_size[0]}x"
        f"{card.input_size[1]}, LoRA rank {card.lora_rank}, trainable setting '{card.trainable}'",
        "",
        markdown_table(["component", "total (M)", "frozen (M)", "trainable (M)"], rows),
        "",
        f"trainable: {totals['trainable']:,} parameters ({_m(totals['trainable'])} M)",
    ]
    lora = counts.get("lora", {}).get("total", 0)
    experts = getattr(getattr(getattr(model, "backbone", None), "experts", None), "num_experts", None)
    if lora and experts:
        lines.append(f"LoRA: {experts} adapter(s) of {lora // experts:,} parameters each")
    reference = card.reference.get("trainable_params_m") if card.reference else None
    if reference:
        ours = totals["trainable"] / MILLION
        lines.append(f"reference: {reference:.2f} M trainable ({card.reference.get('source', 'published')}); "
                     f"this build: {ours:.2f} M ({ours - reference:+.2f} M, {ours / reference:.2f}x) "
                     "- see docs/models.md")
    return "\n".join(lines)


def _m(n: int) -> str:
    return f"{n / MILLION:.3f}"
