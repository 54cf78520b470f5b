"""`mmseg compare`: several `mmseg eval` reports side by side (the tables of models/README.md).

Each report is a results.json; a column per report, named after its model. The tables are those the reports have in
common: missing modalities (every subset, the mean and the mean/full ratio), per condition, fusion against the best
single modality per condition, and noise. Only numbers from the reports are printed: nothing is re-evaluated.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from ..errors import ConfigError
from .tables import _num, load_json, markdown_table


def _names(reports: Sequence[Mapping]) -> List[str]:
    names = [r.get("model", {}).get("name", "?") for r in reports]
    seen: Dict[str, int] = {}
    out = []
    for name in names:  # two reports of one model (e.g. before/after fine-tuning) still get distinct columns
        seen[name] = seen.get(name, 0) + 1
        out.append(name if names.count(name) == 1 else f"{name} ({seen[name]})")
    return out


def _common(reports: Sequence[Mapping], key: str) -> List[str]:
    """The entries of report[key] that every report has, in the first report's order."""
    first = list(reports[0].get(key) or {})
    return [k for k in first if all(k in (r.get(key) or {}) for r in reports)]


def subsets_table(reports: Sequence[Mapping], names: Sequence[str], metric: str = "miou") -> Optional[str]:
    codes = _common(reports, "subsets")
    if not codes:
        return None
    rows = [[code, *(_num(r["subsets"][code][metric], 1) for r in reports)] for code in codes]
    if metric == "miou":
        # Over the subsets shown, not each report's own stored mean: reports may have evaluated other subsets.
        means = [sum(r["subsets"][code]["miou"] for code in codes) / len(codes) for r in reports]
        fulls = [(r.get("full") or {}).get("miou") for r in reports]
        rows.append([f"**mean of {len(codes)}**", *(_num(m, 1) for m in means)])
        rows.append(["**mean / full (ratio)**", *(_num(m / f if f else None, 2) for m, f in zip(means, fulls))])
    return markdown_table(["subset", *names], rows)


def overall_table(reports: Sequence[Mapping], names: Sequence[str]) -> Optional[str]:
    """The all-modality scores every report has, one column per report."""
    if not all(r.get("full") for r in reports):
        return None
    metrics = [("mIoU", "miou"), ("mIoU (present classes)", "miou_present"), ("mAcc", "macc"), ("aAcc", "aacc")]
    rows = [[label, *(_num(r["full"].get(key), 1) for r in reports)] for label, key in metrics]
    rows.append(["modalities", *(r["full"].get("subset", "?") for r in reports)])
    rows.append(["samples", *(str((r.get("data") or {}).get("samples", "?")) for r in reports)])
    return markdown_table(["all modalities", *names], rows)


def conditions_table(reports: Sequence[Mapping], names: Sequence[str]) -> Optional[str]:
    groups = _common(reports, "conditions")
    if not groups:
        return None
    rows = []
    for group in groups:
        entry = reports[0]["conditions"][group]
        rows.append([f"{group} ({entry['kind']}, {entry['samples']})",
                     *(_num(r["conditions"][group]["miou"], 1) for r in reports)])
    return markdown_table(["condition", *names], rows)


def fusion_rows(report: Mapping, groups: Sequence[str]) -> List[dict]:
    """Per condition: each single modality's mIoU, the best of them, the full set's, and full - best."""
    cross, full = report.get("subset_conditions") or {}, report.get("full") or {}
    singles = [code for code, entry in report.get("subsets", {}).items() if len(entry["modalities"]) == 1]
    full_code = full.get("subset")
    rows = []
    for group in groups:
        values = {code: cross.get(code, {}).get(group) for code in singles}
        fused = cross.get(full_code, {}).get(group)
        known = {c: v for c, v in values.items() if v is not None}
        if not known or fused is None:
            continue
        best = max(known, key=known.get)
        rows.append({"condition": group, "singles": values, "best": best, "best_miou": known[best],
                     "full": fused, "gain": fused - known[best]})
    return rows


def fusion_table(reports: Sequence[Mapping], names: Sequence[str], groups: Optional[Sequence[str]] = None
                 ) -> Optional[str]:
    groups = list(groups) if groups else _common(reports, "conditions")
    singles: List[str] = []
    per_report = []
    for report in reports:
        rows = fusion_rows(report, groups)
        per_report.append(rows)
        for row in rows:
            singles += [c for c in row["singles"] if c not in singles]
    if not any(per_report):
        return None
    full_name = reports[0].get("full", {}).get("subset", "all")
    out = []
    for name, rows in zip(names, per_report):
        for row in rows:
            out.append([name, row["condition"], *(_num(row["singles"].get(c), 1) for c in singles),
                        f"{row['best']} {_num(row['best_miou'], 1)}", _num(row["full"], 1), f"{row['gain']:+.1f}"])
    return markdown_table(["model", "condition", *singles, "best single", full_name, "fusion - best single"], out)


def noise_table(reports: Sequence[Mapping], names: Sequence[str]) -> Optional[str]:
    if not all(r.get("noise") for r in reports):
        return None
    keyed = [{(s["title"], s["modality"]): s for s in r["noise"]["settings"]} for r in reports]
    order = [k for k in keyed[0] if all(k in other for other in keyed)]
    rows = [["clean", "–", *(_num(r["noise"]["clean_miou"], 1) for r in reports)]]
    for key in order:
        cells = []
        for settings in keyed:
            s = settings[key]
            cells.append(f"{_num(s['miou'], 1)} ({s['delta_miou']:+.1f})" if s["delta_miou"] is not None
                         else _num(s["miou"], 1))
        rows.append([key[0], key[1], *cells])
    return markdown_table(["noise", "modality", *names], rows)


def compare(reports: Sequence[Mapping], fusion_conditions: Optional[Sequence[str]] = None) -> str:
    if not reports:
        raise ConfigError("compare: give at least one results.json")
    names = _names(reports)
    sections = [
        ("All modalities (%)", overall_table(reports, names)),
        ("Missing modalities (mIoU %)", subsets_table(reports, names)),
        ("Missing modalities, mIoU over present classes (%)", subsets_table(reports, names, "miou_present")),
        ("Per condition / failure case (all modalities, mIoU %; frames in brackets)", conditions_table(reports, names)),
        ("Fusion vs the best single modality (mIoU %)", fusion_table(reports, names, fusion_conditions)),
        ("Noise on one modality, all present (mIoU %, change vs clean)", noise_table(reports, names)),
    ]
    parts = [f"### {title}\n\n{table}" for title, table in sections if table]
    return "\n\n".join(parts) + "\n"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reports", nargs="+", type=Path, help="results.json files written by `mmseg eval`")
    parser.add_argument("--fusion-conditions", default=None,
                        help="conditions for the fusion table, comma-separated (default: all in common)")


def main(args) -> int:
    reports = []
    for path in args.reports:
        try:
            reports.append(load_json(path))
        except ValueError as exc:
            raise ConfigError(f"{path}: not a results.json ({exc})") from None
    groups = [g.strip() for g in args.fusion_conditions.split(",")] if args.fusion_conditions else None
    print(compare(reports, groups), end="")
    return 0
