"""Training curves as one PNG: loss and learning rate per optimiser step, validation mIoU per epoch."""
from __future__ import annotations

from pathlib import Path
from typing import List

from ..atomic import atomic_path

PLOT_NAME = "curves.png"


def plot_curves(records: List[dict], path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val" and r.get("miou") is not None]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    loss_ax, lr_ax, miou_ax = axes
    loss_keys = [k for k in (train[0] if train else {}) if k == "loss" or k.startswith("loss/")]
    for key in loss_keys:
        points = [(r["iteration"], r[key]) for r in train if r.get(key) is not None]
        if points:
            loss_ax.plot(*zip(*points), label=key, linewidth=1.5 if key == "loss" else 0.8)
    loss_ax.set(title="training loss", xlabel="iteration")
    if loss_keys:
        loss_ax.legend(fontsize="small")
    if train:
        lr_ax.plot([r["iteration"] for r in train], [r["lr"] for r in train])
    lr_ax.set(title="learning rate", xlabel="iteration")
    if val:
        miou_ax.plot([r["epoch"] for r in val], [r["miou"] for r in val], marker="o")  # already in %
    miou_ax.set(title="validation mIoU (%)", xlabel="epoch")
    miou_ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path
