"""Per-category summaries of per-shape metric rows, as the papers' tables report them.

A table's row per category is the mean over that category's shapes; its last row, ``mean``, is the
mean of the category means (each category counts once, however many shapes it has). Shared by the
evaluation report (:func:`d2im_tf.evaluation.evaluate.summarise`) and the ablation table
(:mod:`d2im_tf.evaluation.ablation`).
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


def mean_over_categories(category_values) -> np.ndarray:
    """The mean of per-category vectors (an iterable of ``[K]``) → ``[K]``: each category counts once."""
    return np.array(list(category_values)).mean(axis=0)
