"""The paper's Table 1 ablation: where each variant's run lives, and its measured metrics set beside the
published ones.

An ablation folder ``OUT`` (written by ``tools/ablation.py``) holds, per variant ``V`` of
:data:`d2im_tf.config.VARIANTS`:

- ``OUT/V/`` the training run (``config.yaml``, checkpoints, logs, previews),
- ``OUT/V/export/<version>/`` its SavedModel,
- ``OUT/V/eval/`` ``d2im evaluate``'s ``per_shape.csv`` (ground-truth camera); other evaluation settings
  go to sibling folders (``--eval-name`` of ``tools/ablation.py``).

:func:`comparison_table` reads the per-shape rows and prints one Markdown table: our chairs and our
all-category mean, each metric with its standard error over the test shapes, next to the paper's
chair numbers. :func:`relief_table` does the same for the relief error
(:mod:`d2im_tf.evaluation.relief`), which the paper does not report.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from d2im_tf.config import VARIANTS
from d2im_tf.data.categories import CHAIR
from d2im_tf.evaluation.summary import column_means, group_by_category, mean_over_categories

VARIANT_TITLES = {
    "baseline": "Baseline",
    "wsamp": "WSamp",
    "noback": "NoBack",
    "nolap": "NoLap",
    "full": "Full",
    "gl": "D²IM-Net_GL",
}
METRICS = ("chamfer_l1", "iou", "ecd_3d", "ecd_2d")  # the order of the paper's Table 1
RELIEF = "relief_angle"  # d2im evaluate's column of the relief error (degrees)
METRIC_TITLES = {"chamfer_l1": "CD", "iou": "IoU", "ecd_3d": "ECD-3D", "ecd_2d": "ECD-2D"}
# Chairs, (CD, IoU, ECD-3D, ECD-2D). Table 1 of the paper for the five ablation rows; it has no GL row,
# so GL's are the chair column of Table 2 (where the Full model's chairs read 0.0329, 0.5613, 0.0523, 1.707).
PAPER_CHAIRS = {  # as printed
    "baseline": ("0.0417", "0.523", "0.0735", "3.304"),
    "wsamp": ("0.0340", "0.587", "0.0624", "2.626"),
    "noback": ("0.0306", "0.589", "0.0525", "1.802"),
    "nolap": ("0.0302", "0.601", "0.0524", "1.653"),
    "full": ("0.0297", "0.613", "0.0503", "1.456"),
    "gl": ("0.0308", "0.5441", "0.0504", "1.584"),
}


def run_dir(out, variant: str) -> Path:
    return Path(out) / variant


def export_dir(out, variant: str) -> Path:
    return run_dir(out, variant) / "export"


def eval_dir(out, variant: str, name: str = "eval") -> Path:
    """Where one evaluation of a variant lives; ``name`` tells evaluations with other settings apart."""
    return run_dir(out, variant) / name


class MissingColumn(ValueError):
    """A ``per_shape.csv`` without a metric asked for (e.g. an evaluation older than the relief error)."""


def read_per_shape(path, camera: str = "gt", metrics=METRICS) -> dict[str, np.ndarray]:
    """``per_shape.csv`` → category → ``[shapes, len(metrics)]`` values for one camera kind; raises
    :class:`MissingColumn` when the file lacks one of ``metrics``."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [key for key in metrics if key not in (reader.fieldnames or [])]
        if missing:
            raise MissingColumn(f"{path}: no column {missing[0]!r}")
        return group_by_category([row for row in reader if row["camera"] == camera], metrics)


def mean_and_error(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-metric mean and standard error of the mean over the rows of ``[shapes, metrics]`` that define
    the metric (not NaN)."""
    counts = np.sum(~np.isnan(values), axis=0)
    mean = column_means(values)
    squares = np.nansum((values - mean) ** 2, axis=0)
    spread = np.sqrt(squares / np.maximum(counts - 1, 1))
    return mean, np.where(counts > 1, spread / np.sqrt(np.maximum(counts, 1)), 0.0)


def summary(by_category: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"chair": (mean, se), "mean": (mean, se)}``; "mean" is the mean of the category means (as the
    paper's tables), its error combined from the categories' errors. "chair" is absent without chairs."""
    per_category = {category: mean_and_error(values) for category, values in by_category.items()}
    means = np.array([mean for mean, _ in per_category.values()])
    errors = np.array([error for _, error in per_category.values()])
    result = {"mean": (mean_over_categories(means), np.sqrt((errors**2).sum(axis=0)) / len(per_category))}
    if CHAIR in per_category:
        result["chair"] = per_category[CHAIR]
    return result


def _cells(mean: np.ndarray, error: np.ndarray) -> list[str]:
    return [
        f"{m:.3f} ± {e:.3f}" if key != "ecd_2d" else f"{m:.2f} ± {e:.2f}" for key, m, e in zip(METRICS, mean, error)
    ]


def _evaluations(out, variants, eval_name: str, extra: dict | None) -> list[tuple[str, Path, tuple]]:
    """``(title, per_shape.csv, paper's chair numbers)`` of every variant evaluated as ``eval_name``, then
    of every ``extra`` evaluation folder (paper numbers "–")."""
    sources = [
        (VARIANT_TITLES[variant], eval_dir(out, variant, eval_name), PAPER_CHAIRS[variant]) for variant in variants
    ]
    sources += [(title, Path(folder), ("–",) * len(METRICS)) for title, folder in (extra or {}).items()]
    return [
        (title, folder / "per_shape.csv", paper)
        for title, folder, paper in sources
        if (folder / "per_shape.csv").exists()
    ]


def comparison_table(out, variants=VARIANTS, eval_name: str = "eval", extra: dict | None = None) -> str:
    """Markdown: a row per variant with an evaluation ``eval_name`` — paper (chairs) | ours, chairs |
    ours, mean over categories — four metrics each; shape counts in the note above it. ``extra``
    (title → evaluation folder) appends rows without paper numbers, e.g. a longer-trained model."""
    rows, counts = [], {}
    for title, path, paper in _evaluations(out, variants, eval_name, extra):
        by_category = read_per_shape(path)
        counts = {category: len(values) for category, values in by_category.items()}
        ours = summary(by_category)
        chair = _cells(*ours["chair"]) if "chair" in ours else ["–"] * len(METRICS)
        rows.append(f"| {title} | " + " | ".join([*paper, *chair, *_cells(*ours["mean"])]) + " |")
    titles = [METRIC_TITLES[key] for key in METRICS]
    chairs = counts.get(CHAIR, 0)
    header = [
        "| variant | "
        + " | ".join([f"paper {t}" for t in titles] + [f"chairs {t}" for t in titles] + [f"mean {t}" for t in titles])
        + " |",
        "|---|" + "---:|" * (3 * len(METRICS)),
    ]
    note = (
        f"Ours: ground-truth camera, {chairs} test chairs and {sum(counts.values())} test shapes over "
        f"{len(counts)} categories; value ± standard error over shapes."
    )
    return "\n".join([note, "", *header, *rows]) + "\n"


def relief_table(out, variants=VARIANTS, eval_name: str = "eval", extra: dict | None = None) -> str:
    """Markdown: a row per variant whose evaluation ``eval_name`` has the relief error — ours, chairs |
    ours, mean over categories, each ± its standard error over shapes (as :func:`comparison_table`);
    empty when none has it. ``extra``: as :func:`comparison_table`'s."""
    rows = []
    for title, path, _ in _evaluations(out, variants, eval_name, extra):
        try:
            ours = summary(read_per_shape(path, metrics=(RELIEF,)))
        except MissingColumn:
            continue
        cells = [f"{ours[key][0][0]:.1f} ± {ours[key][1][0]:.1f}" if key in ours else "–" for key in ("chair", "mean")]
        rows.append(f"| {title} | " + " | ".join(cells) + " |")
    if not rows:
        return ""
    header = ["| variant | chairs relief error (°) | mean relief error (°) |", "|---|---:|---:|"]
    return "\n".join([*header, *rows]) + "\n"
