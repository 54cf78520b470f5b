"""Confusion-matrix segmentation metrics, computed the way the DELIVER code computes them.

The matrix counts pixels with label != ignore index: row = true class, column = predicted class. It is filled with one
`bincount` per batch (numpy or torch, on the tensors' own device), merges by addition across batches, processes and
DDP ranks (`all_reduce`), and every score is derived from it:

* IoU_k = TP / (TP + FP + FN); accuracy_k = TP / (TP + FN) (per-class pixel recall);
* mIoU / mAcc are plain means over ALL K classes, where a class whose ratio is NaN (no pixel of it in the labels or
  the predictions, resp. in the labels) counts as 0 — DELIVER's `Metrics.compute_iou` does `ious[ious.isnan()] = 0`
  before the mean, and paper numbers follow it. The classes this affects are listed (`absent_classes`) and the mean
  over the classes that did occur is reported beside it (`miou_present`), so a data set that never shows some
  classes is not misread;
* overall accuracy = trace / total; frequency-weighted IoU = sum_k (label pixels of k / total) * IoU_k.

Scores are in percent, like the papers' tables.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..classes import IGNORE_INDEX
from ..errors import DataError

NAN_POLICY = ("IoU (accuracy) of a class with no pixels in labels or predictions (in labels) is NaN and counted as 0 "
              "in mIoU (mAcc), as the DELIVER code does")


class ConfusionMatrix:
    """Accumulates a (K, K) int64 pixel-count matrix over label != ignore_index.

    numpy inputs are counted on the host; torch inputs are counted on their device into a device-side buffer (one
    small range check per batch is the only host round trip). `matrix` returns the total as a numpy array."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        if int(num_classes) < 1:
            raise DataError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self._host = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self._device = None  # torch int64 (K, K) on the device of the torch updates

    # ------------------------------------------------------------------ filling
    def update(self, prediction, label) -> "ConfusionMatrix":
        """Count one batch: `prediction` and `label` are integer class maps of the same shape (numpy or torch).

        Labels equal to ignore_index are skipped. Any other label or prediction outside 0..K-1 is a DataError."""
        if hasattr(prediction, "detach") or hasattr(label, "detach"):
            self._update_torch(prediction, label)
        else:
            self._update_numpy(np.asarray(prediction), np.asarray(label))
        return self

    def _update_numpy(self, prediction: np.ndarray, label: np.ndarray) -> None:
        self._check_shapes(prediction.shape, label.shape)
        keep = label != self.ignore_index
        truth = label[keep].astype(np.int64, copy=False)
        guess = prediction[keep].astype(np.int64, copy=False)
        self._check_range(truth, "label")
        self._check_range(guess, "prediction")
        k = self.num_classes
        self._host += np.bincount(truth * k + guess, minlength=k * k).reshape(k, k)

    def _update_torch(self, prediction, label) -> None:
        import torch

        prediction = torch.as_tensor(prediction)
        label = torch.as_tensor(label, device=prediction.device)
        self._check_shapes(tuple(prediction.shape), tuple(label.shape))
        keep = label != self.ignore_index
        truth = label[keep].long()
        guess = prediction[keep].long()
        self._check_range(truth, "label")
        self._check_range(guess, "prediction")
        k = self.num_classes
        counts = torch.bincount(truth * k + guess, minlength=k * k).view(k, k)
        if self._device is None or self._device.device != counts.device:
            self._flush()
            self._device = counts
        else:
            self._device += counts

    def _check_shapes(self, pred_shape, label_shape) -> None:
        if tuple(pred_shape) != tuple(label_shape):
            raise DataError(f"prediction shape {tuple(pred_shape)} does not match label shape {tuple(label_shape)}")

    def _check_range(self, values, what: str) -> None:
        # Out-of-range ids would land in another class's bin (or crash bincount): reject them by name.
        if not bool(((values < 0) | (values >= self.num_classes)).any()):
            return
        low, high = int(values.min()), int(values.max())
        raise DataError(f"{what} values must be in 0..{self.num_classes - 1} (or {self.ignore_index} in labels), "
                        f"got range {low}..{high}")

    def _flush(self) -> None:
        if self._device is not None:
            self._host += self._device.cpu().numpy()
            self._device = None

    # ---------------------------------------------------------------- combining
    @property
    def matrix(self) -> np.ndarray:
        """The (K, K) int64 counts, rows = label, columns = prediction."""
        self._flush()
        return self._host

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix of the same class count into this one (e.g. the other half of a data set)."""
        if other.num_classes != self.num_classes:
            raise DataError(f"cannot merge confusion matrices of {other.num_classes} and {self.num_classes} classes")
        self._host += other.matrix
        self._flush()
        return self

    def __add__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        return self.copy().merge(other)

    def copy(self) -> "ConfusionMatrix":
        out = ConfusionMatrix(self.num_classes, self.ignore_index)
        out._host = self.matrix.copy()
        return out

    def all_reduce(self) -> "ConfusionMatrix":
        """Sum the matrix over all ranks of the default torch.distributed group (no-op without one).

        Every rank must call it (a collective). The sum travels on the CUDA device under NCCL, on the CPU under
        gloo; counts stay int64 so nothing is lost to float rounding."""
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        total = torch.from_numpy(self.matrix.copy()).to(device)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        self._host = total.cpu().numpy()
        return self

    def reset(self) -> None:
        self._host[:] = 0
        self._device = None

    @property
    def total(self) -> int:
        return int(self.matrix.sum())

    def to_list(self) -> List[List[int]]:
        return self.matrix.tolist()

    @classmethod
    def from_matrix(cls, matrix, ignore_index: int = IGNORE_INDEX) -> "ConfusionMatrix":
        counts = np.asarray(matrix, dtype=np.int64)
        if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or (counts < 0).any():
            raise DataError(f"a confusion matrix must be square with counts >= 0, got shape {counts.shape}")
        out = cls(counts.shape[0], ignore_index)
        out._host = counts.copy()
        return out

    def scores(self, class_names: Optional[Sequence[str]] = None) -> "Scores":
        return Scores.from_matrix(self.matrix, class_names)


@dataclass(frozen=True)
class Scores:
    """Everything the tables show, derived from one confusion matrix (percent; per-class values NaN = absent)."""

    class_names: tuple
    iou: np.ndarray  # (K,) NaN where the class is in neither labels nor predictions
    accuracy: np.ndarray  # (K,) NaN where the class has no label pixels
    miou: float  # mean over all K, NaN counted as 0 (DELIVER)
    macc: float  # mean over all K, NaN counted as 0 (DELIVER)
    aacc: float  # overall pixel accuracy
    fwiou: float  # frequency-weighted IoU
    miou_present: float  # mean over classes that occur in labels or predictions
    pixels: int

    @classmethod
    def from_matrix(cls, matrix, class_names: Optional[Sequence[str]] = None) -> "Scores":
        counts = np.asarray(matrix, dtype=np.float64)
        k = counts.shape[0]
        names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(k))
        if len(names) != k:
            raise DataError(f"{len(names)} class names given for a {k}-class confusion matrix")
        true_positive = np.diag(counts)
        label_pixels = counts.sum(axis=1)
        predicted_pixels = counts.sum(axis=0)
        union = label_pixels + predicted_pixels - true_positive
        total = counts.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = 100.0 * true_positive / union
            accuracy = 100.0 * true_positive / label_pixels
        present = ~np.isnan(iou)
        return cls(
            class_names=names,
            iou=iou,
            accuracy=accuracy,
            miou=float(np.nan_to_num(iou, nan=0.0).mean()),
            macc=float(np.nan_to_num(accuracy, nan=0.0).mean()),
            aacc=float(100.0 * true_positive.sum() / total) if total else 0.0,
            fwiou=float((label_pixels / total * np.nan_to_num(iou, nan=0.0)).sum()) if total else 0.0,
            miou_present=float(iou[present].mean()) if present.any() else 0.0,
            pixels=int(total),
        )

    @property
    def absent_classes(self) -> List[str]:
        """Classes with no pixel in labels or predictions: their NaN IoU counts as 0 in mIoU."""
        return [name for name, value in zip(self.class_names, self.iou) if np.isnan(value)]

    @property
    def unlabelled_classes(self) -> List[str]:
        """Classes with no label pixel: their NaN accuracy counts as 0 in mAcc."""
        return [name for name, value in zip(self.class_names, self.accuracy) if np.isnan(value)]

    def to_dict(self) -> Dict:
        """JSON-ready summary; per-class values are null where NaN."""
        def per_class(values):
            return {name: (None if np.isnan(v) else float(v)) for name, v in zip(self.class_names, values)}

        return {
            "miou": self.miou,
            "macc": self.macc,
            "aacc": self.aacc,
            "fwiou": self.fwiou,
            "miou_present": self.miou_present,
            "pixels": self.pixels,
            "iou": per_class(self.iou),
            "acc": per_class(self.accuracy),
            "absent_classes": self.absent_classes,
            "unlabelled_classes": self.unlabelled_classes,
        }
