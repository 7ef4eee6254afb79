"""SavedModel export in TF Serving's layout: ``saved_models/<name>/<version>/``.

The exported model runs without this package (``tf.saved_model.load`` is enough). Signatures:

``serving_default`` (= ``sdf``)  image [B,S,S,3] float in [0,1], points [B,N,3] (the model's frame,
                                 below: normalised unless ``frame`` says world),
                                 projection [B,3,4] (that frame → pixels) → ``sdf``, ``base``
                                 [B,N] in SDF units (÷ ``sdf_scale`` for distances); test-time
                                 front/back split.
``encode``                       image → ``global_code`` [B,G], ``maps`` [B,S,S,2] (front, back
                                 displacement maps; zeros for variants without a detail decoder) and
                                 the encoder's feature maps ``f0``…``f4`` [B,S/2^k,S/2^k,C_k] (f0 at
                                 S/1) that the GL variant's decoder reads.
``decode``                       global_code, maps, f0…f4 (as ``encode`` returns them), points,
                                 projection → ``sdf``, ``base``: encode once, decode many chunks.
``decode_bounds``                the same inputs → ``base`` [B,N] and ``displacements`` [B,N,2]
                                 (front, back at the points' projections) without the front/back
                                 split: one decoder pass, ``sdf`` lies between base + either one.
``fuse``                         the same inputs and ``base`` [B,N], ``displacements`` [B,N,2] (as
                                 ``decode_bounds`` returns them) → ``sdf``: the front/back split's
                                 second pass only, so bounds + fuse cost what ``decode`` costs.
``camera`` (with a camera net)   image → ``rotation`` [B,3,3], ``translation`` [B,3] and
                                 ``projection`` [B,3,4] = K·[R|t] of the model's frame.
``sdf_predicted_camera`` (idem)  image, points → ``sdf``, ``base`` through the predicted camera.

``assets.extra/d2im.json`` beside the SavedModel records the image size, SDF scale, variant and
camera mode, so a client knows how to prepare its inputs, and for every model:

``compat``          ``"none"``, or ``"reference"`` for weights imported from the authors' release
``frame``           the frame of ``points`` and ``projection`` (and of the camera's pose):
                    ``"normalised"`` (this project's models) or ``"world"`` (ShapeNet's frame, where
                    the authors' decoder works; the reference's test box is [-0.5, 0.5]³ there)
``image_reading``   how an image file becomes ``image``: ``"white"`` (RGBA composited on white, the
                    project's renders) or ``"reference"`` (alpha dropped so DISN's transparent
                    background reads black, as the authors' OpenCV reading); RGB in [0, 1] either way
``lipschitz``       a bound on the base field's slope (model units per unit of ``frame``) for
                    coarse-to-fine extraction: 2·sdf_scale in the normalised frame; 4·sdf_scale in the
                    world frame, where the normalised SDF × 10 changes 1/m times faster (m ≈ 0.5)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from d2im_tf.errors import UserError, writing
from d2im_tf.io import check_output_dir, new_folders, process_alive
from d2im_tf.models.camera_net import CameraNet
from d2im_tf.models.d2im import D2IMNet


def next_version(base: Path) -> int:
    """1 + the largest integer version folder under ``base`` (TF Serving serves the largest)."""
    versions = [int(p.name) for p in Path(base).glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def model_frame(model) -> str:
    """The frame a :class:`D2IMNet` or :class:`CameraNet` works in: ``"world"`` in the reference mode."""
    config = model.model_config if isinstance(model, D2IMNet) else model.camera_config
    return "world" if config.compat == "reference" else "normalised"


def model_description(
    sdf_model: D2IMNet, camera_model: CameraNet | None = None, framing_object_size: float = 0.0
) -> dict:
    """The content of ``assets.extra/d2im.json`` (module docstring); ``framing_object_size`` (the training
    config's ``data.framing_object_size``) is recorded when > 0, for the reconstruction to re-frame to."""
    reference = sdf_model.model_config.compat == "reference"
    framing = {"framing_object_size": float(framing_object_size)} if framing_object_size else {}
    return {
        **framing,
        "image_size": sdf_model.model_config.image_size,
        "sdf_scale": sdf_model.sdf_scale,
        "variant": sdf_model.model_config.variant,
        "has_camera": camera_model is not None,
        "compat": sdf_model.model_config.compat,
        "frame": model_frame(sdf_model),
        "image_reading": "reference" if reference else "white",
        "lipschitz": (4.0 if reference else 2.0) * sdf_model.sdf_scale,
    }


def version_folder(out_base, version: int | None = None) -> Path:
    """The folder an export will write, ``out_base/<version>`` (default: the next free version);
    :class:`UserError` if the version is not a positive integer, is taken, or ``out_base`` is unusable.
    Creates nothing."""
    out_base = check_output_dir(out_base, "model folder")
    if version is not None and version < 1:
        raise UserError(f"--version must be a positive integer (TF Serving's layout), got {version}")
    target = out_base / str(version or next_version(out_base))
    if target.exists():
        raise UserError(f"{target}: already exists; choose another --version or remove it")
    return target


def remove_stale_staging(out_base: Path) -> None:
    """Delete the staging folders ``.<version>.<pid>.*`` left by exports that were killed."""
    for folder in Path(out_base).glob(".*.*.*"):
        parts = folder.name.split(".")
        if folder.is_dir() and len(parts) >= 4 and parts[1].isdigit() and parts[2].isdigit():
            if not process_alive(int(parts[2])):
                shutil.rmtree(folder, ignore_errors=True)


def store_each_weight_once(archive: keras.export.ExportArchive) -> None:
    """Make the archive's variable lists hold the ``tf.Variable`` s themselves, not their Keras wrappers.

    ``ExportArchive.track`` lists a model's Keras variables, and writing the archive lists the
    ``tf.Variable`` s its endpoints capture (``_all_variables``). The two are different trackable
    objects holding the same value, so the checkpoint would store every weight twice; with one object
    per weight in both lists, each is stored once (and ``.variables`` of the reloaded model still works).
    """
    holder = archive._tf_trackable  # noqa: SLF001 (Keras keeps the tracked lists here)
    for name in ("variables", "trainable_variables", "non_trainable_variables"):
        setattr(
            holder,
            name,
            [getattr(v, "value", v) if isinstance(v, keras.Variable) else v for v in getattr(holder, name)],
        )


def export_saved_model(
    sdf_model: D2IMNet,
    out_base,
    camera_model: CameraNet | None = None,
    version: int | None = None,
    framing_object_size: float = 0.0,
) -> Path:
    """Write ``out_base/<version>/`` (written to a temporary folder, then renamed); returns its path.

    The staging folder ``.<version>.<pid>.*`` of an export killed midway is removed by the next export."""
    if camera_model is not None and model_frame(camera_model) != model_frame(sdf_model):
        raise UserError(
            f"the camera network predicts the pose of the {model_frame(camera_model)} frame, the SDF "
            f"network works in the {model_frame(sdf_model)} frame: export them with matching "
            "compat settings"
        )
    target = version_folder(out_base, version)
    out_base, version = target.parent, int(target.name)
    size = sdf_model.model_config.image_size
    image_spec = tf.TensorSpec([None, size, size, 3], tf.float32, name="image")
    points_spec = tf.TensorSpec([None, None, 3], tf.float32, name="points")
    projection_spec = tf.TensorSpec([None, 3, 4], tf.float32, name="projection")

    def sdf(image, points, projection):
        encoding = sdf_model.encode(image, training=False)
        outputs = sdf_model.decode(encoding, points, projection)
        return {"sdf": outputs["sdf"], "base": outputs["base"]}

    def encode(image):
        encoding = sdf_model.encode(image, training=False)
        maps = encoding.get("maps", tf.zeros(tf.concat([tf.shape(image)[:3], [2]], 0)))
        features = {f"f{level}": feature for level, feature in enumerate(encoding["features"])}
        return {"global_code": encoding["global_code"], "maps": maps, **features}

    def encoding_of(global_code, maps, f0, f1, f2, f3, f4):
        encoding = {"global_code": global_code, "features": [f0, f1, f2, f3, f4]}
        if sdf_model.detail_decoder is not None:
            encoding["maps"] = maps
        return encoding

    def decode(global_code, maps, f0, f1, f2, f3, f4, points, projection):
        outputs = sdf_model.decode(encoding_of(global_code, maps, f0, f1, f2, f3, f4), points, projection)
        return {"sdf": outputs["sdf"], "base": outputs["base"]}

    def decode_bounds(global_code, maps, f0, f1, f2, f3, f4, points, projection):
        base, displacements = sdf_model.decode_bounds(
            encoding_of(global_code, maps, f0, f1, f2, f3, f4), points, projection
        )
        return {"base": base, "displacements": displacements}

    def fuse(global_code, maps, f0, f1, f2, f3, f4, points, projection, base, displacements):
        sdf, _, _ = sdf_model.fuse(
            encoding_of(global_code, maps, f0, f1, f2, f3, f4), points, projection, base, displacements
        )
        return {"sdf": sdf}

    # Specs of encode's outputs, for decode's inputs: batch free, the rest static (the GL decoder
    # derives each map's stride from its width).
    probe = sdf_model.encode(tf.zeros([1, size, size, 3]), training=False)
    feature_specs = [
        tf.TensorSpec([None, *feature.shape[1:]], tf.float32, name=f"f{level}")
        for level, feature in enumerate(probe["features"])
    ]
    decode_specs = [
        tf.TensorSpec([None, probe["global_code"].shape[-1]], tf.float32, name="global_code"),
        tf.TensorSpec([None, size, size, 2], tf.float32, name="maps"),
        *feature_specs,
        points_spec,
        projection_spec,
    ]

    archive = keras.export.ExportArchive()
    archive.track(sdf_model)
    archive.add_endpoint("serving_default", sdf, input_signature=[image_spec, points_spec, projection_spec])
    archive.add_endpoint("encode", encode, input_signature=[image_spec])
    archive.add_endpoint("decode", decode, input_signature=decode_specs)
    archive.add_endpoint("decode_bounds", decode_bounds, input_signature=decode_specs)
    archive.add_endpoint(
        "fuse",
        fuse,
        input_signature=[
            *decode_specs,
            tf.TensorSpec([None, None], tf.float32, name="base"),
            tf.TensorSpec([None, None, 2], tf.float32, name="displacements"),
        ],
    )
    if camera_model is not None:
        archive.track(camera_model)

        def pose(image):
            outputs = camera_model(image, training=False)
            return {
                "rotation": outputs["rotation"],
                "translation": outputs["translation"],
                "projection": camera_model.projection(outputs),
            }

        def sdf_predicted_camera(image, points):
            return sdf(image, points, pose(image)["projection"])

        archive.add_endpoint("camera", pose, input_signature=[image_spec])
        archive.add_endpoint("sdf_predicted_camera", sdf_predicted_camera, input_signature=[image_spec, points_spec])
    store_each_weight_once(archive)
    info = model_description(sdf_model, camera_model, framing_object_size)
    with new_folders(out_base), writing(target):  # a full disk: one line, nothing left
        out_base.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(out_base)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.{os.getpid()}.", dir=out_base))
        try:
            archive.write_out(str(staging / "model"), verbose=False)
            (staging / "model" / "assets.extra").mkdir(exist_ok=True)
            (staging / "model" / "assets.extra" / "d2im.json").write_text(json.dumps(info, indent=2) + "\n")
            (staging / "model").rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
