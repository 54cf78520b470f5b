"""Segmenter: model card (+ checkpoint) -> preprocess -> forward -> labels + confidence. No ROS here.

    seg = Segmenter("mle_sam_hiera_t", checkpoint=None, device="auto", precision="fp32")
    result = seg.segment({"rgb": rgb_uint8_hw3, "depth": depth_metres_float32})

Inputs are raw sensor arrays for any non-empty subset of the card's modalities, of any size, (H, W) or (H, W, C),
uint8 / uint16 / float32 as the codecs deliver them; depth and LiDAR are metres (float32; 0, NaN or inf = no
return) or millimetres (uint16). Preprocessing happens here and only here: a resize of the raw array to the card's
input size (`preprocess.interpolation`, which the training transforms ask too: nearest for metric modalities, so
"no return" pixels are not blended into valid ones; area averaging when shrinking otherwise), then
`preprocess.to_unit` on the small image (registry value ranges, 1 -> 3 channels) and the card's per-modality
normalisation, in one pass (`preprocess.model_input`). Postprocessing: softmax at the model's resolution, the class
probabilities upsampled bilinearly to the output size (default: the size of the first given modality in card order),
argmax and max (`upsample_argmax`).

Result: `labels` (uint8, or uint16 when K > 255), `confidence` (float32 max softmax probability), `router_weights`
(level -> modality -> weight, for models that have a router), `timing` (ms per stage), `modalities` used.
Runs on CPU or CUDA; fp16/bf16 use autocast on CUDA only (on CPU they fall back to fp32 with a warning).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from . import area_average, cards, precision as precisions, preprocess
from .errors import ConfigError
from .upsampling import upsample_argmax

MAX_UINT8_CLASSES = 255  # ids 0..254 in uint8; 255 stays "unlabeled" for consumers


@dataclass
class SegmentationResult:
    labels: np.ndarray
    confidence: np.ndarray
    modalities: Tuple[str, ...]
    router_weights: Optional[Dict[str, Dict[str, float]]] = None
    timing: Dict[str, float] = field(default_factory=dict)  # milliseconds: preprocess, forward, postprocess, total
    # The raw inputs as resized for the model (their own dtype): an overlay at the model's size need not resize again.
    resized: Dict[str, np.ndarray] = field(default_factory=dict)


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda[:N]' must be available."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available (use 'auto' or 'cpu')")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return dev


class Segmenter:
    def __init__(self, card, checkpoint=None, device: str = "auto", precision: str = "fp32"):
        from .nn.build import as_card, load_model

        precisions.check(precision)
        self.card: cards.ModelCard = as_card(card)
        self.device = resolve_device(device)
        self.precision = precisions.effective(precision, self.device)
        if self.precision != precision:
            warnings.warn(f"precision {precision!r} uses autocast on CUDA only; running fp32 on {self.device}")
        if checkpoint is None and self.card.checkpoint is None:
            warnings.warn(f"card {self.card.name!r} has no checkpoint: "
                          f"the model's trained parts are randomly initialised")
        self.model = load_model(self.card, checkpoint).to(self.device).eval()
        self._norms = {m: self.card.normalization(m) for m in self.card.modalities}
        # Compile the numba kernels (or load them from numba's cache) now, not inside the first frame: the area
        # average and the conversion to model input for the dtypes cameras send, the argmax upsampling on the CPU.
        for dtype in (np.uint8, np.uint16, np.float32):
            area_average.shrink(np.zeros((4, 4, 3), dtype), (2, 2))
            name = self.modalities[0]  # the kernel is compiled per dtype; the modality only picks runtime branches
            preprocess.model_input(name, np.zeros((2, 2), dtype), *self._norms[name])
        if self.device.type == "cpu":
            self.postprocess(torch.zeros((1, self.num_classes, 2, 2)), (4, 3))

    @property
    def modalities(self) -> Tuple[str, ...]:
        return self.card.modalities

    @property
    def class_names(self) -> Tuple[str, ...]:
        return self.card.class_names

    @property
    def num_classes(self) -> int:
        return self.card.num_classes

    def segment(self, images: Mapping[str, np.ndarray], output_size: Optional[Tuple[int, int]] = None,
                out: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> SegmentationResult:
        """Segment one set of sensor images (entries that are None count as absent). `out`: (labels, confidence)
        arrays of the output size, `label_dtype` and float32, to write the result into."""
        start = time.perf_counter()
        names, inputs, size, resized = self._prepare(images, output_size)
        self._sync()
        t_pre = time.perf_counter()
        with torch.inference_mode(), self._autocast():
            prediction = self.model(inputs)
        self._sync()
        t_fwd = time.perf_counter()
        labels, confidence = self.postprocess(prediction["logits"], size, out)
        router = _router_weights(prediction, names)
        t_post = time.perf_counter()
        timing = {
            "preprocess": 1e3 * (t_pre - start),
            "forward": 1e3 * (t_fwd - t_pre),
            "postprocess": 1e3 * (t_post - t_fwd),
            "total": 1e3 * (t_post - start),
        }
        return SegmentationResult(labels, confidence, tuple(names), router, timing, resized)

    # -- stages -----------------------------------------------------------------------------------------------------

    def preprocess(self, images: Mapping[str, np.ndarray], output_size=None):
        """Raw arrays -> (names in card order, {name: (1, 3, h, w) tensor on the device}, output size (H, W))."""
        return self._prepare(images, output_size)[:3]

    def _prepare(self, images, output_size):
        """`preprocess`, and the raw arrays resized to the model's input ({name: array})."""
        if not isinstance(images, Mapping):
            raise ConfigError(f"images must be a mapping modality -> array, got {type(images).__name__}")
        present = {key: image for key, image in images.items() if image is not None}
        given = dict(zip(self.card.canonical_inputs(present), present.values()))
        if not given:
            raise ConfigError(f"no image given; model {self.card.name!r} takes any non-empty subset of "
                              f"{list(self.modalities)}")
        names = [m for m in self.modalities if m in given]
        if output_size is None:
            output_size = np.shape(given[names[0]])[:2]
        output_size = tuple(int(v) for v in output_size)
        if len(output_size) != 2 or min(output_size) < 1:
            raise ConfigError(f"output_size must be (H, W) > 0, got {output_size}")
        height, width = self.card.input_size
        inputs, resized = {}, {}
        for name in names:
            resized[name] = preprocess.resize(name, given[name], (height, width))
            chw = preprocess.model_input(name, resized[name], *self._norms[name])  # to_unit, normalised; C order
            inputs[name] = torch.from_numpy(chw)[None].to(self.device)
        return names, inputs, output_size, resized

    @property
    def label_dtype(self) -> type:
        """uint8 label ids up to 255 classes, uint16 beyond."""
        return np.uint8 if self.num_classes <= MAX_UINT8_CLASSES else np.uint16

    def postprocess(self, logits: torch.Tensor, size: Tuple[int, int],
                    out: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(1, K, h, w) logits -> labels (H, W) uint8/uint16 and confidence (H, W) float32 at `size`.

        The softmax is taken at the model's resolution and the class probabilities are upsampled bilinearly;
        labels are their argmax and confidence their max. Exponentiating K full-size maps instead cost 4x as much
        (1024 px, 25 classes: ~450 ms vs ~110 ms on 2 CPU cores) for no information the model has. On the CPU
        `upsampling.upsample_argmax` gives the same result without upsampling K maps (25 classes, 128 px to 1024:
        1.9 ms vs 129 ms; it wins at every size measured, 128 px included); on CUDA the full upsampling runs on the
        device and only the labels (already narrowed to their dtype) and the confidence are copied back. `out`:
        (labels, confidence) arrays of `size` to write into (the node's message buffers), returned."""
        dtype = self.label_dtype
        probabilities = class_softmax(logits.float())
        height, width = size
        if probabilities.device.type == "cpu":
            return upsample_argmax(probabilities[0].numpy(), size, dtype, out)
        if probabilities.shape[2:] != (height, width):
            probabilities = F.interpolate(probabilities, size=(height, width), mode="bilinear", align_corners=False)
        confidence, labels = probabilities[0].max(dim=0)
        # torch has no uint16 arithmetic on every build: int32 on the device, narrowed to uint16 on the host.
        narrow = torch.uint8 if dtype == np.uint8 else torch.int32
        labels = labels.to(narrow).cpu().numpy().astype(dtype, copy=False)
        confidence = confidence.cpu().numpy().astype(np.float32, copy=False)
        if out is None:
            return labels, confidence
        np.copyto(out[0], labels)
        np.copyto(out[1], confidence)
        return out

    # -- helpers ----------------------------------------------------------------------------------------------------

    def _autocast(self):
        return precisions.autocast(self.device, self.precision)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def class_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the class dimension of (N, K, h, w) logits, as four whole-map operations (max, subtract-exp,
    sum, divide): torch.softmax along a non-last dimension took up to twice as long on the CPU (128 px, 25 classes:
    0.97-1.27 vs 0.66 ms on one thread). Equal to it within float32 rounding."""
    peak = logits.amax(dim=1, keepdim=True)
    exponentials = torch.sub(logits, peak).exp_()
    return exponentials.div_(exponentials.sum(dim=1, keepdim=True))


def _router_weights(out, names) -> Optional[Dict[str, Dict[str, float]]]:
    weights = out.get("router_weights") if isinstance(out, dict) else None
    if not weights:
        return None
    order = out.get("modalities", tuple(names))
    return {level: {m: float(w) for m, w in zip(order, tensor[0].float().cpu().tolist())}
            for level, tensor in weights.items()}
