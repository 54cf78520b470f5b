"""The replay report: one JSON document (schema "mmseg_ros/replay/1") and its Markdown.

    {"schema", "units": "percent", "metric_note", "mode": "offline"|"live",
     "model": {name, checkpoint, input_size, modalities, device},
     "bag": {path, storage, duration_s, condition, failure, topics: {modality: topic}, labels_topic},
     "settings": {score_size, drops: [labels], sync: {slop, max_wait, anchor_timeout, min_modalities, anchor},
                  lidar_extrinsic_from, lidar_motion_compensation: {fixed_frame, clouds_compensated,
                  clouds_uncompensated}},       # the last two with LiDAR points; the motion from TF only
     "frames": {"anchor_messages", "processed", "scored", "unscored", "below_min", "by_anchor": {m: n},
                "used": {m: n}},
     "inputs": {m: {messages, dropped, rejected, backwards, last_error}},
     "overall": <scores> + "confusion",                  # absent without ground truth
     "subsets": {code: {"modalities", "frames", <scores>}},  # modality subsets actually used
     "conditions": {name: <scores>},
     "windows": [{"drop", "modality", "start_s", "end_s", "frames", "used": {m: n}, "miou"}],
     "outside_windows": {"frames", "miou"},
     "points": {"clouds", "clouds_scored", "points_scored", "overall": <scores>, "windows": [{"drop", "miou"}],
                "outside_windows": {"miou"}},         # painted LiDAR points vs their true class (outputs.points)
     "latency_ms": {stage: {"p50", "p95", "mean", "count"}},   # decode, sync_wait, preprocess, forward, ...
     "speed": {"wall_s", "frames_per_s", "realtime_factor"},
     "sync": Synchronizer stats, "output_bag": {path, storage, counts}}
<scores> as in mmseg eval (evaluation/tables.py): miou, macc, aacc, fwiou, miou_present, pixels, iou, acc, ...
"""
from __future__ import annotations

import statistics

import numpy as np
from typing import Dict, List, Mapping, Optional, Sequence

from ..reporting import percentile
from ..evaluation.metrics import NAN_POLICY
from ..evaluation.tables import _num, markdown_table, per_class_table, scores_entry
from .scoring import Scorer

SCHEMA = "mmseg_ros/replay/1"
STAGES = ("decode", "sync_wait", "anchor_wait", "preprocess", "forward", "postprocess", "encode", "total")


def latency_entry(samples: Sequence[float]) -> Optional[Dict[str, float]]:
    if not samples:
        return None
    return {"p50": percentile(samples, 50), "p95": percentile(samples, 95), "mean": statistics.fmean(samples),
            "count": len(samples)}


def scores_section(scorer: Scorer, class_names: Sequence[str]) -> Dict:
    """The score parts of the document (empty without any scored frame)."""
    if not scorer.scored:
        return {}
    out: Dict = {"overall": scores_entry(scorer.overall, class_names, confusion=True)}
    order = {code: i for i, code in enumerate(_subset_order(scorer))}
    out["subsets"] = {code: {"modalities": list(scorer.subset_modalities[code]), "frames": scorer.subset_frames[code],
                             **scores_entry(scorer.subsets[code], class_names)}
                      for code in sorted(scorer.subsets, key=order.get)}
    if scorer.conditions:
        out["conditions"] = {name: scores_entry(m, class_names) for name, m in scorer.conditions.items()}
    return out


def _subset_order(scorer: Scorer) -> List[str]:
    """Largest subsets first (the full set leads), then the card's order."""
    rank = {m: i for i, m in enumerate(scorer.modalities)}
    return sorted(scorer.subsets, key=lambda c: (-len(scorer.subset_modalities[c]),
                                                  [rank[m] for m in scorer.subset_modalities[c]]))


def windows_section(scorer: Scorer) -> Dict:
    windows = []
    for window, matrix in zip(scorer.windows, scorer.window_matrices):
        windows.append({"drop": window.drop.label, "modality": window.drop.sensor, "start_s": window.drop.start_s,
                        "end_s": window.drop.end_s, "frames": window.frames,
                        "used": dict(window.used) if scorer.used_known else None,
                        "miou": matrix.scores().miou if matrix.total else None})
    out = {"windows": windows}
    if windows:
        out["outside_windows"] = {"frames": scorer.outside_frames,
                                  "miou": scorer.outside.scores().miou if scorer.outside.total else None}
    return out


def points_section(scorer: Scorer, class_names: Sequence[str]) -> Dict:
    """Point-level scores of painted clouds (absent when no cloud was painted)."""
    if not scorer.clouds:
        return {}
    entry: Dict = {"clouds": scorer.clouds, "clouds_scored": scorer.clouds_scored,
                   "points_scored": scorer.points_labelled}
    if scorer.points.total:
        entry["overall"] = scores_entry(scorer.points, class_names)
        # Like with like: a LiDAR returns no sky, so a point mIoU lacks classes the pixel mIoU has; both means over
        # the classes that occur in the points' truth tell painting errors from that.
        seen = np.flatnonzero(scorer.points.matrix.sum(axis=1) > 0)
        entry["lidar_classes"] = [class_names[i] for i in seen]
        point_iou = scorer.points.scores().iou
        entry["miou_lidar_classes"] = float(np.mean(np.nan_to_num(point_iou[seen]))) if seen.size else None
        if scorer.overall.total:
            pixel_iou = scorer.overall.scores().iou
            entry["pixel_miou_lidar_classes"] = float(np.mean(np.nan_to_num(pixel_iou[seen]))) if seen.size else None
        entry["windows"] = [{"drop": w.drop.label, "miou": m.scores().miou if m.total else None}
                            for w, m in zip(scorer.windows, scorer.point_windows)]
        if scorer.windows:
            entry["outside_windows"] = {
                "miou": scorer.points_outside.scores().miou if scorer.points_outside.total else None}
    return {"points": entry}


# ------------------------------------------------------------------------------------------------------- Markdown
def to_markdown(report: Mapping, per_class: bool = True) -> str:
    model, bag, frames = report["model"], report["bag"], report["frames"]
    lines = [f"## Replay of `{bag['path']}` ({report['mode']})", "",
             f"Model **{model['name']}** on {model.get('device', '?')}; bag {bag['storage']}, "
             f"{bag['duration_s']:.1f} s" + (f", condition **{bag['condition']}**" if bag.get("condition") else "")
             + (f", recorded failure {bag['failure']}" if bag.get("failure") not in (None, "none") else "")
             + f". Scored at {report['settings']['score_size']} resolution.", ""]
    lines.append(f"Frames: {frames['processed']} segmented ({frames['anchor_messages']} camera messages in the bag), "
                 f"{frames['scored']} scored against ground truth"
                 + (f", {frames['below_min']} below min_modalities" if frames.get("below_min") else "")
                 + (f", {frames['answered']} camera frames answered, {frames['unanswered']} not"
                    if "answered" in frames else "")
                 + ("; anchor: " + ", ".join(f"{m} {n}" for m, n in frames["by_anchor"].items() if n)
                    if "by_anchor" in frames else "") + ".")
    if "used" in frames:
        lines.append("Inputs used: " + ", ".join(f"{m} {n}/{frames['processed']}" for m, n in frames["used"].items())
                     + ".")
    if "overall" in report:
        lines += ["", "### Scores", ""]
        rows = [["all frames", "", str(frames["scored"]), _num(report["overall"]["miou"]),
                 _num(report["overall"]["miou_present"])]]
        rows += [[f"inputs {code}", ", ".join(e["modalities"]), str(e["frames"]), _num(e["miou"]),
                  _num(e["miou_present"])] for code, e in report["subsets"].items()]
        for name, entry in report.get("conditions", {}).items():
            rows.append([f"condition {name}", "", str(frames["scored"]), _num(entry["miou"]),
                         _num(entry["miou_present"])])
        lines.append(markdown_table(["Frames", "Modalities", "Scored", "mIoU", "mIoU (present classes)"], rows))
    if report.get("windows"):
        lines += ["", "### Drop-out windows", ""]
        mods = list(frames.get("used", ()))  # live: which inputs went into an output is not known
        rows = [[w["drop"], str(w["frames"]), *[str(w["used"][m]) for m in mods], _num(w["miou"])]
                for w in report["windows"]]
        outside = report.get("outside_windows")
        if outside:
            rows.append(["outside the windows", str(outside["frames"]), *[""] * len(mods), _num(outside["miou"])])
        lines.append(markdown_table(["Window", "Frames", *[f"used {m}" for m in mods], "mIoU"], rows))
    points = report.get("points")
    if points:
        lines += ["", "### Painted LiDAR points", ""]
        if "overall" in points:
            rows = [["all clouds", str(points["clouds_scored"]), str(points["points_scored"]),
                     _num(points["overall"]["miou"])]]
            rows += [[f"during {w['drop']}", "", "", _num(w["miou"])] for w in points.get("windows", [])]
            outside = points.get("outside_windows")
            if outside:
                rows.append(["outside the windows", "", "", _num(outside["miou"])])
            lines.append(markdown_table(["Clouds", "Scored", "Labelled points", "point mIoU"], rows))
            lines += ["", "Scored: the points the camera sees (the others are unlabeled), against each point's true "
                          "class."]
            if points.get("pixel_miou_lidar_classes") is not None:
                lines.append(f"Over the {len(points['lidar_classes'])} classes the LiDAR returned (a LiDAR sees no "
                             f"sky): point mIoU {_num(points['miou_lidar_classes'])}, pixel mIoU "
                             f"{_num(points['pixel_miou_lidar_classes'])}.")
        else:
            lines.append(f"{points['clouds']} clouds painted; no per-point ground truth (gt_label) to score them.")
        motion = report["settings"].get("lidar_motion_compensation")
        if motion:
            via = f"through `{motion['fixed_frame']}`" if motion["fixed_frame"] else "(inputs.fixed_frame is empty)"
            lines.append(f"Ego motion between each cloud's stamp and the camera's, compensated {via}: "
                         f"{motion['clouds_compensated']} clouds; not compensated: {motion['clouds_uncompensated']}.")
    latency = report.get("latency_ms") or {}
    if latency:
        lines += ["", "### Latency per stage (ms)", ""]
        rows = [[stage, _num(e["p50"]), _num(e["p95"]), _num(e["mean"]), str(e["count"])]
                for stage, e in latency.items() if e]
        lines.append(markdown_table(["Stage", "p50", "p95", "mean", "samples"], rows))
    speed = report.get("speed")
    if speed:
        lines += ["", f"Replay speed: {speed['frames_per_s']:.1f} frames/s, {speed['realtime_factor']:.2f}x real "
                      f"time ({speed['wall_s']:.1f} s wall for {bag['duration_s']:.1f} s of bag)."]
    bad = {m: e for m, e in report["inputs"].items() if e["rejected"]}
    if bad:
        lines += ["", "Rejected input messages: " + "; ".join(
            f"{m} {e['rejected']} (last: {e['last_error']})" for m, e in bad.items())]
    if per_class and "overall" in report:
        lines += ["", "### Per-class IoU / accuracy (all frames)", "",
                  per_class_table({"classes": report["classes"]}, report["overall"]), "", f"_{NAN_POLICY}._"]
    return "\n".join(lines) + "\n"
