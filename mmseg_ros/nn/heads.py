"""MLE-SAM's two prediction paths (mle-sam.md Sec. III-E).

`ClassMaskDecoder` (Eq. 11, Fig. 3) is SAM2's mask decoder turned into a K-class semantic head: the real SAM2
two-way transformer runs K learned class tokens against the fused stride-16 map (SFM) plus SAM2's "no mask prompt"
embedding; the transformer output is upsampled by SAM2's `output_upscaling` with the fused stride-8 (IFP, d/4) and
stride-4 (FFP, d/8) maps added on the way (S_inter = Up(S_low) + Y_1; S_0 = Up(S_inter) + Y_0), and one hypernetwork
MLP per class turns its token into a mask at stride 4. The 1x1 convolutions that reduce the FPN maps to d/4 and d/8
are SAM2's `conv_s1` / `conv_s0`; MLE-SAM applies them per modality before fusion, so they live here and are
called by the model through `reduce_high_res`.

SAM2's image path (`SAM2ImagePredictor`, `_prepare_memory_conditioned_features` for an init frame) adds the learned
`no_mem_embed` to the stride-16 features before the decoder when the config says `directly_add_no_mem_embed`; the
paper's Eq. 11 feeds the fused map as it is. Given `no_mem_embed`, the decoder adds it to the fused SFM too, so the
frozen transformer sees features offset as in SAM2's own training (card option `mle_sam.no_mem_embed`).

`AuxiliaryHead` (Eq. 12, Fig. 4): per-level MLPs (1x1 convolutions) to d/8 channels, bilinear upsampling to the
stride-4 size, concatenation, a linear fusion layer, dropout and a linear prediction layer.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from sam2.modeling.sam2_utils import MLP


class ClassMaskDecoder(nn.Module):
    def __init__(self, sam_mask_decoder: nn.Module, sam_prompt_encoder: nn.Module, num_classes: int,
                 no_mem_embed: Optional[nn.Parameter] = None):
        super().__init__()
        if not getattr(sam_mask_decoder, "use_high_res_features", False):
            raise ValueError("MLE-SAM needs a SAM2 config with use_high_res_features_in_sam: true (conv_s0/conv_s1)")
        dim = sam_mask_decoder.transformer_dim
        self.dim = dim
        # Pretrained SAM2 parts, reused as they are.
        self.transformer = sam_mask_decoder.transformer
        self.output_upscaling = sam_mask_decoder.output_upscaling
        self.conv_s0 = sam_mask_decoder.conv_s0  # d -> d/8, stride 4 (FFP)
        self.conv_s1 = sam_mask_decoder.conv_s1  # d -> d/4, stride 8 (IFP)
        self.pe_layer = sam_prompt_encoder.pe_layer  # random-Fourier positional encoding (a buffer, no weights)
        self.no_mask_embed = sam_prompt_encoder.no_mask_embed  # SAM2's dense embedding when no mask is prompted
        # SAM2Base's (1, 1, d) "no memory" embedding; registered only when used, so models without it keep their
        # state-dict keys (and the checkpoints trained without it still load).
        self.no_mem_embed = no_mem_embed
        # New: one token and one hypernetwork per class (SAM2 has 4 class-agnostic mask tokens).
        self.class_tokens = nn.Embedding(num_classes, dim)
        self.hypernetworks = nn.ModuleList(MLP(dim, dim, dim // 8, 3) for _ in range(num_classes))

    @property
    def high_res_dims(self) -> Tuple[int, int]:
        """Channels of the reduced (FFP, IFP) maps: (d/8, d/4)."""
        return self.conv_s0.out_channels, self.conv_s1.out_channels

    def reduce_high_res(self, stride4: torch.Tensor, stride8: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """FPN maps (N, d, ...) -> FFP (N, d/8, H/4, W/4) and IFP (N, d/4, H/8, W/8)."""
        return self.conv_s0(stride4), self.conv_s1(stride8)

    def forward(self, sfm: torch.Tensor, ifp: torch.Tensor, ffp: torch.Tensor) -> torch.Tensor:
        """Fused maps -> class logits (B, K, H/4, W/4)."""
        batch, dim, height, width = sfm.shape
        if self.no_mem_embed is not None:
            sfm = sfm + self.no_mem_embed.reshape(1, dim, 1, 1)
        src = sfm + self.no_mask_embed.weight.reshape(1, dim, 1, 1)
        pos = self.pe_layer((height, width)).unsqueeze(0).to(src.dtype).expand(batch, -1, -1, -1)
        tokens = self.class_tokens.weight.unsqueeze(0).expand(batch, -1, -1)
        token_out, src = self.transformer(src, pos, tokens)  # S_low = f_dec(Y_n)
        src = src.transpose(1, 2).reshape(batch, dim, height, width)
        up1, norm1, act1, up2, act2 = self.output_upscaling
        inter = act1(norm1(up1(src) + ifp))  # S_inter = Up(S_low) + IFP
        fine = act2(up2(inter) + ffp)  # S_0 = Up(S_inter) + FFP
        weights = torch.stack([mlp(token_out[:, k]) for k, mlp in enumerate(self.hypernetworks)], dim=1)
        return (weights @ fine.flatten(2)).view(batch, -1, fine.shape[-2], fine.shape[-1])


class AuxiliaryHead(nn.Module):
    def __init__(self, in_dims: Sequence[int], embed_dim: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.mlps = nn.ModuleList(nn.Conv2d(c, embed_dim, kernel_size=1) for c in in_dims)
        self.fuse = nn.Sequential(nn.Conv2d(embed_dim * len(in_dims), embed_dim, kernel_size=1), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout2d(dropout)
        self.pred = nn.Conv2d(embed_dim, num_classes, kernel_size=1)

    def forward(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        """Maps from coarse to fine (SFM, IFP, FFP) -> logits (B, K) at the finest map's size."""
        size = levels[-1].shape[-2:]
        ups = [
            F.interpolate(mlp(x), size=size, mode="bilinear", align_corners=False) if x.shape[-2:] != size else mlp(x)
            for mlp, x in zip(self.mlps, levels)
        ]
        return self.pred(self.dropout(self.fuse(torch.cat(ups, dim=1))))
