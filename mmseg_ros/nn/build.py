"""Card -> model. `build_model` dispatches on the card's architecture; `load_model` also loads trained tensors.

`build_model(card)` builds the real SAM2 (loading the official checkpoint the card names, random init otherwise),
applies LoRA and freezes per the card's `trainable` setting; trained heads start from their initialisation.
`load_model(card, checkpoint)` then loads a project checkpoint (the given one, else the card's `checkpoint`);
`load_checkpoint(path)` builds the model a checkpoint stores its card for. Saving and reading checkpoints is
`checkpoint`, which knows nothing of building (the import goes one way).
"""
from __future__ import annotations

from typing import Optional

from .. import cards
from ..errors import ConfigError
from .checkpoint import load_trained_state, read_checkpoint


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
    card = as_card(card)
    path = checkpoint if checkpoint is not None else card.checkpoint
    if path is None and require_checkpoint:
        raise ConfigError(f"card {card.name!r} names no checkpoint and none was given")
    model = build_model(card)
    if path is not None:
        load_trained_state(model, path)
    return model


def load_checkpoint(path, card=None):
    """Build the model for `card` (default: the card stored in the checkpoint) and load the checkpoint into it."""
    ckpt = read_checkpoint(path)
    if card is None:
        card = cards.from_dict(ckpt["card"], source=f"{path} (stored card)")
    model = build_model(as_card(card))
    load_trained_state(model, ckpt)
    return model
