"""Scores of a replay: predictions matched to ground-truth labels by stamp, confusion matrices per group.

A frame's prediction is scored against the ground-truth image whose stamp is nearest to the frame's (anchor) stamp
within `slop`; ground truth may come before or after the prediction in the bag, so each side waits for the other
(ground truth is kept for `keep_s` of bag time). Groups: all frames; each modality subset the engine actually
received (paper code, e.g. R-E-L); the bag's condition (from its metadata); each drop-out window (frames whose
anchor arrived inside it). Window accounting (frames, how many used each modality) covers every frame, scored or not.

`score_size` "model" scores at the model's input size, as `mmseg eval` scores DELIVER-tree frames: the ground truth
goes through the evaluation pipeline's label resize (nearest) and the engine is asked for outputs at that size.
"""
from __future__ import annotations

import bisect
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..evaluation.metrics import ConfusionMatrix
from ..evaluation.subsets import subset_code
from ..data.synthetic.bag import GT_LABEL_FIELD as TRUTH_FIELD
from ..drops import Drop
from ..msgs import label_encoding
from ..pipeline import SegmentedSet
from ..pipeline.painting import LABEL_FIELD

ALL = "all"


class WindowCount:
    def __init__(self, drop: Drop, modalities: Sequence[str]):
        self.drop = drop
        self.frames = 0
        self.used = {m: 0 for m in modalities}


class Scorer:
    def __init__(self, num_classes: int, modalities: Sequence[str], drops: Sequence[Drop] = (),
                 condition: Optional[str] = None, slop_ns: int = 50_000_000,
                 score_size: Optional[Tuple[int, int]] = None, keep_s: float = 5.0):
        self.num_classes = num_classes
        self.modalities = tuple(modalities)
        self.drops = tuple(drops)
        self.condition = condition
        self.slop_ns = int(slop_ns)
        self.score_size = score_size
        self.keep_ns = int(keep_s * 1e9)
        self.overall = ConfusionMatrix(num_classes)
        self.subsets: Dict[str, ConfusionMatrix] = {}
        self.subset_frames: Dict[str, int] = {}
        self.subset_modalities: Dict[str, Tuple[str, ...]] = {}
        self.conditions: Dict[str, ConfusionMatrix] = {}
        self.windows = [WindowCount(d, self.modalities) for d in self.drops]
        self.window_matrices = [ConfusionMatrix(num_classes) for _ in self.drops]
        self.outside = ConfusionMatrix(num_classes)  # frames in no drop-out window
        self.frames = 0
        self.used_known = True  # every frame said which inputs it used (live outputs do not)
        self.outside_frames = 0
        self.scored = 0
        self.labels_seen = 0
        self._truth: List[Tuple[int, np.ndarray]] = []  # (stamp, labels), sorted by stamp
        self._waiting: List[Tuple[SegmentedSet, np.ndarray, float]] = []  # predictions whose truth may still come
        # Painted LiDAR clouds scored against each point's own true class (a generated bag's gt_label field).
        self.points = ConfusionMatrix(num_classes)
        self.point_windows = [ConfusionMatrix(num_classes) for _ in self.drops]
        self.points_outside = ConfusionMatrix(num_classes)
        self.clouds = 0  # painted clouds seen
        self.clouds_scored = 0  # of those, with per-point truth
        self.points_labelled = 0  # points with a label (seen by the camera), the ones scored
        self._newest_ns: Optional[int] = None

    # -- input ----------------------------------------------------------------------------------------------------

    def add_truth(self, stamp_ns: int, labels: np.ndarray) -> None:
        self.labels_seen += 1
        labels = self._at_score_size(labels)
        bisect.insort(self._truth, (stamp_ns, labels), key=lambda item: item[0])
        self._advance(stamp_ns)
        still = []
        for frame, prediction, time_s in self._waiting:
            truth = self._match(frame.stamp_ns)
            if truth is None:
                still.append((frame, prediction, time_s))
            else:
                self._score(frame, prediction, truth, time_s)
        self._waiting = still

    def add_frame(self, frame: SegmentedSet, time_s: float) -> None:
        """A segmented set whose anchor arrived `time_s` seconds after the drive's start (places it in the windows)."""
        self.frames += 1
        self.used_known &= frame.used is not None
        inside = False
        for window, drop in zip(self.windows, self.drops):
            if drop.during(time_s):
                inside = True
                window.frames += 1
                for m in frame.used or ():  # None: not known (live outputs do not say)
                    window.used[m] += 1
        self.outside_frames += not inside
        truth = self._match(frame.stamp_ns)
        if truth is None:
            self._waiting.append((frame, frame.labels, time_s))
        else:
            self._score(frame, frame.labels, truth, time_s)
        self._advance(frame.stamp_ns)

    def add_points(self, painted: np.ndarray, time_s: float) -> None:
        """A painted cloud (pipeline.painting) of the set whose anchor arrived `time_s` after the start: its
        labelled points against their `gt_label` when the cloud has it."""
        self.clouds += 1
        if TRUTH_FIELD not in (painted.dtype.names or ()):
            return
        labelled = painted[LABEL_FIELD] != label_encoding(self.num_classes)[1]
        single = ConfusionMatrix(self.num_classes).update(painted[LABEL_FIELD][labelled],
                                                         painted[TRUTH_FIELD][labelled].astype(np.int64))
        self.clouds_scored += 1
        self.points_labelled += int(labelled.sum())
        inside = [i for i, d in enumerate(self.drops) if d.during(time_s)]
        for matrix in [self.points, *([self.point_windows[i] for i in inside] or [self.points_outside])]:
            matrix.merge(single)

    @property
    def unscored(self) -> int:
        return self.frames - self.scored

    # -- internals ------------------------------------------------------------------------------------------------

    def _at_score_size(self, labels: np.ndarray) -> np.ndarray:
        if self.score_size is None or labels.shape[:2] == tuple(self.score_size):
            return np.array(labels)  # a copy: message buffers are not kept alive
        from ..data.transforms import Resize

        return Resize(self.score_size)({"inputs": {}, "label": labels})["label"]

    def _match(self, stamp_ns: int) -> Optional[np.ndarray]:
        stamps = [s for s, _ in self._truth]
        at = bisect.bisect_left(stamps, stamp_ns - self.slop_ns)
        best = None
        for s, labels in self._truth[at:]:
            if s > stamp_ns + self.slop_ns:
                break
            if best is None or abs(s - stamp_ns) < abs(best[0] - stamp_ns):
                best = (s, labels)
        return None if best is None else best[1]

    def _advance(self, stamp_ns: int) -> None:
        """Forget ground truth (and give up on predictions) more than keep_s behind the newest stamp."""
        self._newest_ns = stamp_ns if self._newest_ns is None else max(self._newest_ns, stamp_ns)
        limit = self._newest_ns - self.keep_ns
        self._truth = [item for item in self._truth if item[0] >= limit]
        self._waiting = [item for item in self._waiting if item[0].stamp_ns >= limit]

    def _score(self, frame: SegmentedSet, prediction: np.ndarray, truth: np.ndarray, time_s: float) -> None:
        self.scored += 1
        matrices = [self.overall]
        if frame.used is not None:
            code = subset_code(frame.used)
            if code not in self.subsets:
                self.subsets[code] = ConfusionMatrix(self.num_classes)
                self.subset_frames[code] = 0
                self.subset_modalities[code] = tuple(frame.used)
            self.subset_frames[code] += 1
            matrices.append(self.subsets[code])
        if self.condition:
            matrices.append(self.conditions.setdefault(self.condition, ConfusionMatrix(self.num_classes)))
        inside = [i for i, d in enumerate(self.drops) if d.during(time_s)]
        matrices += [self.window_matrices[i] for i in inside] or [self.outside]
        single = ConfusionMatrix(self.num_classes).update(prediction, truth)
        for matrix in matrices:
            matrix.merge(single)
