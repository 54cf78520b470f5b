"""What the dataset loaders share: file reading, the sample dict, the base Dataset and the batch collate.

A loader reads one frame into a *raw sample* whose arrays are in the runtime representation the node receives
(uint8 rendered images, uint16 millimetres or float metres for metric modalities, see `mmseg_ros.preprocess`):

    {"inputs": {modality: ndarray (H, W) or (H, W, C)},   # only the modalities asked for, registry names
     "label":  ndarray (H, W) of train ids, 255 = ignore,
     "meta":   {"condition": str, "case": str | None, "path": str, "name": str, ...}}

Its transform (a `transforms.Compose`, ending in `transforms.ToModelInput`) turns that into the *model sample*:
inputs become float tensors (3, H, W), normalised per modality, and the label a LongTensor (H, W).
`Collate` batches model samples whose modality sets differ (after modality dropout) into zero-filled tensors plus
a (B, M) `present` mask in a fixed modality order.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .. import classes, modalities
from ..errors import DataError

IGNORE_INDEX = classes.IGNORE_INDEX


# ---------------------------------------------------------------------------------------------------- file reading
def require_dir(path: str | os.PathLike, what: str) -> str:
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise DataError(f"{what}: folder {path!r} does not exist")
    return path


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A PNG/JPEG as stored: uint8 or uint16, (H, W) or (H, W, C) with colour channels in RGB(A) order."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"missing file {path!r}")
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"cannot decode image {path!r}")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def read_array(path: str | os.PathLike, key: Optional[str] = None) -> np.ndarray:
    """An array from .npy, or from .npz (the named key, else its only/first array: MUSES saves positionally)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"missing file {path!r}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read array file {path!r}: {exc}") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        names = list(loaded.files)
        if not names:
            raise DataError(f"{path!r} holds no arrays")
        if key is not None and key not in names:
            raise DataError(f"{path!r} has no array {key!r}; it has {names}")
        return loaded[key if key is not None else names[0]]


def resize_nearest(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of any dtype and channel count (pixel centres mapped, values never mixed)."""
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (height, width):
        return image
    rows = np.minimum(((np.arange(height) + 0.5) * src_h / height).astype(np.int64), src_h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * src_w / width).astype(np.int64), src_w - 1)
    return image[rows[:, None], cols[None, :]]


def train_ids(raw: np.ndarray, num_classes: int, offset: int = 0) -> np.ndarray:
    """Raw label values -> train ids: `raw - offset` where that is in [0, num_classes), else IGNORE_INDEX.

    DELIVER stores class k as k + 1 with 0 = unlabeled (offset 1); MUSES and MCubeS store train ids (offset 0).
    """
    ids = raw.astype(np.int64) - offset
    valid = (ids >= 0) & (ids < num_classes)
    dtype = np.uint8 if num_classes <= IGNORE_INDEX else np.int32
    return np.where(valid, ids, IGNORE_INDEX).astype(dtype)


# ---------------------------------------------------------------------------------------------------- datasets
def select_modalities(asked: Optional[Iterable[str]], available: Sequence[str], dataset: str) -> Tuple[str, ...]:
    """Registry names of the asked modalities (all available ones when None), rejecting those the dataset lacks."""
    names = tuple(available) if asked is None else modalities.canonical(list(asked))
    missing = [n for n in names if n not in available]
    if missing:
        raise DataError(f"{dataset} has no modality {missing}; it has {list(available)}")
    return names


def make_meta(condition: str, case: Optional[str], path: str, name: str, **extra) -> Dict[str, object]:
    return {"condition": condition, "case": case, "path": path, "name": name, **extra}


class RawFrameDataset(Dataset):
    """Base of the loaders: subclasses list frames and implement `load_raw(index)`; this applies the transform.

    Without a transform, samples get `ToModelInput` with the registry's normalisation, i.e. the model sample
    format at the stored resolution. `load_raw` is public for tools that want the sensor arrays themselves.
    """

    dataset_name = "dataset"

    def __init__(self, modality_names: Sequence[str], class_set: str | classes.ClassSet, transform=None):
        self.modalities = tuple(modality_names)
        self.class_set = class_set if isinstance(class_set, classes.ClassSet) else classes.load(class_set)
        if transform is None:
            from .transforms import ToModelInput

            transform = ToModelInput(ToModelInput.registry_normalization(self.modalities))
        self.transform = transform
        self.frames: List = []

    @property
    def num_classes(self) -> int:
        return self.class_set.num_classes

    def __len__(self) -> int:
        return len(self.frames)

    def load_raw(self, index: int) -> dict:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        if not -len(self.frames) <= index < len(self.frames):
            raise IndexError(f"{self.dataset_name}: index {index} out of range for {len(self.frames)} frames")
        return self.transform(self.load_raw(index))

    def _require_frames(self, where: str) -> None:
        if not self.frames:
            raise DataError(f"{self.dataset_name}: no frames found in {where}")


# ---------------------------------------------------------------------------------------------------- batching
class Collate:
    """Batch model samples that may carry different modality sets.

    Returns {"inputs": {modality: (B, 3, H, W)} for every modality of `modality_order` (zeros where a sample
    lacks it), "present": BoolTensor (B, M) in that order, "label": LongTensor (B, H, W), "meta": [dict] * B,
    "modalities": the order}. A class, not a closure, so DataLoader workers can pickle it.
    """

    def __init__(self, modality_order: Sequence[str]):
        self.modality_order = modalities.canonical(list(modality_order))

    def __call__(self, samples: Sequence[Mapping]) -> dict:
        if not samples:
            raise DataError("cannot collate an empty batch")
        unknown = sorted({m for s in samples for m in s["inputs"] if m not in self.modality_order})
        if unknown:
            raise DataError(f"samples carry modalities {unknown} outside the collate order {list(self.modality_order)}")
        labels = torch.stack([torch.as_tensor(s["label"], dtype=torch.long) for s in samples])
        height, width = labels.shape[-2:]
        present = torch.tensor([[m in s["inputs"] for m in self.modality_order] for s in samples], dtype=torch.bool)
        if not bool(present.any(dim=1).all()):
            empty = [i for i, row in enumerate(present.tolist()) if not any(row)]
            raise DataError(f"batch samples {empty} have no modality at all")
        inputs = {}
        for column, name in enumerate(self.modality_order):
            template = next((s["inputs"][name] for s in samples if name in s["inputs"]), None)
            if template is None:
                inputs[name] = labels.new_zeros((len(samples), 3, height, width), dtype=torch.float32)
                continue
            batch = template.new_zeros((len(samples), *template.shape))
            for row, sample in enumerate(samples):
                if present[row, column]:
                    tensor = sample["inputs"][name]
                    if tensor.shape != template.shape:
                        raise DataError(
                            f"modality {name!r}: sample {row} has shape {tuple(tensor.shape)}, expected "
                            f"{tuple(template.shape)} (resize to one size before batching)"
                        )
                    batch[row] = tensor
            inputs[name] = batch
        return {
            "inputs": inputs,
            "present": present,
            "label": labels,
            "meta": [s.get("meta", {}) for s in samples],
            "modalities": self.modality_order,
        }
