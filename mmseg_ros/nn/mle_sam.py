"""MLE-SAM (mle-sam.md Sec. III, Eq. 1-14) on the real SAM2 modules.

1. Every present modality runs through the frozen Hiera trunk with its own LoRA expert (q, v of every block) in ONE
   batched pass: the batch is (present modality, sample) pairs, each row tagged with its expert. Absent
   (modality, sample) pairs are not in that batch, so they cost no encoder compute.
2. SAM2's FPN neck gives per-modality maps at strides 4, 8, 16; SAM2's decoder 1x1 convs reduce stride 4 to d/8
   (FFP, Y_0) and stride 8 to d/4 (IFP, Y_1); stride 16 stays d (SFM, Y_n).
3. Per level, `ModalityFusion`: mean over present modalities + router top-k weighted sum, combined (Eq. 7-10).
4. Dual path: `ClassMaskDecoder` (SAM2 mask decoder with K class tokens, hierarchical refinement, Eq. 11) gives S_0,
   `AuxiliaryHead` (Eq. 12) gives S_1, both at stride 4, upsampled bilinearly to the input size. The final logits
   are their mean by default (the paper combines both paths without a formula; the mean keeps the logit scale of
   each); card `output: decoder` or `aux` takes one path.
5. Loss (Eq. 14): w0 * OHEM(S_0) + w1 * OHEM(S_1).

Card block `mle_sam:` keys: top_k (2), combine (sum | mean), renormalize_top_k (false: Eq. 10 as written; true
divides the chosen weights by their sum, fusion.py), aux_dropout (0.1), output (mean | decoder | aux: what
"logits" is; both paths train either way), train_decoder_transformer (false:
the paper keeps the decoder's transformer block frozen; class tokens, hypernetworks, upscaling and the 1x1 convs
train), no_mem_embed (false: the fused SFM enters the decoder as the paper describes; true adds SAM2's
`no_mem_embed` first, as SAM2's image path does with `directly_add_no_mem_embed`, heads.py). `loss:` keys:
ohem_thresh (0.7), weights ([1.0, 1.0] for S_0, S_1).
"""
from __future__ import annotations

from itertools import chain
from typing import Dict, Iterable, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..cards import read_options
from ..errors import ConfigError
from .base import MultiModalSegmenter
from .fusion import COMBINE_MODES, ModalityFusion
from .heads import AuxiliaryHead, ClassMaskDecoder
from .lora import lora_parameters
from .losses import weighted_ohem
from .sam2_backbone import SAM2Backbone, build_sam2

# renormalize_top_k and no_mem_embed default to off: the shipped checkpoints were trained without them.
DEFAULTS = {"top_k": 2, "combine": "sum", "renormalize_top_k": False, "aux_dropout": 0.1,
            "train_decoder_transformer": False, "output": "mean", "no_mem_embed": False}
# What "logits" is: the mean of both paths, or one of them. Both paths always train (Eq. 14); out of training the
# unused path is not computed.
OUTPUTS = ("mean", "decoder", "aux")
LOSS_DEFAULTS = {"ohem_thresh": 0.7, "weights": (1.0, 1.0)}
LEVELS = ("sfm", "ifp", "ffp")  # coarse to fine: stride 16 (d), 8 (d/4), 4 (d/8); the paper's Y_n, Y_1, Y_0
FPN_LEVELS = 3  # SAM2's neck (scalp 1) gives strides 4, 8, 16


class MLESAM(MultiModalSegmenter):
    def __init__(self, card, sam2_model: Optional[nn.Module] = None):
        super().__init__(card)
        where = f"card {card.name!r}"
        self.options = read_options(card.arch, DEFAULTS, f"{where} mle_sam")
        self.loss_options = read_options(card.loss, LOSS_DEFAULTS, f"{where} loss")
        _validate(self.options, self.loss_options, where)

        sam = sam2_model if sam2_model is not None else build_sam2(card)
        levels = len(sam.image_encoder.neck.backbone_channel_list)
        if getattr(sam.image_encoder, "scalp", None) != 1 or levels != FPN_LEVELS + 1:
            raise ConfigError(f"{where}: MLE-SAM needs SAM2's 4-stage Hiera with scalp 1 (3 FPN levels)")
        # Only the image encoder and the decoder parts are kept; SAM2's memory modules are not part of MLE-SAM.
        self.backbone = SAM2Backbone.from_card(sam, card, num_experts=len(self.modalities))
        no_mem_embed = sam.no_mem_embed if self.options["no_mem_embed"] else None
        self.decoder = ClassMaskDecoder(sam.sam_mask_decoder, sam.sam_prompt_encoder, self.num_classes, no_mem_embed)
        d = self.backbone.d_model
        ffp_dim, ifp_dim = self.decoder.high_res_dims
        dims = {"sfm": d, "ifp": ifp_dim, "ffp": ffp_dim}
        self.fusion = nn.ModuleDict(
            {lvl: ModalityFusion(dims[lvl], self.options["top_k"], self.options["combine"],
                                 self.options["renormalize_top_k"]) for lvl in LEVELS}
        )
        self.aux_head = AuxiliaryHead([dims[lvl] for lvl in LEVELS], ffp_dim, self.num_classes,
                                      self.options["aux_dropout"])
        self.apply_trainable()

    # -- forward --------------------------------------------------------------------------------------------------

    def forward(self, inputs: Mapping[str, torch.Tensor], present: Optional[torch.Tensor] = None) -> Dict[str, object]:
        names, tensors, present = self.check_inputs(inputs, present)
        batch, _, height, width = tensors[0].shape
        num_given = len(names)
        keep = present.transpose(0, 1)  # (M, B)
        images = torch.stack(tensors).flatten(0, 1)  # (M * B, 3, H, W), modality-major
        experts = torch.tensor(self.expert_ids(names), device=images.device).repeat_interleave(batch)
        rows = None
        if not bool(keep.all()):
            rows = keep.reshape(-1).nonzero().squeeze(1)
            images, experts = images[rows], experts[rows]

        stride4, stride8, stride16 = self.backbone(images, experts)["backbone_fpn"]
        ffp, ifp = self.decoder.reduce_high_res(stride4, stride8)
        per_modality = {"sfm": stride16, "ifp": ifp, "ffp": ffp}

        fused, weights, chosen = {}, {}, {}
        for level in LEVELS:
            maps = per_modality[level]
            if rows is not None:  # absent pairs become zero maps that fusion masks out
                maps = maps.new_zeros((num_given * batch, *maps.shape[1:])).index_copy(0, rows, maps)
            maps = maps.view(num_given, batch, *maps.shape[1:])
            fused[level], weights[level], chosen[level] = self.fusion[level](maps, keep)

        levels = [fused[lvl] for lvl in LEVELS]
        size = (height, width)
        output = self.options["output"]
        need_both = self.training or output == "mean"
        logits_decoder = _upsample(self.decoder(*levels), size) if need_both or output == "decoder" else None
        logits_aux = _upsample(self.aux_head(levels), size) if need_both or output == "aux" else None
        if output == "mean":
            logits = (logits_decoder + logits_aux) / 2
        else:
            logits = logits_decoder if output == "decoder" else logits_aux
        return {
            "logits": logits,
            "logits_decoder": logits_decoder,
            "logits_aux": logits_aux,
            "router_weights": weights,
            "router_selected": chosen,
            "modalities": tuple(names),
        }

    def compute_loss(self, out: Dict[str, torch.Tensor], target: torch.Tensor):
        named = {"ohem_decoder": out["logits_decoder"], "ohem_aux": out["logits_aux"]}
        return weighted_ohem(named, self.loss_options["weights"], target, self.loss_options["ohem_thresh"])

    # -- what trains ----------------------------------------------------------------------------------------------

    def trainable_parameters(self, setting: str) -> Iterable[nn.Parameter]:
        decoder = self.decoder
        heads = chain(
            decoder.class_tokens.parameters(), decoder.hypernetworks.parameters(),
            decoder.output_upscaling.parameters(), decoder.conv_s0.parameters(), decoder.conv_s1.parameters(),
            self.fusion.parameters(), self.aux_head.parameters(), lora_parameters(self.backbone),
        )
        if self.options["train_decoder_transformer"]:
            heads = chain(heads, decoder.transformer.parameters())
        if setting == "paper":
            return heads
        if setting == "from_scratch":  # the SAM2 embeddings too (frozen like the transformer in the paper setting)
            embeddings = [decoder.no_mem_embed] if decoder.no_mem_embed is not None else []
            return chain(heads, self.backbone.parameters(), decoder.transformer.parameters(),
                         decoder.no_mask_embed.parameters(), embeddings)
        raise ConfigError(f"card {self.card.name!r}: unknown trainable setting {setting!r}")

    def component_prefixes(self):
        return {
            "trunk": ("backbone.encoder.trunk",),
            "fpn_neck": ("backbone.encoder.neck",),
            "fusion_router": ("fusion",),
            "decoder_transformer": ("decoder.transformer",),
            "decoder": ("decoder",),
            "aux_head": ("aux_head",),
        }


def _upsample(logits: torch.Tensor, size) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _validate(options, loss_options, where: str) -> None:
    top_k = options["top_k"]
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ConfigError(f"{where}: 'mle_sam.top_k' must be an integer >= 1, got {top_k!r}")
    if options["combine"] not in COMBINE_MODES:
        raise ConfigError(f"{where}: 'mle_sam.combine' must be one of {list(COMBINE_MODES)}, "
                          f"got {options['combine']!r}")
    if options["output"] not in OUTPUTS:
        raise ConfigError(f"{where}: 'mle_sam.output' must be one of {list(OUTPUTS)}, got {options['output']!r}")
    dropout = options["aux_dropout"]
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise ConfigError(f"{where}: 'mle_sam.aux_dropout' must be in [0, 1), got {dropout!r}")
    for flag in ("train_decoder_transformer", "renormalize_top_k", "no_mem_embed"):
        if not isinstance(options[flag], bool):
            raise ConfigError(f"{where}: 'mle_sam.{flag}' must be true or false, got {options[flag]!r}")
    weights = loss_options["weights"]
    if len(weights) != 2:
        raise ConfigError(f"{where}: 'loss.weights' must be [w0, w1] (decoder path, auxiliary path), "
                          f"got {list(weights)!r}")
