"""What can be checked of the TF Serving path without a model server: ``saved_model_cli show --all``
lists every signature of the export, ``saved_model_cli run`` in a clean process gives the outputs of
``tf.saved_model.load`` for the two that clients call (``serving_default``, ``sdf_predicted_camera``)
and for ``fuse``, the one with the most inputs, and a ``PredictRequest`` of ``tensorflow-serving-api``
for ``serving_default`` (what the gRPC example of docs/deployment.md sends) carries the inputs the signature takes."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from test_convert import parity_inputs

SAVED_MODEL_CLI = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def signature_inputs(loaded, name: str, image, points, projection) -> dict:
    """Inputs for signature ``name`` of the loaded SavedModel ``loaded``: the image, points and projection,
    or encode's outputs for the decodes."""
    available = {"image": image, "points": points[None], "projection": projection}
    if name in ("decode", "decode_bounds", "fuse"):
        encoded = loaded.signatures["encode"](image=tf.constant(image))
        available.update({key: value.numpy() for key, value in encoded.items()})
    if name == "fuse":
        bounds = loaded.signatures["decode_bounds"](
            **{key: tf.constant(value) for key, value in available.items() if key != "image"}
        )
        available.update({key: value.numpy() for key, value in bounds.items()})
    return {key: available[key] for key in loaded.signatures[name].structured_input_signature[1]}


@pytest.fixture(scope="module")
def exported(tiny_export):
    return tiny_export("full", "none", with_camera=True).path


@pytest.mark.slow
def test_saved_model_cli_shows_every_signature_and_runs_three(exported, tmp_path):
    shown = subprocess.run(
        [*SAVED_MODEL_CLI, "show", "--all", "--dir", str(exported)], capture_output=True, text=True, timeout=300
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    signatures = ["serving_default", "encode", "decode", "decode_bounds", "fuse", "camera", "sdf_predicted_camera"]
    for name in signatures:
        assert f"signature_def['{name}']" in shown.stdout
    image, points, projection = parity_inputs(32, 500)
    loaded = tf.saved_model.load(str(exported))
    # Each run is a fresh process importing TensorFlow (~12 s); the other signatures load the same way.
    for name in ("serving_default", "sdf_predicted_camera", "fuse"):
        inputs = signature_inputs(loaded, name, image, points, projection)
        files = []
        for key, value in inputs.items():
            np.save(tmp_path / f"{name}_{key}.npy", value)
            files.append(f"{key}={tmp_path / f'{name}_{key}.npy'}")
        outdir = tmp_path / f"out_{name}"
        run = subprocess.run(
            [
                *SAVED_MODEL_CLI,
                "run",
                "--dir",
                str(exported),
                "--tag_set",
                "serve",
                "--signature_def",
                name,
                "--inputs",
                ";".join(files),
                "--outdir",
                str(outdir),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        expected = loaded.signatures[name](**{key: tf.constant(value) for key, value in inputs.items()})
        assert {path.stem for path in outdir.glob("*.npy")} == set(expected)
        for key, value in expected.items():
            np.testing.assert_allclose(np.load(outdir / f"{key}.npy"), value.numpy(), rtol=1e-5, atol=1e-4)


def test_predict_request_for_serving_default(exported):
    """The gRPC request of docs/deployment.md, built with tensorflow-serving-api, and the REST body."""
    from tensorflow_serving.apis import predict_pb2

    image, points, projection = parity_inputs(32, 100)
    loaded = tf.saved_model.load(str(exported))
    inputs = signature_inputs(loaded, "serving_default", image, points, projection)
    assert sorted(inputs) == ["image", "points", "projection"]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "d2im"
    request.model_spec.signature_name = "serving_default"
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value, dtype=tf.float32))
    decoded = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    for key, value in inputs.items():
        np.testing.assert_array_equal(tf.make_ndarray(decoded.inputs[key]), value)
    assert list(decoded.inputs["image"].tensor_shape.dim[i].size for i in range(4)) == [1, 32, 32, 3]
    # REST: {"signature_name": ..., "inputs": {name: nested lists}} (the columnar format)
    body = json.loads(
        json.dumps(
            {"signature_name": "serving_default", "inputs": {key: value.tolist() for key, value in inputs.items()}}
        )
    )
    outputs = loaded.signatures["serving_default"](
        **{key: tf.constant(value, tf.float32) for key, value in body["inputs"].items()}
    )
    assert outputs["sdf"].shape == (1, 100)
