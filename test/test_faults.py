"""Faults a deployed stack meets, each through the parts a user touches.

- Corrupted checkpoints (truncated, random bytes, a valid torch file of the wrong kind) and mismatched ones (other
  classes, modalities, LoRA rank, SAM2 size): a CheckpointError naming the file and both sides, from the engine
  (`Segmenter`), `mmseg eval` (exit 1, one line) and the node process (exit 1, one line, no traceback).
- Unreadable model cards (missing, bad YAML, wrong types, unknown architecture, permission denied): ConfigError
  naming the file and the key.
- CUDA requested without a GPU: the engine refuses clearly; the node falls back to the CPU with a warning when
  `model.allow_cpu_fallback` is true (the refusal when it is false: test_node.py's start-up error test).
- Disk full while writing a project checkpoint, a training state, an evaluation report, a generated rosbag2 or
  `mmseg replay`'s output bag: no partial file is left and the previous file is intact. The disk is really full: a
  small tmpfs (1-12 MB) mounted for the test (needs root or CAP_SYS_ADMIN; skipped otherwise), filled with a filler
  file so that the next write hits ENOSPC.
- SIGKILL during training, then --resume: test_training.py::test_kill_mid_epoch_then_resume_equals_straight_run.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mmseg_ros import cards
from mmseg_ros.errors import CheckpointError, ConfigError

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CARD_PATH = ROOT / "models" / "test_tiny_mle_sam.yaml"
CARD = cards.load(CARD_PATH)
NODE_TIMEOUT_S = 90.0  # torch + SAM2 import and a model build on a busy 2-core machine
# Half the embed width of the tiny card's Hiera (and its FPN inputs): "another SAM2 size" at test cost.
OTHER_SAM2_SIZE = ["++model.image_encoder.trunk.embed_dim=8",
                   "++model.image_encoder.neck.backbone_channel_list=[64,32,16,8]"]


def card_with(**changes):
    return cards.derive(CARD, **changes)


def other_sam2_size():
    overrides = [o for o in CARD.sam2_overrides if not o.startswith(("++model.image_encoder.trunk.embed_dim=",
                                                                     "++model.image_encoder.neck.backbone_channel"))]
    return card_with(sam2={"overrides": overrides + OTHER_SAM2_SIZE})


# -- faulty checkpoints ---------------------------------------------------------------------------------------------

# name -> (what the error must say besides the file name)
CORRUPT = {
    "truncated": "cannot read",
    "random_bytes": "cannot read",
    "plain_tensor": "not an mmseg_ros checkpoint",
    "official_sam2": "official SAM2 checkpoint belongs in the card",
    "training_state": "not an mmseg_ros checkpoint",
    "damaged_dict": "damaged mmseg_ros checkpoint, missing",
}
# name -> (card changes, what the error must say: both sides)
MISMATCHED = {
    "classes": (lambda: card_with(classes="cityscapes"),
                r"classes: checkpoint has 19 .*card 'test_tiny_mle_sam' has 25"),
    "modalities": (lambda: card_with(modalities=["rgb", "depth"]),
                   r"modalities: checkpoint has \['rgb', 'depth'\], "
                   r"card 'test_tiny_mle_sam' has \['rgb', 'depth', 'event', 'lidar'\]"),
    "rank": (lambda: card_with(lora={"rank": 8, "alpha": 8}),
             r"LoRA rank: checkpoint has 8, card 'test_tiny_mle_sam' has 4"),
    "sam2_size": (other_sam2_size, r"SAM2 overrides: checkpoint has .*card 'test_tiny_mle_sam' has "
                                   r".*only in checkpoint: \[.*embed_dim=8.*only in card: \[.*embed_dim=16"),
}


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """name -> checkpoint file; every file is one real way a checkpoint goes wrong."""
    from mmseg_ros.nn.build import build_model
    from mmseg_ros.nn.checkpoint import FORMAT, VERSION, save_checkpoint
    from mmseg_ros.training.checkpoints import FORMAT as TRAINING_FORMAT

    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    good = save_checkpoint(build_model(CARD), folder / "good.pt")
    data = good.read_bytes()
    files = {"good": good}
    files["truncated"] = folder / "truncated.pt"
    files["truncated"].write_bytes(data[: len(data) // 2])  # a copy cut short (full disk, interrupted transfer)
    files["random_bytes"] = folder / "random_bytes.pt"
    files["random_bytes"].write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    wrong_kinds = {
        "plain_tensor": torch.zeros(3),
        "official_sam2": {"model": {"image_encoder.trunk.pos_embed": torch.zeros(1)}},
        "training_state": {"format": TRAINING_FORMAT, "model": {}},
        "damaged_dict": {"format": FORMAT, "version": VERSION, "state": {}},
    }
    for name, payload in wrong_kinds.items():
        files[name] = folder / f"{name}.pt"
        torch.save(payload, files[name])
    for name, (make_card, _) in MISMATCHED.items():
        files[name] = save_checkpoint(build_model(make_card()), folder / f"other_{name}.pt")
    return files


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_engine_rejects_corrupted_checkpoints_naming_the_file(faulty, name):
    from mmseg_ros.engine import Segmenter

    with pytest.raises(CheckpointError, match=CORRUPT[name]) as err:
        Segmenter(CARD, checkpoint=faulty[name], device="cpu")
    assert str(faulty[name]) in str(err.value)


@pytest.mark.parametrize("name", sorted(MISMATCHED))
def test_engine_rejects_mismatched_checkpoints_naming_both_sides(faulty, name):
    from mmseg_ros.engine import Segmenter

    with pytest.raises(CheckpointError, match=MISMATCHED[name][1]) as err:
        Segmenter(CARD, checkpoint=faulty[name], device="cpu")
    assert str(faulty[name]) in str(err.value)


def test_the_good_checkpoint_loads(faulty):
    """The faulty files fail for their fault, not because this card cannot load any checkpoint."""
    from mmseg_ros.engine import Segmenter

    seg = Segmenter(CARD, checkpoint=faulty["good"], device="cpu")
    assert seg.segment({"rgb": np.zeros((32, 32, 3), np.uint8)}).labels.shape == (32, 32)


@pytest.mark.parametrize("name, needle", [
    ("truncated", CORRUPT["truncated"]), ("damaged_dict", CORRUPT["damaged_dict"]),
    ("official_sam2", CORRUPT["official_sam2"]), ("modalities", MISMATCHED["modalities"][1]),
    ("sam2_size", MISMATCHED["sam2_size"][1]),
])
def test_eval_cli_fails_with_one_line(faulty, capsys, name, needle):
    from mmseg_ros import cli

    code = cli.main(["eval", "--checkpoint", str(faulty[name]), "--card", str(CARD_PATH), "--data",
                     "synthetic:frames=2", "--out", "-", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert len(err.splitlines()) == 1 and err.startswith("mmseg eval: error: "), err
    assert str(faulty[name]) in err
    assert re.search(needle, err), err


def test_eval_cli_without_card_reads_the_stored_card_of_a_damaged_file(faulty, capsys):
    from mmseg_ros import cli

    code = cli.main(["eval", "--checkpoint", str(faulty["damaged_dict"]), "--data", "synthetic:frames=2", "--out", "-"])
    err = capsys.readouterr().err
    assert code == 1 and "damaged mmseg_ros checkpoint, missing ['architecture', 'card'" in err, err


# -- unreadable model cards -----------------------------------------------------------------------------------------


def write_card(folder: Path, mutate) -> Path:
    data = yaml.safe_load(CARD_PATH.read_text())
    path = folder / "card.yaml"
    text = mutate(data)
    path.write_text(text if isinstance(text, str) else yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: "name: x\narchitecture: [mle_sam\n", "not valid YAML"),
    (lambda d: "- just\n- a list\n", "must be a mapping"),
    (lambda d: d.update(architecture="unet"), r"'architecture' must be one of \['mle_sam', 'memory_sam'\], got 'unet'"),
    (lambda d: d.update(input_size="large"), r"'input_size' must be \[H, W\].*got 'large'"),
    (lambda d: d.update(lora={"rank": "four"}), r"'lora.rank' must be an integer >= 1, got 'four'"),
    (lambda d: d.update(modalities="rgb"), r"'modalities'"),
    (lambda d: d["sam2"].update(overrides="++x=1"), r"'sam2.overrides' must be a list"),
])
def test_bad_card_files_name_the_file_and_key(tmp_path, mutate, needle):
    path = write_card(tmp_path, mutate)
    with pytest.raises(ConfigError, match=needle) as err:
        cards.load(path)
    assert str(path) in str(err.value)


def test_missing_card_names_the_file_and_where_it_looked(tmp_path):
    with pytest.raises(ConfigError, match=r"file not found: .*no_such_card.yaml.*models"):
        cards.load(tmp_path / "no_such_card.yaml")


def test_unreadable_card_permission_denied(tmp_path):
    """A card the process may not read. Root reads anything, so as root the check runs in a child whose
    capability bounding set lacks the file-permission overrides (setpriv); otherwise plainly."""
    path = write_card(tmp_path, lambda d: None)
    path.chmod(0)
    code = ("import sys; from mmseg_ros import cards\n"
            "try:\n cards.load(sys.argv[1])\n"
            "except Exception as exc: print(type(exc).__name__, exc)\n")
    cmd = [sys.executable, "-c", code, str(path)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot deny a read")
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT).stdout.strip()
    assert out.startswith("ConfigError") and str(path) in out and "Permission denied" in out, out


# -- CUDA without a GPU ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_engine_refuses_cuda_without_a_gpu_before_building_anything():
    from mmseg_ros.engine import Segmenter

    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"device 'cuda:0' requested but CUDA is not available"):
        Segmenter(CARD, device="cuda:0")
    assert time.monotonic() - start < 5.0  # refused up front, not after a model build


# -- the node process: checkpoint and card faults, CUDA fallback ----------------------------------------------------


def node_cmd(name: str, *params: str):
    args = [str(BIN / "segment_node"), "--ros-args", "-r", f"__ns:=/fault_{name}", "--params-file",
            str(ROOT / "config" / "segment.yaml"), "-p", f"model.card:={CARD_PATH}", "-p", "model.device:=cpu"]
    for p in params:
        args += ["-p", p]
    return args


@pytest.mark.ros
def test_node_fails_fast_on_bad_checkpoints_and_cards_and_falls_back_to_cpu(faulty, tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: x\narchitecture: [mle_sam\n")
    failing = {  # name -> (params, what the one error line must say)
        "truncated": ([f"model.checkpoint:={faulty['truncated']}"], [str(faulty["truncated"]), "cannot read"]),
        "mismatch": ([f"model.checkpoint:={faulty['classes']}"],
                     [str(faulty["classes"]), "classes: checkpoint has 19", "card 'test_tiny_mle_sam' has 25"]),
        "card": ([f"model.card:={bad_yaml}"], [str(bad_yaml), "not valid YAML"]),
    }
    procs = {name: subprocess.Popen(node_cmd(name, *params), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, cwd=ROOT)
             for name, (params, _) in failing.items()}
    fallback = subprocess.Popen(node_cmd("fallback", "model.device:=cuda", "model.allow_cpu_fallback:=true"),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        for name, proc in procs.items():
            try:
                out, _ = proc.communicate(timeout=NODE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                pytest.fail(f"{name}: still running after {NODE_TIMEOUT_S} s")
            errors = [line for line in out.splitlines() if "Error" in line or "error" in line]
            assert proc.returncode == 1, (name, out)
            assert "Traceback" not in out and len(errors) == 1, (name, out)
            assert all(word in errors[0] for word in failing[name][1]), (name, out)
        if torch.cuda.is_available():
            return
        lines = []
        deadline = time.monotonic() + NODE_TIMEOUT_S
        while time.monotonic() < deadline:
            line = fallback.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "model test_tiny_mle_sam on cpu" in line:
                break
        assert any("WARN" in logged and "CUDA is not available: running on the CPU" in logged
                   for logged in lines), "".join(lines)
        assert "model test_tiny_mle_sam on cpu" in lines[-1], "".join(lines)
        fallback.send_signal(signal.SIGINT)
        rest, _ = fallback.communicate(timeout=30)
        assert fallback.returncode == 0 and "Traceback" not in rest, rest
    finally:
        for proc in (*procs.values(), fallback):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# -- disk full ------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    """A real, small filesystem (tmpfs) at `folder`; skips the test where mounting is not permitted."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """Fill the filesystem of `folder` until at most `leave` bytes are free."""
    filler = folder / "filler"
    free = shutil.disk_usage(folder).free
    with open(filler, "wb") as f:
        with contextlib.suppress(OSError):
            f.write(b"\0" * max(0, free - leave))
    assert shutil.disk_usage(folder).free <= leave + 4096
    return filler


def assert_only(folder: Path, names):
    assert sorted(p.name for p in folder.iterdir()) == sorted(names), "partial or temporary files were left behind"


def test_disk_full_while_saving_a_project_checkpoint(tmp_path):
    from mmseg_ros.nn.build import build_model
    from mmseg_ros.nn.checkpoint import load_trained_state, save_checkpoint

    model = build_model(CARD)
    with small_disk(tmp_path / "disk", "12m") as disk:
        path = save_checkpoint(model, disk / "model.pt")
        previous = path.read_bytes()
        fill(disk, len(previous) // 2)
        with torch.no_grad():
            next(p for p in model.parameters() if p.requires_grad).add_(1.0)
        with pytest.raises(OSError) as err:
            save_checkpoint(model, path)
        assert err.value.errno == errno.ENOSPC and str(path) in str(err.value), repr(err.value)
        assert_only(disk, ["model.pt", "filler"])
        assert path.read_bytes() == previous
        load_trained_state(build_model(CARD), path)


def test_disk_full_while_saving_a_training_state(tmp_path):
    from mmseg_ros.nn.build import build_model
    from mmseg_ros.training import checkpoints

    model = build_model(CARD)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    state = dict(recipe={}, card=CARD.to_dict(), model=model, optimizer=optimizer, scheduler=scheduler,
                 scaler=torch.amp.GradScaler("cpu", enabled=False), progress={"epoch": 1},
                 rng=[checkpoints.capture_rng()], frozen=checkpoints.frozen_digest(model))
    with small_disk(tmp_path / "disk", "2m") as disk:
        path = checkpoints.save_state(disk / checkpoints.LATEST, **state)
        previous = path.read_bytes()
        fill(disk, len(previous) // 2)
        with pytest.raises(OSError) as err:
            checkpoints.save_state(path, **{**state, "progress": {"epoch": 2}})
        assert err.value.errno == errno.ENOSPC, repr(err.value)
        assert_only(disk, [checkpoints.LATEST, "filler"])
        assert path.read_bytes() == previous
        assert checkpoints.load_state(path)["progress"] == {"epoch": 1}


def test_disk_full_while_writing_an_evaluation_report(tmp_path):
    from mmseg_ros.evaluation import tables

    with small_disk(tmp_path / "disk", "1m") as disk:
        path = disk / "results.json"
        tables.save_json({"miou": 0.5}, path)
        previous = path.read_bytes()
        fill(disk, 0)
        with pytest.raises(OSError) as err:
            tables.save_json({"miou": 0.6, "per_class": list(range(20_000))}, path)
        assert err.value.errno == errno.ENOSPC, repr(err.value)
        assert_only(disk, ["results.json", "filler"])
        assert path.read_bytes() == previous


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_disk_full_while_writing_a_bag(tmp_path, storage):
    from mmseg_ros.data.synthetic.bag import write_drive_bag
    from mmseg_ros.data.synthetic.generator import SceneGenerator

    frames = [SceneGenerator(seed=3, size=64).render_frame(i, all_events=True) for i in range(2)]
    with small_disk(tmp_path / "disk", "1m") as disk:
        (disk / "earlier.bin").write_bytes(b"x" * 1000)  # something written before, which must survive
        fill(disk, 20_000)  # room for the bag's metadata, not for its frames
        with pytest.raises((OSError, sqlite3.Error)) as err:  # sqlite says "database or disk is full"
            write_drive_bag(disk / "drive", frames * 4, storage=storage)
        assert getattr(err.value, "errno", None) == errno.ENOSPC or "disk is full" in str(err.value), repr(err.value)
        assert_only(disk, ["earlier.bin", "filler"])
        assert (disk / "earlier.bin").read_bytes() == b"x" * 1000


@pytest.mark.parametrize("storage, leave", [("mcap", 20_000), ("sqlite3", 20_000), ("sqlite3", 0)])
def test_disk_full_while_writing_the_replay_output_bag(tmp_path, storage, leave):
    """`mmseg replay`'s output bag replaces an earlier one only when complete. `leave` 0: full before the writer
    even opens its storage."""
    from mmseg_ros import msgs
    from mmseg_ros.replay.bagio import OutputBag

    topic = "/segment_node/labels"

    def write(path, count):
        with OutputBag(path, storage, [topic]) as bag:
            for i in range(count):
                header = msgs.Header(msgs.Time(1 + i, 0), "cam")
                labels = np.full((64, 64), i % 7, np.uint8)
                bag.write(topic, (1 + i) * 10**9, msgs.numpy_to_image(labels, "mono8", header, ros=False))

    with small_disk(tmp_path / "disk", "1m") as disk:
        write(disk / "segmented", 2)
        previous = {p.relative_to(disk): p.read_bytes() for p in (disk / "segmented").rglob("*") if p.is_file()}
        fill(disk, leave)
        with pytest.raises((OSError, sqlite3.Error)) as err:
            write(disk / "segmented", 200)
        assert getattr(err.value, "errno", None) == errno.ENOSPC or "disk is full" in str(err.value), repr(err.value)
        assert_only(disk, ["segmented", "filler"])
        assert {p.relative_to(disk): p.read_bytes() for p in (disk / "segmented").rglob("*") if p.is_file()} == previous


def test_cli_reports_an_os_error_in_one_line_without_traceback(tmp_path):
    # A command that fails on the machine (here: its output folder is a file) says so in one line, exit 1.
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    proc = subprocess.run([sys.executable, "-m", "mmseg_ros.cli", "synth", "--out", str(blocker / "tree"),
                           "--frames", "1", "--size", "32"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("mmseg synth: error:"), proc.stderr
