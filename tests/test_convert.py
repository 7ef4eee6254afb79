"""``d2im convert`` and the runtime clients: parity of the converted models with the SavedModel.

The truth is the SavedModel's own output on the same inputs (an example image, 10,000 points, the
image's ground-truth view); nothing here hard-codes a model output, so a retrained bundled model of the
same architecture passes as well. Tiny models of every kind of graph (variants with and without maps,
the ``gl`` decoder, the reference mode's sampler and front/back step, both camera networks) are built
in the test with random weights.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from d2im_tf.cli import main
from d2im_tf.commands.reconstruct import BUNDLED_MODEL
from d2im_tf.deploy import convert as conversion
from d2im_tf.deploy.runtimes import TFLiteModel, runtime_reconstructor
from d2im_tf.evaluation import metrics
from d2im_tf.geometry import camera
from d2im_tf.geometry.frames import normalised_projection
from d2im_tf.inference.reconstruct import Reconstructor, prepare_image

from conftest import ROOT
from helpers import fake_converted, tfjs_graph

EXAMPLE = ROOT / "examples" / "03001627_syn00005.png"
EXAMPLE_VIEW = np.array([103.02614414, 2.94991742, 0, 0.60377771, 35, 32, 1.75, 0, 0, 0])  # examples/README.md
SDF_TOLERANCE = 1e-3  # SDF units (the model's ×10 scale)


def parity_inputs(image_size: int, count: int = 10_000, frame: str = "normalised", seed: int = 0):
    """The example image [1, S, S, 3], ``count`` points in the reconstruction box, its GT projection."""
    image = prepare_image(np.asarray(Image.open(EXAMPLE)), image_size)[None]
    world = camera.projection_from_metadata(EXAMPLE_VIEW, image_size)[None]  # [1, 3, 4]
    if frame == "world":
        projection, bound = world, 0.5
    else:
        projection, bound = normalised_projection(world, np.array([[0.0, 0.0, 0.0, 1.0]])), 1.0
    points = np.random.default_rng(seed).uniform(-bound, bound, (count, 3))
    return image.astype(np.float32), points.astype(np.float32), projection.astype(np.float32)


def saved_model_outputs(model_dir, image, points, projection) -> dict:
    """The SavedModel's encode, decode (all points in one call) and camera outputs, as NumPy."""
    loaded = tf.saved_model.load(str(model_dir))
    encoding = loaded.signatures["encode"](image=tf.constant(image))
    decoded = loaded.signatures["decode"](
        points=tf.constant(points[None]), projection=tf.constant(projection), **encoding
    )
    outputs = {name: value.numpy() for name, value in {**encoding, **decoded}.items()}
    if "camera" in loaded.signatures:
        outputs.update(
            {
                f"camera_{name}": value.numpy()
                for name, value in loaded.signatures["camera"](image=tf.constant(image)).items()
            }
        )
    return outputs


def runtime_outputs(model, image, points, projection) -> dict:
    """The same through a :class:`~d2im_tf.deploy.runtimes.RuntimeModel` (decode in chunks)."""
    encoding = model.encode(image)
    sdf, base = model.decode(encoding, points, projection)
    outputs = {**encoding, "sdf": sdf[None], "base": base[None]}
    if model.has_camera:
        outputs.update({f"camera_{name}": value for name, value in model.camera(image).items()})
    return outputs


def worst_differences(truth: dict, got: dict) -> dict:
    """Largest absolute difference per output the runtime returns."""
    return {name: float(np.abs(np.asarray(got[name]) - truth[name]).max()) for name in got}


def convert_bundled(tmp_path_factory, target: str) -> Path:
    """The bundled model converted by the CLI, as a user runs it; the output folder."""
    out = tmp_path_factory.mktemp("convert") / target
    assert main(["convert", str(BUNDLED_MODEL), "--to", target, "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def bundled_tflite(tmp_path_factory):
    return convert_bundled(tmp_path_factory, "tflite")


@pytest.mark.slow
def test_tflite_float32_matches_the_saved_model(bundled_tflite, capfd):
    description = json.loads((bundled_tflite / conversion.DESCRIPTION_FILE).read_text())
    size = description["model"]["image_size"]
    assert description["models"]["decode"]["inputs"]["points"]["shape"] == [1, description["chunk_points"], 3]
    image, points, projection = parity_inputs(size)
    truth = saved_model_outputs(BUNDLED_MODEL / "1", image, points, projection)
    capfd.readouterr()
    model = TFLiteModel(bundled_tflite, "float32")
    differences = worst_differences(truth, runtime_outputs(model, image, points, projection))
    assert "XNNPACK" not in capfd.readouterr().err  # LiteRT's INFO line is hidden (d2im_tf.quiet)
    print("TFLite float32, largest |difference| from the SavedModel:", differences)
    assert differences["sdf"] <= SDF_TOLERANCE and differences["base"] <= SDF_TOLERANCE
    assert differences["maps"] <= SDF_TOLERANCE
    assert differences["global_code"] <= 1e-3 * max(1.0, np.abs(truth["global_code"]).max())
    assert differences["camera_rotation"] <= 1e-4
    assert differences["camera_projection"] <= 1e-5 * np.abs(truth["camera_projection"]).max()


@pytest.mark.slow
def test_tflite_meshes_match(bundled_tflite):
    """Same extraction code: the float32 mesh is the SavedModel's; the float16-weight one is close (IoU)."""
    pixels = np.asarray(Image.open(EXAMPLE))
    reference = Reconstructor(BUNDLED_MODEL, resolution=64).reconstruct(pixels, EXAMPLE_VIEW).mesh
    float32, float16 = (
        runtime_reconstructor(bundled_tflite, "tflite", precision, resolution=64).reconstruct(pixels, EXAMPLE_VIEW)
        for precision in ("float32", "float16")
    )
    iou_float32 = metrics.iou(float32.mesh, reference, 64)
    iou_float16 = metrics.iou(float16.mesh, float32.mesh, 64)
    print(
        f"mesh IoU (64³ voxels, 64³ extraction): TFLite float32 vs SavedModel {iou_float32:.5f}, "
        f"float16 weights vs float32 {iou_float16:.5f}"
    )
    assert len(reference.faces) > 1000
    assert iou_float32 >= 0.999
    assert iou_float16 >= 0.98
    patterns = {"float32": "*[a-z].tflite", "float16": "*.float16.tflite"}
    sizes = {p: sum(f.stat().st_size for f in bundled_tflite.glob(patterns[p])) for p in ("float32", "float16")}
    assert sizes["float16"] < 0.6 * sizes["float32"], sizes


VARIANTS = [("full", "none", True), ("gl", "none", False), ("baseline", "none", False), ("noback", "reference", True)]


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory, tiny_export):
    """``(variant, compat, with_camera)`` → (tiny SavedModel, its TFLite folder, precisions), each built
    and converted once per module (chunks of 1024 points; float16 for ``full`` only, to save time)."""
    cache = {}

    def get(variant, compat, with_camera):
        key = (variant, compat, with_camera)
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"tiny_{variant}_{compat}")
            model_dir = tiny_export(variant, compat, with_camera).path
            precisions = ("float32", "float16") if variant == "full" else ("float32",)
            out = conversion.convert(model_dir, "tflite", folder / "tflite", chunk_points=1024, precisions=precisions)
            cache[key] = model_dir, out, precisions
        return cache[key]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("variant, compat, with_camera", VARIANTS)
def test_every_variant_converts_to_tflite(tiny_tflite, variant, compat, with_camera):
    model_dir, out, precisions = tiny_tflite(variant, compat, with_camera)
    description = json.loads((out / conversion.DESCRIPTION_FILE).read_text())
    encode_outputs = set(description["models"]["encode"]["outputs"])
    expected = {
        "full": {"global_code", "maps"},
        "noback": {"global_code", "maps"},
        "baseline": {"global_code"},
        "gl": {"global_code", "maps", "f0", "f1", "f2", "f3", "f4"},
    }[variant]
    assert encode_outputs == expected
    assert ("camera" in description["models"]) == with_camera
    frame = description["model"]["frame"]
    image, points, projection = parity_inputs(32, 1500, frame)  # two decode chunks, the last one padded
    truth = saved_model_outputs(model_dir, image, points, projection)
    for precision in precisions:
        got = runtime_outputs(TFLiteModel(out, precision), image, points, projection)
        differences = worst_differences(truth, got)
        print(variant, compat, precision, differences)
        if precision == "float32":
            assert max(value for name, value in differences.items() if name != "sdf") <= SDF_TOLERANCE, differences
            # The fused SDF switches maps where f_B(p + δv) − f_B(p) changes sign; a random model's
            # field is flat enough for a rounding difference to flip a rare point, and its random
            # maps (up to ~10 units) make that a jump: allow 1 point in 500 (the bundled model: none).
            assert np.mean(np.abs(got["sdf"] - truth["sdf"]) > SDF_TOLERANCE) <= 2e-3, differences
        else:  # random weights in float16: 3 significant digits
            scale = max(1.0, float(np.abs(truth["sdf"]).max()))
            assert differences["base"] <= 1e-2 * scale, differences


@pytest.mark.slow
def test_converted_graphs_use_builtins_only(tiny_tflite):
    """The lowering leaves no MatrixSolve/Cross (the camera centre of ``full``'s front/back split, the
    reference mode's step, the camera's 6D rotation), nor Einsum for TF.js; the TFLite files of those
    models were written with TFLITE_BUILTINS only (no SELECT_TF_OPS), so the conversion proves the rest."""
    for key in (("full", "none", True), ("noback", "reference", True)):
        model_dir, out, _ = tiny_tflite(*key)
        loaded = tf.saved_model.load(str(model_dir))
        original = {
            node.op
            for name in ("decode", "camera")
            for node in conversion.FrozenSignature(loaded.signatures[name]).graph_def.node
        }
        assert {"MatrixSolve", "Cross", "Einsum"} <= original, original  # what the rewrites are for
        for target, forbidden in (
            ("tflite", set(conversion.LOWERINGS)),
            ("tfjs", set(conversion.LOWERINGS) | set(conversion.TFJS_LOWERINGS)),
        ):
            parts = conversion.prepare_parts(loaded, chunk_points=64, target=target)
            ops = {op.type for part in parts for op in part.function.graph.get_operations()}
            assert not ops & forbidden, (key, target, ops & forbidden)
        assert sorted(path.name for path in out.glob("*.tflite")) == [
            name
            for part in ("camera", "decode", "encode")
            for name in sorted([f"{part}.tflite"] + ([f"{part}.float16.tflite"] if key[0] == "full" else []))
        ]


def test_solve_and_cross_rewrites_match_tensorflow():
    rng = np.random.default_rng(3)
    matrix = tf.constant(rng.normal(size=(5, 3, 3)) + 3 * np.eye(3), tf.float32)
    rhs = tf.constant(rng.normal(size=(5, 3, 2)), tf.float32)
    np.testing.assert_allclose(conversion._solve_3x3(matrix, rhs), tf.linalg.solve(matrix, rhs), rtol=1e-4, atol=1e-5)
    a, b = (tf.constant(rng.normal(size=(4, 3)), tf.float32) for _ in range(2))
    np.testing.assert_allclose(conversion._cross(a, b), tf.linalg.cross(a, b), atol=1e-6)


@pytest.mark.parametrize(
    "equation, shapes",
    [
        ("hk,bkwc,vw->bhvc", [(7, 6), (1, 6, 5, 2), (4, 5)]),  # the B-spline prefilter
        ("bnijc,bni,bnj->bnc", [(1, 9, 4, 4, 2), (1, 9, 4), (1, 9, 4)]),  # its tap weighting
        ("bkwc,hk->bwch", [(1, 6, 5, 2), (7, 6)]),
        ("bni,bnijc->bnjc", [(1, 9, 4), (1, 9, 4, 4, 2)]),  # TF's pairs
        ("ij,jk->ki", [(3, 4), (4, 5)]),
    ],
)
def test_einsum_rewrite_matches_tensorflow(equation, shapes):
    rng = np.random.default_rng(4)
    operands = [tf.constant(rng.normal(size=shape), tf.float32) for shape in shapes]
    np.testing.assert_allclose(
        conversion._einsum_by_broadcast(equation, *operands), tf.einsum(equation, *operands), rtol=1e-5, atol=1e-5
    )
    # Unknown sizes (the SavedModel's batch and point axes) become run-time shapes.
    traced = tf.function(
        lambda *xs: conversion._einsum_by_broadcast(equation, *xs),
        input_signature=[tf.TensorSpec([None] * len(shape), tf.float32) for shape in shapes],
    )
    np.testing.assert_allclose(traced(*operands), tf.einsum(equation, *operands), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="not lowered"):
        conversion._einsum_by_broadcast("ii->i", operands[0])


@pytest.fixture(scope="module")
def bundled_tfjs(tmp_path_factory):
    return convert_bundled(tmp_path_factory, "tfjs")


@pytest.mark.slow
def test_tfjs_in_node_matches_the_saved_model(bundled_tfjs):
    """The graph models run in Node 20 by @tensorflow/tfjs on its WebAssembly backend."""
    from d2im_tf.deploy.runtimes import TFJSModel

    description = json.loads((bundled_tfjs / conversion.DESCRIPTION_FILE).read_text())
    assert {part: spec["files"]["float32"] for part, spec in description["models"].items()} == {
        "encode": "encode/model.json",
        "decode": "decode/model.json",
        "camera": "camera/model.json",
    }
    decode_ops = {
        node["op"] for node in json.loads((bundled_tfjs / "decode" / "model.json").read_text())["modelTopology"]["node"]
    }
    assert "Einsum" not in decode_ops and "GatherV2" in decode_ops, decode_ops  # the wasm backend has no Einsum
    image, points, projection = parity_inputs(description["model"]["image_size"])
    truth = saved_model_outputs(BUNDLED_MODEL / "1", image, points, projection)
    model = TFJSModel(bundled_tfjs)
    try:
        assert model.backend == "wasm"
        differences = worst_differences(truth, runtime_outputs(model, image, points, projection))
    finally:
        model.close()
    print("TF.js (Node, wasm backend), largest |difference| from the SavedModel:", differences)
    assert differences["sdf"] <= SDF_TOLERANCE and differences["base"] <= SDF_TOLERANCE
    assert differences["maps"] <= SDF_TOLERANCE
    assert differences["camera_rotation"] <= 1e-4


@pytest.mark.slow
def test_tfjs_client_falls_back_to_cpu(bundled_tfjs, tmp_path, monkeypatch, capfd):
    """Without a usable wasm package the client starts on the pure-JS cpu backend and says so; asked
    for cpu, it uses cpu; an unknown backend is a one-line error."""
    from d2im_tf.deploy import runtimes, tfjs
    from d2im_tf.errors import UserError

    installed = tfjs.node_modules_dir() / "node_modules" / "@tensorflow"
    crippled = tmp_path / "modules"
    (crippled / "node_modules" / "@tensorflow").mkdir(parents=True)
    for package in installed.iterdir():  # everything but the wasm backend
        if package.name != "tfjs-backend-wasm":
            (crippled / "node_modules" / "@tensorflow" / package.name).symlink_to(package)
    for package in installed.parent.iterdir():
        if package.name != "@tensorflow":
            (crippled / "node_modules" / package.name).symlink_to(package)
    monkeypatch.setattr(runtimes, "node_modules_dir", lambda: crippled)
    model = runtimes.TFJSModel(bundled_tfjs)
    model.close()
    assert model.backend == "cpu"
    assert "wasm backend did not start" in capfd.readouterr().err
    monkeypatch.undo()
    model = runtimes.TFJSModel(bundled_tfjs, backend="cpu")
    model.close()
    assert model.backend == "cpu"
    with pytest.raises(UserError, match="backend must be one of"):
        runtimes.TFJSModel(bundled_tfjs, backend="webgl")


# ------------------------------------------------------------------------------------------
# A converted folder is checked against the schema of d2im_runtime.json before anything is loaded.


@pytest.mark.parametrize(
    "change, phrase",
    [
        ({"chunk_points": "many"}, "chunk_points: 'many' is not a whole number from 1 to 1048576"),
        ({"chunk_points": 0}, "chunk_points: 0 is not a whole number"),
        ({"format_version": 99}, "format_version: 99, expected 1"),
        (
            {"model": {"image_size": 33, "sdf_scale": 10.0, "frame": "normalised", "image_reading": "white"}},
            "model.image_size: 33 is not a multiple of 16 from 16 to 4096",
        ),
        (
            {"model": {"image_size": 32, "sdf_scale": float("nan"), "frame": "normalised", "image_reading": "white"}},
            "model.sdf_scale: nan is not a positive finite number",
        ),
        ({"models": {"encode": {}}}, "models: expected an object with encode, decode and optionally camera"),
    ],
)
def test_runtime_description_schema(tmp_path, change, phrase):
    from d2im_tf.deploy.runtimes import read_description
    from d2im_tf.errors import UserError

    read_description(fake_converted(tmp_path / "ok"))  # the unchanged folder passes
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'bad' / conversion.DESCRIPTION_FILE}: {phrase}")):
        read_description(fake_converted(tmp_path / "bad", **change))


@pytest.mark.parametrize(
    "name, phrase",
    [
        ("../../../../etc/passwd", "points outside the folder"),
        ("/etc/passwd", "is not a relative file name"),
        ("missing.tflite", "missing.tflite is missing"),
    ],
)
def test_runtime_file_names_stay_inside_the_folder(tmp_path, name, phrase):
    from d2im_tf.deploy.runtimes import read_description
    from d2im_tf.errors import UserError

    folder = fake_converted(tmp_path / "m")
    description = json.loads((folder / conversion.DESCRIPTION_FILE).read_text())
    description["models"]["decode"]["files"]["float32"] = name
    (folder / conversion.DESCRIPTION_FILE).write_text(json.dumps(description))
    with pytest.raises(
        UserError, match=re.escape(f"{conversion.DESCRIPTION_FILE}: models.decode.files.float32: ")
    ) as error:
        read_description(folder)
    assert phrase in str(error.value)


def test_a_truncated_tfjs_shard_is_named(tmp_path):
    from d2im_tf.deploy.runtimes import read_description
    from d2im_tf.errors import UserError

    folder = fake_converted(tmp_path / "m", "tfjs")
    for part in ("encode", "decode"):
        tfjs_graph(folder / part, 40)
    read_description(folder)
    tfjs_graph(folder / "decode", 24)  # 10 float32 values need 40 bytes
    with pytest.raises(
        UserError,
        match=re.escape(
            f"{folder / 'decode' / 'group1-shard1of1.bin'}: the weight shards "
            "hold 24 bytes, model.json needs 40 (truncated?)"
        ),
    ):
        read_description(folder)
    (folder / "decode" / "model.json").write_text('{"weightsManifest": [')
    with pytest.raises(UserError, match=re.escape(f"{folder / 'decode' / 'model.json'}: not a readable TF.js model")):
        read_description(folder)


@pytest.mark.slow
def test_tfjs_client_failures_name_the_file(tmp_path, monkeypatch):
    """What the Node client cannot load (here past the Python checks) is named in its one-line error."""
    from d2im_tf.deploy import runtimes
    from d2im_tf.errors import UserError

    folder = fake_converted(tmp_path / "m", "tfjs")
    for part in ("encode", "decode"):
        tfjs_graph(folder / part, 40)
    (folder / "encode" / "model.json").write_text('{"weightsManifest": [')
    monkeypatch.setattr(runtimes, "check_description", lambda description, folder: None)
    with pytest.raises(
        UserError, match=re.escape(f"{folder}: the TF.js client failed: {folder / 'encode' / 'model.json'}: ")
    ) as error:
        runtimes.TFJSModel(folder)
    assert "\n" not in str(error.value)
