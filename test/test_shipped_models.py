"""The trained models shipped in models/: they still score what was committed, and the default one segments.

Regression: each shipped checkpoint is scored by `mmseg eval` (in-process) with all its modalities on freshly
generated, seeded validation scenes: the first maps of the scenes of the committed full evaluation
(models/eval/<card>.json, spec in models/README.md), one drive per condition. The full-modality mIoU must match the
value committed in models/eval/regression.json within 1 mIoU, and must never be more than 2 below it.

After retraining a shipped model, write the new reference values with
    .venv/bin/python test/test_shipped_models.py --write
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
REFERENCE = MODELS / "eval" / "regression.json"
# A prefix of the full evaluation's scenes (same seed, size and drive length): five drives, one per condition.
SCENES = "frames=25,seed=100,size=256,frames_per_map=5"
SHIPPED = ("mle_sam_synth", "mle_sam_synth_decoder", "mle_sam_synth_nodrop", "memory_sam_synth")
TOLERANCE = 1.0   # mIoU points either way
MAX_DROP = 2.0    # mIoU points below the committed value


def score(card: str, cache: Path, out: Path) -> dict:
    """`mmseg eval --card CARD --data synthetic:SCENES --subsets full`, in-process; returns results.json."""
    from mmseg_ros import cli

    argv = ["eval", "--card", card, "--data", f"synthetic:{SCENES}", "--cache", str(cache), "--subsets", "full",
            "--device", "cpu", "--no-progress", "--out", str(out)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(argv) == 0
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def scene_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("scenes")  # fresh: the scenes are generated, not read from a stale cache


@pytest.mark.parametrize("card", SHIPPED)
def test_shipped_model_reproduces_committed_miou(card, scene_cache, tmp_path):
    reference = json.loads(REFERENCE.read_text())
    assert reference["spec"] == SCENES, "regression.json was written for other scenes: rewrite it (--write)"
    committed = reference["models"][card]
    report = score(card, scene_cache, tmp_path / card)
    assert report["data"]["samples"] == committed["samples"]
    assert report["model"]["checkpoint_sha256"] == committed["checkpoint_sha256"], "checkpoint changed: --write"
    miou = report["full"]["miou"]
    assert miou >= committed["miou"] - MAX_DROP, f"{card}: mIoU {miou:.2f} dropped below {committed['miou']:.2f}"
    assert abs(miou - committed["miou"]) <= TOLERANCE, f"{card}: mIoU {miou:.2f} vs committed {committed['miou']:.2f}"


def test_default_card_loads_its_checkpoint_and_segments_a_camera_frame():
    from mmseg_ros import cards
    from mmseg_ros.engine import Segmenter

    card = cards.load("default")
    assert card.checkpoint is not None and card.checkpoint.is_file(), card.checkpoint
    assert card.name in SHIPPED
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing or mismatched checkpoint would only warn: make it fail here
        segmenter = Segmenter(card, device="cpu")
    frame = _camera_frame(256, card.modalities)
    result = segmenter.segment(frame)
    assert result.labels.shape == result.confidence.shape == (256, 256)
    assert int(result.labels.max()) < card.num_classes
    assert np.all((result.confidence > 0) & (result.confidence <= 1))
    # a trained model segments a real scene into more than one class
    assert len(np.unique(result.labels)) > 1


def _camera_frame(size: int, names) -> dict:
    """One generated frame of every modality at camera size, in the sensors' own encodings (metres, counts)."""
    from mmseg_ros.data.synthetic import SceneGenerator

    frame = SceneGenerator(seed=7, size=size, condition="night").render_frame(0)
    return {name: frame[name] for name in names}


def write_reference() -> None:
    import tempfile

    values = {}
    with tempfile.TemporaryDirectory() as tmp:
        for card in SHIPPED:
            report = score(card, Path(tmp) / "scenes", Path(tmp) / card)
            values[card] = {"miou": round(report["full"]["miou"], 4), "samples": report["data"]["samples"],
                            "checkpoint_sha256": report["model"]["checkpoint_sha256"]}
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(json.dumps({"spec": SCENES, "models": values}, indent=2) + "\n")
    print(json.dumps(values, indent=2))


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: test_shipped_models.py --write")
    write_reference()
