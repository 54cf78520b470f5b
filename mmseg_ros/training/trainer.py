"""The training loop: AdamW on the trained parameters, warm-up + poly lr per step, AMP on CUDA, gradient
accumulation and clipping, DDP under torchrun, validation mIoU, atomic checkpoints and exact resume.

Exact resume rests on three things (see docs/training.md): checkpoints at optimiser-step granularity, a data order
that is a pure function of (seed, epoch) with the consumed steps skipped on resume (`sampling.epoch_batches`), and
per-sample augmentation randomness seeded from (seed, epoch, index) (`sampling.SeededSamples`), together with the
restored global RNG states of every process for what the model itself draws (dropout).
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .. import precision as precisions
from ..errors import CheckpointError
from . import checkpoints, config, distributed, sampling, schedule
from .config import Recipe, accumulation, micro_batch
from .metrics_log import MetricsLog
from .plots import PLOT_NAME, plot_curves



@dataclass
class Progress:
    epoch: int = 0  # the epoch being trained (0-based); == epochs when training is over
    step_in_epoch: int = 0  # optimiser steps already done in `epoch`
    iteration: int = 0  # optimiser steps done in total
    best_miou: Optional[float] = None
    best_epoch: Optional[int] = None


class Trainer:
    """Train `model` on `train_set` as `recipe` says, writing into `out_dir` (rank 0 only).

    `model` is a MultiModalSegmenter (forward(inputs, present=...), compute_loss, trainable_state_dict), already on
    `ctx.device` with the card's parameters frozen. Datasets yield model samples; `collate` batches them into
    {"inputs", "present", "label", ...}. `resume_from`: a training-state file to continue from."""

    def __init__(self, recipe: Recipe, model: torch.nn.Module, train_set, val_set, collate, out_dir,
                 ctx: distributed.Context, class_names, resume_from=None, export=None):
        self.recipe = recipe
        self.ctx = ctx
        self.out_dir = Path(out_dir)
        self.class_names = tuple(class_names)
        self.collate = collate
        self.export = export  # callable(model, path, meta) writing a project checkpoint, or None
        self.module = model
        self.train_set = sampling.SeededSamples(train_set, recipe.seed)
        self.val_set = None if val_set is None else sampling.SeededSamples(val_set, recipe.seed)
        self.accumulate = accumulation(recipe, ctx.world_size)
        self.micro_batch = micro_batch(recipe, ctx.world_size)
        self.steps_per_epoch = sampling.steps_per_epoch(
            len(train_set), ctx.world_size, self.micro_batch, self.accumulate
        )
        opt = recipe.optimizer
        groups = param_groups(model, opt.weight_decay, opt.decay_1d)
        if not groups:
            raise CheckpointError(f"{recipe.name}: the model has no trainable parameter (check the card's 'trainable')")
        self.optimizer = torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas, eps=opt.eps,
                                           weight_decay=opt.weight_decay)
        self.scheduler = schedule.build(self.optimizer, recipe.schedule, self.steps_per_epoch)
        cuda = ctx.device.type == "cuda"
        # train.amp "none" is the precision policy's fp32; half precisions run on CUDA only, as everywhere.
        self.precision = precisions.effective(config.AMP_PRECISION[recipe.train.amp], ctx.device)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=precisions.needs_grad_scaling(self.precision))
        self.model = distributed.wrap(ctx, model, recipe.train.find_unused_parameters)
        self.frozen = checkpoints.frozen_digest(model)
        self.progress = Progress()
        if resume_from is not None:
            self._resume(resume_from)
        self.log = MetricsLog(self.out_dir, enabled=ctx.is_main,
                              resume_iteration=self.progress.iteration if resume_from is not None else None)
        if ctx.is_main:
            print(f"batch: {recipe.train.batch_size} samples per optimiser step = {ctx.world_size} process(es) x "
                  f"{self.accumulate} accumulation step(s) x {self.micro_batch} per process", file=sys.stderr)
        if ctx.is_main and recipe.train.amp != "none" and not cuda:
            print(f"note: train.amp={recipe.train.amp} applies on CUDA only; training in float32 on CPU",
                  file=sys.stderr)

    # ------------------------------------------------------------------------------------------------ main loop
    def fit(self) -> Progress:
        epochs = self.recipe.schedule.epochs
        while self.progress.epoch < epochs:
            self._train_epoch()
            self.progress.epoch += 1
            self.progress.step_in_epoch = 0
            done = self.progress.epoch
            validate = self.val_set is not None and (done % self.recipe.val.every_epochs == 0 or done == epochs)
            if validate:
                self._validate_and_keep_best()
            self._save(checkpoints.LATEST)
            keep = self.recipe.checkpoint.keep_every_epochs
            if keep and done % keep == 0:
                self._save(checkpoints.epoch_name(done))
            if validate or done == epochs:
                self._flush_logs(plots=True)
        self._export("final.pt")
        distributed.barrier(self.ctx)
        return self.progress

    def _train_epoch(self) -> None:
        recipe, ctx, p = self.recipe, self.ctx, self.progress
        accumulate = self.accumulate
        batches = sampling.epoch_batches(len(self.train_set), p.epoch, recipe.seed, ctx.rank, ctx.world_size,
                                         self.micro_batch, accumulate)
        self.train_set.set_epoch(p.epoch)
        loader = self._loader(self.train_set, batches[p.step_in_epoch * accumulate:], recipe.data.num_workers)
        bar = self._progress_bar(p.epoch)
        window = _Window()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        started = time.perf_counter()
        for micro, batch in enumerate(loader):
            last_micro = (micro + 1) % accumulate == 0
            sync = contextlib.nullcontext() if last_micro or not ctx.distributed else self.model.no_sync()
            with sync:
                with self._autocast():
                    out = self.model(batch["inputs"], present=batch["present"])
                    loss, parts = self.module.compute_loss(out, batch["label"])
                self.scaler.scale(loss / accumulate).backward()
            window.add(float(loss.detach()), parts, accumulate)
            if not last_micro:
                continue
            window.lr = self._lr()  # the rate this step used (the scheduler moves it on below)
            self._optimiser_step()
            p.step_in_epoch += 1
            p.iteration += 1
            now = time.perf_counter()
            window.step(now - started, self.recipe.train.batch_size)
            started = now
            if bar is not None:
                bar.set_postfix(loss=f"{window.last_loss:.4f}", lr=f"{window.lr:.2e}",
                                samples_s=f"{window.last_rate:.1f}", refresh=False)
                bar.update(1)
            if p.iteration % recipe.log.every_iters == 0 or p.step_in_epoch == self.steps_per_epoch:
                self._log_train(window)
                window = _Window()
            if p.iteration % recipe.checkpoint.every_iters == 0 and p.step_in_epoch < self.steps_per_epoch:
                self._save(checkpoints.LATEST)  # the epoch-end save follows validation instead
        if bar is not None:
            bar.close()

    def _optimiser_step(self) -> None:
        clip = self.recipe.train.clip_grad_norm
        if clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    # ------------------------------------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        """mIoU etc. over the whole validation set (each process scores a shard; the matrices are summed)."""
        from ..evaluation.metrics import ConfusionMatrix

        indices = sampling.shard(range(len(self.val_set)), self.ctx.rank, self.ctx.world_size)
        size = self.recipe.val.batch_size
        loader = self._loader(self.val_set, [indices[i:i + size] for i in range(0, len(indices), size)],
                              self.recipe.data.num_workers)
        matrix = ConfusionMatrix(len(self.class_names))
        was_training = self.module.training
        self.module.eval()
        for batch in loader:
            with self._autocast():
                logits = self.module(batch["inputs"], present=batch["present"])["logits"]
            label = batch["label"]
            if logits.shape[-2:] != label.shape[-2:]:
                logits = F.interpolate(logits.float(), size=label.shape[-2:], mode="bilinear", align_corners=False)
            matrix.update(logits.argmax(dim=1), label)
        self.module.train(was_training)
        scores = matrix.all_reduce().scores(self.class_names)
        return {"miou": scores.miou, "macc": scores.macc, "aacc": scores.aacc}

    def _validate_and_keep_best(self) -> None:
        p = self.progress
        scores = self.validate()
        self.log.add({"kind": "val", "epoch": p.epoch, "iteration": p.iteration, **scores})
        if self.ctx.is_main:
            print(f"epoch {p.epoch}: val mIoU {scores['miou']:.2f}", file=sys.stderr)
        if scores["miou"] > checkpoints.best_score(asdict(p)):
            p.best_miou, p.best_epoch = scores["miou"], p.epoch
            self._export("best.pt", val_miou=scores["miou"])

    # ------------------------------------------------------------------------------------------------ state
    def _save(self, name: str) -> None:
        rng = distributed.gather_objects(self.ctx, checkpoints.capture_rng())  # a collective: every rank calls
        if self.ctx.is_main:
            # The log first: a state at step k must never be newer than the log it resumes (records <= k are kept).
            self._flush_logs(plots=False)
            checkpoints.save_state(
                self.out_dir / name, recipe=self.recipe.to_dict(), card=_card_dict(self.module),
                model=self.module, optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler,
                progress=asdict(self.progress), rng=rng, frozen=self.frozen,
            )
        distributed.barrier(self.ctx)

    def _export(self, name: str, **extra) -> None:
        """A project checkpoint of the model as it is now (rank 0; the others hold the same weights)."""
        if self.export is None or not self.ctx.is_main:
            return
        p = self.progress
        meta = {"recipe": self.recipe.to_dict(), "data_options": dict(self.recipe.data.options), "epoch": p.epoch,
                "iteration": p.iteration, **extra}
        self.export(self.module, self.out_dir / name, meta)

    def _resume(self, path) -> None:
        state = checkpoints.load_state(path)
        checkpoints.check_frozen_digest(self.module, state["frozen_digest"], path)
        checkpoints.load_model_tensors(self.module, state["model"], path)
        stored_groups, groups = len(state["optimizer"]["param_groups"]), len(self.optimizer.param_groups)
        if stored_groups != groups:  # torch's own message does not say which recipe key makes the groups
            raise CheckpointError(f"{path}: its optimiser has {stored_groups} parameter group(s), this recipe builds "
                                  f"{groups}; was optimizer.decay_1d changed? (runs before that key existed decayed "
                                  f"1-D parameters: resume them with optimizer.decay_1d=true)")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(**state["progress"])
        rng = state["rng"]
        if len(rng) == self.ctx.world_size:
            checkpoints.restore_rng(rng[self.ctx.rank])
        elif self.ctx.is_main:
            print(f"note: {path} was written by {len(rng)} process(es), this run has {self.ctx.world_size}; "
                  f"data shards and RNG streams differ from the original run", file=sys.stderr)
        stored = state.get("recipe", {})
        changed = sorted(_diff(stored, self.recipe.to_dict()))
        if changed and self.ctx.is_main:
            print(f"note: recipe differs from the checkpoint's at {', '.join(changed)}", file=sys.stderr)

    def _flush_logs(self, plots: bool) -> None:
        if not self.ctx.is_main:
            return
        self.log.flush()
        if plots and self.recipe.log.plots and self.log.records:
            plot_curves(self.log.records, self.out_dir / PLOT_NAME)

    # ------------------------------------------------------------------------------------------------ helpers
    def _log_train(self, window: "_Window") -> None:
        p = self.progress
        names = sorted(window.parts)
        values = torch.tensor([window.loss_sum, *(window.parts[n] for n in names), window.count], dtype=torch.float64)
        distributed.all_reduce_sum(self.ctx, values)  # a collective at the same step on every rank
        count = float(values[-1])
        record = {"kind": "train", "epoch": p.epoch, "iteration": p.iteration, "loss": float(values[0]) / count}
        record.update({f"loss/{n}": float(v) / count for n, v in zip(names, values[1:-1].tolist())})
        record.update({"lr": window.lr, "samples_per_s": window.rate()})
        self.log.add(record)

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _autocast(self):
        return precisions.autocast(self.ctx.device, self.precision)

    def _loader(self, dataset, batches: List[List[int]], num_workers: int) -> DataLoader:
        device = self.ctx.device
        loader = DataLoader(
            dataset, batch_sampler=batches, collate_fn=self.collate, num_workers=num_workers,
            pin_memory=device.type == "cuda",
            generator=torch.Generator(),  # the loader's own seed draw must not consume the global RNG stream
        )
        return _OnDevice(loader, device)

    def _progress_bar(self, epoch: int):
        if not (self.ctx.is_main and self.recipe.log.progress):
            return None
        from tqdm import tqdm

        return tqdm(total=self.steps_per_epoch, initial=self.progress.step_in_epoch, unit="step", dynamic_ncols=True,
                    desc=f"epoch {epoch + 1}/{self.recipe.schedule.epochs}", file=sys.stderr)


def param_groups(model: torch.nn.Module, weight_decay: float, decay_1d: bool) -> List[dict]:
    """AdamW groups of the trainable parameters: without `decay_1d`, 1-D ones (biases, norm weights) get weight
    decay 0 in a second group, as in the DELIVER/CMNeXt optimiser the papers use. Empty groups are left out."""
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_1d:
        return [{"params": params, "weight_decay": weight_decay}] if params else []
    decayed = [p for p in params if p.dim() != 1]
    exempt = [p for p in params if p.dim() == 1]
    groups = [{"params": decayed, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class _Window:
    """Loss and throughput over the steps since the last log record."""

    def __init__(self):
        self.loss_sum, self.count, self.parts = 0.0, 0, {}
        self.seconds, self.samples = 0.0, 0
        self._micro_losses = []
        self.last_loss, self.last_rate, self.lr = float("nan"), 0.0, float("nan")

    def add(self, loss: float, parts: Dict[str, float], accumulate: int) -> None:
        self.loss_sum += loss / accumulate
        for name, value in parts.items():
            self.parts[name] = self.parts.get(name, 0.0) + float(value) / accumulate
        self._micro_losses.append(loss)

    def step(self, seconds: float, samples: int) -> None:
        self.count += 1
        self.seconds += seconds
        self.samples += samples
        self.last_loss = sum(self._micro_losses) / len(self._micro_losses)
        self.last_rate = samples / seconds if seconds > 0 else 0.0
        self._micro_losses = []

    def rate(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


class _OnDevice:
    """Iterate a DataLoader with the batch's tensors moved to `device`."""

    def __init__(self, loader: DataLoader, device: torch.device):
        self.loader, self.device = loader, device

    def __iter__(self):
        blocking = self.device.type != "cuda"
        for batch in self.loader:
            moved = dict(batch)
            moved["inputs"] = {k: v.to(self.device, non_blocking=not blocking) for k, v in batch["inputs"].items()}
            for key in ("present", "label"):
                moved[key] = batch[key].to(self.device, non_blocking=not blocking)
            yield moved


def _card_dict(model) -> dict:
    card = getattr(model, "card", None)
    return card.to_dict() if hasattr(card, "to_dict") else {}


def _diff(a, b, prefix: str = "") -> List[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out.extend(_diff(a.get(key), b.get(key), f"{prefix}{key}."))
        return out
    return [] if a == b else [prefix.rstrip(".")]
