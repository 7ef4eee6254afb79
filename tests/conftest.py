"""Shared test fixtures: a toy DISN-layout dataset written with the layout's own writers, the same with
ground-truth meshes, a tiny SDF network trained on it and exported, and tiny random-weight exports of
each kind of network."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import fcntl  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import trimesh  # noqa: E402

from d2im_tf.data import disn_format as fmt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]  # the repository; the tests' one definition

TOY_CATEGORY = "03001627"
TOY_SAMPLES = 3000
TOY_FAR_SAMPLES = 500


def write_toy_dataset(root, shapes=("a", "b", "c"), views=4, image_size=48, test_shapes=("t",)):
    """Spheres of radius 0.3 (normalised frame) with different norm params; random images.

    Norm params of shape i: c = (0.01·i, 0, −0.02), m = 0.5 + 0.1·i; view v of shape i has azimuth
    90·v + 10·i, elevation 15 + 5·v, distance ratio 0.7. Samples are uniform in [−0.5, 0.5]³ with the
    sphere's exact SDF, unit gradients and random densities; far-field samples are uniform in
    [−1, 1]³ with the same exact SDF and gradients.
    """
    layout = fmt.DatasetLayout(root)
    rng = np.random.default_rng(0)
    fmt.write_split(layout.split_path(TOY_CATEGORY, "train"), shapes)
    fmt.write_split(layout.split_path(TOY_CATEGORY, "test"), test_shapes)
    for i, shape in enumerate([*shapes, *test_shapes]):
        points = rng.uniform(-0.5, 0.5, (TOY_SAMPLES, 3)).astype(np.float32)
        sdf = (np.linalg.norm(points, axis=1) - 0.3).astype(np.float32)
        gradients = (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)
        far = rng.uniform(-1.0, 1.0, (TOY_FAR_SAMPLES, 3)).astype(np.float32)
        far_sdf = (np.linalg.norm(far, axis=1) - 0.3).astype(np.float32)
        surface = rng.normal(size=(500, 3))
        surface = (0.3 * surface / np.linalg.norm(surface, axis=1, keepdims=True)).astype(np.float32)
        fmt.write_samples(
            layout.samples_path(TOY_CATEGORY, shape),
            fmt.SdfSamples(
                np.column_stack([points, sdf]),
                np.array([0.01 * i, 0.0, -0.02, 0.5 + 0.1 * i]),
                surface_points=surface,
                gradients=gradients,
                density=rng.uniform(0.1, 1.0, TOY_SAMPLES).astype(np.float32),
                far_samples=np.column_stack([far, far_sdf]),
                far_gradients=(far / np.linalg.norm(far, axis=1, keepdims=True)).astype(np.float32),
            ),
        )
        fmt.write_metadata(
            layout.metadata_path(TOY_CATEGORY, shape),
            [[90 * v + 10 * i, 15 + 5 * v, 0, 0.7, 35, 32, 1.75, 0, 0, 0] for v in range(views)],
        )
        for v in range(views):
            fmt.write_png(
                layout.image_path(TOY_CATEGORY, shape, v),
                rng.integers(0, 256, (image_size, image_size, 4), dtype=np.uint8),
            )
            normals = rng.normal(size=(image_size, image_size, 3))
            fmt.write_normal_map(
                layout.normal_path(TOY_CATEGORY, shape, v), normals / np.linalg.norm(normals, axis=-1, keepdims=True)
            )
    return layout


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_data")
    write_toy_dataset(root)
    return root


@pytest.fixture(scope="session")
def data_with_meshes(toy_root, tmp_path_factory):
    """A copy of the toy dataset with GT meshes: spheres of radius 0.3 in the normalised frame,
    written in the world frame (xyz·m + c) from each shape's norm params."""
    root = tmp_path_factory.mktemp("toy_with_meshes") / "data"
    shutil.copytree(toy_root, root)
    layout = fmt.DatasetLayout(root)
    for split in ("train", "test"):
        for shape in fmt.read_split(layout.split_path(TOY_CATEGORY, split)):
            params = fmt.read_norm_params(layout.samples_path(TOY_CATEGORY, shape))
            sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.3 * params[3])
            sphere.apply_translation(params[:3])
            path = layout.mesh_path(TOY_CATEGORY, shape)
            path.parent.mkdir(parents=True, exist_ok=True)
            sphere.export(path)
    return root


@contextmanager
def built_once(tmp_path_factory, name: str):
    """A folder ``name`` shared by the pytest-xdist workers of a run (each has its own basetemp below the
    run's), held under an exclusive lock: the first worker builds into it, the others wait and reuse."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield base / name


@pytest.fixture(scope="session")
def model_dir(toy_root, tmp_path_factory) -> Path:
    """A tiny SDF network trained one epoch of 40 steps on the toy spheres and exported, once per test
    run (shared by the xdist workers). 40 steps rather than the tiny config's 4 so that its SDF reliably
    crosses zero in the box. Read-only for the tests: its run folder is also another run's init_from."""
    with built_once(tmp_path_factory, "tiny_model") as base:
        export = base / "export"
        if not (export / "1" / "saved_model.pb").exists():
            _train_tiny_model(toy_root, base, export)
    return export


def _train_tiny_model(toy_root, base: Path, export: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "d2im_tf.cli",
        "train",
        "--config",
        "configs/tiny.yaml",
        "--set",
        f"data.root={toy_root}",
        "--set",
        f"data.categories=['{TOY_CATEGORY}']",
        "--set",
        f"train.out_dir={base / 'run'}",
        "--set",
        "train.epochs=1",
        "--set",
        "train.steps_per_epoch=40",
        "--no-progress",
        "--export",
        str(export),
    ]
    result = subprocess.run(
        command, cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]


TINY_MODEL = dict(image_size=32, encoder_width=8, global_dim=16, decoder_widths=[32, 16, 16, 8, 8], detail_channels=8)


def tiny_networks(variant: str, compat: str = "none", with_camera: bool = False, seed: int | None = None):
    """A tiny random-weight SDF network of ``variant`` and, ``with_camera``, a camera network (else None),
    built with their variables; ``seed`` defaults to one per ``compat``."""
    import keras

    from d2im_tf.config import CameraConfig, ModelConfig
    from d2im_tf.interop.import_torch import build_camera, build_d2im

    keras.utils.set_random_seed({"none": 1, "reference": 2}[compat] if seed is None else seed)
    sdf_model = build_d2im(ModelConfig(variant=variant, compat=compat, **TINY_MODEL))
    camera_model = None
    if with_camera:
        backbone = dict(backbone="vgg16", translation="distance") if compat == "reference" else {}
        camera_model = build_camera(CameraConfig(image_size=32, width=8, compat=compat, **backbone))
    return sdf_model, camera_model


@dataclass(frozen=True)
class TinyExport:
    """A tiny random-weight SavedModel (``path``: its version folder) and the networks it was exported from."""

    path: Path
    sdf: object  # D2IMNet
    camera: object  # CameraNet or None


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """``(variant, compat, with_camera)`` → :class:`TinyExport`, exported once per session (an export
    takes ~25 s; the conversion, serving and training tests share them)."""
    from d2im_tf.deploy.export import export_saved_model

    cache = {}

    def get(variant: str, compat: str = "none", with_camera: bool = False) -> TinyExport:
        key = (variant, compat, with_camera)
        if key not in cache:
            sdf_model, camera_model = tiny_networks(variant, compat, with_camera)
            folder = tmp_path_factory.mktemp(f"tiny_export_{variant}_{compat}")
            cache[key] = TinyExport(
                export_saved_model(sdf_model, folder / "saved", camera_model), sdf_model, camera_model
            )
        return cache[key]

    return get
