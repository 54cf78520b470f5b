"""The real SAM2 from the `sam2` package, built from a model card, plus its image encoder with LoRA.

`build_sam2(card)` composes the card's sam2 config with its hydra overrides, instantiates `SAM2Base` on the CPU
(random init) and, when the card names one, loads an official SAM2 checkpoint (`torch.save`d dict with key "model")
strictly: every missing or unexpected key and every shape mismatch is reported in one CheckpointError.

`SAM2Backbone` wraps `SAM2Base.image_encoder` (Hiera trunk + FPN neck) after LoRA is applied to the trunk. Its
forward takes an optional per-sample expert index (MLE-SAM's per-modality experts) and returns SAM2's encoder output
(`backbone_fpn` at strides 4, 8, 16, `vision_pos_enc`, `vision_features`). Because LoRA layers replace the trunk's
modules in place, SAM2Base's own methods (`forward_image`, `track_step`) use the adapted trunk too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Optional

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from .lora import apply_lora, is_lora_name

MAX_LISTED = 8  # keys named per category in a checkpoint error


def sam2_overrides(card) -> List[str]:
    """Hydra overrides for the card: image size from the card first, so the card's own overrides win."""
    return [f"++model.image_size={max(card.input_size)}", *card.sam2_overrides]


def build_sam2(card, load_checkpoint: bool = True) -> nn.Module:
    """SAM2Base for the card, on the CPU, in train mode, official weights loaded when the card names a file."""
    try:
        from sam2.build_sam import build_sam2 as sam2_build
    except ImportError as exc:  # pragma: no cover - the venv always has sam2
        raise ConfigError(f"the sam2 package is required to build {card.name!r}: {exc}") from None
    try:
        # apply_postprocessing adds interactive-demo options (multimask fallback, hole filling) that semantic
        # segmentation does not use; the card's overrides can still set them.
        model = sam2_build(card.sam2_config, ckpt_path=None, device="cpu", mode="train",
                           hydra_overrides_extra=sam2_overrides(card), apply_postprocessing=False)
    except Exception as exc:  # hydra/omegaconf errors for bad overrides are plain Exceptions
        raise ConfigError(f"card {card.name!r}: cannot build SAM2 from {card.sam2_config!r} with overrides "
                          f"{list(card.sam2_overrides)}: {exc}") from None
    if load_checkpoint and card.sam2_checkpoint is not None:
        load_sam2_checkpoint(model, card.sam2_checkpoint, what=f"card {card.name!r} sam2.checkpoint")
    return model


def load_torch_file(path, what: str):
    """torch.load on the CPU with weights_only=True; a missing or unreadable file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what}: file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{what}: cannot read {path}: {exc}") from None


def read_sam2_state(path, what: str = "SAM2 checkpoint") -> Dict[str, torch.Tensor]:
    """The state dict inside an official SAM2 checkpoint file."""
    data = load_torch_file(path, what)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        found = sorted(data)[:MAX_LISTED] if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{what}: {path} is not an official SAM2 checkpoint (a dict with key 'model'); "
                              f"found {found}")
    return data["model"]


def load_sam2_checkpoint(model: nn.Module, path, what: str = "SAM2 checkpoint") -> None:
    """Load official SAM2 weights into `model` (SAM2Base, LoRA applied or not), strict on names and shapes."""
    state = read_sam2_state(path, what)
    expected = {k: v for k, v in model.state_dict().items() if not is_lora_name(k)}
    check_state_matches(expected, state, f"{what} {path}", hint="a different SAM2 size or config?")
    model.load_state_dict(state, strict=False)  # strictness checked above, LoRA tensors excepted


def check_state_matches(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], what: str,
                        hint: str = "") -> None:
    """Raise one CheckpointError listing missing and unexpected keys and shape mismatches (model vs file)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state)) if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    kinds = (("shape mismatch", mismatched), ("missing in file", missing), ("unexpected in file", unexpected))
    for label, items in kinds:
        if items:
            more = f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:MAX_LISTED])}{more}")
    if problems:
        hint = f" ({hint})" if hint else ""
        raise CheckpointError(f"{what} does not fit the model{hint}: " + "; ".join(problems))


class SAM2Backbone(nn.Module):
    """SAM2's image encoder (Hiera trunk + FPN neck) with LoRA on the trunk's q and v projections."""

    def __init__(self, image_encoder: nn.Module, rank: int, alpha: float, dropout: float = 0.0, num_experts: int = 1):
        super().__init__()
        self.encoder = image_encoder
        self.experts = apply_lora(image_encoder.trunk, rank, alpha, dropout, num_experts)

    @classmethod
    def from_card(cls, sam2_model: nn.Module, card, num_experts: int = 1) -> "SAM2Backbone":
        return cls(sam2_model.image_encoder, card.lora_rank, card.lora_alpha, card.lora_dropout, num_experts)

    @property
    def trunk(self) -> nn.Module:
        return self.encoder.trunk

    @property
    def neck(self) -> nn.Module:
        return self.encoder.neck

    @property
    def d_model(self) -> int:
        return self.encoder.neck.d_model

    def forward(self, images: torch.Tensor, expert_index: Optional[torch.Tensor] = None) -> Dict[str, object]:
        """images (N, 3, H, W); expert_index (N,) long or None for a shared adapter. SAM2's encoder output dict."""
        with self.experts.use(expert_index):
            return self.encoder(images)
