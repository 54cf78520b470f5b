"""MLE-SAM on the tiny card: any subset, per-sample presence, router/top-k, dual path, OHEM, what trains."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from mmseg_ros import cards
from mmseg_ros.errors import ConfigError, DataError
from mmseg_ros.nn.build import build_model
from mmseg_ros.nn.fusion import ModalityFusion
from mmseg_ros.nn.lora import is_lora_name, lora_layers
from mmseg_ros.nn.losses import ohem_cross_entropy

CARD = "test_tiny_mle_sam"
MODS = ("rgb", "depth", "event", "lidar")
SIZE = 64


def card_with(**changes):
    return cards.derive(cards.load(CARD), **changes)


def randomize_trained(model, seed=0):
    """Make LoRA experts and heads non-trivial so equivalences are not vacuous."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model):
            for p in (layer.lora_b_q, layer.lora_b_v):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        for fusion in model.fusion.values():
            fusion.router.weight.copy_(torch.randn(fusion.router.weight.shape, generator=gen))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model(CARD).eval()
    randomize_trained(m)
    return m


def images(batch=2, mods=MODS, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, 3, SIZE, SIZE, generator=gen) for m in mods}


def test_every_subset_gives_class_logits(model):
    subsets = [s for r in range(1, 5) for s in itertools.combinations(MODS, r)]
    assert len(subsets) == 15
    k = model.options["top_k"]
    with torch.no_grad():
        for subset in subsets:
            out = model(images(2, subset))
            assert out["logits"].shape == (2, 25, SIZE, SIZE)
            assert out["logits_decoder"].shape == out["logits_aux"].shape == (2, 25, SIZE, SIZE)
            assert torch.isfinite(out["logits"]).all()
            torch.testing.assert_close(out["logits"], (out["logits_decoder"] + out["logits_aux"]) / 2)
            assert out["modalities"] == subset
            for level in ("sfm", "ifp", "ffp"):
                w, chosen = out["router_weights"][level], out["router_selected"][level]
                assert w.shape == chosen.shape == (2, len(subset))
                torch.testing.assert_close(w.sum(1), torch.ones(2))
                assert (chosen.sum(1) == min(k, len(subset))).all()
                # the chosen ones are the largest weights
                for b in range(2):
                    if not chosen[b].all():
                        assert w[b][chosen[b]].min() >= w[b][~chosen[b]].max()


def test_per_sample_presence_equals_running_each_sample_alone(model):
    given = images(3, MODS, seed=1)
    present = torch.tensor([[True, False, True, False], [False, False, False, True], [True, True, True, True]])
    with torch.no_grad():
        batched = model(given, present)
        # what an absent modality holds does not matter
        scrambled = {m: t.clone() for m, t in given.items()}
        scrambled["depth"][0] = 1e3
        scrambled["rgb"][1] = -7.0
        torch.testing.assert_close(model(scrambled, present)["logits"], batched["logits"])
        for b in range(3):
            alone_mods = [m for m, keep in zip(MODS, present[b]) if keep]
            alone = model({m: given[m][b:b + 1] for m in alone_mods})
            torch.testing.assert_close(batched["logits"][b:b + 1], alone["logits"], atol=1e-4, rtol=1e-4)
            for level in ("sfm", "ifp", "ffp"):
                w = batched["router_weights"][level][b]
                assert torch.all(w[~present[b]] == 0)
                torch.testing.assert_close(w[present[b]], alone["router_weights"][level][0], atol=1e-5, rtol=1e-5)


def test_input_order_does_not_matter(model):
    given = images(1, ("event", "rgb", "lidar"), seed=2)
    reordered = {m: given[m] for m in ("rgb", "lidar", "event")}
    with torch.no_grad():
        torch.testing.assert_close(model(given)["logits"], model(reordered)["logits"], atol=1e-5, rtol=1e-5)


def test_absent_modalities_cost_no_encoder_compute(model):
    rows = []
    hook = model.backbone.trunk.patch_embed.register_forward_hook(lambda mod, inp, out: rows.append(inp[0].shape[0]))
    try:
        present = torch.tensor([[True, False, False], [True, True, False]])
        with torch.no_grad():
            model(images(2, ("rgb", "depth", "lidar")), present)
            model(images(2, ("event",)))
    finally:
        hook.remove()
    assert rows == [3, 2]  # one trunk pass each, over present (modality, sample) pairs only


def test_modalities_use_their_own_experts(model):
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        as_rgb = model({"rgb": x})["logits"]
        as_depth = model({"depth": x})["logits"]
    assert not torch.allclose(as_rgb, as_depth, atol=1e-4)


@pytest.mark.parametrize("combine, renormalize", [("sum", False), ("mean", False), ("sum", True)])
def test_fusion_follows_equations_7_to_10(combine, renormalize):
    torch.manual_seed(0)
    num, batch, dim = 4, 3, 8
    feats = torch.randn(num, batch, dim, 5, 6)
    present = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 0, 1], [1, 0, 1]], dtype=torch.bool)
    feats = feats * present[:, :, None, None, None]
    for k in range(1, num + 2):
        fusion = ModalityFusion(dim, top_k=k, combine=combine, renormalize=renormalize)
        unified, weights, chosen = fusion(feats, present)
        for b in range(batch):
            idx = present[:, b].nonzero().flatten()
            ys = feats[idx, b]
            mean = ys.mean(0)
            scores = fusion.router(ys.mean(dim=(-2, -1))).squeeze(-1)
            w = torch.softmax(scores, 0)
            top = w.topk(min(k, len(idx))).indices
            gate = w[top] / w[top].sum() if renormalize else w[top]  # Eq. 10 as written: not renormalised
            weighted = (gate[:, None, None, None] * ys[top]).sum(0)
            expected = mean + weighted if combine == "sum" else (mean + weighted) / 2
            torch.testing.assert_close(unified[b], expected, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(weights[b, idx], w)
            assert int(chosen[b].sum()) == min(k, len(idx)) and not chosen[b][~present[:, b]].any()


def test_no_mem_embed_option_adds_sam2s_embedding_before_the_decoder():
    torch.manual_seed(0)
    plain = build_model(CARD).eval()
    torch.manual_seed(0)
    with_embed = build_model(card_with(mle_sam={"no_mem_embed": True})).eval()
    assert "decoder.no_mem_embed" not in plain.state_dict()  # off: the state-dict keys of the shipped models
    embed = with_embed.decoder.no_mem_embed
    assert embed.shape == (1, 1, plain.decoder.dim) and not embed.requires_grad  # frozen like the transformer
    with torch.no_grad():
        embed.copy_(torch.randn(embed.shape))
    gen = torch.Generator().manual_seed(1)
    sfm = torch.randn(2, plain.decoder.dim, 4, 4, generator=gen)
    ifp = torch.randn(2, plain.decoder.high_res_dims[1], 8, 8, generator=gen)
    ffp = torch.randn(2, plain.decoder.high_res_dims[0], 16, 16, generator=gen)
    with torch.no_grad():  # the same weights otherwise: adding it inside equals adding it to the SFM outside
        torch.testing.assert_close(with_embed.decoder(sfm, ifp, ffp),
                                   plain.decoder(sfm + embed.reshape(1, -1, 1, 1), ifp, ffp))
        assert not torch.allclose(with_embed.decoder(sfm, ifp, ffp), plain.decoder(sfm, ifp, ffp))
    scratch = build_model(card_with(mle_sam={"no_mem_embed": True}, trainable="from_scratch"))
    assert scratch.decoder.no_mem_embed.requires_grad


def test_bad_inputs_fail_clearly(model):
    with pytest.raises(ConfigError, match="radar"):
        model({"radar": torch.zeros(1, 3, SIZE, SIZE)})
    with pytest.raises(ConfigError, match="aolp"):
        model({"aolp": torch.zeros(1, 3, SIZE, SIZE)})
    with pytest.raises(ConfigError, match=r"\(B, 3, H, W\)"):
        model({"rgb": torch.zeros(1, 1, SIZE, SIZE)})
    with pytest.raises(ConfigError, match="multiple of 32"):
        model({"rgb": torch.zeros(1, 3, 50, SIZE)})
    with pytest.raises(ConfigError, match="no modality present"):
        model(images(2, ("rgb", "depth")), torch.tensor([[True, False], [False, False]]))
    with pytest.raises(ConfigError, match="non-empty"):
        model({})


def _trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_only_intended_parameters_train():
    paper = build_model(CARD)
    names = _trainable_names(paper)
    allowed = ("decoder.class_tokens", "decoder.hypernetworks", "decoder.output_upscaling", "decoder.conv_s0",
               "decoder.conv_s1", "fusion.", "aux_head.")
    assert names and all(is_lora_name(n) or n.startswith(allowed) for n in names)
    assert any(is_lora_name(n) for n in names) and any(n.startswith("aux_head.") for n in names)
    frozen = {n for n, p in paper.named_parameters() if not p.requires_grad}
    assert any(n.startswith("backbone.encoder.trunk.") for n in frozen)
    assert any(n.startswith("backbone.encoder.neck.") for n in frozen)
    assert any(n.startswith("decoder.transformer.") for n in frozen)
    assert not any(is_lora_name(n) for n in frozen)

    scratch = build_model(card_with(trainable="from_scratch"))
    scratch_names = _trainable_names(scratch)
    assert names < scratch_names
    assert all(p.requires_grad for n, p in scratch.named_parameters() if n.startswith("backbone."))
    assert all(p.requires_grad for n, p in scratch.named_parameters() if n.startswith("decoder.transformer."))

    with_transformer = _trainable_names(build_model(card_with(mle_sam={"train_decoder_transformer": True})))
    assert with_transformer - names and all(n.startswith("decoder.transformer.") for n in with_transformer - names)


def test_a_training_step_changes_trainable_and_nothing_frozen():
    torch.manual_seed(0)
    model = build_model(CARD).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)
    target = torch.randint(0, 25, (2, SIZE, SIZE))
    target[:, :8] = 255
    out = model(images(2, ("rgb", "depth", "event")), torch.tensor([[True, True, False], [True, False, True]]))
    loss, parts = model.compute_loss(out, target)
    assert set(parts) == {"ohem_decoder", "ohem_aux"} and math.isfinite(float(loss.detach()))
    loss.backward()
    optim.step()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, before[name]), f"trainable {name} did not change"
        else:
            assert torch.equal(p, before[name]), f"frozen {name} changed"
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), f"buffer {name} changed"


def test_loss_is_the_weighted_sum_of_both_paths(model):
    weighted = build_model(card_with(loss={"weights": [0.25, 2.0], "ohem_thresh": 0.5})).eval()
    with torch.no_grad():
        out = weighted(images(1, ("rgb",)))
        target = torch.randint(0, 25, (1, SIZE, SIZE))
        total, parts = weighted.compute_loss(out, target)
        s0 = ohem_cross_entropy(out["logits_decoder"], target, 0.5)
        s1 = ohem_cross_entropy(out["logits_aux"], target, 0.5)
    torch.testing.assert_close(total, 0.25 * s0 + 2.0 * s1)
    assert parts == pytest.approx({"ohem_decoder": float(s0), "ohem_aux": float(s1)})


@pytest.mark.parametrize("path", ["decoder", "aux"])
def test_output_option_picks_one_path_and_skips_the_other_out_of_training(model, path):
    single = build_model(card_with(mle_sam={"output": path})).eval()
    single.load_state_dict(model.state_dict())
    inputs = images(2, ("rgb", "lidar"))
    with torch.no_grad():
        both, one = model(inputs), single(inputs)
    torch.testing.assert_close(one["logits"], both["logits_" + path])
    assert not torch.allclose(both["logits"], both["logits_" + path])  # the default mean is a different answer
    other = "aux" if path == "decoder" else "decoder"
    assert one["logits_" + other] is None  # not computed at inference
    single.train()
    out = single(inputs)
    assert out["logits_" + other] is not None  # both paths still train (Eq. 14)
    total, parts = single.compute_loss(out, torch.randint(0, 25, (2, SIZE, SIZE)))
    assert set(parts) == {"ohem_decoder", "ohem_aux"} and torch.isfinite(total)


def test_bad_mle_sam_options_fail_at_build():
    with pytest.raises(ConfigError, match="top_k"):
        build_model(card_with(mle_sam={"top_k": 0}))
    with pytest.raises(ConfigError, match="topk"):
        build_model(card_with(mle_sam={"topk": 1}))
    with pytest.raises(ConfigError, match="loss.weights"):
        build_model(card_with(loss={"weights": [1.0]}))
    with pytest.raises(ConfigError, match="mle_sam.output"):
        build_model(card_with(mle_sam={"output": "sum"}))
    for flag in ("no_mem_embed", "renormalize_top_k"):
        with pytest.raises(ConfigError, match=f"mle_sam.{flag}"):
            build_model(card_with(mle_sam={flag: "yes"}))


# -- OHEM (Eq. 13) -----------------------------------------------------------------------------------------------


def _pixel_ce(logits, target):
    return F.cross_entropy(logits, target, ignore_index=255, reduction="none").flatten()


def test_ohem_keeps_hard_pixels_above_threshold():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 16, 16) * 3
    target = torch.randint(0, 5, (2, 16, 16))
    target[0, :4] = 255
    ce = _pixel_ce(logits, target)
    hard = ce[ce > -math.log(0.7)]
    valid = int((target != 255).sum())
    assert hard.numel() >= valid // 16  # the threshold branch
    torch.testing.assert_close(ohem_cross_entropy(logits, target, 0.7), hard.mean())


def test_ohem_keeps_at_least_a_sixteenth_of_valid_pixels():
    target = torch.randint(0, 4, (1, 32, 32))
    target[0, :16] = 255
    logits = F.one_hot(target.clamp(max=3), 4).permute(0, 3, 1, 2).float() * 20  # confidently right
    logits[0, 0, 20, 5] = 25.0  # one pixel somewhat wrong
    ce = _pixel_ce(logits, target)
    valid = int((target != 255).sum())
    expected = ce.topk(valid // 16).values.mean()
    torch.testing.assert_close(ohem_cross_entropy(logits, target, 0.7), expected)
    assert float(expected) > 0


def test_ohem_edge_cases():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    all_ignored = torch.full((1, 4, 4), 255)
    loss = ohem_cross_entropy(logits, all_ignored)
    loss.backward()
    assert float(loss.detach()) == 0.0 and logits.grad is not None
    with pytest.raises(DataError, match="0..2"):
        ohem_cross_entropy(logits, torch.full((1, 4, 4), 7))
    with pytest.raises(DataError, match="agree"):
        ohem_cross_entropy(logits, torch.zeros(1, 5, 4, dtype=torch.long))


def test_mmseg_info_counts_components(capsys):
    from mmseg_ros import cli

    assert cli.main(["info", CARD]) == 0
    text = capsys.readouterr().out
    model = build_model(CARD)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert f"trainable: {trainable:,} parameters" in text
    for component in ("trunk", "lora", "fpn_neck", "fusion_router", "decoder_transformer", "decoder", "aux_head"):
        assert f"| {component} |" in text
    lora = sum(p.numel() for n, p in model.named_parameters() if is_lora_name(n))
    assert f"LoRA: 4 adapter(s) of {lora // 4:,} parameters each" in text
    assert cli.main(["info", CARD, "--trainable", "from_scratch"]) == 0
    scratch = capsys.readouterr().out
    assert f"trainable: {sum(p.numel() for p in model.parameters()):,} parameters" in scratch
