"""Card -> model. `build_model` dispatches on the card's architecture; `load_model` also loads trained tensors.

`build_model(card)` builds the real SAM2 (loading the official checkpoint the card names, random init otherwise),
applies LoRA and freezes per the card's `trainable` setting; trained heads start from their initialisation.
`load_model(card, checkpoint)` then loads a project checkpoint (the given one, else the card's `checkpoint`).
"""
from __future__ import annotations

from typing import Optional

from .. import cards
from ..errors import ConfigError


def as_card(card) -> "cards.ModelCard":
    return card if isinstance(card, cards.ModelCard) else cards.load(card)


def build_model(card):
    """A freshly initialised model for `card` (a ModelCard, a card path or a card name), on the CPU."""
    card = as_card(card)
    if card.architecture == "mle_sam":
        from .mle_sam import MLESAM

        return MLESAM(card)
    if card.architecture == "memory_sam":
        from .memory_sam import MemorySAM  # imported lazily: it lives in its own module

        return MemorySAM(card)
    raise ConfigError(f"card {card.name!r}: unknown architecture {card.architecture!r}")


def load_model(card, checkpoint: Optional[str] = None, require_checkpoint: bool = False):
    """`build_model(card)` plus the trained tensors of `checkpoint` (default: the card's own, if any)."""
    from .checkpoint import load_trained_state

    card = as_card(card)
    path = checkpoint if checkpoint is not None else card.checkpoint
    if path is None and require_checkpoint:
        raise ConfigError(f"card {card.name!r} names no checkpoint and none was given")
    model = build_model(card)
    if path is not None:
        load_trained_state(model, path)
    return model
