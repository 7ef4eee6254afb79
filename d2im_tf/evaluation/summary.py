"""Per-category summaries of per-shape metric rows, as the papers' tables report them.

A table's row per category is the mean over that category's shapes; its last row, ``mean``, is the
mean of the category means (each category counts once, however many shapes it has). Shared by the
evaluation report (:func:`d2im_tf.evaluation.evaluate.summarise`) and the ablation table
(:mod:`d2im_tf.evaluation.ablation`). A metric a shape does not define is NaN (the relief error of a
view that shows no relief) and is left out of the means.
"""

from __future__ import annotations

import numpy as np


def group_by_category(rows, keys) -> dict[str, np.ndarray]:
    """Rows (mappings with ``category`` and every key of ``keys``) → category → float ``[shapes, len(keys)]``,
    the categories in the order they first appear."""
    grouped: dict[str, list] = {}
    for row in rows:
        grouped.setdefault(row["category"], []).append([float(row[key]) for key in keys])
    return {category: np.array(values) for category, values in grouped.items()}


def column_means(values: np.ndarray) -> np.ndarray:
    """The means ``[K]`` of the columns of ``[rows, K]`` without their NaN; NaN for a column without a value."""
    counts = np.sum(~np.isnan(values), axis=0)
    return np.where(counts > 0, np.nansum(values, axis=0) / np.maximum(counts, 1), np.nan)


def mean_over_categories(category_values) -> np.ndarray:
    """The mean of per-category vectors (an iterable of ``[K]``) → ``[K]``: each category counts once
    (a category without a value of a metric, NaN, does not count for it)."""
    return column_means(np.array(list(category_values)))
