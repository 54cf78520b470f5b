"""Model cards: every shipped card loads; bad values fail with ConfigError naming the key and value."""
import copy
from pathlib import Path

import pytest
import yaml

from mmseg_ros import cards, modalities
from mmseg_ros.errors import ConfigError

MODELS = Path(__file__).resolve().parent.parent / "models"
TINY = "test_tiny_mle_sam"


def tiny_dict():
    with open(MODELS / f"{TINY}.yaml") as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize("path", sorted(MODELS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_card_loads(path):
    card = cards.load(path)
    assert card.name and card.architecture in cards.ARCHITECTURES
    assert card.num_classes == len(card.class_names) > 0
    assert all(m in modalities.REGISTRY for m in card.modalities)
    assert all(v % 32 == 0 for v in card.input_size)


def test_load_by_name_and_fields():
    card = cards.load(TINY)
    assert card.path == MODELS / f"{TINY}.yaml"
    assert card.modalities == ("rgb", "depth", "event", "lidar")
    assert card.class_set.name == "deliver" and card.num_classes == 25
    assert card.input_size == (64, 64)
    assert (card.lora_rank, card.lora_alpha, card.lora_dropout) == (4, 4.0, 0.0)
    assert card.arch["top_k"] == 2 and card.trainable == "paper"
    assert card.sam2_checkpoint is None and card.checkpoint is None


def test_to_dict_round_trip_is_self_contained(tmp_path):
    card = cards.load(TINY)
    again = cards.from_dict(card.to_dict(), source="round trip", base_dir=tmp_path)
    assert again.to_dict() == card.to_dict()
    assert again.class_set == card.class_set


def test_normalization_default_and_override():
    data = tiny_dict()
    data["normalization"] = {"depth": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    card = cards.from_dict(data)
    assert card.normalization("depth") == ((0.5,) * 3, (0.25,) * 3)
    rgb = modalities.get("rgb")
    assert card.normalization("rgb") == (rgb.mean, rgb.std)
    assert card.normalization("img") == (rgb.mean, rgb.std)  # aliases resolve
    with pytest.raises(ConfigError, match="aolp"):
        card.normalization("aolp")


def test_relative_paths_are_relative_to_the_card(tmp_path):
    data = tiny_dict()
    data["sam2"]["checkpoint"] = "weights/sam2.pt"
    data["checkpoint"] = "trained.pt"
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(data))
    card = cards.load(path)
    assert card.sam2_checkpoint == (tmp_path / "weights/sam2.pt").resolve()
    assert card.checkpoint == (tmp_path / "trained.pt").resolve()


BAD = [
    (lambda d: d.update(colour="red"), "colour"),
    (lambda d: d.update(architecture="segformer"), "segformer"),
    (lambda d: d.update(modalities=["rgb", "radar"]), "radar"),
    (lambda d: d.update(modalities=["rgb", "rgb"]), "twice"),
    (lambda d: d.update(modalities=[]), "modalit"),
    (lambda d: d.update(input_size=[100, 64]), "input_size"),
    (lambda d: d.update(lora={"rank": 0}), "lora.rank"),
    (lambda d: d.update(lora={"rank": 4, "dropout": 1.5}), "lora.dropout"),
    (lambda d: d.update(lora={"rank": 4, "scale": 2}), "scale"),
    (lambda d: d["sam2"].update(config="configs/sam2.1/sam2.1_hiera_xl.yaml"), "hiera_xl"),
    (lambda d: d["sam2"].update(overrides="++a=1"), "sam2.overrides"),
    (lambda d: d.update(normalization={"aolp": {"mean": [0, 0, 0], "std": [1, 1, 1]}}), "aolp"),
    (lambda d: d.update(normalization={"rgb": {"mean": [0, 0], "std": [1, 1, 1]}}), "normalization.rgb.mean"),
    (lambda d: d.update(normalization={"rgb": {"mean": [0, 0, 0], "std": [1, 0, 1]}}), "normalization.rgb.std"),
    (lambda d: d.update(trainable="everything"), "everything"),
    (lambda d: d.update(memory_sam={"alpha": 1}), "memory_sam"),
    (lambda d: d.update(loss={"ohem_thresh": 1.5}), "loss.ohem_thresh"),
    (lambda d: d.update(loss={"weights": [1, -1]}), "loss.weights"),
    (lambda d: d.pop("classes"), "classes"),
    (lambda d: d.update(classes="no_such_set"), "no_such_set"),
]


@pytest.mark.parametrize("mutate, needle", BAD, ids=[n for _, n in BAD])
def test_bad_cards_fail_naming_the_problem(mutate, needle):
    data = copy.deepcopy(tiny_dict())
    mutate(data)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        cards.from_dict(data, source="bad.yaml")


def test_memory_sam_needs_square_input():
    data = tiny_dict()
    data.update(architecture="memory_sam", input_size=[64, 128])
    data.pop("mle_sam")
    with pytest.raises(ConfigError, match="square"):
        cards.from_dict(data)


def test_inline_class_set():
    data = tiny_dict()
    data["classes"] = {"name": "two",
                       "classes": [{"name": "road", "color": [1, 2, 3]}, {"name": "car", "color": [4, 5, 6]}]}
    card = cards.from_dict(data)
    assert card.num_classes == 2 and card.class_names == ("road", "car")


def test_read_options_rejects_unknown_keys():
    assert cards.read_options({"top_k": 3}, {"top_k": 2, "combine": "sum"}, "x") == {"top_k": 3, "combine": "sum"}
    with pytest.raises(ConfigError, match="topk"):
        cards.read_options({"topk": 3}, {"top_k": 2}, "card mle_sam")


def test_derive_replaces_and_merges():
    card = cards.load(TINY)
    bigger = cards.derive(card, input_size=[128, 96], lora={"rank": 8}, mle_sam={"top_k": 3})
    assert bigger.input_size == (128, 96) and bigger.lora_rank == 8 and bigger.lora_alpha == card.lora_alpha
    assert bigger.arch["top_k"] == 3 and bigger.modalities == card.modalities and card.input_size == (64, 64)
    with pytest.raises(ConfigError, match="input_size"):
        cards.derive(card, input_size=[100, 100])
