"""MemorySAM on the tiny card: real SAM2 modules (random init), CPU, 64x64 inputs."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from mmseg_ros import cards
from mmseg_ros.errors import ConfigError
from mmseg_ros.nn.build import build_model
from mmseg_ros.nn.build import load_checkpoint
from mmseg_ros.nn.checkpoint import save_checkpoint
from mmseg_ros.nn.lora import is_lora_name
from mmseg_ros.nn.memory_sam import MemorySAM, resize_class_tokens
from mmseg_ros.nn.sam2_backbone import build_sam2
from mmseg_ros.nn.spmm import SemanticPrototypeMemory

CARD = "test_tiny_memory_sam"


@pytest.fixture(scope="module")
def card():
    return cards.load(CARD)


@pytest.fixture(scope="module")
def model(card):
    torch.manual_seed(0)
    return build_model(card).eval()


def images(card, batch=2, seed=0, names=None):
    gen = torch.Generator().manual_seed(seed)
    size = card.input_size
    return {n: torch.randn(batch, 3, *size, generator=gen) for n in (names or card.modalities)}


def sgd_step(model, lr=0.1):
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.add_(p.grad, alpha=-lr)


def open_object_gate(sam):
    """Make SAM2's (frozen) object-score head always say "object present", so SAM2's own tracking path does
    not blank the masks and can be compared with ours."""
    head = sam.sam_mask_decoder.pred_obj_score_head
    last = head.layers[-1] if hasattr(head, "layers") else head
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(10.0)


def sam2_track_step_logits(sam, inputs, order):
    """The official MemorySAM loop: every modality a frame through SAM2Base.track_step, every frame kept as a
    conditioning frame, final = mean of the frames' high-res multimask logits."""
    frame_logits = []
    heads = sam._forward_sam_heads

    def record(*args, **kwargs):
        result = heads(*args, **kwargs)
        frame_logits.append(result[1])  # high_res_multimasks
        return result

    sam._forward_sam_heads = record
    try:
        memory = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        for i, name in enumerate(order):
            _, feats, pos, sizes = sam._prepare_backbone_features(sam.forward_image(inputs[name]))
            memory["cond_frame_outputs"][i] = sam.track_step(
                frame_idx=i, is_init_cond_frame=(i == 0), current_vision_feats=feats, current_vision_pos_embeds=pos,
                feat_sizes=sizes, point_inputs=None, mask_inputs=None, output_dict=memory, num_frames=len(order),
            )
    finally:
        del sam._forward_sam_heads
    return torch.stack(frame_logits).mean(dim=0)


def test_every_subset_of_four_modalities_gives_class_logits(model, card):
    assert len(card.modalities) == 4
    encoded = []
    hook = model.sam.image_encoder.trunk.register_forward_hook(lambda mod, args, out: encoded.append(args[0].shape[0]))
    x = images(card, batch=1)
    try:
        for size in range(1, 5):
            for subset in itertools.combinations(card.modalities, size):
                with torch.no_grad():
                    out = model({n: x[n] for n in subset})
                assert out["logits"].shape == (1, card.num_classes, *card.input_size)
                assert torch.isfinite(out["logits"]).all()
                assert out["modalities"] == subset and tuple(out["frame_logits"]) == subset
                assert encoded[-1] == size  # one encoder pass over exactly the present images
    finally:
        hook.remove()
    assert len(encoded) == 15


def test_zero_lora_equals_plain_sam2_and_the_memory_path_equals_track_step(card):
    torch.manual_seed(1)
    model = build_model(card).eval()
    open_object_gate(model.sam)
    x = images(card, seed=1)
    # Plain SAM2 (no LoRA) with the same weights and the same K-token decoder.
    plain = build_sam2(card)
    resize_class_tokens(plain.sam_mask_decoder, card.num_classes)
    plain.load_state_dict({k: v for k, v in model.sam.state_dict().items() if not is_lora_name(k)})
    plain.eval()
    with torch.no_grad():
        ours = model(x)["logits"]
        reference = sam2_track_step_logits(plain, x, card.modalities)
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)
        for name, p in model.named_parameters():  # a trained adapter: still SAM2's track_step, on the adapted trunk
            if is_lora_name(name) and "lora_b" in name:
                p.normal_(0.0, 0.05)
        adapted = model(x)["logits"]
        assert not torch.allclose(adapted, ours, atol=1e-4)
        torch.testing.assert_close(adapted, sam2_track_step_logits(model.sam, x, card.modalities), rtol=1e-4, atol=1e-5)


def test_mixed_presence_batch_equals_per_sample_forwards(model, card):
    present = torch.tensor([[0, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.bool)
    x = images(card, batch=present.shape[0], seed=2)
    encoded = []
    hook = model.sam.image_encoder.trunk.register_forward_hook(lambda mod, args, out: encoded.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            batched = model(x, present=present)
    finally:
        hook.remove()
    assert encoded == [int(present.sum())]  # absent (sample, modality) pairs are not encoded
    assert tuple(batched["frame_logits"]) == card.modalities
    for b, row in enumerate(present.tolist()):
        here = [n for n, p in zip(card.modalities, row) if p]
        with torch.no_grad():
            single = model({n: x[n][b : b + 1] for n in here})
        torch.testing.assert_close(batched["logits"][b : b + 1], single["logits"], rtol=1e-4, atol=1e-5)
        for n in here:
            torch.testing.assert_close(batched["frame_logits"][n][b : b + 1], single["frame_logits"][n],
                                       rtol=1e-4, atol=1e-5)


def test_later_frames_read_the_memory_of_earlier_ones(model, card):
    rgb, depth = card.modalities[:2]
    x = images(card, seed=3, names=[rgb, depth])
    changed = dict(x, **{rgb: x[rgb] + 1.0})
    with torch.no_grad():
        both = model(x)["frame_logits"]
        both_changed = model(changed)["frame_logits"]
        alone = model({depth: x[depth]})["frame_logits"]
        later_changed = model(dict(x, **{depth: x[depth] + 1.0}))["frame_logits"]
    assert not torch.allclose(both[depth], both_changed[depth], atol=1e-4)  # frame 1 sees frame 0's memory
    assert not torch.allclose(both[depth], alone[depth], atol=1e-4)  # ... and differs from depth decoded alone
    torch.testing.assert_close(later_changed[rgb], both[rgb])  # frame 0 does not see later frames


def test_input_order_does_not_change_the_card_order_sequence(model, card):
    x = images(card, seed=4)
    with torch.no_grad():
        forward = model(x)
        reverse = model(dict(reversed(list(x.items()))))
    assert reverse["modalities"] == card.modalities
    torch.testing.assert_close(forward["logits"], reverse["logits"])


def test_only_the_paper_parts_train_and_a_step_changes_only_them(card):
    torch.manual_seed(5)
    model = build_model(card).train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for name in trainable:
        ok = (
            is_lora_name(name)
            or name.startswith(("sam.memory_attention.", "sam.memory_encoder.", "sam.maskmem_tpos_enc", "sam.no_mem_"))
            or (name.startswith("sam.sam_mask_decoder.")
                and not name.startswith(("sam.sam_mask_decoder.iou_prediction_head",
                                         "sam.sam_mask_decoder.pred_obj_score_head")))
            or name.startswith("sam.obj_ptr_tpos_proj")
        )
        assert ok, name
    assert any(is_lora_name(n) for n in trainable)
    assert not any(n.startswith("sam.image_encoder") and not is_lora_name(n) for n in trainable)
    assert not any(n.startswith(("sam.sam_prompt_encoder", "sam.obj_ptr_proj")) for n in trainable)
    assert model.sam.sam_mask_decoder.mask_tokens.weight.shape[0] == card.num_classes + 1

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    prototypes = model.spmm.global_prototypes.clone()
    x = images(card, seed=5)
    target = torch.randint(0, card.num_classes, (2, *card.input_size))
    target[:, :8] = 255
    out = model(x)
    loss, parts = model.compute_loss(out, target)
    assert set(parts) == {"ohem", "spmm"} and parts["spmm"] > 0
    loss.backward()
    sgd_step(model)
    after = dict(model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed <= trainable
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)
    for part in ("lora_b_q", "sam.memory_attention.", "sam.memory_encoder.", "mask_tokens",
                 "output_hypernetworks_mlps.1.", "sam.sam_mask_decoder.conv_s0", "sam.sam_mask_decoder.transformer."):
        assert any(part in n for n in changed), part
    assert not model.spmm.global_prototypes.requires_grad
    assert not torch.equal(prototypes, model.spmm.global_prototypes)
    # Evaluation has no SPMM term and leaves the prototype memory alone.
    model.eval()
    kept = model.spmm.global_prototypes.clone()
    with torch.no_grad():
        _, eval_parts = model.compute_loss(model(x), target)
    assert set(eval_parts) == {"ohem"} and torch.equal(kept, model.spmm.global_prototypes)


def test_from_scratch_also_trains_the_encoder(card):
    model = build_model(cards.from_dict({**card.to_dict(), "trainable": "from_scratch"}))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("sam.image_encoder.trunk") and not is_lora_name(n) for n in trainable)
    assert not any(".iou_prediction_head." in n or ".pred_obj_score_head." in n for n in trainable)


def test_other_class_and_modality_counts(card):
    data = card.to_dict()
    data["modalities"] = ["lidar", "rgb", "event"]
    data["classes"] = {"name": "three", "classes": [{"name": c, "color": [i, i, i]} for i, c in enumerate("abc")]}
    small = cards.from_dict(data)
    model = build_model(small).eval()
    assert model.sam.sam_mask_decoder.mask_tokens.weight.shape[0] == 4
    assert model.spmm.global_prototypes.shape[0] == 3
    x = images(small, batch=3, seed=6)
    present = torch.tensor([[1, 1, 1], [0, 1, 0], [1, 0, 1]], dtype=torch.bool)
    with torch.no_grad():
        out = model(x, present=present)
    assert out["logits"].shape == (3, 3, *small.input_size)
    assert out["modalities"] == ("lidar", "rgb", "event")
    model.train()
    out = model(x, present=present)
    loss, parts = model.compute_loss(out, torch.randint(0, 3, (3, *small.input_size)))
    assert torch.isfinite(loss) and "spmm" in parts


def test_bad_inputs_and_options_fail_clearly(model, card):
    with pytest.raises(ConfigError, match="input_size"):
        model({card.modalities[0]: torch.randn(1, 3, 96, 96)})
    with pytest.raises(ConfigError, match="no modality present"):
        model(images(card, batch=2), present=torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool))
    data = card.to_dict()
    data["memory_sam"] = {"spmm_momentum": 1.5}
    with pytest.raises(ConfigError, match="spmm_momentum"):
        MemorySAM(cards.from_dict(data))
    data["memory_sam"] = {"spmm_alpha": 1.0}
    with pytest.raises(ConfigError, match="spmm_alpha"):
        MemorySAM(cards.from_dict(data))


def test_spmm_prototypes_move_with_momentum_and_carry_no_gradient():
    spmm = SemanticPrototypeMemory(num_classes=3, channels=2, momentum=0.2)
    # Labels at 4x the feature size, downsampled nearest: feature pixel (i, j) takes label[4i, 4j].
    labels = torch.full((1, 8, 8), 255)
    labels[0, :4, :4] = 0
    labels[0, 4:, :] = 2
    feats = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [2.0, 6.0]]]).unsqueeze(0).requires_grad_(True)
    loss = spmm(feats, labels)
    class0 = torch.tensor([1.0, 0.0])  # pixel (0, 0)
    class2 = torch.tensor([3.5, 4.0])  # pixels (1, 0), (1, 1)
    expected = torch.stack([0.2 * class0, torch.zeros(2), 0.2 * class2])
    torch.testing.assert_close(spmm.global_prototypes, expected)
    seen = torch.stack([class0, class2])
    torch.testing.assert_close(loss, F.mse_loss(seen, 0.2 * seen) * 4)  # times h * w of the feature map
    loss.backward()
    assert feats.grad is not None and not spmm.global_prototypes.requires_grad
    assert feats.grad[0, :, 0, 1].abs().sum() == 0  # an ignored pixel gets no gradient
    # Second step: only seen classes move; class 1 is never seen and stays 0.
    with torch.no_grad():
        spmm(feats * 2, labels)
    torch.testing.assert_close(spmm.global_prototypes, torch.stack([
        0.8 * 0.2 * class0 + 0.2 * 2 * class0, torch.zeros(2), 0.8 * 0.2 * class2 + 0.2 * 2 * class2]))
    assert "global_prototypes" in spmm.state_dict()


def authors_prototype_loss(memory, features, labels, momentum=0.2):
    """The authors' PrototypeSegmentation step, written out as their code does it: per class
    features[mask].mean(0), divided by the pixel count, absent classes 0; memory update; MSE over all classes."""
    b, c, h, w = features.shape
    small = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest").long().view(-1)
    flat = features.permute(0, 2, 3, 1).reshape(-1, c)
    protos = torch.zeros(memory.shape[0], c)
    count = torch.zeros(memory.shape[0])
    for k in range(memory.shape[0]):
        mask = small == k
        if mask.sum() > 0:
            protos[k] = flat[mask].mean(0)
            count[k] = mask.sum()
    protos = protos / count.clamp(min=1)[:, None]
    memory = (1 - momentum) * memory + momentum * protos.detach()
    return F.mse_loss(protos, memory) * h * w, memory


def test_spmm_official_form_is_the_authors_loss():
    gen = torch.Generator().manual_seed(0)
    spmm = SemanticPrototypeMemory(num_classes=4, channels=3, momentum=0.2, form="official")
    memory = torch.zeros(4, 3)
    for step in range(3):  # class 3 never appears; class 1 only in the first step: its memory decays
        labels = torch.randint(0, 3 if step == 0 else 1, (2, 16, 16), generator=gen)
        labels[:, :2] = 255
        feats = torch.randn(2, 3, 4, 4, generator=gen, requires_grad=True)
        expected, memory = authors_prototype_loss(memory, feats.detach(), labels)
        loss = spmm(feats, labels)
        torch.testing.assert_close(loss, expected)
        torch.testing.assert_close(spmm.global_prototypes, memory)
    loss.backward()
    assert feats.grad.abs().sum() > 0
    # The two forms differ by far more than rounding: the official prototypes are shrunk by the pixel counts.
    mean_form = SemanticPrototypeMemory(num_classes=4, channels=3, momentum=0.2)
    assert float(mean_form(feats.detach(), labels)) > 10 * float(loss.detach())
    with pytest.raises(ConfigError, match="spmm_form"):
        build_model(cards.derive(cards.load(CARD), memory_sam={"spmm_form": "paper"}))


def test_checkpoint_round_trip(card, tmp_path):
    torch.manual_seed(7)
    model = build_model(card).train()
    x = images(card, seed=7)
    target = torch.randint(0, card.num_classes, (2, *card.input_size))
    loss, _ = model.compute_loss(model(x), target)
    loss.backward()
    sgd_step(model)
    path = save_checkpoint(model, tmp_path / "memory_sam.pt")
    restored = load_checkpoint(path).eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(x)["logits"], model(x)["logits"], rtol=0, atol=0)
    torch.testing.assert_close(restored.spmm.global_prototypes, model.spmm.global_prototypes)
