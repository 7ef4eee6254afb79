"""Helpers the tests share that the package itself does not need (fixtures are in conftest.py)."""
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from d2im_tf.data import disn_format as fmt


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


def fake_converted(folder: Path, target: str = "tflite", **changes) -> Path:
    """A converted folder whose d2im_runtime.json follows the schema (the model files hold no model);
    ``changes``: top-level keys replaced."""
    from d2im_tf.inference import convert as conversion

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
        models[part] = {"files": files, "inputs": {"image": {"shape": [1, 32, 32, 3], "dtype": "float32"}},
                        "outputs": {"sdf": {"shape": [1, 16], "dtype": "float32"}}}
    description = {"format": target, "format_version": conversion.FORMAT_VERSION, "source": "x",
                   "model": {"image_size": 32, "sdf_scale": 10.0, "frame": "normalised", "image_reading": "white"},
                   "chunk_points": 16, "models": models, **changes}
    (folder / conversion.DESCRIPTION_FILE).write_text(json.dumps(description))
    return folder


def tfjs_graph(folder: Path, shard_bytes: int, weights: int = 10) -> None:
    """``folder/model.json`` (one float32 weight of ``weights`` values) and its shard of ``shard_bytes``."""
    (folder / "model.json").write_text(json.dumps({"weightsManifest": [
        {"paths": ["group1-shard1of1.bin"], "weights": [{"name": "w", "shape": [weights], "dtype": "float32"}]}]}))
    (folder / "group1-shard1of1.bin").write_bytes(bytes(shard_bytes))
