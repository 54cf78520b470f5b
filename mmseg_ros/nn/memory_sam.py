"""MemorySAM (memorysam.md Sec. 3) on the real SAM2 modules: the present modalities are frames of one "video".

1. One LoRA adapter shared by all modalities (q, v of every Hiera block, `lora.apply_lora` with one expert) sits in
   SAM2's own trunk, so `SAM2Base.forward_image` encodes with it. Every present (modality, sample) pair goes
   through the encoder in ONE batch; absent pairs are not in it and cost no encoder compute.
2. Per sample, the present modalities in card order form the frame sequence. Frame 0 is decoded directly
   (`is_init_cond_frame`; SAM2 adds its no-memory embedding); frame i > 0 runs SAM2's memory attention over the
   memories of frames < i (Eq. 3-5). As in the official code every frame is kept as a conditioning frame, so all
   earlier frames are attended (with their object pointers), not only the last `num_maskmem`.
3. SAM2's mask decoder, rebuilt with K multimask tokens (K from the card; the official code hard-codes 25 for
   DELIVER), gives K class masks per frame. The frame's memory is SAM2's: the memory encoder on the frame's
   top-level features and the mask SAM2 itself would track (the multimask output with the highest predicted IoU,
   sigmoid-scaled), plus the object pointer from that mask's token.
4. Final logits = mean of the frames' logits (memory residual connection, Eq. 6), upsampled to the input size.
5. Training loss (Eq. 13): OHEM(final) + alpha * SPMM loss (`spmm.py`) on the stride-4 features after the decoder's
   `conv_s0` averaged over the present modalities.

Why the SAM2Base pieces are called one by one instead of `track_step`: `_prepare_memory_conditioned_features`,
`_encode_new_memory`, `forward_image` and `_prepare_backbone_features` are used as they are. `_forward_sam_heads`
is not: when the (frozen) object-score head predicts "no object" it overwrites all K class logits with -1024,
which makes sense for tracking one prompted object and destroys a semantic map (the official code inherits this).
Here the decoder runs with SAM2's empty prompt and multimask output, every frame counts as showing content (no
occlusion gating, no no-object embeddings), and the rest of that method's logic (best-IoU mask, pointer token) is
kept. With the object-score head saying "present", a frame's output equals `track_step`'s (tested).

Per-sample presence inside a batch (modality dropout): samples are grouped by their set of present modalities;
each group runs its own frame sequence as one batch, and results are put back in sample order. A mixed batch thus
gives, per sample, exactly what that sample alone gives.

Outputs of `forward`: "logits" (B, K, H, W); "frame_logits" {modality: (B, K, H/4, W/4)} each frame's logits at
the decoder's stride 4 (zeros for samples without that modality); "modalities" and "present" (B, M) in sequence
(card) order; in training also "spmm_features" (B, d/8, H/4, W/4) for the loss.

Card block `memory_sam:` keys: spmm_weight (alpha, 1.0), spmm_momentum (0.2), spmm_form (masked_mean | official,
see spmm.py). `loss:` keys: ohem_thresh (0.7),
weights ([1.0], the weight of OHEM on the final logits).
"""
from __future__ import annotations

from collections import OrderedDict
from itertools import chain
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sam2.modeling.sam2_utils import MLP

from ..cards import read_options
from ..errors import ConfigError
from .base import MultiModalSegmenter
from .lora import apply_lora, lora_parameters
from .losses import ohem_cross_entropy
from .sam2_backbone import build_sam2
from .spmm import FORMS as SPMM_FORMS, SemanticPrototypeMemory

# spmm_form: "masked_mean" (true per-class means) or "official" (the authors' code: mean / pixel count), spmm.py.
DEFAULTS = {"spmm_weight": 1.0, "spmm_momentum": 0.2, "spmm_form": "masked_mean"}
LOSS_DEFAULTS = {"ohem_thresh": 0.7, "weights": (1.0,)}
OBJECT_PRESENT_SCORE = 10.0  # SAM2's own object-score logit when it does not predict one (sigmoid(10) ~ 1)
# Quality heads of SAM2's decoder: frozen in the paper setting (the official code freezes them too).
QUALITY_HEADS = ("iou_prediction_head", "pred_obj_score_head")
# SAM2Base's memory embeddings (temporal positions of memories and pointers, no-memory token); they stay trainable
# in the official code (its freezing leaves them on) and belong to the memory mechanism.
MEMORY_EMBEDDINGS = ("maskmem_tpos_enc", "no_mem_embed", "no_mem_pos_enc", "obj_ptr_tpos_proj")


class MemorySAM(MultiModalSegmenter):
    def __init__(self, card, sam2_model: Optional[nn.Module] = None):
        super().__init__(card)
        where = f"card {card.name!r}"
        self.options = read_options(card.arch, DEFAULTS, f"{where} memory_sam")
        self.loss_options = read_options(card.loss, LOSS_DEFAULTS, f"{where} loss")
        _validate(self.options, self.loss_options, card, where)

        sam = sam2_model if sam2_model is not None else build_sam2(card)
        if not sam.use_high_res_features_in_sam:
            raise ConfigError(f"{where}: MemorySAM needs a SAM2 config with use_high_res_features_in_sam: true")
        if sam.num_maskmem < 1:
            raise ConfigError(f"{where}: MemorySAM needs SAM2's memory (num_maskmem >= 1), got {sam.num_maskmem}")
        if sam.image_size != card.input_size[0]:
            raise ConfigError(f"{where}: SAM2 image_size {sam.image_size} differs from input_size "
                              f"{list(card.input_size)}")
        # LoRA sits inside SAM2's own trunk, so SAM2Base.forward_image encodes with the shared adapter.
        apply_lora(sam.image_encoder.trunk, card.lora_rank, card.lora_alpha, card.lora_dropout, num_experts=1)
        resize_class_tokens(sam.sam_mask_decoder, self.num_classes)
        self.sam = sam
        self.spmm = SemanticPrototypeMemory(
            self.num_classes, sam.sam_mask_decoder.conv_s0.out_channels, self.options["spmm_momentum"],
            form=self.options["spmm_form"],
        )
        self.apply_trainable()

    # -- forward --------------------------------------------------------------------------------------------------

    def forward(self, inputs: Mapping[str, torch.Tensor], present: Optional[torch.Tensor] = None) -> Dict[str, object]:
        names, tensors, present = self.check_inputs(inputs, present)
        batch, _, height, width = tensors[0].shape
        if (height, width) != tuple(self.card.input_size):
            raise ConfigError(f"{self.card.name}: MemorySAM takes inputs of the card's input_size "
                              f"{list(self.card.input_size)}, got {height}x{width}")
        # The frame sequence follows the card's modality order, whatever the mapping's order.
        order = sorted(range(len(names)), key=lambda j: self.modalities.index(names[j]))
        names = [names[j] for j in order]
        present = present[:, order]
        keep = present.transpose(0, 1).reshape(-1)  # (M * B,), modality-major
        rows = keep.nonzero().squeeze(1)
        images = torch.cat([tensors[j][present[:, k]] for k, j in enumerate(order)])  # present pairs only
        # Row of each (modality, sample) pair in the encoded batch, -1 where absent.
        slot = torch.full_like(keep, -1, dtype=torch.long)
        slot[rows] = torch.arange(rows.numel(), device=rows.device)
        slot = slot.view(len(names), batch)

        encoded = self.sam.forward_image(images)
        _, vision_feats, vision_pos, feat_sizes = self.sam._prepare_backbone_features(encoded)
        # Stride 4 (after conv_s0) and 8 (after conv_s1) as maps, the levels SAM2's decoder takes.
        high_res = encoded["backbone_fpn"][-self.sam.num_feature_levels:-1]
        frames = _Frames(vision_feats[-1:], vision_pos[-1:], feat_sizes, high_res)

        group_ids, group_logits, frame_logits = [], [], {}
        for pattern, samples in _group_by_presence(present).items():
            samples_t = torch.tensor(samples, device=images.device)
            sequence = [j for j, here in enumerate(pattern) if here]
            per_frame = self._run_sequence(frames, [slot[j, samples_t] for j in sequence])
            group_ids.append(samples_t)
            group_logits.append(torch.stack(per_frame).mean(dim=0))
            for j, logits in zip(sequence, per_frame):
                frame_logits.setdefault(names[j], []).append((samples_t, logits))

        order_back = torch.argsort(torch.cat(group_ids))
        low_res = torch.cat(group_logits)[order_back]
        out = {
            "logits": F.interpolate(low_res, size=(height, width), mode="bilinear", align_corners=False),
            "frame_logits": {n: _scatter(frame_logits[n], batch) for n in names if n in frame_logits},
            "present": present,
            "modalities": tuple(names),
        }
        if self.training:
            out["spmm_features"] = _mean_over_present(high_res[0], rows % batch, present)
        return out

    def _run_sequence(self, frames: "_Frames", frame_rows: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Run one group's frames in order; frame_rows[i] are the encoded-batch rows of frame i (one per sample).
        Returns each frame's K-class logits at stride 4."""
        sam = self.sam
        num_frames = len(frame_rows)
        memory = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        logits = []
        for i, rows in enumerate(frame_rows):
            feats, pos, high_res = frames.select(rows)
            pix_feat = sam._prepare_memory_conditioned_features(
                frame_idx=i, is_init_cond_frame=(i == 0), current_vision_feats=feats,
                current_vision_pos_embeds=pos, feat_sizes=frames.sizes[-1:], output_dict=memory,
                num_frames=num_frames,
            )
            masks, ious, tokens = self._decode(pix_feat, high_res)
            logits.append(masks)
            if i + 1 < num_frames:  # the last frame's memory would never be read
                memory["cond_frame_outputs"][i] = self._memory_of(feats, frames.sizes, masks, ious, tokens)
        return logits

    def _decode(self, pix_feat: torch.Tensor, high_res: List[torch.Tensor]):
        """SAM2's mask decoder with its empty prompt and multimask output: K class masks (G, K, h/4, w/4), their
        predicted IoUs (G, K) and output tokens."""
        sam = self.sam
        count = pix_feat.shape[0]
        coords = pix_feat.new_zeros(1, 1, 2)
        labels = -torch.ones(1, 1, dtype=torch.int32, device=pix_feat.device)
        sparse, dense = sam.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        masks, ious, tokens, _ = sam.sam_mask_decoder(
            image_embeddings=pix_feat,
            image_pe=sam.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse.expand(count, -1, -1),
            dense_prompt_embeddings=dense.expand(count, -1, -1, -1),
            multimask_output=True,
            repeat_image=False,
            high_res_features=high_res,
        )
        return masks.float(), ious, tokens

    def _memory_of(self, feats, sizes, masks, ious, tokens) -> Dict[str, object]:
        """A frame's memory as SAM2 builds it: memory encoder on the frame's features and its best-IoU mask
        (upsampled to the image size as SAM2 does), plus that mask's object pointer."""
        sam = self.sam
        count = masks.shape[0]
        best = ious.argmax(dim=-1)
        picked = torch.arange(count, device=masks.device)
        mask = F.interpolate(masks[picked, best].unsqueeze(1), size=(sam.image_size, sam.image_size),
                             mode="bilinear", align_corners=False)
        token = tokens[picked, best] if tokens.shape[1] > 1 else tokens[:, 0]
        present_score = mask.new_full((count, 1), OBJECT_PRESENT_SCORE)
        features, pos_enc = sam._encode_new_memory(
            current_vision_feats=feats, feat_sizes=sizes[-1:], pred_masks_high_res=mask,
            object_score_logits=present_score, is_mask_from_pts=False,
        )
        return {"maskmem_features": features, "maskmem_pos_enc": pos_enc, "obj_ptr": sam.obj_ptr_proj(token)}

    # -- loss -----------------------------------------------------------------------------------------------------

    def compute_loss(self, out: Dict[str, object], target: torch.Tensor):
        """OHEM on the final logits (Eq. 13), plus alpha * SPMM loss in training (which also updates the global
        prototypes; SPMM is training-only, so an eval-mode loss has no SPMM term)."""
        ohem = ohem_cross_entropy(out["logits"], target, self.loss_options["ohem_thresh"])
        total = self.loss_options["weights"][0] * ohem
        parts = {"ohem": float(ohem.detach())}
        alpha = self.options["spmm_weight"]
        if self.training and alpha > 0 and "spmm_features" in out:
            proto = self.spmm(out["spmm_features"], target)
            total = total + alpha * proto
            parts["spmm"] = float(proto.detach())
        return total, parts

    # -- what trains ----------------------------------------------------------------------------------------------

    def trainable_parameters(self, setting: str) -> Iterable[nn.Parameter]:
        sam = self.sam
        decoder = sam.sam_mask_decoder
        quality = {id(p) for head in QUALITY_HEADS if hasattr(decoder, head)
                   for p in getattr(decoder, head).parameters()}
        if setting == "paper":
            embeddings = chain.from_iterable(_parameters_of(getattr(sam, n))
                                             for n in MEMORY_EMBEDDINGS if hasattr(sam, n))
            return chain(
                lora_parameters(sam.image_encoder),
                (p for p in decoder.parameters() if id(p) not in quality),
                sam.memory_encoder.parameters(), sam.memory_attention.parameters(), embeddings,
            )
        if setting == "from_scratch":  # everything on the forward path; the quality heads never get a gradient
            return (p for p in sam.parameters() if id(p) not in quality)
        raise ConfigError(f"card {self.card.name!r}: unknown trainable setting {setting!r}")

    def trained_buffer_names(self) -> List[str]:
        return ["spmm.global_prototypes"]

    def self_initialised_names(self) -> List[str]:
        # `resize_class_tokens` re-creates the IoU head's output layer with K + 1 outputs and the quality heads stay
        # frozen, so that layer keeps its random initialisation. It picks the mask that becomes each frame's memory:
        # without it in the checkpoint a reload (another random draw) gives other logits.
        head = self.sam.sam_mask_decoder.iou_prediction_head
        prefix = f"sam.sam_mask_decoder.iou_prediction_head.layers.{len(head.layers) - 1}"
        return [f"{prefix}.{name}" for name, p in head.layers[-1].named_parameters() if not p.requires_grad]

    def component_prefixes(self):
        decoder = "sam.sam_mask_decoder"
        return OrderedDict((
            ("trunk", ("sam.image_encoder.trunk",)),
            ("fpn_neck", ("sam.image_encoder.neck",)),
            ("memory_attention", ("sam.memory_attention",)),
            ("memory_encoder", ("sam.memory_encoder",)),
            ("memory_embeddings", tuple(f"sam.{n}" for n in MEMORY_EMBEDDINGS)),
            ("decoder_quality_heads", tuple(f"{decoder}.{h}" for h in QUALITY_HEADS)),
            ("mask_decoder", (decoder,)),
            ("prompt_encoder", ("sam.sam_prompt_encoder",)),
            ("object_pointer", ("sam.obj_ptr_proj", "sam.no_obj_ptr", "sam.no_obj_embed_spatial",
                                "sam.mask_downsample")),
        ))


def resize_class_tokens(decoder: nn.Module, num_classes: int) -> None:
    """Give SAM2's MaskDecoder K multimask outputs (K + 1 mask tokens, token 0 being SAM2's single-mask token),
    as the official code builds it with K = 25. The new tokens, their hypernetwork MLPs and the IoU head's output
    layer start from their initialisation (the official code does not load those from the SAM2 checkpoint either);
    every other decoder weight stays as loaded. The IoU layer stays frozen, so project checkpoints carry it
    (`MemorySAM.self_initialised_names`)."""
    dim = decoder.transformer_dim
    count = num_classes + 1
    ref = decoder.mask_tokens.weight
    decoder.num_multimask_outputs = num_classes
    decoder.num_mask_tokens = count
    decoder.mask_tokens = nn.Embedding(count, dim, device=ref.device, dtype=ref.dtype)
    decoder.output_hypernetworks_mlps = nn.ModuleList(
        MLP(dim, dim, dim // 8, 3).to(device=ref.device, dtype=ref.dtype) for _ in range(count)
    )
    iou_out = decoder.iou_prediction_head.layers[-1]
    decoder.iou_prediction_head.layers[-1] = nn.Linear(iou_out.in_features, count, device=ref.device, dtype=ref.dtype)


class _Frames:
    """The encoded batch, with a per-frame selection of rows (samples) in the layouts SAM2's methods take."""

    def __init__(self, top_feats, top_pos, sizes, high_res):
        self.top_feats, self.top_pos, self.sizes, self.high_res = top_feats, top_pos, sizes, high_res

    def select(self, rows: torch.Tensor):
        feats = [f.index_select(1, rows) for f in self.top_feats]  # (HW, G, C)
        pos = [p.index_select(1, rows) for p in self.top_pos]
        return feats, pos, [m.index_select(0, rows) for m in self.high_res]


def _group_by_presence(present: torch.Tensor) -> "OrderedDict[tuple, List[int]]":
    groups: "OrderedDict[tuple, List[int]]" = OrderedDict()
    for sample, row in enumerate(present.cpu().tolist()):
        groups.setdefault(tuple(row), []).append(sample)
    return groups


def _scatter(parts, batch: int) -> torch.Tensor:
    """Per-group (sample ids, values) -> (B, ...) in sample order; zeros for samples without that frame."""
    first = parts[0][1]
    out = first.new_zeros((batch, *first.shape[1:]))
    for ids, values in parts:
        out = out.index_copy(0, ids, values)
    return out


def _mean_over_present(maps: torch.Tensor, sample_of_row: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Rows (N, C, h, w) of (modality, sample) pairs -> per-sample mean over its present modalities (Eq. 7)."""
    batch = present.shape[0]
    sums = maps.new_zeros((batch, *maps.shape[1:])).index_add(0, sample_of_row, maps)
    return sums / present.sum(dim=1).to(maps.dtype).view(batch, 1, 1, 1)


def _parameters_of(item) -> Iterable[nn.Parameter]:
    if isinstance(item, nn.Parameter):
        return [item]
    if isinstance(item, nn.Module):
        return item.parameters()
    return []


def _validate(options, loss_options, card, where: str) -> None:
    alpha = options["spmm_weight"]
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha < 0:
        raise ConfigError(f"{where}: 'memory_sam.spmm_weight' must be a number >= 0, got {alpha!r}")
    momentum = options["spmm_momentum"]
    if not isinstance(momentum, (int, float)) or isinstance(momentum, bool) or not 0 < momentum <= 1:
        raise ConfigError(f"{where}: 'memory_sam.spmm_momentum' must be in (0, 1], got {momentum!r}")
    if options["spmm_form"] not in SPMM_FORMS:
        raise ConfigError(f"{where}: 'memory_sam.spmm_form' must be one of {list(SPMM_FORMS)}, "
                          f"got {options['spmm_form']!r}")
    weights = loss_options["weights"]
    if not isinstance(weights, (list, tuple)) or len(weights) != 1:
        raise ConfigError(f"{where}: 'loss.weights' must be [w] (OHEM on the final logits), got {weights!r}")
    if card.input_size[0] != card.input_size[1]:
        raise ConfigError(f"{where}: 'input_size' must be square for memory_sam (RoPE needs square maps), "
                          f"got {list(card.input_size)}")
