"""Datasets: DISN's on-disk layout, the synthetic generator, and the training input pipeline."""
