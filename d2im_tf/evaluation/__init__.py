"""Measuring reconstructions: the papers' metrics, the evaluation of a test split, the ablation table."""
