"""The node's pipeline driven by bag time: same checks, same synchronizer, same engine, every set processed.

Each input message goes to a `Pipeline` built from the node's parameter table (NodeConfig), with the record's log
time as arrival time and its header stamp as stamp, exactly as segment_node's callbacks hand it over. Before every
message the pipeline is polled at that message's log time, which is what the node's 10 ms worker poll does at
infinite resolution; after the last message it is polled once more max_wait later, so the sets still waiting are
emitted as a running node would. Each set is processed as the node's worker processes it, but nothing is skipped:
offline, the model is never "still busy". The same bag therefore always gives the same outputs.

`--drop MOD@T0-T1` removes MOD's messages whose log time lies in [T0, T1) seconds after the bag's first record, before
decoding: to the synchronizer the sensor simply went quiet.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from .. import msgs
from ..drops import Drop
from ..errors import ConfigError, DataError, MessageError, MMSegError
from ..pipeline import NodeConfig, Pipeline, SegmentedSet
from ..pipeline.config import LIDAR
from ..sync import NS_PER_S, SyncSet

# An input whose first messages are all rejected is a wiring problem (wrong topic, unsupported encoding), not a
# few bad frames: stop with its reason instead of replaying the whole bag without it.
REJECTS_BEFORE_FAILING = 3
LABEL_ENCODINGS = ("mono8", "8UC1", "mono16", "16UC1")


class OfflineReplay:
    """Feed input messages in log-time order with `add`, then `finish`; every processed set goes to `on_frame`."""

    def __init__(self, segmenter, config: NodeConfig, start_ns: int, drops: Iterable[Drop] = (),
                 output_size: Optional[Tuple[int, int]] = None, color: bool = True,
                 on_frame: Optional[Callable[[SegmentedSet], None]] = None, transforms=None):
        self.config = config
        self.start_ns = int(start_ns)
        self.drops = tuple(drops)
        unknown = [d.label for d in self.drops if not any(d.applies_to(m) for m in config.modalities)]
        if unknown:
            raise ConfigError(f"--drop {', '.join(unknown)}: not an input of this replay {list(config.modalities)}")
        self.on_frame = on_frame or (lambda frame: None)
        self.warnings: List[str] = []  # one-time configuration warnings (go into the report)
        self.transforms = transforms
        self.pipeline = Pipeline(config, segmenter, color=color, output_size=output_size,
                                 on_bad_input=self._fail_on_wiring, camera_info_source="the bag's camera_info",
                                 keep_all_samples=True, transforms=transforms, on_warning=self.warnings.append)
        self.messages: Dict[str, int] = {m: 0 for m in config.modalities}  # read per input
        self.dropped: Dict[str, int] = {m: 0 for m in config.modalities}  # removed by --drop
        self._last_ns: Optional[int] = None

    def seconds(self, log_ns: int) -> float:
        return (log_ns - self.start_ns) / NS_PER_S

    @property
    def frames(self) -> int:
        return self.pipeline.processed

    # -- input ------------------------------------------------------------------------------------------------------

    def add(self, modality: str, log_ns: int, msg) -> None:
        """One input message (what the node's callback gets), at its log time."""
        self._process_all(self.pipeline.poll(log_ns))
        self._last_ns = log_ns
        self.messages[modality] += 1
        if any(d.covers(modality, self.seconds(log_ns)) for d in self.drops):
            self.dropped[modality] += 1
            return
        self._process_all(self.pipeline.add(modality, msg, log_ns))

    def camera_info(self, log_ns: int, msg) -> None:
        """A CameraInfo of the camera the LiDAR points are projected into (the newest one is used)."""
        self.pipeline.add_camera_info(msg, log_ns)

    def transform(self, log_ns: int, msg) -> None:
        """A /tf message (dynamic transforms) into the tree the LiDAR extrinsic is looked up in."""
        try:
            self.transforms.add_message(msg, static=False)
        except MMSegError as exc:  # one broken TFMessage costs its transforms, as a bad input costs its message
            self.pipeline.reject(LIDAR, f"/tf at {self.seconds(log_ns):.3f} s: {exc}", log_ns)

    def finish(self) -> None:
        """The bag ended: let the sets still waiting run out their max_wait, as a running node would."""
        if self._last_ns is not None:
            self._process_all(self.pipeline.poll(self._last_ns + self.pipeline.sync.config.max_wait_ns + 1))

    def _fail_on_wiring(self, modality: str, reason: str, now_ns: int) -> None:
        # (never used, not merely never accepted: a cloud is accepted, then refused when it cannot be projected)
        counters = self.pipeline.inputs[modality]
        if self.pipeline.used_counts[modality] == 0 and counters.rejected >= REJECTS_BEFORE_FAILING:
            raise DataError(f"input {modality}: its first {counters.rejected} messages were all rejected; "
                            f"last reason: {reason}")

    # -- sets -------------------------------------------------------------------------------------------------------

    def _process_all(self, ready) -> None:
        for sset in ready:
            self._process(sset)

    def _process(self, sset: SyncSet) -> None:
        output = self.pipeline.process(sset, sset.emitted_ns)
        if output is not None:
            self.pipeline.published(output, sset.emitted_ns)
            self.on_frame(output)


def decode_labels(msg) -> np.ndarray:
    """A ground-truth label Image (mono8 / mono16 class ids, 255 or 65535 = ignore) -> (H, W) array."""
    encoding = getattr(msg, "encoding", None)
    if encoding not in LABEL_ENCODINGS:
        raise DataError(f"ground-truth labels must be one of {', '.join(LABEL_ENCODINGS)}, got {encoding!r}")
    try:
        return msgs.image_to_numpy(msg)
    except MessageError as exc:
        raise DataError(f"ground-truth label image: {exc}") from None
