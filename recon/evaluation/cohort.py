"""Many cases: per-case metric rows, cohort statistics per label and metric, and the files that hold them."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from recon.evaluation.cases import pair_cases
from recon.evaluation.metrics import (
    CONVENTIONS,
    DEFAULT_TOLERANCES_MM,
    Evaluation,
    evaluate,
)
from recon.io.atomic import atomic_path
from recon.io.labels import read_label_map

DISTANCE_METRICS = ("hd_mm", "hd95_mm", "assd_mm", "centroid_distance_mm")
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
STATISTICS = ("mean, median, first and third quartiles (IQR), and a 95% percentile-bootstrap confidence interval "
              f"of the mean ({BOOTSTRAP_RESAMPLES} resamples of the cases, seed {BOOTSTRAP_SEED}), over the cases "
              "where the label is present in the prediction or the reference")


def metric_names(evaluations: dict[str, Evaluation]) -> list[str]:
    """The numeric columns of a score row, in order."""
    scores = [score for e in evaluations.values() for score in e.labels.values()]
    row = scores[0].row() if scores else {}
    return [key for key in row if key not in ("label", "status", "identified", "volume_pred_ml", "volume_ref_ml")]


def summarize(evaluations: dict[str, Evaluation], unmatched: dict[str, list[str]] | None = None) -> dict:
    """Cohort statistics per label and metric, with the counts of absent and one-sided labels."""
    metrics = metric_names(evaluations)
    labels = list(dict.fromkeys(name for e in evaluations.values() for name in e.labels))
    summary = {}
    for label in labels:
        scores = [(e, e.labels[label]) for e in evaluations.values() if label in e.labels]
        scored = [(e, s) for e, s in scores if s.status != "absent"]
        counts = {status: sum(s.status == status for _, s in scores)
                  for status in ("present", "missing_in_pred", "missing_in_ref", "absent")}
        summary[label] = {"cases": counts, **{
            metric: _statistics([_finite(s.row()[metric], metric, e) for e, s in scored]) for metric in metrics}}
    return {
        "n_cases": len(evaluations),
        "case_ids": list(evaluations),
        "unmatched_cases": unmatched or {"pred_only": [], "ref_only": []},
        "labels": summary,
        "identification": _identification(evaluations),
        "statistics": STATISTICS,
        "conventions": CONVENTIONS,
        "warnings": {case: list(e.warnings) for case, e in evaluations.items() if e.warnings},
    }


def _finite(value: float, metric: str, evaluation: Evaluation) -> float:
    """The worst-case policy: an infinite distance counts as the reference image's diagonal."""
    if metric in DISTANCE_METRICS and math.isinf(value):
        return evaluation.worst_case_distance_mm
    return value


def _statistics(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    array = np.asarray(values, dtype=float)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = array[rng.integers(0, len(array), (BOOTSTRAP_RESAMPLES, len(array)))].mean(axis=1)
    q1, median, q3 = np.percentile(array, [25, 50, 75])
    return {"n": len(array), "mean": float(array.mean()), "median": float(median), "q1": float(q1),
            "q3": float(q3), "ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]}


def _identification(evaluations: dict[str, Evaluation]) -> dict:
    """Pooled over all reference vertebrae of all cases (as VerSe reports it), and the per-case mean."""
    cases = [e for e in evaluations.values() if e.vertebrae_in_ref]
    identified = sum(s.identified for e in cases for s in e.labels.values() if s.identified is not None)
    total = sum(e.vertebrae_in_ref for e in cases)
    return {"vertebrae_in_ref": total, "identified": identified,
            "rate_pooled": identified / total if total else None,
            "rate_mean_of_cases": float(np.mean([e.identification_rate for e in cases])) if cases else None}


def write_metrics_csv(evaluations: dict[str, Evaluation], path: Path) -> None:
    """One row per case and label; the conventions open the file as ``#`` comment lines."""
    rows = [{"case": case, **score.row()} for case, e in evaluations.items() for score in e.labels.values()]
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as stream:
        stream.writelines(f"# {key}: {text}\n" for key, text in CONVENTIONS.items())
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]) if rows else ["case", "label"])
        writer.writeheader()
        writer.writerows({key: _csv_value(value) for key, value in row.items()} for row in rows)


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.6g}"
    return str(value)


def write_summary(summary: dict, out: Path) -> None:
    """``summary.json`` and ``summary.md``."""
    with atomic_path(out / "summary.json") as temporary:
        temporary.write_text(json.dumps(summary, indent=2) + "\n")
    with atomic_path(out / "summary.md") as temporary:
        temporary.write_text(summary_markdown(summary))


def summary_markdown(summary: dict) -> str:
    lines = [f"# Segmentation accuracy: {summary['n_cases']} case(s)", ""]
    identification = summary["identification"]
    if identification["vertebrae_in_ref"]:
        rate = identification["rate_pooled"]
        lines += [(f"Vertebra identification (VerSe): {identification['identified']} of "
                   f"{identification['vertebrae_in_ref']} reference vertebrae ({100 * rate:.1f}%)."), ""]
    unmatched = summary["unmatched_cases"]
    if unmatched["pred_only"] or unmatched["ref_only"]:
        lines += [(f"Unmatched cases: prediction only {unmatched['pred_only']}, reference only "
                   f"{unmatched['ref_only']}."), ""]
    metrics = [m for m in next(iter(summary["labels"].values()), {}) if m != "cases"]
    for metric in metrics:
        lines += [f"## {metric}", "", "| label | n | mean | median | IQR | 95% CI of mean | one empty | absent |",
                  "|---|---|---|---|---|---|---|---|"]
        for label, entry in summary["labels"].items():
            lines.append(_markdown_row(label, entry[metric], entry["cases"]))
        lines.append("")
    lines += ["## Statistics", "", summary["statistics"], "", "## Conventions", ""]
    lines += [f"- **{key}**: {text}" for key, text in summary["conventions"].items()]
    return "\n".join(lines) + "\n"


def _markdown_row(label: str, stats: dict, cases: dict) -> str:
    one_empty = cases["missing_in_pred"] + cases["missing_in_ref"]
    if not stats["n"]:
        return f"| {label} | 0 | | | | | {one_empty} | {cases['absent']} |"
    low, high = stats["ci95"]
    return (f"| {label} | {stats['n']} | {stats['mean']:.4g} | {stats['median']:.4g} | "
            f"{stats['q1']:.4g} - {stats['q3']:.4g} | {low:.4g} - {high:.4g} | {one_empty} | {cases['absent']} |")


def write_box_plots(evaluations: dict[str, Evaluation], out: Path) -> list[Path]:
    """One PNG per metric: a box per label over the cases (infinite distances at the worst case)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    labels = list(dict.fromkeys(name for e in evaluations.values() for name in e.labels))
    for metric in metric_names(evaluations):
        data = [[_finite(e.labels[label].row()[metric], metric, e) for e in evaluations.values()
                 if label in e.labels and e.labels[label].status != "absent"] for label in labels]
        shown = [(label, values) for label, values in zip(labels, data) if values]
        if not shown:
            continue
        figure, axes = plt.subplots(figsize=(max(6.0, 0.6 * len(shown) + 2), 4.5))
        axes.boxplot([values for _, values in shown])
        axes.set_xticks(range(1, len(shown) + 1), [label for label, _ in shown], rotation=60, ha="right")
        axes.set_ylabel(metric)
        axes.set_title(f"{metric} over {len(evaluations)} case(s)")
        note = CONVENTIONS.get(metric, CONVENTIONS["nsd"] if metric.startswith("nsd") else CONVENTIONS["volume"])
        if metric in DISTANCE_METRICS:
            note += ". " + CONVENTIONS["aggregation"]
        figure.text(0.01, 0.01, note, fontsize=6, wrap=True)
        figure.tight_layout(rect=(0, 0.08, 1, 1))
        path = out / f"boxplot_{metric}.png"
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=110, format="png")
        plt.close(figure)
        written.append(path)
    return written


def evaluate_cohort(pred: str | Path, ref: str | Path, *, out: str | Path | None = None,
                    pred_label_map: str | None = None, ref_label_map: str | None = None,
                    tolerances_mm=DEFAULT_TOLERANCES_MM) -> tuple[dict[str, Evaluation], dict]:
    """Evaluate every case found in ``pred`` against ``ref`` (see ``pair_cases``); with ``out``, write
    ``metrics.csv``, ``summary.json``, ``summary.md`` and one ``boxplot_<metric>.png`` per metric there."""
    pairs, unmatched = pair_cases(pred, ref)
    evaluations = {
        pair.case_id: evaluate(read_label_map(pair.pred, pred_label_map), read_label_map(pair.ref, ref_label_map),
                               tolerances_mm=tolerances_mm)
        for pair in pairs
    }
    summary = summarize(evaluations, unmatched)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_metrics_csv(evaluations, out / "metrics.csv")
        write_summary(summary, out)
        write_box_plots(evaluations, out)
    return evaluations, summary
