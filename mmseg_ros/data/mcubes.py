"""MCubeS loader (multimodal material segmentation): RGB, AoLP, DoLP and NIR, 20 material classes.

Layout (kyotovision-public/multimodal-material-segmentation README and loader; the same in DELIVER's MCubeS loader):

    <root>/list_folder/{train,val,test}.txt     one frame name per line (first token)
    <root>/polL_color/<name>.png                RGB, 8- or 16-bit
    <root>/polL_aolp_sin/<name>.npy, polL_aolp_cos/<name>.npy   sin / cos of the angle of linear polarisation
    <root>/polL_dolp/<name>.npy                 degree of linear polarisation in [0, 1]
    <root>/NIR_warped/<name>.png                near infrared warped to the RGB view, 8- or 16-bit
    <root>/NIR_warped_mask/<name>.png           white where the NIR warp is invalid
    <root>/GT/<name>.png                        material ids 0..19, others ignored

Frames are 1024x1224; like both public loaders we drop the 192 left columns (`left_crop`).
AoLP follows the public loaders' (sin, cos, sin) three-channel stack, mapped from [-1, 1] to [0, 1] as
(x + 1) / 2 because float inputs of non-metric modalities are read as unit values by `preprocess.to_unit`.
Split files: the public MCubeS code reads `<split>.txt`; DELIVER's (CMNeXt) loader evaluates its 'val' on
test.txt, so use split='test' to compare with numbers reported through that code.
`mask_invalid_nir=True` sets the label to ignore where NIR_warped_mask is white (the MCubeS authors exclude those
pixels from the loss); off by default, as in the public loaders.
"""
from __future__ import annotations

import os
from typing import Iterable, Optional

import numpy as np

from .. import modalities
from ..errors import DataError
from . import common

SPLITS = ("train", "val", "test")
LEFT_CROP = 192
LIST_FOLDER, LABEL_FOLDER, NIR_MASK_FOLDER = "list_folder", "GT", "NIR_warped_mask"
CAMERA, AOLP, DOLP, NIR = (modalities.get(n).name for n in ("rgb", "aolp", "dolp", "nir"))
FOLDERS = {CAMERA: "polL_color", DOLP: "polL_dolp", NIR: "NIR_warped"}
AOLP_FOLDERS = ("polL_aolp_sin", "polL_aolp_cos")


class MCubeS(common.RawFrameDataset):
    """MCubeS frames as sample dicts (see data.common). `modalities`: any of rgb, aolp, dolp, nir.
    meta["condition"] is the capture scene (the name before the frame number), meta["case"] None."""

    dataset_name = "MCubeS"
    available = (CAMERA, AOLP, DOLP, NIR)

    def __init__(self, root: str | os.PathLike, split: str = "train", modalities: Optional[Iterable[str]] = None,
                 transform=None, left_crop: int = LEFT_CROP, mask_invalid_nir: bool = False,
                 class_set: str = "mcubes"):
        if split not in SPLITS:
            raise DataError(f"MCubeS: split must be one of {list(SPLITS)}, got {split!r}")
        if left_crop < 0:
            raise DataError(f"MCubeS: left_crop must be >= 0, got {left_crop}")
        super().__init__(common.select_modalities(modalities, self.available, self.dataset_name), class_set, transform)
        self.root = os.path.abspath(common.require_dir(root, "MCubeS root"))
        self.split, self.left_crop, self.mask_invalid_nir = split, int(left_crop), bool(mask_invalid_nir)
        list_file = os.path.join(self.root, LIST_FOLDER, f"{split}.txt")
        if not os.path.isfile(list_file):
            raise DataError(f"MCubeS: split list {list_file!r} does not exist")
        with open(list_file) as f:
            self.frames = [line.split()[0] for line in f if line.strip()]
        self._require_frames(list_file)

    def _file(self, folder: str, index: int, extension: str) -> str:
        return os.path.join(self.root, folder, self.frames[index] + extension)

    def _crop(self, array: np.ndarray, path: str) -> np.ndarray:
        if array.shape[1] <= self.left_crop:
            raise DataError(f"{path}: width {array.shape[1]} leaves nothing after cropping {self.left_crop} columns")
        return np.ascontiguousarray(array[:, self.left_crop:])

    def _read(self, modality: str, index: int) -> np.ndarray:
        if modality == AOLP:
            sin, cos = (common.read_array(self._file(folder, index, ".npy")) for folder in AOLP_FOLDERS)
            if sin.shape != cos.shape:
                raise DataError(f"{self._file(AOLP_FOLDERS[1], index, '.npy')}: shape {cos.shape} != sin {sin.shape}")
            stacked = np.stack([sin, cos, sin], axis=2).astype(np.float32)
            return np.clip((stacked + 1.0) * 0.5, 0.0, 1.0)
        if modality == DOLP:
            return common.read_array(self._file(FOLDERS[DOLP], index, ".npy")).astype(np.float32)
        return common.read_image(self._file(FOLDERS[modality], index, ".png"))

    def load_raw(self, index: int) -> dict:
        label_path = self._file(LABEL_FOLDER, index, ".png")
        raw_label = common.read_image(label_path)
        raw_label = raw_label if raw_label.ndim == 2 else raw_label[:, :, 0]
        label = self._crop(common.train_ids(raw_label, self.num_classes), label_path)
        inputs = {}
        for modality in self.modalities:
            array = self._read(modality, index)
            if array.shape[:2] != raw_label.shape:
                raise DataError(f"MCubeS {self.frames[index]}: {modality} is {array.shape[:2]}, "
                                f"label {raw_label.shape}")
            inputs[modality] = self._crop(array, f"{modality} of {self.frames[index]}")
        if self.mask_invalid_nir:
            mask_path = self._file(NIR_MASK_FOLDER, index, ".png")
            mask = common.read_image(mask_path)
            mask = mask if mask.ndim == 2 else mask[:, :, 0]
            label = np.where(self._crop(mask, mask_path) > 0, common.IGNORE_INDEX, label).astype(label.dtype)
        name = self.frames[index]
        scene = name.rsplit("_", 1)[0] if "_" in name else name
        meta = common.make_meta(scene, None, self._file(FOLDERS[CAMERA], index, ".png"), name)
        return {"inputs": inputs, "label": label, "meta": meta}
