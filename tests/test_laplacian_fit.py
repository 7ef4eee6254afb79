"""The Laplacian-fit measure on a trained run: the training loss's own L_lap, and the tool's report."""

import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf

from d2im_tf.data.pipeline import ShapeDataset
from d2im_tf.evaluation.laplacian_fit import laplacian_fit
from d2im_tf.training.loop import load_run_config
from d2im_tf.training.run import load_model

ROOT = Path(__file__).resolve().parents[1]


def test_laplacian_fit_is_the_training_loss_of_the_maps_and_of_zero_maps(model_dir):
    run = model_dir.parent / "run"
    model = load_model(run, "sdf")
    dataset = ShapeDataset(load_run_config(run), "train").dataset(2)
    result = laplacian_fit(model, dataset, batches=2)
    batches = list(dataset.take(2))
    losses, zero_losses = [], []
    for batch in batches:  # the training step's path: compute_losses on the model's outputs
        outputs = model(batch, training=False)
        losses.append(float(model.compute_losses(batch, outputs)["loss_lap"]))
        zero = {**outputs, "maps": tf.zeros_like(outputs["maps"])}
        zero_losses.append(float(model.compute_losses(batch, zero)["loss_lap"]))
    assert result["batches"] == 2
    assert result["loss_lap"] == pytest.approx(sum(losses) / 2, rel=1e-5)
    assert result["loss_lap_zero"] == pytest.approx(sum(zero_losses) / 2, rel=1e-5)
    assert result["loss_lap_zero"] > 0
    assert result["explained"] == pytest.approx(1 - sum(losses) / sum(zero_losses), rel=1e-5)


def test_tool_reports_the_share_and_refuses_a_folder_that_is_no_run(model_dir, tmp_path):
    tool = [sys.executable, str(ROOT / "tools" / "laplacian_fit.py")]
    run = model_dir.parent / "run"
    done = subprocess.run([*tool, str(run), "--batches", "1", "--batch-size", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "the front maps explain" in done.stdout and "of the target" in done.stdout
    refused = subprocess.run([*tool, str(tmp_path)], capture_output=True, text=True)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path}/config.yaml")
