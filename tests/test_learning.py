"""The SDF network learns: memorising two generated shapes in a few hundred steps (about a minute of CPU).

A smaller cousin of ``tools/benchmark.py fit``: two synthetic shapes (a chair and a cabinet) at 48 px,
the study recipe at tiny width (Fourier point features, layer-normalised global code, warm-up and
cosine decay, far-field samples), trained through ``fit`` as ``d2im train`` does. It fails when the
network stops learning: the paper's recipe at this budget stays near the mean shape (docs/training.md).
"""
import keras
import pytest

from d2im_tf.cli import main
from d2im_tf.config import load_config
from d2im_tf.data.pipeline import ShapeDataset
from d2im_tf.training.fit_probe import fit_report, probe_shapes
from d2im_tf.training.run import build_model

STEPS = 400
CATEGORIES = ["03001627", "02933112"]


@pytest.fixture(scope="module")
def two_shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("memorise")
    code = main(["make-data", "--out", str(root), "--categories", *CATEGORIES, "--shapes-per-category", "1",
                 "--views", "3", "--image-size", "48", "--samples", "8192", "--resolution", "96",
                 "--seed", "5", "--test-fraction", "0"])
    assert code == 0
    return root


def memorise(root, overrides):
    config = load_config("configs/tiny.yaml", [
        f"data.root={root}", f"data.categories={CATEGORIES}", "data.views=3", "data.num_points=1024",
        "model.image_size=48", "model.encoder_width=8", "model.global_dim=32",
        "model.decoder_widths=[128, 64, 64, 32, 16]", "model.variant=wsamp", "train.batch_size=2", *overrides])
    keras.utils.set_random_seed(0)
    model = build_model(config, "sdf", STEPS)
    model.fit(ShapeDataset(config, "train").dataset(config.train.batch_size), steps_per_epoch=STEPS, epochs=1,
              verbose=0)
    return fit_report(model, probe_shapes(config, "train"))


@pytest.mark.slow
def test_memorises_two_shapes_with_the_study_recipe(two_shapes):
    """Measured: sign accuracy 0.976 and 0.972, IoU 0.82 and 0.95. The paper's recipe (raw xyz, no code
    normalisation, constant 1e-4, no far field) reaches 0.75 / 0.13 and 0.80 / 0.79 in the same 400 steps."""
    rows = memorise(two_shapes, ["model.point_frequencies=4", "model.code_norm=layer", "train.learning_rate=1e-3",
                                 "train.lr_schedule=cosine", "train.warmup_steps=30", "data.far_fraction=0.125"])
    for row in rows:
        assert row["sign_accuracy"] >= 0.93 and row["iou"] >= 0.7, rows
