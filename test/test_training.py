"""The training module: recipes, schedule, data order, the trainer on the tiny card, exact resume after SIGKILL,
atomic checkpoints, torchrun DDP, metrics log and plots.

Training runs use the tiny MLE-SAM card (real SAM2 modules, 64 px) on a tiny DELIVER-layout tree written here and
read by the real DELIVER loader and transform pipeline (random crops, flips, modality dropout), so resume has to
reproduce every random choice of a real run.
"""
import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from mmseg_ros import classes
from mmseg_ros.errors import CheckpointError, ConfigError
from mmseg_ros.training import checkpoints, config, sampling, schedule

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"
TORCHRUN = REPO / ".venv" / "bin" / "torchrun"
SIZE = 64


# ---------------------------------------------------------------------------------------------------- fixtures
def write_tiny_deliver(root: Path, frames_per_split: dict, seed: int = 0) -> Path:
    """A DELIVER-layout tree of learnable scenes: sky above, road below, one car box; every modality sees it."""
    deliver = classes.load("deliver")
    sky, road, car = (deliver.index(n) for n in ("Sky", "Road", "Cars"))
    rng = np.random.default_rng(seed)
    for split, count in frames_per_split.items():
        for i in range(count):
            label = np.full((SIZE, SIZE), road, np.uint8)
            label[: SIZE // 3] = sky
            y, x = rng.integers(SIZE // 3, SIZE - 16), rng.integers(0, SIZE - 20)
            label[y : y + 14, x : x + 20] = car
            colour = np.array([[0, 0, 0]] * len(deliver.names), np.float32)
            colour[[sky, road, car]] = [[120, 170, 250], [90, 90, 90], [220, 30, 30]]
            rgb = np.clip(colour[label] + rng.normal(0, 12, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
            depth = np.where(label == sky, 250, np.where(label == car, 60, 140)).astype(np.uint8)
            event = (cv2.Canny(label * 10, 1, 2) > 0).astype(np.uint8) * 255
            lidar = np.where((np.arange(SIZE)[:, None] % 4 == 0) & (label != sky), depth, 0).astype(np.uint8)
            stem = f"{i:06d}"
            for folder, kind, image in (("img", "rgb", rgb[:, :, ::-1]), ("hha", "depth", np.dstack([depth] * 3)),
                                        ("event", "event", event), ("lidar", "lidar", lidar),
                                        ("semantic", "semantic", label + 1)):
                path = root / folder / "cloud" / split / "MAP_1_point1" / f"{stem}_{kind}_front.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                assert cv2.imwrite(str(path), np.ascontiguousarray(image))
    return root


def write_recipe(path: Path, data_root: Path, **sections) -> Path:
    recipe = {
        "name": "test_tiny",
        "model": "test_tiny_mle_sam",
        "seed": 3,
        "data": {"dataset": "deliver", "root": str(data_root), "num_workers": 0, "modality_dropout": 0.5,
                 "augment": {"scale": [0.75, 1.25], "jitter": 0.2, "blur_p": 0.3}},
        "optimizer": {"lr": 2e-3},
        "schedule": {"epochs": 2, "warmup_epochs": 1},
        "train": {"batch_size": 2, "deterministic": True},
        "checkpoint": {"every_iters": 3},
        "log": {"every_iters": 1, "progress": False},
    }
    for name, values in sections.items():
        recipe.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_tiny_deliver(tmp_path_factory.mktemp("deliver"), {"train": 8, "val": 2})


def train_cli(recipe: Path, out: Path, *extra, env=None):
    return subprocess.Popen(
        [str(PYTHON), "-m", "mmseg_ros.cli", "train", "--config", str(recipe), "--out", str(out), *extra],
        cwd=REPO, env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def kill_at_mid_epoch_checkpoint(proc, latest: Path, timeout: float = 120) -> dict:
    """SIGKILL the run right after it completed a checkpoint inside an epoch; returns that checkpoint's progress.

    Each new latest.pt is inspected with the run stopped (SIGSTOP), so the file read is the one it resumes from."""
    deadline, seen = time.monotonic() + timeout, None
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before a mid-epoch checkpoint"
        stat = latest.stat() if latest.exists() else None
        if stat is not None and (stat.st_ino, stat.st_mtime_ns) != seen:
            proc.send_signal(signal.SIGSTOP)
            stat = latest.stat()
            progress = checkpoints.load_state(latest)["progress"]
            if progress["step_in_epoch"] > 0:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                return progress
            seen = (stat.st_ino, stat.st_mtime_ns)
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.01)


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    return env


def _finish(proc, timeout=120):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


@contextlib.contextmanager
def single_thread():
    """In-process training like the CLI runs (OMP_NUM_THREADS=1): the tiny model gains nothing from a second
    thread and loses a lot when the cores are busy. Puts back the settings a run changes globally."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, data_root):
    """One uninterrupted run (2 epochs x 4 steps, latest.pt every 3 steps), in this process to save a start-up.
    Shared by several tests."""
    from mmseg_ros.training import run

    base = tmp_path_factory.mktemp("straight")
    recipe = write_recipe(base / "recipe.yaml", data_root)
    with single_thread():
        run.run(config.load(recipe), base / "run", device="cpu")
    return recipe, base / "run"


# ---------------------------------------------------------------------------------------------------- schedule
def test_warmup_poly_values():
    cfg = config.ScheduleConfig(epochs=20, warmup_epochs=10, warmup_ratio=0.1, power=0.9)
    f = schedule.warmup_poly(cfg, steps_per_epoch=5)
    assert (f.total_steps, f.warmup_steps) == (100, 50)
    assert f(0) == pytest.approx(0.1)  # warm-up starts at the ratio
    assert f(25) == pytest.approx(0.55)  # linear half-way
    assert f(50) == pytest.approx(1.0)  # end of warm-up: full rate
    assert f(75) == pytest.approx(0.5**0.9)
    assert 0 < f(99) < 0.05 and f(100) == 0.0  # poly decays to ~0 at the last step
    decay = [f(i) for i in range(50, 101)]
    assert all(a > b for a, b in zip(decay, decay[1:]))

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=3e-4)
    sched = schedule.build(opt, cfg, steps_per_epoch=5)
    seen = []
    for _ in range(60):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(3e-5) and seen[50] == pytest.approx(3e-4)
    assert seen[55] == pytest.approx(3e-4 * f(55))


# ---------------------------------------------------------------------------------------------------- recipes
def _base_recipe():
    return {"name": "x", "model": "test_tiny_mle_sam", "data": {"dataset": "deliver", "root": "/nowhere"},
            "optimizer": {"lr": 1e-3}, "schedule": {"epochs": 3, "warmup_epochs": 1}, "train": {"batch_size": 2}}


@pytest.mark.parametrize("overrides, key", [
    (["train.batchsize=4"], "train.batchsize"),
    (["schedule.warmup_ratio=1.5"], "schedule.warmup_ratio"),
    (["optimizer.lr=fast"], "optimizer.lr"),
    (["train.amp=fp8"], "train.amp"),
    (["optimizer.betas=[0.9]"], "optimizer.betas"),
    (["data.modality_dropout=1.0"], "data.modality_dropout"),
    (["schedule.warmup_epochs=3"], "schedule.warmup_epochs"),
    (["bogus=1"], "bogus"),
    (["log=3"], "log"),
])
def test_bad_recipe_names_the_key(overrides, key):
    with pytest.raises(ConfigError, match=rf"\b{key}\b"):
        config.from_dict(config.apply_overrides(_base_recipe(), overrides))


def test_recipe_missing_key_and_batch_split():
    raw = _base_recipe()
    del raw["optimizer"]["lr"]
    with pytest.raises(ConfigError, match=r"optimizer\.lr"):
        config.from_dict(raw)
    recipe = config.from_dict(config.apply_overrides(_base_recipe(), ["train.batch_size=6", "train.accumulate=2"]))
    assert config.micro_batch(recipe, world_size=3) == 1
    with pytest.raises(ConfigError, match=r"train\.batch_size"):
        config.micro_batch(recipe, world_size=2)
    again = config.from_dict(recipe.to_dict())
    assert again == recipe  # what a checkpoint stores reads back to the same recipe


@pytest.mark.parametrize("world_size, accumulate", [(4, 1), (2, 2), (1, 4)])
def test_per_gpu_batch_keeps_the_effective_batch_on_fewer_gpus(world_size, accumulate):
    recipe = config.from_dict(config.apply_overrides(_base_recipe(), ["train.batch_size=16", "train.per_gpu_batch=4"]))
    assert config.accumulation(recipe, world_size) == accumulate
    assert config.micro_batch(recipe, world_size) == 4
    assert world_size * accumulate * config.micro_batch(recipe, world_size) == 16


def test_per_gpu_batch_errors_name_the_key():
    recipe = config.from_dict(config.apply_overrides(_base_recipe(), ["train.batch_size=16", "train.per_gpu_batch=4"]))
    with pytest.raises(ConfigError, match=r"train\.batch_size: 16 does not split over 8 process\(es\) x "
                                          r"train\.per_gpu_batch=4"):
        config.micro_batch(recipe, world_size=8)
    with pytest.raises(ConfigError, match=r"train\.accumulate"):
        config.from_dict(config.apply_overrides(_base_recipe(), ["train.per_gpu_batch=1", "train.accumulate=2"]))
    with pytest.raises(ConfigError, match=r"train\.per_gpu_batch"):
        config.from_dict(config.apply_overrides(_base_recipe(), ["train.per_gpu_batch=3"]))  # batch_size is 2


@pytest.mark.parametrize("decay_1d", [False, True])
def test_adamw_gives_1d_parameters_no_weight_decay(tmp_path, decay_1d):
    """The papers' optimiser groups: biases and norm weights (p.dim() == 1) are not decayed, unless decay_1d."""
    from mmseg_ros.nn.build import build_model
    from mmseg_ros.training import distributed
    from mmseg_ros.training.trainer import Trainer

    recipe = config.from_dict(config.apply_overrides(
        _base_recipe(), ["optimizer.weight_decay=0.5", f"optimizer.decay_1d={str(decay_1d).lower()}"]))
    torch.manual_seed(0)
    model = build_model("test_tiny_mle_sam")
    trainer = Trainer(recipe, model, [None] * 4, None, None, tmp_path, distributed.init("cpu"), model.card.class_names)
    trained = [p for p in model.parameters() if p.requires_grad]
    assert 0 < sum(p.dim() == 1 for p in trained) < len(trained)  # biases beside matrices and tokens
    before = [p.detach().clone() for p in trained]
    for p in trained:
        p.grad = torch.zeros_like(p)  # Adam's step is then 0: only the decoupled weight decay moves a parameter
    lr = trainer.optimizer.param_groups[0]["lr"]
    trainer.optimizer.step()
    for p, old in zip(trained, before):
        factor = 1 - lr * 0.5 if decay_1d or p.dim() != 1 else 1.0
        torch.testing.assert_close(p.detach(), old * factor, rtol=0, atol=1e-7)


def test_shipped_recipes_validate(monkeypatch):
    from mmseg_ros.data import transforms
    from mmseg_ros.training import build

    monkeypatch.delenv("SAM2_CHECKPOINTS", raising=False)
    with pytest.raises(ConfigError, match=r"model\.sam2\.checkpoint"):
        build.load_card(config.load("deliver_mle_sam"))
    monkeypatch.setenv("SAM2_CHECKPOINTS", "/opt/sam2")
    files = sorted((REPO / "train").glob("*.yaml"))
    assert len(files) >= 9, files
    for path in files:
        recipe = config.load(path)
        card = build.load_card(recipe)
        assert card.num_classes >= 1 and recipe.optimizer.weight_decay == 0.01, path
        norms = {m: card.normalization(m) for m in card.modalities}
        transforms.train_pipeline(card.input_size, norms, **recipe.data.augment)  # the augment keys exist
        assert (recipe.schedule.warmup_ratio, recipe.schedule.power) == (0.1, 0.9), path
        if recipe.name.startswith(("deliver", "muses", "mcubes")):  # the papers' settings
            assert card.input_size == (1024, 1024) and recipe.schedule.warmup_epochs == 10, path
            assert card.lora_rank == {"mle_sam": 32, "memory_sam": 4}[card.architecture], path
            assert not recipe.optimizer.decay_1d, path
            augment = recipe.data.augment  # CMNeXt's jitter and blur
            assert (augment["jitter"], augment["jitter_p"], augment["blur_p"], augment["blur_kernel"]) == \
                (0.5, 0.2, 0.2, 3), path
            memory = card.architecture == "memory_sam"
            # MemorySAM: the authors' SAM 2.0 file and effective batch 16 (4 per GPU x 4 GPUs); MLE-SAM: 6 on one GPU
            weights = "sam2_hiera_base_plus.pt" if memory else "sam2.1_hiera_base_plus.pt"
            assert str(card.sam2_checkpoint) == f"/opt/sam2/{weights}", path
            assert (recipe.train.batch_size, recipe.train.per_gpu_batch) == ((16, 4) if memory else (6, 6)), path
            assert config.accumulation(recipe, world_size=1) == (4 if memory else 1), path


# ---------------------------------------------------------------------------------------------------- data order
def test_epoch_batches_are_seeded_sharded_and_resumable():
    a = sampling.epoch_batches(23, epoch=1, seed=5, rank=0, world_size=2, micro_batch=2, accumulate=2)
    b = sampling.epoch_batches(23, epoch=1, seed=5, rank=1, world_size=2, micro_batch=2, accumulate=2)
    assert a == sampling.epoch_batches(23, epoch=1, seed=5, rank=0, world_size=2, micro_batch=2, accumulate=2)
    assert len(a) == len(b) == 4 and all(len(x) == 2 for x in a + b)
    flat_a, flat_b = sum(a, []), sum(b, [])
    assert not set(flat_a) & set(flat_b)  # ranks see disjoint samples
    assert a != sampling.epoch_batches(23, epoch=2, seed=5, rank=0, world_size=2, micro_batch=2, accumulate=2)
    assert sampling.steps_per_epoch(23, 2, 2, 2) == len(a) // 2


def test_seeded_samples_repeat_per_epoch_and_leave_global_rng_alone(data_root):
    from mmseg_ros.data.common import Collate
    from mmseg_ros.data.deliver import Deliver
    from mmseg_ros.data.transforms import train_pipeline, ToModelInput

    mods = ("rgb", "depth", "event", "lidar")
    pipeline = train_pipeline(SIZE, ToModelInput.registry_normalization(mods), modality_dropout=0.7, seed=0)
    seeded = sampling.SeededSamples(Deliver(data_root, "train", mods, transform=pipeline), seed=1)
    seeded.set_epoch(4)
    torch.manual_seed(0)
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    first = [seeded[i] for i in (3, 7, 3)]
    assert torch.equal(torch.rand(1), expected_next)  # the loop's RNG stream is untouched
    again = seeded[3]
    for sample in (first[2], again):  # same (epoch, index): same crop, jitter and dropped modalities
        assert sample["inputs"].keys() == first[0]["inputs"].keys()
        assert torch.equal(sample["label"], first[0]["label"])
        assert all(torch.equal(sample["inputs"][m], first[0]["inputs"][m]) for m in sample["inputs"])
    batches = sampling.epoch_batches(len(seeded), 4, 1, 0, 1, micro_batch=2, accumulate=1)
    loaded = [[b["label"] for b in torch.utils.data.DataLoader(seeded, batch_sampler=batches, num_workers=workers,
                                                                collate_fn=Collate(mods))] for workers in (0, 2)]
    assert all(torch.equal(a, b) for a, b in zip(*loaded)) and len(loaded[1]) == 4  # workers draw the same

    outcomes = set()
    for epoch in range(8):
        seeded.set_epoch(epoch)
        outcomes.add((tuple(seeded[3]["inputs"]), float(seeded[3]["label"].float().sum())))
    assert len(outcomes) > 1  # other epochs draw other augmentations


# ---------------------------------------------------------------------------------------------------- trainer
@pytest.fixture
def one_thread():
    with single_thread():
        yield


def test_loss_goes_down_on_tiny_overfit_set(tmp_path, one_thread):
    from mmseg_ros.training import run

    recipe = config.load(write_recipe(
        tmp_path / "r.yaml", write_tiny_deliver(tmp_path / "deliver", {"train": 4}),
        data={"modality_dropout": 0.0, "augment": {"scale": [1.0, 1.0], "flip": 0.0, "jitter": 0.0, "blur_p": 0.0},
              "val_split": None},
        schedule={"epochs": 5, "warmup_epochs": 0}, train={"batch_size": 2}, checkpoint={"every_iters": 100},
        optimizer={"lr": 3e-3},
    ))
    model, progress = run.run(recipe, tmp_path / "run", device="cpu")
    losses = [r["loss"] for r in _records(tmp_path / "run") if r["kind"] == "train"]
    assert progress.iteration == len(losses) == 10
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


def test_kill_mid_epoch_then_resume_equals_straight_run(tmp_path, straight_run):
    recipe, straight = straight_run
    out = tmp_path / "killed"
    proc = train_cli(recipe, out)
    killed_at = kill_at_mid_epoch_checkpoint(proc, out / checkpoints.LATEST)
    assert proc.returncode == -signal.SIGKILL and 0 < killed_at["step_in_epoch"] < 4, killed_at
    for path in out.iterdir():  # nothing half-written: complete files or ignored temporaries only
        if path.name.startswith(".tmp-"):
            assert checkpoints.find_latest(out) != path
            with pytest.raises(CheckpointError):
                checkpoints.load_state(path)
        elif path.suffix == ".pt":
            checkpoints.load_state(path)
        elif path.suffix == ".jsonl":
            _records(out)
    assert checkpoints.load_state(out / checkpoints.LATEST)["progress"] == killed_at

    _finish(train_cli(recipe, out, "--resume"))
    resumed, reference = (checkpoints.load_state(p / checkpoints.LATEST) for p in (out, straight))
    assert resumed["progress"] == reference["progress"]
    assert resumed["model"].keys() == reference["model"].keys()
    for name, tensor in reference["model"].items():
        assert torch.allclose(resumed["model"][name], tensor, rtol=1e-5, atol=1e-7), name
    changed = [n for n, t in reference["model"].items() if "lora" in n and t.abs().sum() > 0]
    assert changed  # training moved the weights (LoRA B starts at zero), so equality means something
    val = [[r["miou"] for r in _records(p) if r["kind"] == "val"] for p in (out, straight)]
    assert val[0] == pytest.approx(val[1]) and len(val[0]) == 2
    iterations = [r["iteration"] for r in _records(out) if r["kind"] == "train"]
    assert iterations == list(range(1, 9))  # the resumed log has no gap and no duplicate


def test_metrics_log_and_plots(straight_run):
    _, run_dir = straight_run
    records = _records(run_dir)
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    assert [r["iteration"] for r in train] == list(range(1, 9))
    assert all(np.isfinite(r["loss"]) and r["lr"] > 0 and r["samples_per_s"] > 0 for r in train)
    assert train[0]["lr"] < train[3]["lr"]  # warm-up over the first epoch
    assert [r["epoch"] for r in val] == [1, 2] and all(0 <= r["miou"] <= 100 for r in val)
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"kind", "epoch", "iteration", "loss", "lr", "samples_per_s", "miou"} <= set(header)
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == len(records) + 1
    image = cv2.imread(str(run_dir / "curves.png"))
    assert image is not None and image.shape[0] > 100 and image.std() > 0
    assert config.load(run_dir / "recipe.yaml").name == "test_tiny"


def test_exported_checkpoints_load_with_the_project_loader(straight_run):
    from mmseg_ros.nn.build import load_checkpoint
    from mmseg_ros.nn.checkpoint import read_checkpoint

    _, run_dir = straight_run
    state = checkpoints.load_state(run_dir / checkpoints.LATEST)
    model = load_checkpoint(run_dir / "final.pt")
    for name, tensor in model.trainable_state_dict().items():
        assert torch.equal(tensor, state["model"][name]), name
    best = read_checkpoint(run_dir / "best.pt")["meta"]
    val = [r for r in _records(run_dir) if r["kind"] == "val"]
    assert best["val_miou"] == max(r["miou"] for r in val) == state["progress"]["best_miou"]
    assert best["recipe"]["name"] == "test_tiny"  # mmseg eval reads the loader options from here


def test_resume_refuses_other_frozen_weights_and_foreign_files(tmp_path, straight_run, one_thread):
    from mmseg_ros.training import run

    recipe_path, run_dir = straight_run
    other_seed = config.load(recipe_path, ["seed=4"])
    with pytest.raises(CheckpointError, match="frozen weights differ"):
        run.run(other_seed, tmp_path / "x", resume=run_dir / checkpoints.LATEST, device="cpu")
    torn = tmp_path / "torn.pt"
    torn.write_bytes((run_dir / checkpoints.LATEST).read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="not a readable"):
        checkpoints.load_state(torn)
    with pytest.raises(ConfigError, match="already holds a run"):
        run.run(config.load(recipe_path), run_dir, device="cpu")


def test_init_from_starts_a_new_run_from_a_project_checkpoint(tmp_path, straight_run, one_thread):
    from mmseg_ros.nn.checkpoint import read_checkpoint
    from mmseg_ros.training import run

    recipe_path, run_dir = straight_run
    trained = read_checkpoint(run_dir / "final.pt")["state"]
    # lr 1e-12: AdamW moves each weight by about lr per step, so the weights stay where they started
    recipe = config.load(recipe_path, [f"init_from={run_dir / 'final.pt'}", "schedule.epochs=1",
                                       "schedule.warmup_epochs=0", "optimizer.lr=1e-12", "data.val_split=null"])
    model, progress = run.run(recipe, tmp_path / "fine", device="cpu")
    assert progress.iteration == 4  # a fresh schedule, not the checkpoint's
    state = model.state_dict()
    assert trained.keys() <= state.keys()
    lora = [n for n, t in trained.items() if "lora" in n and t.abs().sum() > 0]
    assert lora  # the trained LoRA B are non-zero; a fresh model's are zero, so equality means the load happened
    for name, tensor in trained.items():
        assert torch.allclose(state[name], tensor, atol=1e-8), name

    other = config.load(recipe_path, ["model=test_tiny_memory_sam", f"init_from={run_dir / 'final.pt'}"])
    with pytest.raises(CheckpointError, match="architecture"):
        run.run(other, tmp_path / "other", device="cpu")
    missing = config.load(recipe_path, [f"init_from={tmp_path / 'nope.pt'}"])
    with pytest.raises(ConfigError, match="init_from: file not found"):
        run.run(missing, tmp_path / "missing", device="cpu")


def test_memory_sam_resumes_exactly_from_an_epoch_checkpoint(tmp_path, one_thread):
    """MemorySAM carries trained buffers (SPMM's global prototypes): they must come back too."""
    from mmseg_ros.training import run

    path = write_recipe(tmp_path / "r.yaml", write_tiny_deliver(tmp_path / "deliver", {"train": 2}),
                        data={"val_split": None}, schedule={"epochs": 2, "warmup_epochs": 1},
                        checkpoint={"every_iters": 100, "keep_every_epochs": 1})
    recipe = config.load(path, ["model=test_tiny_memory_sam"])
    straight, _ = run.run(recipe, tmp_path / "a", device="cpu")
    resumed, progress = run.run(recipe, tmp_path / "b", resume=tmp_path / "a" / checkpoints.epoch_name(1),
                                device="cpu")
    assert progress.iteration == 2
    expected = straight.trainable_state_dict()
    buffers = straight.trained_buffer_names()
    assert buffers and all(name in expected for name in buffers)
    for name, tensor in resumed.trainable_state_dict().items():
        assert torch.allclose(tensor, expected[name], rtol=1e-5, atol=1e-7), name


TORCHRUN_SCRIPT = """
import sys, torch
from mmseg_ros.training import config, distributed, run
ctx = distributed.init("cpu")
recipe = config.load(sys.argv[1])
model, progress = run.run(recipe, sys.argv[2], ctx=ctx)
torch.save({"state": model.trainable_state_dict(), "iteration": progress.iteration, "world": ctx.world_size},
           f"{sys.argv[2]}/rank{ctx.rank}.pt")
distributed.shutdown(ctx)
"""


def test_torchrun_two_processes_keep_identical_weights(tmp_path, data_root):
    script = tmp_path / "ddp_train.py"
    script.write_text(TORCHRUN_SCRIPT)
    recipe = write_recipe(tmp_path / "r.yaml", data_root, schedule={"epochs": 1, "warmup_epochs": 0},
                          train={"batch_size": 4, "accumulate": 2, "clip_grad_norm": 1.0}, data={"val_split": None})
    out = tmp_path / "ddp"
    result = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(script), str(recipe), str(out)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=150,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and ranks[0]["iteration"] == 8 // 4
    for name, tensor in ranks[0]["state"].items():
        assert torch.equal(tensor, ranks[1]["state"][name]), name
    assert any("lora" in n and t.abs().sum() > 0 for n, t in ranks[0]["state"].items())
    assert (out / checkpoints.LATEST).exists() and not list(out.glob(".tmp-*"))


def _records(run_dir):
    with open(Path(run_dir) / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]
