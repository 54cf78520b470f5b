"""Official SAM2 checkpoints into the backbone; project checkpoints: save -> load, mismatches fail clearly."""
import pytest
import torch

from mmseg_ros import cards
from mmseg_ros.errors import CheckpointError
from mmseg_ros.nn.build import build_model, load_model
from mmseg_ros.nn.build import load_checkpoint
from mmseg_ros.nn.checkpoint import load_trained_state, read_checkpoint, save_checkpoint
from mmseg_ros.nn.lora import is_lora_name
from mmseg_ros.nn.sam2_backbone import build_sam2

CARD = "test_tiny_mle_sam"
MODS = ("rgb", "depth", "event", "lidar")


def card_with(**changes):
    return cards.derive(cards.load(CARD), **changes)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """An official-format SAM2 file for the tiny config: torch.save({'model': SAM2Base state dict})."""
    torch.manual_seed(123)
    sam = build_sam2(cards.load(CARD))
    with torch.no_grad():
        for p in sam.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not what a fresh random init would give
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_tiny_test.pt"
    torch.save({"model": sam.state_dict()}, path)
    return path, sam.state_dict()


def perturb_trained(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))


def sample(batch=2, mods=MODS):
    gen = torch.Generator().manual_seed(5)
    return {m: torch.randn(batch, 3, 64, 64, generator=gen) for m in mods}


def test_official_checkpoint_loads_into_the_backbone(official):
    path, state = official
    model = build_model(card_with(sam2={"checkpoint": str(path)}))
    trunk = model.backbone.trunk.state_dict()
    for key, value in state.items():
        if key.startswith("image_encoder.trunk."):
            assert torch.equal(trunk[key[len("image_encoder.trunk."):]], value), key
    torch.testing.assert_close(model.decoder.transformer.state_dict()["layers.0.mlp.layers.0.weight"],
                               state["sam_mask_decoder.transformer.layers.0.mlp.layers.0.weight"])
    # LoRA is zero at start: the adapted trunk equals SAM2's loaded encoder
    sam = build_sam2(card_with(sam2={"checkpoint": str(path)})).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone.eval()(x, torch.tensor([2]))["backbone_fpn"][-1],
                                   sam.image_encoder(x)["backbone_fpn"][-1])


def test_no_mem_embed_option_takes_sam2s_embedding_from_the_official_file(official):
    path, state = official
    model = build_model(card_with(sam2={"checkpoint": str(path)}, mle_sam={"no_mem_embed": True}))
    assert torch.equal(model.decoder.no_mem_embed, state["no_mem_embed"])


def test_official_checkpoint_mismatches_fail_clearly(tmp_path, official):
    bigger = card_with(sam2={"overrides": [
        o.replace("embed_dim=16", "embed_dim=24").replace("[128,64,32,16]", "[192,96,48,24]")
        for o in cards.load(CARD).sam2_overrides]})
    other = tmp_path / "other_size.pt"
    torch.save({"model": build_sam2(bigger).state_dict()}, other)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*trunk.*file \(") as err:
        build_model(card_with(sam2={"checkpoint": str(other)}))
    assert "SAM2 size" in str(err.value)

    partial = tmp_path / "partial.pt"
    state = dict(official[1])
    state.pop("image_encoder.neck.convs.0.conv.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save({"model": state}, partial)
    with pytest.raises(CheckpointError, match=r"missing in file: image_encoder\.neck\.convs\.0\.conv\.weight"
                                              r".*unexpected in file: extra\.weight"):
        build_model(card_with(sam2={"checkpoint": str(partial)}))

    not_official = tmp_path / "plain.pt"
    torch.save({"state_dict": {}}, not_official)
    with pytest.raises(CheckpointError, match="key 'model'"):
        build_model(card_with(sam2={"checkpoint": str(not_official)}))
    with pytest.raises(CheckpointError, match="not found"):
        build_model(card_with(sam2={"checkpoint": str(tmp_path / "missing.pt")}))


def test_save_load_round_trip_with_official_weights(tmp_path, official):
    card = card_with(sam2={"checkpoint": str(official[0])})
    model = build_model(card).eval()
    perturb_trained(model)
    path = save_checkpoint(model, tmp_path / "run" / "best.pt", meta={"epoch": 3, "miou": 0.5})
    ckpt = read_checkpoint(path)
    assert ckpt["stores_frozen"] is False
    assert set(ckpt["state"]) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(is_lora_name(n) for n in ckpt["state"])
    assert not any(n.startswith("backbone.encoder.trunk.blocks.0.mlp") for n in ckpt["state"])
    assert ckpt["classes"] == list(card.class_names) and ckpt["modalities"] == list(MODS) and ckpt["lora_rank"] == 4

    fresh = build_model(card).eval()
    x = sample(2, ("depth", "lidar"))
    with torch.no_grad():
        expected = model(x)["logits"]
        assert not torch.allclose(fresh(x)["logits"], expected)
        assert load_trained_state(fresh, path) == {"epoch": 3, "miou": 0.5}
        torch.testing.assert_close(fresh(x)["logits"], expected, rtol=0, atol=0)
        torch.testing.assert_close(load_checkpoint(path).eval()(x)["logits"], expected, rtol=0, atol=0)
        torch.testing.assert_close(load_model(card, checkpoint=path).eval()(x)["logits"], expected, rtol=0, atol=0)


def test_round_trip_without_official_weights_stores_the_frozen_ones(tmp_path):
    torch.manual_seed(7)
    model = build_model(CARD).eval()
    perturb_trained(model)
    path = save_checkpoint(model, tmp_path / "tiny.pt")
    ckpt = read_checkpoint(path)
    assert ckpt["stores_frozen"] is True and "backbone.encoder.trunk.blocks.0.attn.qkv.weight" in ckpt["state"]
    torch.manual_seed(8)  # a different random init of the frozen parts
    loaded = load_model(CARD, checkpoint=path).eval()
    x = sample(1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["logits"], model(x)["logits"], rtol=0, atol=0)


@pytest.mark.parametrize("changes, needle", [
    ({"classes": "cityscapes"}, r"classes: checkpoint has 19 .*card 'test_tiny_mle_sam' has 25"),
    ({"modalities": ["rgb", "depth"]},
     r"modalities: checkpoint has \['rgb', 'depth'\], "
     r"card 'test_tiny_mle_sam' has \['rgb', 'depth', 'event', 'lidar'\]"),
    ({"lora": {"rank": 8, "alpha": 8}}, r"LoRA rank: checkpoint has 8, card 'test_tiny_mle_sam' has 4"),
    ({"sam2": {"overrides": ["++model.image_encoder.trunk.embed_dim=16"]}}, r"SAM2 overrides: checkpoint has"),
    ({"trainable": "from_scratch"},
     r"trainable setting: checkpoint has 'from_scratch', card 'test_tiny_mle_sam' has 'paper'"),
])
def test_checkpoint_for_another_model_fails_naming_both_sides(tmp_path, changes, needle):
    other = card_with(**changes)
    if "sam2" in changes:  # building that SAM2 is not needed to check its metadata
        model = build_model(CARD)
        path = save_checkpoint(model, tmp_path / "other.pt")
        data = torch.load(path, weights_only=True)
        data["sam2"]["overrides"] = list(other.sam2_overrides)
        torch.save(data, path)
    else:
        path = save_checkpoint(build_model(other), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=needle):
        load_trained_state(build_model(card_with()), path)


def test_unreadable_or_foreign_files(tmp_path, official):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="official SAM2 checkpoint belongs in the card"):
        read_checkpoint(official[0])


def test_trained_only_checkpoint_needs_the_official_file(tmp_path, official):
    model = build_model(card_with(sam2={"checkpoint": str(official[0])}))
    path = save_checkpoint(model, tmp_path / "needs_sam2.pt")
    # A card that differs only in having no SAM2 file would silently use random frozen weights: refused.
    data = torch.load(path, weights_only=True)
    with pytest.raises(CheckpointError, match="names no sam2.checkpoint"):
        load_trained_state(build_model(CARD), data | {"path": str(path)})
