"""`mmseg bench kernels`: the node's per-pixel steps on one core, ours beside the library path they replace.

Per camera size, medians of --repeat runs in one process with OpenCV and torch on one thread (the node's numba
kernels use one core; on this 2-core machine the second is the peer's, the executor's or torch's), each input one of
--frames different frames so a step does not find its input in the cache from its own previous run:
  * area average of an rgb8 frame to the model's input: `preprocess.area` (`area_average.shrink`, numba, when both
    axes shrink) vs cv2.INTER_AREA;
  * colour overlay: `overlay.blend` vs cv2's grey-to-RGB, lookup table and addWeighted;
  * class softmax of (1, K, h, w) logits: `engine.class_softmax` vs torch.softmax(dim=1);
  * argmax upsampling of the default card's output on the synthetic scene (`upsample_argmax`; the full K-map
    upsampling it replaces is in the engine's equivalence test, ~100x slower at these sizes);
  * the card's inputs, resized to its input size, to model input: `preprocess.model_input` (one pass each) vs
    `to_unit` then `normalize_chw` (the same values, as training computes them);
  * a 32FC1 Image of the confidence: from a `msgs.MessageBuffers` array (no copy) vs from a fresh array.
"""
from __future__ import annotations

import time

def configure(parser):
    from .node import add_size_arguments

    add_size_arguments(parser)
    parser.add_argument("--repeat", type=int, default=21, help="timed runs per cell; the median is printed")
    parser.add_argument("--frames", type=int, default=4, help="distinct input frames cycled through (default 4)")


def _median_ms(step, inputs, repeat: int) -> float:
    from ..reporting import median_ms

    step(inputs[0])  # compiled / allocated once
    samples = []
    for i in range(repeat):
        start = time.perf_counter()
        step(inputs[i % len(inputs)])
        samples.append(time.perf_counter() - start)
    return median_ms(samples)


def main(args) -> int:
    import cv2
    import numpy as np
    import torch

    from .. import cards, msgs, overlay, preprocess
    from ..engine import Segmenter, class_softmax
    from ..pipeline import outputs
    from ..reporting import markdown_table
    from ..upsampling import upsample_argmax
    from .node import _card_name, _input_arrays, size_label

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    card = cards.load(_card_name(args))
    segmenter = Segmenter(card, device="cpu")
    model_hw = tuple(card.input_size)
    lut = outputs.palette_lut(card.class_set)
    rng = np.random.default_rng(0)
    rows = []
    for width, height in args.sizes:
        frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(args.frames)]
        arrays = _input_arrays(card, (width, height))
        _, inputs, size = segmenter.preprocess(arrays)
        with torch.inference_mode():
            logits = segmenter.model(inputs)["logits"].float()
        probabilities = class_softmax(logits)[0].numpy()
        labels = [upsample_argmax(probabilities, size)[0] for _ in range(args.frames)]
        pairs = list(zip(labels, frames))
        buffers = msgs.MessageBuffers(depth=args.frames)
        confidences = [buffers.take("confidence", size, np.float32) for _ in range(args.frames)]
        fresh = [np.full(size, 0.5, np.float32) for _ in range(args.frames)]
        resized = {name: preprocess.resize(name, array, model_hw) for name, array in arrays.items()}

        def convert(one_pass: bool):
            for name, image in resized.items():
                mean, std = card.normalization(name)
                if one_pass:
                    preprocess.model_input(name, image, mean, std)
                else:
                    preprocess.normalize_chw(preprocess.to_unit(name, image).transpose(2, 0, 1), mean, std)

        cells = {
            "area average (ours)": _median_ms(lambda f: preprocess.area(f, model_hw), frames, args.repeat),
            "area average (cv2 INTER_AREA)": _median_ms(
                lambda f: cv2.resize(f, model_hw[::-1], interpolation=cv2.INTER_AREA), frames, args.repeat),
            "overlay (numba)": _median_ms(lambda p: overlay.blend(p[0], p[1], lut, 0.5), pairs, args.repeat),
            "overlay (cv2 LUT + addWeighted)": _median_ms(
                lambda p: outputs.overlay(outputs.colorize(p[0], card.class_set, lut), p[1], 0.5), pairs, args.repeat),
            "class softmax (ours)": _median_ms(class_softmax, [logits], args.repeat),
            "class softmax (torch.softmax)": _median_ms(lambda x: torch.softmax(x, dim=1), [logits], args.repeat),
            "argmax upsampling": _median_ms(lambda p: upsample_argmax(p, size), [probabilities], args.repeat),
            "model input, all inputs (one pass)": _median_ms(convert, [True], args.repeat),
            "model input, all inputs (to_unit + normalize_chw)": _median_ms(convert, [False], args.repeat),
            "confidence Image (buffer)": _median_ms(msgs.confidence_to_image, confidences, args.repeat),
            "confidence Image (fresh array)": _median_ms(msgs.confidence_to_image, fresh, args.repeat),
        }
        rows.append([size_label((width, height)), *cells.values()])
    print(markdown_table(["size", *(f"{name} ms" for name in cells)], rows))
    print(f"\nCard {card.name} ({card.num_classes} classes, model input {model_hw[0]} px); one thread for OpenCV and "
          f"torch; medians of {args.repeat} runs cycling through {args.frames} inputs; Image building into "
          f"{'sensor_msgs' if msgs.ros_messages_available() else 'plain stand-in'} messages.")
    return 0
