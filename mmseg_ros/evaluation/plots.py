"""PNG figures of an evaluation: per-class IoU bars and the row-normalised confusion matrix.

Figures are drawn on matplotlib's Agg canvas directly, so importing this never switches the process-wide backend (a
training script with its own plotting keeps its backend), and it works without a display.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from ..atomic import atomic_path


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")


def iou_bars(entry: Mapping, class_names: Sequence[str], path, title: str = "Per-class IoU",
             colors: Optional[np.ndarray] = None) -> None:
    """Bar per class (IoU %; classes absent from labels and predictions marked 'absent (0)'), mIoU as a line.

    `entry` is a scores entry of the results document (see tables.py); `colors` an optional (K, 3) uint8 palette."""
    values = [entry["iou"][name] for name in class_names]
    heights = [0.0 if v is None else v for v in values]
    k = len(class_names)
    fig = _figure(max(6.0, 0.35 * k + 2.0), 4.0)
    ax = fig.add_subplot(1, 1, 1)
    face = (np.asarray(colors, dtype=float) / 255.0) if colors is not None else ["tab:blue"] * k
    ax.bar(range(k), heights, color=face, edgecolor="black", linewidth=0.5)
    for index, value in enumerate(values):
        if value is None:  # NaN IoU: say so instead of drawing an unexplained empty slot
            ax.text(index, 1.0, "absent (0)", rotation=90, ha="center", va="bottom", fontsize=7, color="gray")
    ax.axhline(entry["miou"], color="black", linestyle="--", linewidth=1.0, label=f"mIoU {entry['miou']:.2f}")
    ax.set_xticks(range(k))
    ax.set_xticklabels(class_names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("IoU (%)")
    absent = entry.get("absent_classes") or []
    ax.set_title(title + (f" ({len(absent)} absent class(es) counted 0)" if absent else ""), fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def confusion_matrix(matrix, class_names: Sequence[str], path,
                     title: str = "Confusion matrix (row-normalised)") -> None:
    """Heat map of counts / label pixels per row (so the diagonal is per-class accuracy); empty rows stay blank."""
    counts = np.asarray(matrix, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        normalised = np.where(rows > 0, counts / rows, np.nan)
    k = len(class_names)
    side = max(5.0, 0.32 * k + 2.5)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(normalised, vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of label pixels")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(class_names, rotation=60, ha="right", fontsize=7)
    ax.set_yticklabels(class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("label")
    if k <= 30:  # numbers stay readable only for modest class counts
        for i in range(k):
            for j in range(k):
                value = normalised[i, j]
                if not np.isnan(value) and value >= 0.005:
                    ax.text(j, i, f"{100 * value:.0f}", ha="center", va="center", fontsize=5,
                            color="white" if value < 0.5 else "black")
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def subset_bars(report: Mapping, path, title: str = "mIoU per modality subset") -> None:
    """mIoU of every evaluated modality subset (Table VI as a chart), the mean as a line."""
    subsets = report["subsets"]
    codes = list(subsets)
    fig = _figure(max(6.0, 0.45 * len(codes) + 2.0), 4.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(codes)), [subsets[c]["miou"] for c in codes], color="tab:green", edgecolor="black", linewidth=0.5)
    mean = report["subsets_mean"]["miou"]
    ax.axhline(mean, color="black", linestyle="--", linewidth=1.0, label=f"mean {mean:.2f}")
    ax.set_xticks(range(len(codes)))
    ax.set_xticklabels(codes, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("mIoU (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
