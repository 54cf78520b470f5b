"""One offline replay, end to end: open the bag, build the engine, stream the messages, write outputs and report."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Tuple

import numpy as np

from ..atomic import atomic_open
from ..drops import Drop
from ..errors import DataError
from ..evaluation.metrics import NAN_POLICY
from ..evaluation.tables import save_json
from ..pipeline import SegmentedSet, outputs
from ..pipeline.config import NODE_NAME, NodeConfig
from ..sync import stamp_to_ns
from . import report as report_lib
from . import topics as topics_lib
from .bagio import IMAGE_TYPE, POINTS_TYPE, InputBag, OutputBag
from .offline import OfflineReplay, decode_labels
from .scoring import Scorer

OUTPUT_BAG = "segmented"
REPORT_JSON, REPORT_MD = "report.json", "report.md"
OUTPUT_TOPICS = {kind: f"/{NODE_NAME}/{kind}" for kind in ("labels", "confidence", "color", "points")}
OUTPUT_TYPES = {topic: POINTS_TYPE if kind == "points" else IMAGE_TYPE for kind, topic in OUTPUT_TOPICS.items()}
IMAGE_OUTPUTS = {kind: topic for kind, topic in OUTPUT_TOPICS.items() if OUTPUT_TYPES[topic] == IMAGE_TYPE}


def replay_offline(bag_path, config: NodeConfig, *, drops: Iterable[Drop] = (), out=None, storage: Optional[str] = None,
                   write_bag: bool = True, score_size: str = "input", labels_topic: Optional[str] = None,
                   progress: bool = True, segmenter=None, remaps: Optional[Dict[str, str]] = None,
                   watch: Optional[Callable[[SegmentedSet, float], None]] = None) -> Dict:
    """Replay `bag_path` offline; returns the report document (also written to `out` when given). `watch` sees
    every processed set (inputs and outputs) and its time in the bag before its arrays are released, e.g. to draw
    pictures. `remaps` maps the node's topic names to the bag's (`--remap`)."""
    with InputBag(bag_path) as bag:
        drops = closed_drops(drops, bag)
        inputs = topics_lib.resolve(bag, config, remaps or {}, labels_topic)
        config, tree, extrinsic_from = topics_lib.extrinsic_source(bag, inputs)
        topics, labels_topic, info_topic = inputs.topics, inputs.labels, inputs.camera_info
        tf_dynamic = "/tf" if tree is not None and "/tf" in inputs.tf else None
        if segmenter is None:
            segmenter = _segmenter(config)
        output_size = tuple(config.card.input_size) if score_size == "model" else None
        custom = bag.custom_data
        scorer = Scorer(config.card.num_classes, config.modalities, drops, condition=custom.get("mmseg.condition"),
                        slop_ns=int(config.slop * 1e9), score_size=output_size)
        stage_ms: Dict[str, list] = {s: [] for s in report_lib.STAGES}
        output = None
        if write_bag and out is not None:
            output = OutputBag(Path(out) / OUTPUT_BAG, storage or _storage_of(bag), OUTPUT_TOPICS.values(),
                               types=OUTPUT_TYPES, custom_data={"mmseg.replay_of": str(bag.path),
                                                                "mmseg.card": config.card.name})

        def on_frame(frame: SegmentedSet) -> None:
            begin = time.perf_counter()
            if output is not None:  # outputs.* parameters choose the topics, as in the node
                for kind, msg in outputs.to_messages(frame, config, ros=False).items():
                    output.write(OUTPUT_TOPICS[kind], frame.arrival_ns, msg)
            encode = 1e3 * (time.perf_counter() - begin)
            for stage in ("preprocess", "forward", "postprocess"):
                stage_ms[stage].append(frame.timing[stage])
            stage_ms["encode"].append(encode)
            stage_ms["total"].append(frame.timing["total"] + encode)
            time_s = replay.seconds(frame.arrival_ns)
            scorer.add_frame(frame, time_s)
            if frame.points is not None:
                scorer.add_points(frame.points, time_s)
            if watch is not None:
                watch(frame, time_s)
            frame.labels = frame.confidence = frame.color = frame.images = frame.points = None  # done: let go

        replay = OfflineReplay(segmenter, config, bag.start_ns, drops, output_size=output_size,
                               color=output is not None and config.publish_color, on_frame=on_frame,
                               transforms=tree)
        modality_of = {t: m for m, t in topics.items()}
        read = list(topics.values()) + [t for t in (labels_topic, info_topic, tf_dynamic) if t]
        total = sum(bag.message_count(t) for t in read)
        start = time.perf_counter()
        with (output if output is not None else contextlib.nullcontext()), _progress(total, progress) as bar:
            for topic, log_ns, msg in bag.messages(read):
                if topic == labels_topic:
                    scorer.add_truth(stamp_to_ns(msg.header.stamp), decode_labels(msg))
                elif topic == info_topic:
                    replay.camera_info(log_ns, msg)
                elif topic == tf_dynamic:
                    replay.transform(log_ns, msg)
                else:
                    replay.add(modality_of[topic], log_ns, msg)
                bar.update(1)
            replay.finish()
        wall = time.perf_counter() - start
        if replay.frames == 0:
            raise DataError(f"bag {bag.path}: no set was synchronized from {list(topics.values())} "
                              f"(messages read: {replay.messages})")
        stage_ms["decode"] = replay.pipeline.decode_ms.samples()
        stage_ms["sync_wait"] = replay.pipeline.wait_ms.samples()
        stage_ms["anchor_wait"] = replay.pipeline.anchor_wait_ms.samples()
        doc = _document(bag, config, segmenter, inputs, drops, score_size, replay, scorer, stage_ms, wall, output,
                        extrinsic_from)
    if out is not None:
        save_json(doc, Path(out) / REPORT_JSON)
        with atomic_open(Path(out) / REPORT_MD, "w") as f:
            f.write(report_lib.to_markdown(doc))
    return doc


def closed_drops(drops: Iterable[Drop], bag: InputBag) -> Tuple[Drop, ...]:
    """Open-ended windows (`rgb@3-`) end with the bag, so reports and pictures have finite times."""
    end_s = (bag.end_ns - bag.start_ns) / 1e9 + 1.0
    return tuple(d if math.isfinite(d.end_s) else dataclasses.replace(d, end_s=max(end_s, d.start_s + 1.0))
                 for d in drops)


def _segmenter(config: NodeConfig):
    from ..engine import Segmenter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no checkpoint" etc.: the report names the model and checkpoint
        segmenter = Segmenter(config.card, checkpoint=config.checkpoint, device=config.device,
                              precision=config.precision)
    height, width = config.card.input_size
    segmenter.segment({m: np.zeros((height, width), np.uint8) for m in config.modalities})  # warm-up, as the node
    return segmenter


def _storage_of(bag: InputBag) -> str:
    return bag.storage if bag.storage in ("mcap", "sqlite3") else "mcap"


def _document(bag, config, segmenter, inputs, drops, score_size, replay, scorer, stage_ms, wall, output,
              extrinsic_from) -> Dict:
    pipeline = replay.pipeline
    topics, labels_topic = inputs.topics, inputs.labels
    custom = bag.custom_data
    duration = (bag.end_ns - bag.start_ns) / 1e9
    doc = {
        "schema": report_lib.SCHEMA, "units": "percent", "metric_note": NAN_POLICY, "mode": "offline",
        "model": {"name": config.card.name, "checkpoint": _path_or_none(config.checkpoint or config.card.checkpoint),
                  "input_size": list(config.card.input_size), "modalities": list(config.modalities),
                  "device": str(segmenter.device)},
        "bag": {"path": str(bag.path), "storage": bag.storage, "duration_s": duration,
                "condition": custom.get("mmseg.condition"), "failure": custom.get("mmseg.failure"),
                "topics": topics, "types": inputs.types, "labels_topic": labels_topic},
        "settings": {"score_size": score_size, "drops": [d.label for d in drops],
                     "sync": {"anchor": config.anchor, "fallback": list(config.fallback), "slop": config.slop,
                              "max_wait": config.max_wait, "anchor_timeout": config.anchor_timeout,
                              "min_modalities": config.min_modalities},
                     "lidar_source": config.lidar_source, "transports": dict(config.transports),
                     **({"lidar_extrinsic_from": extrinsic_from} if inputs.camera_info else {}),
                     **({"lidar_motion_compensation": {
                         "fixed_frame": config.fixed_frame, "clouds_compensated": pipeline.compensated,
                         "clouds_uncompensated": pipeline.uncompensated}} if extrinsic_from == "tf" else {}),
                     **({"lidar_extrinsic": [list(row) for row in config.lidar_extrinsic]}
                        if inputs.camera_info and config.lidar_extrinsic is not None else {})},
        "classes": list(config.card.class_names),
        "frames": {"anchor_messages": replay.messages[config.anchor], "processed": replay.frames,
                   "scored": scorer.scored, "unscored": scorer.unscored, "labels": scorer.labels_seen,
                   "below_min": pipeline.below_min, "by_anchor": dict(pipeline.anchor_counts),
                   "used": dict(pipeline.used_counts)},
        "warnings": list(replay.warnings),
        "inputs": {m: {"topic": topics[m], "messages": replay.messages[m], "dropped": replay.dropped[m],
                       "rejected": pipeline.inputs[m].rejected, "backwards": pipeline.inputs[m].backwards,
                       "last_error": pipeline.health.get(m).last_error} for m in config.modalities},
    }
    doc.update(report_lib.scores_section(scorer, config.card.class_names))
    doc.update(report_lib.windows_section(scorer))
    doc.update(report_lib.points_section(scorer, config.card.class_names))
    doc["latency_ms"] = {stage: report_lib.latency_entry(stage_ms[stage]) for stage in report_lib.STAGES}
    doc["speed"] = {"wall_s": wall, "frames_per_s": replay.frames / wall if wall > 0 else 0.0,
                    "realtime_factor": duration / wall if wall > 0 else 0.0}
    doc["sync"] = pipeline.sync.stats().as_dict()
    if output is not None:
        doc["output_bag"] = {"path": str(output.path), "storage": output.storage, "counts": dict(output.counts)}
    return doc


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="msg", desc="replay", disable=not enabled, leave=False)


def _path_or_none(path) -> Optional[str]:
    return None if path is None else str(path)
