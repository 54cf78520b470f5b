"""LoRA on the real SAM2 Hiera trunk: zero-init identity, batched experts == per-modality loop, merge."""
import copy

import pytest
import torch

from mmseg_ros import cards
from mmseg_ros.errors import ConfigError
from mmseg_ros.nn.lora import LoRAQKV, lora_layers, lora_parameters, merge_lora
from mmseg_ros.nn.sam2_backbone import SAM2Backbone, build_sam2

CARD = "test_tiny_mle_sam"


@pytest.fixture(scope="module")
def sam2_model():
    torch.manual_seed(0)
    return build_sam2(cards.load(CARD)).eval()


def _randomize_lora(module, scale=0.2):
    with torch.no_grad():
        for layer in lora_layers(module):
            layer.lora_b_q.normal_(0, scale)
            layer.lora_b_v.normal_(0, scale)


@pytest.mark.parametrize("experts", [1, 4])
def test_zero_initialised_lora_keeps_sam2_features(sam2_model, experts):
    plain = copy.deepcopy(sam2_model.image_encoder)
    backbone = SAM2Backbone(copy.deepcopy(sam2_model.image_encoder), rank=4, alpha=8, num_experts=experts).eval()
    x = torch.randn(2, 3, 64, 64)
    index = None if experts == 1 else torch.tensor([0, experts - 1])
    with torch.no_grad():
        ref, got = plain(x), backbone(x, index)
        for a, b in zip(ref["backbone_fpn"], got["backbone_fpn"]):
            assert torch.equal(a, b)
        _randomize_lora(backbone)
        changed = backbone(x, index)["backbone_fpn"][-1]
    assert not torch.allclose(changed, ref["backbone_fpn"][-1], atol=1e-4)  # the adapter is really in the path


def test_lora_sits_on_every_block_q_and_v_only(sam2_model):
    encoder = copy.deepcopy(sam2_model.image_encoder)
    SAM2Backbone(encoder, rank=3, alpha=3, num_experts=2)
    blocks = encoder.trunk.blocks
    layers = list(lora_layers(encoder))
    assert len(layers) == len(blocks) and all(isinstance(b.attn.qkv, LoRAQKV) for b in blocks)
    for block in blocks:
        layer = block.attn.qkv
        d_in, d_out = block.dim, block.dim_out
        assert layer.lora_a_q.shape == layer.lora_a_v.shape == (2, d_in, 3)
        assert layer.lora_b_q.shape == layer.lora_b_v.shape == (2, 3, d_out)
    # Keys are untouched: perturbing an adapter moves only the q and v thirds of the projection.
    layer = blocks[0].attn.qkv
    x = torch.randn(5, blocks[0].dim)
    with torch.no_grad(), layer.selection.use(torch.tensor([1])):
        before = layer(x)
        layer.lora_b_q.normal_()
        layer.lora_b_v.normal_()
        after = layer(x)
    d = layer.out_features // 3
    assert torch.equal(before[:, d:2 * d], after[:, d:2 * d])
    assert not torch.allclose(before[:, :d], after[:, :d]) and not torch.allclose(before[:, 2 * d:], after[:, 2 * d:])
    # The frozen projection keeps SAM2's parameter names, so official checkpoints still match.
    assert "trunk.blocks.0.attn.qkv.weight" in encoder.state_dict()


def test_batched_experts_equal_a_per_modality_loop(sam2_model):
    torch.manual_seed(1)
    experts = 4
    backbone = SAM2Backbone(copy.deepcopy(sam2_model.image_encoder), rank=4, alpha=4, num_experts=experts).eval()
    _randomize_lora(backbone)
    x = torch.randn(7, 3, 64, 64)
    index = torch.tensor([0, 1, 2, 3, 1, 3, 0])
    with torch.no_grad():
        batched = backbone(x, index)["backbone_fpn"]
        for expert in range(experts):
            rows = (index == expert).nonzero().flatten()
            looped = backbone(x[rows], torch.full((len(rows),), expert))["backbone_fpn"]
            for level, feats in enumerate(looped):
                torch.testing.assert_close(batched[level][rows], feats, atol=1e-5, rtol=1e-5)
        # and the experts really differ from each other
        same_input = backbone(x[:1].expand(experts, -1, -1, -1), torch.arange(experts))["backbone_fpn"][-1]
    assert not torch.allclose(same_input[0], same_input[1], atol=1e-4)


def test_experts_need_an_index(sam2_model):
    backbone = SAM2Backbone(copy.deepcopy(sam2_model.image_encoder), rank=2, alpha=2, num_experts=3)
    with pytest.raises(RuntimeError, match="expert index"):
        backbone(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="out of range"):
        backbone(torch.randn(1, 3, 64, 64), torch.tensor([3]))


def test_merged_adapter_matches_unmerged(sam2_model):
    backbone = SAM2Backbone(copy.deepcopy(sam2_model.image_encoder), rank=4, alpha=8, num_experts=1).eval()
    _randomize_lora(backbone)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = backbone(x)["backbone_fpn"]
        assert merge_lora(backbone) == len(backbone.trunk.blocks)
        assert not list(lora_layers(backbone)) and not list(lora_parameters(backbone))
        after = backbone(x)["backbone_fpn"]
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_experts_cannot_be_merged(sam2_model):
    backbone = SAM2Backbone(copy.deepcopy(sam2_model.image_encoder), rank=2, alpha=2, num_experts=2)
    with pytest.raises(ConfigError, match="experts"):
        merge_lora(backbone)


def test_lora_cannot_be_applied_twice(sam2_model):
    encoder = copy.deepcopy(sam2_model.image_encoder)
    SAM2Backbone(encoder, rank=2, alpha=2)
    with pytest.raises(ConfigError, match="already"):
        SAM2Backbone(encoder, rank=2, alpha=2)
