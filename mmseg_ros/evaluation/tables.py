"""Evaluation results as one JSON document and as Markdown tables shaped like the papers' tables.

Everything here reads the results document (`build_report` output or a saved JSON file), so a README table can be
regenerated from a stored result without re-running a model. Document layout (schema "mmseg_ros/eval/1", scores in
percent, per-class values null where NaN):

    {"schema", "units": "percent", "metric_note", "model": {...}, "data": {...}, "classes": [K names],
     "full":       {"subset": "R-D-E-L", "modalities": [...], <scores>, "confusion": K x K counts},
     "subsets":    {"R": {"modalities": [...], <scores>}, ..., "R-D-E-L": {...}},      # 2^M - 1, Table VI order
     "subsets_mean": {"miou", "full_miou", "ratio_to_full", "count"},
     "conditions": {"cloud": {"kind": "condition"|"case", "samples", <scores>}, ...},  # full modality set
     "subset_conditions": {"R": {"cloud": mIoU, ...}, ...},                           # Table IV cross
     "noise": {"clean_miou", "seed", "settings": [{"noise", "scale", "modality", "code", <scores>,
                                                   "delta_miou"}, ...]}}
    <scores> = miou, macc, aacc, fwiou, miou_present, pixels, iou {class: v}, acc {class: v}, absent_classes,
               unlabelled_classes

Sections that were not evaluated are absent.
"""
from __future__ import annotations

import json
import math
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from .. import reporting
from ..atomic import atomic_open
from .metrics import NAN_POLICY, ConfusionMatrix

SCHEMA = "mmseg_ros/eval/1"


# ---------------------------------------------------------------------------------------------- the JSON document
def scores_entry(matrix: ConfusionMatrix, class_names: Sequence[str], confusion: bool = False) -> Dict:
    entry = matrix.scores(class_names).to_dict()
    if confusion:
        entry["confusion"] = matrix.to_list()
    return entry


def build_report(
    *,
    class_names: Sequence[str],
    trained: Sequence[str],
    subset_codes: Mapping[tuple, str],
    clean: Mapping[tuple, Mapping[str, ConfusionMatrix]],
    group_kinds: Mapping[str, str],
    group_samples: Mapping[str, int],
    noisy: Optional[Mapping[tuple, ConfusionMatrix]] = None,
    noise_seed: Optional[int] = None,
    model: Optional[Dict] = None,
    data: Optional[Dict] = None,
) -> Dict:
    """Assemble the results document from confusion matrices.

    clean[subset][group]: group "all" holds every sample, other groups are conditions/cases (group_kinds says which).
    noisy[(NoiseSpec, modality)]: the full set with one modality corrupted."""
    full = tuple(trained)
    report: Dict = {
        "schema": SCHEMA,
        "units": "percent",
        "metric_note": NAN_POLICY,
        "model": dict(model or {}),
        "data": dict(data or {}),
        "classes": list(class_names),
    }
    if full in clean:
        report["full"] = {"subset": subset_codes[full], "modalities": list(full),
                          **scores_entry(clean[full]["all"], class_names, confusion=True)}
    subsets = [s for s in subset_codes if s in clean]
    if len(subsets) > 1 or (subsets and subsets[0] != full):
        report["subsets"] = {subset_codes[s]: {"modalities": list(s), **scores_entry(clean[s]["all"], class_names)}
                             for s in subsets}
        mean = sum(e["miou"] for e in report["subsets"].values()) / len(subsets)
        full_miou = report.get("full", {}).get("miou")
        report["subsets_mean"] = {"miou": mean, "full_miou": full_miou, "count": len(subsets),
                                  "ratio_to_full": (mean / full_miou) if full_miou else None}
    groups = [g for g in group_kinds if any(g in clean[s] for s in subsets)]
    if groups:
        if full in clean:
            report["conditions"] = {
                g: {"kind": group_kinds[g], "samples": group_samples.get(g, 0),
                    **scores_entry(clean[full][g], class_names)}
                for g in groups if g in clean[full]
            }
        report["subset_conditions"] = {
            subset_codes[s]: {g: clean[s][g].scores(class_names).miou for g in groups if g in clean[s]}
            for s in subsets
        }
    if noisy:
        clean_miou = report.get("full", {}).get("miou")
        settings = []
        for (spec, modality), matrix in noisy.items():
            entry = scores_entry(matrix, class_names)
            settings.append({"noise": spec.kind, "scale": spec.scale, "title": spec.title, "modality": modality,
                             "code": subset_codes.get((modality,), modality), **entry,
                             "delta_miou": (entry["miou"] - clean_miou) if clean_miou is not None else None})
        report["noise"] = {"clean_miou": clean_miou, "seed": noise_seed, "settings": settings}
    return report


def save_json(report: Mapping, path) -> None:
    with atomic_open(path, "w") as f:
        json.dump(report, f, indent=1, allow_nan=False)
        f.write("\n")


def load_json(path) -> Dict:
    with open(path) as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------------------ Markdown
def _num(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]], align_first_left: bool = True) -> str:
    """Paper-style table: cells as str() gives them, numeric columns right-aligned."""
    return reporting.markdown_table(header, ([str(v) for v in row] for row in rows), align_first_left)


def summary_table(report: Mapping) -> str:
    """One row per evaluated setting: the full set, then any subsets."""
    rows = []
    if "full" in report:
        rows.append(_summary_row(f"{report['full']['subset']} (all trained)", report["full"]))
    return markdown_table(["Setting", "mIoU", "mAcc", "aAcc", "fwIoU", "mIoU (present classes)", "Pixels"], rows)


def _summary_row(name: str, entry: Mapping) -> List[str]:
    return [name, _num(entry["miou"]), _num(entry["macc"]), _num(entry["aacc"]), _num(entry["fwiou"]),
            _num(entry["miou_present"]), str(entry["pixels"])]


def per_class_table(report: Mapping, entry: Optional[Mapping] = None) -> str:
    """Class | IoU | Acc for one setting (default: the full modality set); absent classes shown as '– (0)'."""
    entry = entry if entry is not None else report["full"]
    rows = []
    for name in report["classes"]:
        iou, acc = entry["iou"][name], entry["acc"][name]
        rows.append([name, _num(iou) if iou is not None else "– (0)", _num(acc) if acc is not None else "– (0)"])
    rows.append(["**mean**", f"**{_num(entry['miou'])}**", f"**{_num(entry['macc'])}**"])
    return markdown_table(["Class", "IoU", "Acc"], rows)


def conditions_table(report: Mapping) -> str:
    """Rows: conditions then failure cases (full modality set)."""
    rows = [[name, e["kind"], str(e["samples"]), _num(e["miou"]), _num(e["macc"]), _num(e["aacc"])]
            for name, e in report["conditions"].items()]
    return markdown_table(["Condition / case", "Kind", "Samples", "mIoU", "mAcc", "aAcc"], rows)


def subset_conditions_table(report: Mapping) -> str:
    """MLE-SAM Table IV shape: rows = modality subsets, columns = conditions and cases, mIoU, plus the mean."""
    cross = report["subset_conditions"]
    groups: List[str] = []
    for per_group in cross.values():
        groups += [g for g in per_group if g not in groups]
    rows = []
    for code, per_group in cross.items():
        values = [per_group.get(g) for g in groups]
        present = [v for v in values if v is not None]
        rows.append([code, *map(_num, values), _num(sum(present) / len(present) if present else None)])
    return markdown_table(["Modalities", *groups, "Mean"], rows)


def missing_modalities_table(report: Mapping) -> str:
    """MLE-SAM Table VI shape: one column per tested subset (mIoU), then the mean; one row for this model."""
    subsets = report["subsets"]
    trained = report.get("full", {}).get("subset") or "-".join(next(reversed(subsets.values()))["modalities"])
    header = ["Training", *subsets.keys(), "Mean"]
    row = [trained, *(_num(e["miou"]) for e in subsets.values()), _num(report["subsets_mean"]["miou"])]
    return markdown_table(header, [row])


def noise_table(report: Mapping) -> str:
    """MLE-SAM Table VIII shape: noise type x corrupted modality -> mIoU and the change against clean inputs."""
    rows, last = [], None
    for s in report["noise"]["settings"]:
        rows.append([s["title"] if s["title"] != last else "", s["modality"], _num(s["miou"]), _num(s["delta_miou"])])
        last = s["title"]
    clean = report["noise"]["clean_miou"]
    rows.append(["none (clean)", "–", _num(clean), _num(0.0 if clean is not None else None)])
    return markdown_table(["Noise type", "Modality", "mIoU", "Δ vs clean"], rows)


def metric_footnote(report: Mapping) -> str:
    note = f"_{report.get('metric_note', NAN_POLICY)}."
    absent = report.get("full", {}).get("absent_classes")
    if absent:
        note += f" Absent from this evaluation (IoU counted 0): {', '.join(absent)}; `mIoU (present classes)` " \
                f"averages over the other {len(report['classes']) - len(absent)}."
    return note + "_"


def to_markdown(report: Mapping, title: Optional[str] = None) -> str:
    """The whole report: summary, per-class IoU, conditions, missing modalities, noise (what was evaluated)."""
    model, data = report.get("model", {}), report.get("data", {})
    parts = [f"## {title or 'Evaluation'}: {model.get('name', '?')} on {data.get('source', '?')}"
             + (f" ({data['split']})" if data.get("split") else "")]
    facts = [f"{k}: {v}" for k, v in (("samples", data.get("samples")), ("eval size", data.get("size")),
                                      ("modalities", model.get("modalities")),
                                      ("loader options", data.get("options") or None)) if v is not None]
    if facts:
        parts.append(", ".join(map(str, facts)))
    if "full" in report:
        parts += ["### Overall", summary_table(report), "### Per-class IoU / accuracy", per_class_table(report)]
    if "conditions" in report:
        parts += ["### Per condition / failure case (all trained modalities)", conditions_table(report)]
    if "subset_conditions" in report and len(report["subset_conditions"]) > 1:
        parts += ["### Modality subsets per condition (mIoU, MLE-SAM Table IV shape)", subset_conditions_table(report)]
    if "subsets" in report:
        mean = report["subsets_mean"]
        parts += ["### Missing modalities (mIoU, MLE-SAM Table VI shape)", missing_modalities_table(report),
                  f"Mean over {mean['count']} subsets: {_num(mean['miou'])}"
                  + (f" = {mean['ratio_to_full']:.3f} x the all-modality mIoU." if mean.get("ratio_to_full") else ".")]
    if "noise" in report:
        parts += ["### Noise on one modality (all others clean; MLE-SAM Table VIII shape)", noise_table(report)]
    parts.append(metric_footnote(report))
    return "\n\n".join(parts) + "\n"
