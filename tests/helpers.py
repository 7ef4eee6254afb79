"""Helpers the tests share that the package itself does not need (fixtures are in conftest.py)."""

import hashlib
import inspect
import json
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from d2im_tf.data import disn_format as fmt
from d2im_tf.models.d2im import VARIANT_SPECS


def unproject(uv, depth, projection):
    """The inverse of :func:`d2im_tf.geometry.camera.project`: pixels ``[..., N, 2]`` and depths
    ``[..., N]`` back to points ``[..., N, 3]`` of the frame ``projection`` ``[..., 3, 4]`` projects."""
    uv = tf.convert_to_tensor(uv)
    depth = tf.cast(depth, uv.dtype)
    projection = tf.cast(projection, uv.dtype)
    homogeneous = tf.concat([uv * depth[..., None], depth[..., None]], axis=-1)  # [..., N, 3]
    shifted = homogeneous - projection[..., None, :, 3]
    # Solve M p = shifted for each point: p = shifted · M^-T.
    return tf.matmul(shifted, tf.linalg.inv(projection[..., :3]), transpose_b=True)


def read_depth(path) -> tuple[np.ndarray, np.ndarray]:
    """A 16-bit depth PNG as the generator writes it (:func:`d2im_tf.data.disn_format.write_depth`) →
    (depth float32 ``[H, W]``, mask bool ``[H, W]``)."""
    image = fmt.open_image(path)
    raw = np.asarray(image)
    assert raw.ndim == 2 and raw.dtype in (np.uint16, np.int32, np.uint8), f"{path}: mode {image.mode}"
    raw = raw.astype(np.int64)
    return (raw / fmt.DEPTH_SCALE).astype(np.float32), raw > 0


# ------------------------------------------------------------------------------------------
# Keras objects: config and .keras round trips, parameter counts by formula


class Parameters(NamedTuple):
    """Weights of a Keras object counted by kind: trainable, and non-trainable (batch-norm statistics)."""

    trainable: int
    non_trainable: int = 0

    def __add__(self, other):
        return Parameters(self.trainable + other.trainable, self.non_trainable + other.non_trainable)

    @classmethod
    def of(cls, obj) -> "Parameters":
        """The counts of a built layer or model."""

        def count(weights):
            return sum(int(np.prod(weight.shape)) for weight in weights)

        return cls(count(obj.trainable_weights), count(obj.non_trainable_weights))


def dense(inputs: int, outputs: int, bias: bool = True) -> Parameters:
    return Parameters(inputs * outputs + (outputs if bias else 0))


def conv(kernel: int, inputs: int, outputs: int, bias: bool = True) -> Parameters:
    return Parameters(kernel * kernel * inputs * outputs + (outputs if bias else 0))


def batch_norm(channels: int) -> Parameters:
    """γ, β trainable; moving mean and variance not."""
    return Parameters(2 * channels, 2 * channels)


def total(parts) -> Parameters:
    return sum(parts, Parameters(0))


def conv_bn(kernel: int, inputs: int, outputs: int) -> Parameters:
    """:func:`d2im_tf.models.encoder.conv_bn`: a bias-free convolution and a batch norm."""
    return conv(kernel, inputs, outputs, bias=False) + batch_norm(outputs)


def basic_block(inputs: int, filters: int, project: bool) -> Parameters:
    return (
        conv_bn(3, inputs, filters)
        + conv_bn(3, filters, filters)
        + (conv_bn(1, inputs, filters) if project else Parameters(0))
    )


def resnet18(width: int, global_dim: int | None, embedding: int = 1000) -> Parameters:
    """Stem 7×7 (3 → w), four stages of two basic blocks (w, 2w, 4w, 8w; the first block of the strided
    stages projects its shortcut), dense 8w → 1000, dense 1000 → global_dim."""
    parts, channels = [conv_bn(7, 3, width)], width
    for multiplier in (1, 2, 4, 8):
        filters = width * multiplier
        parts += [basic_block(channels, filters, project=multiplier != 1), basic_block(filters, filters, False)]
        channels = filters
    parts.append(dense(channels, embedding))
    if global_dim is not None:
        parts.append(dense(embedding, global_dim))
    return total(parts)


def feature_channels(width: int) -> list[int]:
    """Channels of the encoder's f0…f4."""
    return [width, width, 2 * width, 4 * width, 8 * width]


def implicit_decoder(code: int, widths, point_frequencies: int = 0) -> Parameters:
    """Each of the five layers sees the point (3 + 6L values) beside the previous output (the code for
    the first); then a dense w4 → w4 and a dense w4 → 1."""
    point = 3 + 6 * point_frequencies
    inputs = [code, *widths[:-1]]
    return total(
        [dense(n + point, w) for n, w in zip(inputs, widths)] + [dense(widths[-1], widths[-1]), dense(widths[-1], 1)]
    )


def global_local_decoder(code: int, local: int, widths, point_frequencies: int = 0) -> Parameters:
    """Point MLP (P → w3 → w1 → w0), and two streams (w0 + code or w0 + local channels → w0 → w1 → 1)."""
    point = 3 + 6 * point_frequencies
    w = widths
    mlp = [dense(point, w[3]), dense(w[3], w[1]), dense(w[1], w[0])]
    streams = [dense(w[0] + side, w[0]) + dense(w[0], w[1]) + dense(w[1], 1) for side in (code, local)]
    return total(mlp + streams)


def detail_decoder(features: list[int], channels: int, out_channels: int) -> Parameters:
    """A 1×1 lateral conv per level, a 1×1 top-down conv per level but the last, a 3×3 smoothing conv and
    a 1×1 output conv, all with biases."""
    return total(
        [conv(1, c, channels) for c in features]
        + [conv(1, channels, channels)] * (len(features) - 1)
        + [conv(3, channels, channels), conv(1, channels, out_channels)]
    )


def vgg16(width: int, image_size: int, embedding: int = 1000) -> Parameters:
    """Configuration D: 2, 2, 3, 3, 3 3×3 convs of w, 2w, 4w, 8w, 8w channels, a 2× pool after each
    stage; dense (S/32)²·8w → h → h → 1000 with h = 4096·w/64."""
    parts, channels = [], 3
    for count, multiplier in ((2, 1), (2, 2), (3, 4), (3, 8), (3, 8)):
        for _ in range(count):
            parts.append(conv(3, channels, width * multiplier))
            channels = width * multiplier
    hidden = 4096 * width // 64
    flat = (image_size // 32) ** 2 * channels
    return total(parts + [dense(flat, hidden), dense(hidden, hidden), dense(hidden, embedding)])


def pose_head(inputs: int, outputs: int) -> Parameters:
    return dense(inputs, 512) + batch_norm(512) + dense(512, 256) + batch_norm(256) + dense(256, outputs)


def camera_net(config) -> Parameters:
    """:class:`~d2im_tf.models.camera_net.CameraNet` of a :class:`~d2im_tf.config.CameraConfig`."""
    backbone = vgg16(config.width, config.image_size) if config.backbone == "vgg16" else resnet18(config.width, None)
    return backbone + pose_head(1000, 6) + pose_head(1000, 1 if config.translation == "distance" else 3)


def d2im_net(config) -> Parameters:
    """:class:`~d2im_tf.models.d2im.D2IMNet` of a :class:`~d2im_tf.config.ModelConfig`."""
    spec, code = VARIANT_SPECS[config.variant], config.global_dim
    parts = [resnet18(config.encoder_width, code)]
    norms = {"none": Parameters(0), "batch": batch_norm(code), "layer": Parameters(2 * code)}
    parts.append(norms[config.code_norm])
    if spec.global_local:
        local = sum(feature_channels(config.encoder_width))
        parts.append(global_local_decoder(code, local, config.decoder_widths, config.point_frequencies))
    else:
        parts.append(implicit_decoder(code, config.decoder_widths, config.point_frequencies))
    if spec.maps:
        parts.append(detail_decoder(feature_channels(config.encoder_width), config.detail_channels, spec.maps))
    return total(parts)


def _call(obj, inputs: tuple):
    """``obj(*inputs)``, in inference mode where the call takes ``training``."""
    if "training" in inspect.signature(obj.call).parameters:
        return obj(*inputs, training=False)
    return obj(*inputs)


def _flat(outputs) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(value, np.float64)) for value in tf.nest.flatten(outputs)])


def check_keras_object(original, inputs: tuple, parameters: Parameters, folder) -> None:
    """The checks every model and layer of :mod:`d2im_tf.models` passes:

    * ``get_config`` round trip: ``from_config`` rebuilds an object with the same config and, once
      called, the same weights' shapes;
    * its exact parameter count (trainable, non-trainable) equals ``parameters``, derived from the layer
      sizes by formula;
    * saved to ``.keras`` and loaded back (a layer inside a functional model), it computes the same
      outputs on ``inputs``, with every weight first set to seeded random values (so that a loader that
      kept fresh initial weights or statistics could not pass).
    """
    import keras

    config = original.get_config()
    clone = type(original).from_config(config)
    assert clone.get_config() == config
    _call(original, inputs)
    _call(clone, inputs)
    assert [tuple(w.shape) for w in clone.weights] == [tuple(w.shape) for w in original.weights]
    assert Parameters.of(original) == parameters

    rng = np.random.default_rng(0)
    for weight in original.weights:
        values = rng.normal(0.0, 0.1, weight.shape)
        if "variance" in weight.path:
            values = 0.5 + np.abs(values)
        weight.assign(values.astype(weight.dtype))
    expected = _flat(_call(original, inputs))
    if isinstance(original, keras.Model):
        target = original
    else:
        symbolic = tf.nest.map_structure(lambda t: keras.Input(batch_shape=(None, *t.shape[1:])), inputs)
        target = keras.Model(list(symbolic) if len(symbolic) > 1 else symbolic[0], _call(original, symbolic))
    path = Path(folder) / f"{type(original).__name__}.keras"
    with warnings.catch_warnings():  # Keras' own: NumPy 2's copy keyword, layers rebuilt in a functional model
        warnings.filterwarnings("ignore", message=r"__array__ implementation doesn't accept a copy keyword")
        warnings.filterwarnings("ignore", message=r"`build\(\)` was called on layer")
        target.save(path)
        loaded = keras.saving.load_model(path, custom_objects={type(original).__name__: type(original)})
    if isinstance(original, keras.Model):
        restored = _flat(_call(loaded, inputs))
    else:
        restored = _flat(loaded(list(inputs) if len(inputs) > 1 else inputs[0], training=False))
    assert len(restored) == len(expected)
    np.testing.assert_allclose(restored, expected, rtol=1e-6, atol=1e-6)


def fake_converted(folder: Path, target: str = "tflite", **changes) -> Path:
    """A converted folder whose d2im_runtime.json follows the schema (the model files hold no model);
    ``changes``: top-level keys replaced."""
    from d2im_tf.deploy import convert as conversion

    folder.mkdir(parents=True, exist_ok=True)
    models = {}
    for part in ("encode", "decode"):
        if target == "tflite":
            files = {precision: conversion.tflite_file(part, precision) for precision in ("float32", conversion.SMALL)}
        else:
            files = {"float32": f"{part}/model.json"}
        for name in files.values():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text("{}")
        models[part] = {
            "files": files,
            "inputs": {"image": {"shape": [1, 32, 32, 3], "dtype": "float32"}},
            "outputs": {"sdf": {"shape": [1, 16], "dtype": "float32"}},
        }
    description = {
        "format": target,
        "format_version": conversion.FORMAT_VERSION,
        "source": "x",
        "model": {"image_size": 32, "sdf_scale": 10.0, "frame": "normalised", "image_reading": "white"},
        "chunk_points": 16,
        "models": models,
        **changes,
    }
    (folder / conversion.DESCRIPTION_FILE).write_text(json.dumps(description))
    return folder


def tfjs_graph(folder: Path, shard_bytes: int, weights: int = 10) -> None:
    """``folder/model.json`` (one float32 weight of ``weights`` values) and its shard of ``shard_bytes``."""
    (folder / "model.json").write_text(
        json.dumps(
            {
                "weightsManifest": [
                    {
                        "paths": ["group1-shard1of1.bin"],
                        "weights": [{"name": "w", "shape": [weights], "dtype": "float32"}],
                    }
                ]
            }
        )
    )
    (folder / "group1-shard1of1.bin").write_bytes(bytes(shard_bytes))


def file_hashes(root) -> dict:
    """SHA-256 of every file under ``root``, keyed by its path relative to ``root`` (POSIX)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }
