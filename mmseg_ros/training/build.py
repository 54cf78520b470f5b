"""Recipe -> the objects a run needs: the model card, the model, the datasets and their batch collate.

The recipe's `model` is a card name/path, `{card: <name or path>, override: {dotted.key: value}}` (a shipped card
with a few keys changed, e.g. `trainable: from_scratch`), or a whole inline card. `data.dataset` names one of the
project's loaders or `package.module:function` for a user's own data, called as
`function(root=..., split=..., modalities=..., transform=..., **options)` and returning a map-style dataset of
model samples (data.common).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Optional, Tuple

import torch
import yaml

from .. import cards
from ..data import registry
from ..errors import ConfigError
from ..resources import resolve
from .config import Recipe, set_dotted

def load_card(recipe: Recipe) -> cards.ModelCard:
    card = _card(recipe)
    if card.sam2_checkpoint is not None and "$" in str(card.sam2_checkpoint):
        raise ConfigError(f"model.sam2.checkpoint: {card.sam2_checkpoint} uses an environment variable that is not "
                          f"set; export it or pass --set model.sam2.checkpoint=/path/to/the/official/sam2.pt")
    return card


def _card(recipe: Recipe) -> cards.ModelCard:
    spec = recipe.model
    if isinstance(spec, str):
        return cards.load(spec)
    if "card" in spec:
        extra = sorted(set(spec) - {"card", "override"})
        if extra:
            raise ConfigError(f"model.{extra[0]}: a card reference takes only 'card' and 'override'")
        ref = str(spec["card"])
        path = resolve(ref if ref.endswith((".yaml", ".yml")) else ref + ".yaml", "models").resolve()
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        override = spec.get("override") or {}
        if not isinstance(override, dict):
            raise ConfigError(f"model.override: expected a mapping of dotted card keys, got {override!r}")
        data = copy.deepcopy(data)
        for key, value in override.items():
            set_dotted(data, str(key), value, "model.override.")
        return cards.from_dict(data, source=f"{path} (overridden by recipe {recipe.name})", base_dir=path.parent)
    base = Path(recipe.source).parent if recipe.source else None
    return cards.from_dict(spec, source=f"recipe {recipe.name} (inline card)", base_dir=base)


def build_model(card: cards.ModelCard, seed: int, device: torch.device) -> torch.nn.Module:
    """The card's model with frozen parts initialised from `seed` (identical in every process and on resume)."""
    from ..nn.build import build_model as build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(card)
    return model.to(device)


def init_weights(model: torch.nn.Module, checkpoint: str) -> None:
    """Start from a project checkpoint's trained tensors (recipe `init_from`); it must fit the recipe's card."""
    from ..nn.checkpoint import load_trained_state

    try:
        path = resolve(checkpoint, "models")
    except ConfigError as exc:
        raise ConfigError(f"init_from: {exc}") from None
    load_trained_state(model, path)  # its reader refuses folders and unreadable files


def build_datasets(recipe: Recipe, card: cards.ModelCard) -> Tuple[object, Optional[object]]:
    """(train set, validation set or None) with the card's input size and normalisation."""
    from ..data import transforms

    normalization = {m: card.normalization(m) for m in card.modalities}
    try:
        train_transform = transforms.train_pipeline(
            card.input_size, normalization, modality_dropout=recipe.data.modality_dropout, seed=recipe.seed,
            **recipe.data.augment,
        )
    except TypeError as exc:
        raise ConfigError(f"data.augment: {exc}") from None
    train = _dataset(recipe, card, recipe.data.train_split, train_transform)
    val = None
    if recipe.data.val_split is not None:
        val = _dataset(recipe, card, recipe.data.val_split, transforms.eval_pipeline(card.input_size, normalization))
    return train, val


def collate(card: cards.ModelCard):
    from ..data.common import Collate

    return Collate(card.modalities)


def _dataset(recipe: Recipe, card: cards.ModelCard, split: str, transform):
    name = recipe.data.dataset
    factory = registry.factory(name)
    if recipe.data.root is None and name in registry.LOADERS:
        raise ConfigError(f"data.root: the {name} dataset needs a root folder")
    try:
        return factory(recipe.data.root, split=split, modalities=card.modalities, transform=transform,
                       **recipe.data.options)
    except TypeError as exc:
        raise ConfigError(f"data.options: {exc}") from None
