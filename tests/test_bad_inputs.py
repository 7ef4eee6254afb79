"""Bad inputs across the subcommands, one table row each: the exit code, a phrase the one-line message
must contain, and that nothing that existed before changed and nothing new (or half-written) remains.

Rows run ``d2im_tf.cli.main(argv)`` in-process on copies of the tiny toy dataset and of tiny runs;
a few run ``python -m d2im_tf.cli`` where the process matters (a pipeline that used to hang). Add a
row for every new case found.
"""

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
from PIL import Image

from d2im_tf.cli import main
from d2im_tf.data import disn_format as fmt

from conftest import ROOT, TOY_CATEGORY
from helpers import fake_converted

TINY = str(ROOT / "configs" / "tiny.yaml")
VIEW = "[30, 20, 0, 0.8, 35, 32, 1.75, 0, 0, 0]"


@dataclass
class Fixtures:
    """What a row may use: its own empty workspace and the shared, read-only inputs."""

    ws: Path  # the row's workspace (empty at the start)
    toy: Path  # the toy dataset (read-only)
    sdf_run: Path  # a tiny trained SDF run (read-only)
    camera_run: Path  # a tiny trained camera run (read-only)
    model: Path  # the SDF run exported (no camera network; read-only)

    def data(self) -> fmt.DatasetLayout:
        """A private copy of the toy dataset to break."""
        shutil.copytree(self.toy, self.ws / "data")
        return fmt.DatasetLayout(self.ws / "data")

    def copy(self, path: Path, name: str) -> Path:
        shutil.copytree(path, self.ws / name)
        return self.ws / name

    def image(self, name="photo.png", size=32) -> Path:
        path = self.ws / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (size, size), "white").save(path)
        return path


def do(*steps):
    """The last of ``steps`` (each evaluated in order): a row's setup effects, then its arguments."""
    return steps[-1]


def train(fx, data=None, *extra, command="train"):
    """``d2im train`` (or ``train-camera``) with the tiny config on ``data`` (default: the toy dataset)."""
    root = data.root if isinstance(data, fmt.DatasetLayout) else (data or fx.toy)
    return [
        command,
        "--config",
        TINY,
        "--set",
        f"data.root={root}",
        "--set",
        f"data.categories=['{TOY_CATEGORY}']",
        "--set",
        f"train.out_dir={fx.ws / 'run'}",
        "--set",
        f"camera.out_dir={fx.ws / 'cam'}",
        "--no-progress",
        *(["--no-export"] if command == "train" else []),
        *extra,
    ]


def check(layout, *extra):
    return ["check-data", str(layout.root), "--no-progress", *extra]


def reconstruct(fx, *extra, images=(), model=True):
    """``d2im reconstruct`` of ``images`` (default: one white image) into ``ws/out``, with the tiny model,
    the given one, or (``model=False``) the default."""
    return [
        "reconstruct",
        *map(str, images or [fx.image()]),
        "-o",
        str(fx.ws / "out"),
        "--no-progress",
        *(["--model", str(fx.model)] if model is True else ["--model", str(model)] if model else []),
        *extra,
    ]


def evaluate(fx, *extra):
    return ["evaluate", "--data", str(fx.toy), "-o", str(fx.ws / "e"), "--no-progress", *extra]


def edit_h5(path, **datasets):
    """Replace (or with None delete) datasets of an ori_sample.h5 in place."""
    with h5py.File(path, "r+") as h5:
        for name, value in datasets.items():
            del h5[name]
            if value is not None:
                h5.create_dataset(name, data=value)


def samples_of(layout, shape="a"):
    return layout.samples_path(TOY_CATEGORY, shape)


def nan_samples(layout):
    path = samples_of(layout)
    samples = fmt.read_samples(path).samples.copy()
    samples[5, 3] = np.nan
    edit_h5(path, pc_sdf_sample=samples)


def wrong_shape_samples(layout):
    edit_h5(samples_of(layout), pc_sdf_sample=np.zeros((3000, 3), np.float32))


def zero_scale(layout):
    edit_h5(samples_of(layout), norm_params=np.array([0.0, 0.0, 0.0, 0.0]))


def no_gradients(layout):
    for shape in ("a", "b", "c", "t"):
        edit_h5(samples_of(layout, shape), pc_gradients=None)


def int_samples(layout):
    path = samples_of(layout)
    edit_h5(path, pc_sdf_sample=np.round(fmt.read_samples(path).samples * 100).astype(np.int32))


def expanded_checkpoint(path: Path) -> Path:
    """What ``torch.zeros(1).expand(10**6, 10**6)`` saves, as a D²IM-Net weight: 4 TB if materialised."""
    from parity_helpers import Strided, write_torch_zip

    write_torch_zip(
        path, {"state_dict": {"image_encoder.conv1.weight": Strided(np.zeros(1, np.float32), (10**6, 10**6), (0, 0))}}
    )
    return path


def truncated_checkpoint(path: Path) -> Path:
    from parity_helpers import FIXTURES

    path.write_bytes((FIXTURES / "tiny_checkpoint.pt.tar").read_bytes()[:4000])
    return path


def truncated_png(layout):
    path = layout.image_path(TOY_CATEGORY, "b", 1)
    path.write_bytes(path.read_bytes()[:200])


def cmyk_jpeg(layout):
    Image.new("CMYK", (48, 48), (0, 50, 100, 0)).save(layout.image_path(TOY_CATEGORY, "b", 2), format="JPEG")


def one_pixel_view(layout):
    fmt.write_png(layout.image_path(TOY_CATEGORY, "c", 0), np.zeros((1, 1, 4), np.uint8))


def non_square_view(layout):
    fmt.write_png(layout.image_path(TOY_CATEGORY, "c", 0), np.zeros((48, 40, 4), np.uint8))


def small_normal_map(layout):
    fmt.write_normal_map(
        layout.normal_path(TOY_CATEGORY, "a", 3), np.dstack([np.zeros((32, 32, 2)), -np.ones((32, 32))])
    )


def short_metadata(layout):
    path = layout.metadata_path(TOY_CATEGORY, "b")
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:3]))


def zero_distance(layout):
    path = layout.metadata_path(TOY_CATEGORY, "a")
    path.write_text(path.read_text().replace("0.7,", "0.0,", 1))


def empty_train_list(layout):
    fmt.write_split(layout.split_path(TOY_CATEGORY, "train"), [])


def truncate_checkpoint(run: Path):
    (data,) = sorted((run / "checkpoints").glob("ckpt-*.data-*"))[-1:]
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def corrupt_file(path: Path, keep: int = 100):
    path.write_bytes(path.read_bytes()[:keep] + b"\x00garbage" * 10)


def bomb_png(path: Path):
    Image.new("1", (12000, 12000)).save(path)  # 144 M pixels in a few kB


# ------------------------------------------------------------------------------------------
# The table: id → (setup(fx) → argv, expected exit code, phrase). Setups may create inputs in fx.ws.

OTHER_MAKE_DATA = (
    '{"categories": ["03001627", "04379243", "02933112", "04256520"], "shapes_per_category": 10, '
    '"views": 36, "image_size": 224, "samples": 32768, "resolution": 192, "seed": 1, '
    '"test_fraction": 0.2}'
)
BAD_CAMERA = "[30, 20, 0, 0, 35, 32, 1.75, 0, 0, 0]"

ROWS: dict[str, tuple[Callable[[Fixtures], list], int, str]] = {
    # --- configuration ---
    "config-binary-file": (
        lambda fx: do(
            (fx.ws / "c.yaml").write_bytes(bytes(range(256)) * 4), ["info", "--config", str(fx.ws / "c.yaml")]
        ),
        2,
        "c.yaml: not a text file",
    ),
    "config-folder": (lambda fx: ["info", "--config", str(fx.ws)], 2, "ws: is a folder, not a config file"),
    "config-missing": (
        lambda fx: ["info", "--config", str(fx.ws / "none.yaml")],
        2,
        "none.yaml: config file not found",
    ),
    "config-bad-yaml": (
        lambda fx: do((fx.ws / "c.yaml").write_text("data: [1, 2\n"), ["info", "--config", str(fx.ws / "c.yaml")]),
        2,
        "c.yaml: not valid YAML",
    ),
    "config-not-a-mapping": (
        lambda fx: do((fx.ws / "c.yaml").write_text("- 1\n- 2\n"), ["info", "--config", str(fx.ws / "c.yaml")]),
        2,
        "expected a mapping",
    ),
    "config-unknown-key": (lambda fx: ["info", "--set", "model.imagesize=64"], 2, "model.imagesize: unknown key"),
    "config-wrong-type": (lambda fx: ["info", "--set", "train.epochs=many"], 2, "train.epochs: expected int"),
    "config-batch-size-0": (
        lambda fx: train(fx, None, "--set", "train.batch_size=0"),
        2,
        "train.batch_size: must be at least 1, got 0",
    ),
    "train-batch-size-absurd": (
        lambda fx: train(fx, None, "--set", "train.batch_size=1000000000"),
        2,
        "the sdf network's training needs at least",
    ),
    "train-image-size-absurd": (
        lambda fx: train(fx, None, "--set", "model.image_size=100000"),
        2,
        "of memory (an estimate from the config), more than the",
    ),
    "train-encoder-width-absurd": (
        lambda fx: train(fx, None, "--set", "model.encoder_width=1000000"),
        2,
        "lower train.batch_size, model.image_size or model.encoder_width",
    ),
    "train-camera-batch-size-absurd": (
        lambda fx: train(fx, None, "--set", "camera.batch_size=1000000000", command="train-camera"),
        2,
        "the camera network's training needs at least",
    ),
    "config-image-size-30": (
        lambda fx: train(fx, None, "--set", "model.image_size=30"),
        2,
        "model.image_size: must be a multiple of 16",
    ),
    "config-num-points-0": (
        lambda fx: train(fx, None, "--set", "data.num_points=0"),
        2,
        "data.num_points: must be at least 1, got 0",
    ),
    "config-lr-nan": (
        lambda fx: ["info", "--set", "train.learning_rate=.nan"],
        2,
        "train.learning_rate: expected a finite number",
    ),
    "config-lr-0": (lambda fx: ["info", "--set", "train.learning_rate=0"], 2, "train.learning_rate: must be positive"),
    "config-vgg-too-small": (
        lambda fx: ["info", "--set", "camera.backbone=vgg16", "--set", "camera.image_size=16"],
        2,
        "camera.image_size: VGG16 needs at least 32",
    ),
    "config-no-categories": (lambda fx: ["info", "--set", "data.categories=[]"], 2, "data.categories: must list"),
    "config-empty-out-dir": (lambda fx: ["info", "--set", "train.out_dir="], 2, "train.out_dir: must not be empty"),
    "config-set-bad-yaml": (
        lambda fx: ["info", "--set", "train.batch_size=[1,"],
        2,
        "train.batch_size: the value '[1,' is not valid YAML",
    ),
    # --- training data: train and train-camera refuse before the first step; check-data reports the same ---
    "train-nan-samples": (
        lambda fx: do(nan_samples(d := fx.data()), train(fx, d)),
        2,
        "a/ori_sample.h5: dataset 'pc_sdf_sample' has 1 NaN/Inf values",
    ),
    "train-wrong-shape-samples": (
        lambda fx: do(wrong_shape_samples(d := fx.data()), train(fx, d)),
        2,
        "a/ori_sample.h5: dataset 'pc_sdf_sample' has shape (3000, 3)",
    ),
    "train-zero-scale": (
        lambda fx: do(zero_scale(d := fx.data()), train(fx, d)),
        2,
        "a/ori_sample.h5: dataset 'norm_params' has scale m = 0",
    ),
    "train-no-gradients": (
        lambda fx: do(no_gradients(d := fx.data()), train(fx, d)),
        2,
        "SDF_v1: 4 of 4 ori_sample.h5 files lack pc_gradients/density, which training needs",
    ),
    "train-int-samples": (
        lambda fx: do(int_samples(d := fx.data()), train(fx, d)),
        2,
        "a/ori_sample.h5: dataset 'pc_sdf_sample' has dtype int32, expected floating point",
    ),
    "train-run-folder-in-use": (
        lambda fx: do(
            (fx.ws / "run").mkdir(), (fx.ws / "run" / ".d2im.lock").write_text(f"{os.getppid()}\n"), train(fx)
        ),
        2,
        f"run: the run folder is in use by process {os.getppid()}",
    ),
    "train-truncated-png": (
        lambda fx: do(truncated_png(d := fx.data()), train(fx, d)),
        2,
        "b/01.png: not a readable image",
    ),
    "train-cmyk-jpeg-as-png": (
        lambda fx: do(cmyk_jpeg(d := fx.data()), train(fx, d)),
        2,
        "b/02.png: holds JPEG data, not PNG",
    ),
    "train-1x1-view": (
        lambda fx: do(one_pixel_view(d := fx.data()), train(fx, d)),
        2,
        "c/00.png: the view is 1×1, smaller than 16×16",
    ),
    "train-non-square-view": (
        lambda fx: do(non_square_view(d := fx.data()), train(fx, d)),
        2,
        "c/00.png: the view is 40×48; views must be square",
    ),
    "train-normal-map-size": (
        lambda fx: do(small_normal_map(d := fx.data()), train(fx, d)),
        2,
        "a/03_mnormal.png: normal map is 32×32 but its view 03.png is 48×48",
    ),
    "train-short-metadata": (
        lambda fx: do(short_metadata(d := fx.data()), train(fx, d)),
        2,
        "b/rendering_metadata.txt: 3 camera lines for 4 views",
    ),
    "train-zero-distance": (
        lambda fx: do(zero_distance(d := fx.data()), train(fx, d)),
        2,
        "a/rendering_metadata.txt: line 1 has distance ratio 0",
    ),
    "train-empty-split": (
        lambda fx: do(empty_train_list(d := fx.data()), train(fx, d)),
        2,
        "03001627_train.lst: lists no shapes",
    ),
    "train-too-few-samples": (
        lambda fx: train(fx, None, "--set", "data.num_points=5000"),
        2,
        "3000 SDF samples, fewer than the 5000 drawn per example (data.num_points)",
    ),
    "train-no-dataset": (lambda fx: train(fx, fx.ws / "nothing"), 2, "nothing: dataset folder not found (data.root)"),
    "train-unknown-category": (
        lambda fx: train(fx, None, "--set", "data.categories=['02691156']"),
        2,
        "02691156_train.lst: file not found",
    ),
    "train-camera-truncated-png": (
        lambda fx: do(truncated_png(d := fx.data()), train(fx, d, command="train-camera")),
        2,
        "b/01.png: not a readable image",
    ),
    "train-camera-too-few-points": (
        lambda fx: train(fx, None, "--set", "camera.points=600", command="train-camera"),
        2,
        "500 surface points, fewer than the 600 the camera network draws",
    ),
    "check-data-nan-samples": (
        lambda fx: do(nan_samples(d := fx.data()), check(d)),
        2,
        "a/ori_sample.h5: dataset 'pc_sdf_sample' has 1 NaN/Inf values",
    ),
    "check-data-zero-scale": (
        lambda fx: do(zero_scale(d := fx.data()), check(d)),
        2,
        "a/ori_sample.h5: dataset 'norm_params' has scale m = 0",
    ),
    "check-data-no-gradients": (
        lambda fx: do(no_gradients(d := fx.data()), check(d)),
        2,
        "4 of 4 ori_sample.h5 files lack pc_gradients/density",
    ),
    "check-data-int-samples": (
        lambda fx: do(int_samples(d := fx.data()), check(d)),
        2,
        "a/ori_sample.h5: dataset 'pc_sdf_sample' has dtype int32, expected floating point",
    ),
    "check-data-truncated-png": (
        lambda fx: do(truncated_png(d := fx.data()), check(d)),
        2,
        "b/01.png: not a readable image",
    ),
    "check-data-cmyk-jpeg-as-png": (
        lambda fx: do(cmyk_jpeg(d := fx.data()), check(d)),
        2,
        "b/02.png: holds JPEG data, not PNG",
    ),
    "check-data-1x1-view": (lambda fx: do(one_pixel_view(d := fx.data()), check(d)), 2, "c/00.png: the view is 1×1"),
    "check-data-normal-map-size": (
        lambda fx: do(small_normal_map(d := fx.data()), check(d)),
        2,
        "a/03_mnormal.png: normal map is 32×32 but its view 03.png is 48×48",
    ),
    "check-data-short-metadata": (
        lambda fx: do(short_metadata(d := fx.data()), check(d)),
        2,
        "b/rendering_metadata.txt: 3 camera lines for 4 views",
    ),
    "check-data-zero-distance": (
        lambda fx: do(zero_distance(d := fx.data()), check(d)),
        2,
        "a/rendering_metadata.txt: line 1 has distance ratio 0",
    ),
    "check-data-empty-split": (
        lambda fx: do(empty_train_list(d := fx.data()), check(d)),
        2,
        "03001627_train.lst: lists no shapes",
    ),
    "check-data-empty-test-split-warns": (
        lambda fx: do(fmt.write_split((d := fx.data()).split_path(TOY_CATEGORY, "test"), []), check(d)),
        0,
        "03001627_test.lst: lists no shapes; evaluation and previews skip category 03001627",
    ),
    "check-data-config-points": (
        lambda fx: check(
            fmt.DatasetLayout(fx.toy),
            "--config",
            TINY,
            "--set",
            f"data.categories=['{TOY_CATEGORY}']",
            "--set",
            "data.num_points=4000",
        ),
        2,
        "3000 SDF samples, fewer than the 4000 drawn per example",
    ),
    "check-data-config-far-field": (
        lambda fx: check(
            fmt.DatasetLayout(fx.toy),
            "--config",
            TINY,
            "--set",
            f"data.categories=['{TOY_CATEGORY}']",
            "--set",
            "data.num_points=2000",
            "--set",
            "data.far_fraction=0.9",
        ),
        2,
        "500 far-field samples (pc_sdf_uniform with pc_gradients_uniform), fewer than the 1800",
    ),
    "check-data-no-root": (lambda fx: ["check-data", str(fx.ws / "nothing")], 2, "nothing: dataset folder not found"),
    # --- reconstruct: arguments are checked before the model loads and before anything is written ---
    "reconstruct-norm-params-nan": (
        lambda fx: reconstruct(fx, "--camera", VIEW, "--norm-params", "0", "0", "nan", "1"),
        2,
        "--norm-params: expected 4 finite numbers",
    ),
    "reconstruct-norm-params-m-0": (
        lambda fx: reconstruct(fx, "--camera", VIEW, "--norm-params", "0", "0", "0", "0"),
        2,
        "--norm-params: the scale m must be positive",
    ),
    "reconstruct-norm-params-alone": (
        lambda fx: reconstruct(fx, "--norm-params", "0", "0", "0", "1"),
        2,
        "--norm-params needs --camera",
    ),
    "reconstruct-resolution-0": (
        lambda fx: reconstruct(fx, "--resolution", "0", model=False),
        2,
        "--resolution must be between 2 and 1024, got 0",
    ),
    "reconstruct-resolution-negative": (
        lambda fx: reconstruct(fx, "--resolution", "-8", model=False),
        2,
        "--resolution must be between 2 and 1024, got -8",
    ),
    "reconstruct-resolution-not-power": (
        lambda fx: reconstruct(fx, "--resolution", "48", model=False),
        2,
        "coarse-to-fine needs 32·2^k",
    ),
    "reconstruct-out-under-file": (
        lambda fx: reconstruct(fx, "-o", str(fx.image("f.png") / "out")),
        2,
        "f.png/out: cannot be used as the output folder: it is under the file",
    ),
    "reconstruct-out-is-file": (
        lambda fx: reconstruct(fx, "-o", str(fx.image("f.png"))),
        2,
        "f.png: cannot be used as the output folder: it is a file",
    ),
    "reconstruct-out-in-proc": (
        lambda fx: reconstruct(fx, "-o", "/proc/d2im_out"),
        2,
        "/proc/d2im_out: cannot be used as the output folder: /proc is not writable",
    ),
    "reconstruct-camera-distance-0": (
        lambda fx: reconstruct(fx, "--camera", BAD_CAMERA),
        2,
        "--camera: the line has distance ratio 0",
    ),
    "reconstruct-camera-distance-huge": (
        lambda fx: reconstruct(fx, "--camera", "[30, 20, 0, 1e308, 35, 32, 1.75, 0, 0, 0]"),
        2,
        "--camera: the line has distance ratio 1e+308 (field 4); it must be between",
    ),
    "reconstruct-camera-inside-shape": (
        lambda fx: reconstruct(fx, "--camera", "[30, 20, 0, 0.1, 35, 32, 1.75, 0, 0, 0]"),
        2,
        "nearer, the camera is inside the shape's bounding sphere",
    ),
    "reconstruct-camera-angle-huge": (
        lambda fx: reconstruct(fx, "--camera", "[1e300, 20, 0, 0.8, 35, 32, 1.75, 0, 0, 0]"),
        2,
        "--camera: the line has an angle beyond",
    ),
    "reconstruct-earlier-result": (
        lambda fx: do(
            (fx.ws / "out").mkdir(), (fx.ws / "out" / "photo.obj").write_text("v"), reconstruct(fx, "--camera", VIEW)
        ),
        2,
        "out/photo.obj: already exists (an earlier result?); pass --overwrite to replace it",
    ),
    "reconstruct-earlier-preview": (
        lambda fx: do((fx.ws / "out").mkdir(), fx.image("out/photo_preview.png"), reconstruct(fx, "--camera", VIEW)),
        2,
        "out/photo_preview.png: already exists",
    ),
    "reconstruct-camera-short": (
        lambda fx: reconstruct(fx, "--camera", "[30, 20, 0]"),
        2,
        "--camera: the line has 3 fields, expected 10",
    ),
    "reconstruct-camera-words": (lambda fx: reconstruct(fx, "--camera", "front"), 2, "--camera: not a list of numbers"),
    "reconstruct-same-stem": (
        lambda fx: reconstruct(fx, "--camera", VIEW, images=[fx.image("a/good.png"), fx.image("b/good.jpg")]),
        2,
        "ws/a/good.png would both be written to",
    ),
    "reconstruct-model-missing": (lambda fx: reconstruct(fx, model=fx.ws / "m"), 2, "ws/m: model folder not found"),
    "reconstruct-model-empty": (lambda fx: reconstruct(fx, model=fx.ws), 2, "ws: no SavedModel here"),
    "reconstruct-model-corrupt-pb": (
        lambda fx: do(
            corrupt_file((m := fx.copy(fx.model, "m")) / "1" / "saved_model.pb"),
            reconstruct(fx, "--camera", VIEW, model=m),
        ),
        2,
        "m/1: cannot load the SavedModel; is it damaged or incomplete?",
    ),
    "reconstruct-model-truncated-variables": (
        lambda fx: do(
            corrupt_file(next(((m := fx.copy(fx.model, "m")) / "1" / "variables").glob("*.data-*")), 1000),
            reconstruct(fx, "--camera", VIEW, model=m),
        ),
        2,
        "m/1: cannot load the SavedModel; is it damaged or incomplete?",
    ),
    "reconstruct-model-no-description": (
        lambda fx: do(
            shutil.rmtree((m := fx.copy(fx.model, "m")) / "1" / "assets.extra"),
            reconstruct(fx, "--camera", VIEW, model=m),
        ),
        2,
        "d2im.json: unreadable model description",
    ),
    "reconstruct-no-camera-network": (lambda fx: reconstruct(fx), 2, "the model has no camera network"),
    "reconstruct-decompression-bomb": (
        lambda fx: do(bomb_png(fx.ws / "bomb.png"), reconstruct(fx, "--camera", VIEW, images=[fx.ws / "bomb.png"])),
        2,
        "bomb.png: image too large (12000×12000 pixels",
    ),
    "reconstruct-decompression-bomb-beyond-twice": (
        lambda fx: do(
            Image.new("1", (15000, 15000)).save(fx.ws / "huge.png"),
            reconstruct(fx, "--camera", VIEW, images=[fx.ws / "huge.png"]),
        ),
        2,
        "huge.png: image too large (225,000,000 pixels; the limit is",
    ),
    "reconstruct-unreadable-image": (
        lambda fx: do(
            (fx.ws / "x.png").write_text("not an image"), reconstruct(fx, "--camera", VIEW, images=[fx.ws / "x.png"])
        ),
        2,
        "x.png: not a readable image",
    ),
    "reconstruct-image-missing": (
        lambda fx: reconstruct(fx, "--camera", VIEW, images=[fx.ws / "none.png"]),
        2,
        "none.png: file not found",
    ),
    "reconstruct-image-is-folder": (
        lambda fx: reconstruct(fx, "--camera", VIEW, images=[fx.ws]),
        2,
        "ws: is a folder, not an image",
    ),
    # --- evaluate (fails before the bundled default model loads) ---
    "evaluate-max-shapes-negative": (
        lambda fx: evaluate(fx, "--max-shapes", "-1"),
        2,
        "--max-shapes must be at least 1, got -1",
    ),
    "evaluate-max-shapes-0": (
        lambda fx: evaluate(fx, "--max-shapes", "0"),
        2,
        "--max-shapes must be at least 1, got 0",
    ),
    "evaluate-resolution-0": (lambda fx: evaluate(fx, "--resolution", "0"), 2, "--resolution must be between"),
    "evaluate-no-data": (
        lambda fx: evaluate(fx, "--data", str(fx.ws / "nothing")),
        2,
        "nothing: dataset folder not found",
    ),
    "evaluate-out-under-file": (
        lambda fx: evaluate(fx, "-o", str(fx.image("f.png") / "e")),
        2,
        "f.png/e: cannot be used as the output folder: it is under the file",
    ),
    "evaluate-unknown-split": (lambda fx: evaluate(fx, "--split", "val"), 2, "03001627_val.lst: file not found"),
    # --- convert ---
    "convert-not-a-saved-model": (
        lambda fx: ["convert", str(fx.ws), "--to", "tflite", "-o", str(fx.ws / "out")],
        2,
        "ws: no SavedModel here",
    ),
    "convert-missing-folder": (
        lambda fx: ["convert", str(fx.ws / "none"), "--to", "tflite", "-o", str(fx.ws / "out")],
        2,
        "none: model folder not found",
    ),
    "convert-unsupported-target": (
        lambda fx: ["convert", str(fx.model), "--to", "onnx", "-o", str(fx.ws / "out")],
        2,
        "--to onnx: unsupported target",
    ),
    "convert-out-exists": (
        lambda fx: do((fx.ws / "out").mkdir(), ["convert", str(fx.model), "--to", "tflite", "-o", str(fx.ws / "out")]),
        2,
        "out: already exists",
    ),
    "convert-out-under-file": (
        lambda fx: ["convert", str(fx.model), "--to", "tflite", "-o", str(fx.image("f.png") / "o")],
        2,
        "cannot be used as the output folder",
    ),
    "reconstruct-runtime-bad-chunk-points": (
        lambda fx: reconstruct(
            fx, "--camera", VIEW, "--runtime", "tflite", model=fake_converted(fx.ws / "lite", chunk_points="many")
        ),
        2,
        "lite/d2im_runtime.json: chunk_points: 'many' is not a whole number from 1 to 1048576",
    ),
    "reconstruct-runtime-file-outside": (
        lambda fx: reconstruct(
            fx,
            "--camera",
            VIEW,
            "--runtime",
            "tflite",
            model=fake_converted(
                fx.ws / "lite", models={"encode": {"files": {"float32": "../../../../etc/passwd"}}, "decode": {}}
            ),
        ),
        2,
        "models.encode.files.float32: '../../../../etc/passwd' points outside the folder",
    ),
    "reconstruct-runtime-on-a-saved-model": (
        lambda fx: reconstruct(fx, "--camera", VIEW, "--runtime", "tflite", images=[fx.image()]),
        2,
        "no d2im_runtime.json",
    ),
    # --- import-torch: crafted checkpoints are refused within bounds derived from the network ---
    "import-torch-expanded-tensor": (
        lambda fx: ["import-torch", "--sdf", str(expanded_checkpoint(fx.ws / "e.pt")), "--out", str(fx.ws / "m")],
        2,
        "e.pt: a tensor of size [1000000, 1000000] would need 4.0 TB, beyond the",
    ),
    "import-torch-truncated-zip": (
        lambda fx: ["import-torch", "--sdf", str(truncated_checkpoint(fx.ws / "t.pt")), "--out", str(fx.ws / "m")],
        2,
        "t.pt: a zip archive without its directory at the end (truncated?)",
    ),
    # --- export ---
    "export-version-negative": (
        lambda fx: ["export", "--checkpoint", str(fx.sdf_run), "--out", str(fx.ws / "m"), "--version", "-1"],
        2,
        "--version must be a positive integer",
    ),
    "export-version-minus-3": (
        lambda fx: ["export", "--checkpoint", str(fx.sdf_run), "--out", str(fx.ws / "m"), "--version", "-3"],
        2,
        "--version must be a positive integer",
    ),
    "export-version-0": (
        lambda fx: ["export", "--checkpoint", str(fx.sdf_run), "--out", str(fx.ws / "m"), "--version", "0"],
        2,
        "--version must be a positive integer",
    ),
    "export-existing-version": (
        lambda fx: ["export", "--checkpoint", str(fx.sdf_run), "--out", str(fx.model), "--version", "1"],
        2,
        "export/1: already exists",
    ),
    "export-camera-run-as-sdf": (
        lambda fx: ["export", "--checkpoint", str(fx.camera_run), "--out", str(fx.ws / "m")],
        2,
        "weights do not match the",
    ),
    "export-sdf-run-as-camera": (
        lambda fx: [
            "export",
            "--checkpoint",
            str(fx.sdf_run),
            "--camera-checkpoint",
            str(fx.sdf_run),
            "--out",
            str(fx.ws / "m"),
        ],
        2,
        "weights do not match the",
    ),
    "export-truncated-checkpoint": (
        lambda fx: do(
            truncate_checkpoint(r := fx.copy(fx.sdf_run, "r")),
            ["export", "--checkpoint", str(r), "--out", str(fx.ws / "m")],
        ),
        2,
        "damaged or incomplete checkpoint",
    ),
    "export-not-a-run": (
        lambda fx: ["export", "--checkpoint", str(fx.ws), "--out", str(fx.ws / "m")],
        2,
        "ws/config.yaml: not found; is",
    ),
    "export-run-without-checkpoints": (
        lambda fx: do(
            (r := fx.ws / "r").mkdir(),
            shutil.copy(fx.sdf_run / "config.yaml", r),
            ["export", "--checkpoint", str(r), "--out", str(fx.ws / "m")],
        ),
        2,
        "r/checkpoints: no checkpoint found",
    ),
    "export-out-under-file": (
        lambda fx: ["export", "--checkpoint", str(fx.sdf_run), "--out", str(fx.image("f.png") / "m")],
        2,
        "cannot be used as the model folder",
    ),
    # --- training runs: a refused run touches nothing of the earlier one ---
    "train-over-earlier-run": (
        lambda fx: train(
            fx, None, "--set", f"train.out_dir={fx.copy(fx.sdf_run, 'r')}", "--set", "model.encoder_width=16"
        ),
        2,
        "r/checkpoints: holds checkpoints of an earlier run",
    ),
    "train-resume-other-architecture": (
        lambda fx: train(
            fx,
            None,
            "--set",
            f"train.out_dir={fx.copy(fx.sdf_run, 'r')}",
            "--set",
            "model.encoder_width=16",
            "--resume",
        ),
        2,
        "the run was trained with model.encoder_width=8, the config now says 16",
    ),
    "train-resume-camera-run": (
        lambda fx: train(fx, None, "--set", f"train.out_dir={fx.copy(fx.camera_run, 'r')}", "--resume"),
        2,
        "weights do not match the",
    ),
    "train-camera-over-earlier-run": (
        lambda fx: train(
            fx,
            None,
            "--set",
            f"camera.out_dir={fx.copy(fx.camera_run, 'r')}",
            "--set",
            "camera.width=16",
            command="train-camera",
        ),
        2,
        "r/checkpoints: holds checkpoints of an earlier run",
    ),
    "train-camera-resume-other-architecture": (
        lambda fx: train(
            fx,
            None,
            "--set",
            f"camera.out_dir={fx.copy(fx.camera_run, 'r')}",
            "--set",
            "camera.width=16",
            "--resume",
            command="train-camera",
        ),
        2,
        "the run was trained with camera.width=8, the config now says 16",
    ),
    "train-out-dir-under-file": (
        lambda fx: train(fx, None, "--set", f"train.out_dir={fx.image('f.png') / 'run'}"),
        2,
        "cannot be used as the run folder",
    ),
    "train-export-under-file": (
        lambda fx: [a for a in train(fx, None, "--export", str(fx.image("f.png") / "m")) if a != "--no-export"],
        2,
        "f.png/m: cannot be used as the export folder",
    ),
    "train-camera-run-missing": (
        lambda fx: train(fx, None, "--camera-run", str(fx.ws / "nothing")),
        2,
        "nothing/config.yaml: not found",
    ),
    "train-devices-negative": (lambda fx: train(fx, None, "--devices", "-1"), 2, "--devices must be 0"),
    "train-init-from-missing": (
        lambda fx: train(fx, None, "--set", f"train.init_from={fx.ws / 'nothing'}"),
        2,
        "nothing: not found",
    ),
    "train-init-from-camera-run": (
        lambda fx: train(fx, None, "--set", f"train.init_from={fx.camera_run}"),
        2,
        "weights do not match the",
    ),
    # --- make-data, preprocess ---
    "make-data-into-other-folder": (
        lambda fx: do(fx.image(), ["make-data", "--out", str(fx.ws)]),
        2,
        "ws: not empty, and not a dataset written by make-data",
    ),
    "make-data-other-settings": (
        lambda fx: do(
            (fx.ws / "make_data.json").write_text(OTHER_MAKE_DATA), ["make-data", "--out", str(fx.ws), "--seed", "2"]
        ),
        2,
        "ws: holds a dataset made with --seed 1, not 2",
    ),
    "make-data-image-size-1": (
        lambda fx: ["make-data", "--out", str(fx.ws / "d"), "--image-size", "1"],
        2,
        "--image-size must be at least 16 (smaller renders hold no detail), got 1",
    ),
    "make-data-views-0": (
        lambda fx: ["make-data", "--out", str(fx.ws / "d"), "--views", "0"],
        2,
        "--views must be at least 1, got 0",
    ),
    "make-data-extra-from-meshes": (
        lambda fx: ["make-data", "--out", str(fx.ws / "d"), "--from-meshes", str(fx.ws), "--extra-train-shapes", "2"],
        2,
        "cannot be used with --from-meshes",
    ),
    "make-data-no-meshes": (
        lambda fx: ["make-data", "--out", str(fx.ws / "d"), "--from-meshes", str(fx.ws / "x")],
        2,
        "x: not a directory",
    ),
    "make-data-unknown-category": (
        lambda fx: ["make-data", "--out", str(fx.ws / "d"), "--categories", "02691156"],
        2,
        "no procedural family for 02691156",
    ),
    "make-data-unknown-family": (
        lambda fx: ["make-data", "--out", str(fx.ws / "d"), "--shape-families", "stool"],
        2,
        "--shape-families stool: unknown; one of classic, extended, armchair",
    ),
    "make-data-family-of-another-category": (
        lambda fx: ["make-data", "--out", str(fx.ws / "d"), "--shape-families", "slender", "--categories", "03001627"],
        2,
        "--shape-families slender: no 03001627 shapes of that family",
    ),
    "make-data-out-under-file": (
        lambda fx: ["make-data", "--out", str(fx.image("f.png") / "d")],
        2,
        "f.png/d: cannot be used as the dataset folder",
    ),
    "preprocess-empty": (lambda fx: ["preprocess", str(fx.ws)], 2, "no SDF_v1/<category>/<shape>/ori_sample.h5 files"),
}


def snapshot(*roots) -> dict:
    """Every path under ``roots`` → "dir" or the SHA-256 of the file's bytes."""
    state = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            state[str(path)] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


@pytest.fixture(scope="module")
def shared(toy_root, model_dir, tmp_path_factory):
    """The read-only inputs: the toy data, a tiny SDF run and its export, a tiny camera run."""
    export = model_dir
    camera_run = tmp_path_factory.mktemp("bad_inputs") / "camera_run"
    code = main(
        [
            "train-camera",
            "--config",
            TINY,
            "--set",
            f"data.root={toy_root}",
            "--set",
            f"data.categories=['{TOY_CATEGORY}']",
            "--set",
            f"camera.out_dir={camera_run}",
            "--set",
            "camera.epochs=1",
            "--set",
            "train.steps_per_epoch=1",
            "--no-progress",
        ]
    )
    assert code == 0
    return dict(toy=toy_root, sdf_run=export.parent / "run", camera_run=camera_run, model=export)


@pytest.mark.parametrize("row", list(ROWS))
def test_bad_input(row, shared, tmp_path, capsys):
    setup, expected_code, phrase = ROWS[row]
    fx = Fixtures(ws=tmp_path / "ws", **shared)
    fx.ws.mkdir()
    argv = setup(fx)
    assert argv, "the row's setup must return the arguments"
    before = snapshot(fx.ws, fx.toy, fx.sdf_run, fx.camera_run, fx.model.parent)
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:  # a Python warning would be a second stderr line
        warnings.simplefilter("always")
        code = main(argv)
    out, err = capsys.readouterr()
    assert code == expected_code, out + err
    assert not caught, [str(w.message) for w in caught]
    assert phrase in out + err
    if expected_code == 2:
        assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
        assert "Traceback" not in out + err
    assert snapshot(fx.ws, fx.toy, fx.sdf_run, fx.camera_run, fx.model.parent) == before


# Rows where the process matters: each in its own interpreter, with a timeout against hangs.
PROCESS_ROWS = {
    # The DataError used to be raised inside the input pipeline and the process then never exited.
    "train-nan-samples-exits": (
        lambda fx: do(nan_samples(d := fx.data()), train(fx, d)),
        "a/ori_sample.h5: dataset 'pc_sdf_sample' has 1 NaN/Inf values",
    ),
    "reconstruct-corrupt-model": (
        lambda fx: do(
            corrupt_file((m := fx.copy(fx.model, "m")) / "1" / "saved_model.pb"),
            reconstruct(fx, "--camera", VIEW, model=m),
        ),
        "cannot load the SavedModel",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("row", list(PROCESS_ROWS))
def test_bad_input_in_a_process(row, shared, tmp_path):
    setup, phrase = PROCESS_ROWS[row]
    fx = Fixtures(ws=tmp_path / "ws", **shared)
    fx.ws.mkdir()
    argv = setup(fx)
    before = snapshot(fx.ws, fx.toy)
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "d2im_tf.cli", *argv], cwd=fx.ws, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr  # one line: no TF noise
    assert phrase in result.stderr
    assert snapshot(fx.ws, fx.toy) == before


# ------------------------------------------------------------------------------------------
# Recovery: what an interrupted command leaves behind is cleaned up or continued, never mixed.


def test_export_removes_the_staging_folder_of_a_killed_export(tmp_path):
    from d2im_tf.deploy.export import remove_stale_staging

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".1.{int(dead.stdout)}.x7k2"  # an export killed while writing version 1
    (stale / "model" / "variables").mkdir(parents=True)
    live = tmp_path / f".2.{os.getpid()}.a9q3"  # an export still running
    live.mkdir()
    version = tmp_path / "1"
    version.mkdir()
    remove_stale_staging(tmp_path)
    assert not stale.exists() and live.exists() and version.exists()


def test_make_data_runs_again_only_with_the_same_settings(tmp_path):
    from d2im_tf.cli import build_parser
    from d2im_tf.commands.make_data import RECORD, check_out_folder, settings_record
    from d2im_tf.errors import UserError

    def record(*extra):
        return settings_record(build_parser("make-data").parse_args(["make-data", "--out", str(tmp_path), *extra]))

    check_out_folder(tmp_path, record("--seed", "1"))  # empty: fine
    (tmp_path / RECORD).write_text(json.dumps(record("--seed", "1", "--workers", "1")))
    (tmp_path / "splits").mkdir()
    check_out_folder(tmp_path, record("--seed", "1", "--workers", "2"))  # the same dataset, more workers: fine
    with pytest.raises(UserError, match="made with --seed 1, not 2"):
        check_out_folder(tmp_path, record("--seed", "2"))
    grown = ("--seed", "1", "--shapes-per-category", "10", "--extra-train-shapes")
    with pytest.raises(UserError, match="did not finish .no split lists.; run that command again"):
        check_out_folder(tmp_path, record(*grown, "5"))
    for category in record()["categories"]:
        for split in ("train", "test"):
            (tmp_path / "splits" / f"{category}_{split}.lst").write_text("")
    assert check_out_folder(tmp_path, record(*grown, "5")) == 10  # a finished dataset grows: write shape 10 on
    (tmp_path / RECORD).write_text(json.dumps(record(*grown, "5")))
    assert check_out_folder(tmp_path, record(*grown, "5")) == 0  # the same command again: no growth
    assert check_out_folder(tmp_path, record(*grown, "7")) == 15
    with pytest.raises(UserError, match="made with --extra-train-shapes 5, not 3"):
        check_out_folder(tmp_path, record(*grown, "3"))
    with pytest.raises(UserError, match="made with --extra-train-shapes 5, not 0"):
        check_out_folder(tmp_path, record("--seed", "1", "--shapes-per-category", "10"))
    with pytest.raises(UserError, match="made with --seed 1, not 2"):  # growing needs every other setting equal
        check_out_folder(tmp_path, record("--seed", "2", "--shapes-per-category", "10", "--extra-train-shapes", "7"))


# ------------------------------------------------------------------------------------------
# A full disk: the write that fails raises ENOSPC as the kernel would; the command says so on one line
# naming the path, exits with 2 and leaves nothing (no empty output folder, no staging folder).


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def tf_no_space(*args, **kwargs):  # what TensorFlow's C++ writers raise when the disk is full
    import tensorflow as tf

    raise tf.errors.ResourceExhaustedError(None, None, "saved_model.pb; No space left on device")


FULL_DISK = {
    # (the function whose write fails, what it raises, argv, the path the line names)
    "reconstruct": (
        "trimesh.Trimesh.export",
        no_space,
        lambda fx: reconstruct(fx, "--camera", VIEW, "-o", str(fx.ws / "o" / "x")),
        "o/x/photo.obj",
    ),
    "convert": (
        "pathlib.Path.write_bytes",
        no_space,
        lambda fx: ["convert", str(fx.model), "--to", "tflite", "-o", str(fx.ws / "o" / "lite")],
        "o/lite",
    ),
    "export": (
        "keras.src.export.saved_model_export_archive.SavedModelExportArchive.write_out",
        tf_no_space,
        lambda fx: ["export", "--checkpoint", str(fx.sdf_run), "--out", str(fx.ws / "o" / "m")],
        "o/m/1",
    ),
}


@pytest.mark.parametrize("command", list(FULL_DISK))
def test_a_full_disk_is_one_line_and_leaves_nothing(command, shared, tmp_path, capsys, monkeypatch):
    target, failure, setup, named = FULL_DISK[command]
    fx = Fixtures(ws=tmp_path / "ws", **shared)
    fx.ws.mkdir()
    argv = setup(fx)
    before = snapshot(fx.ws, fx.toy, fx.sdf_run, fx.model.parent)
    module, _, attribute = target.rpartition(".")
    owner = module.rpartition(".")
    monkeypatch.setattr(getattr(__import__(owner[0], fromlist=[owner[2]]), owner[2]), attribute, failure)
    capsys.readouterr()
    code = main(argv)
    _, err = capsys.readouterr()
    assert code == 2, err
    errors = [line for line in err.splitlines() if not line.startswith("warning: ")]  # (a blank image)
    assert errors == [f"error: {fx.ws / named}: cannot write (No space left on device)"], err
    assert snapshot(fx.ws, fx.toy, fx.sdf_run, fx.model.parent) == before
