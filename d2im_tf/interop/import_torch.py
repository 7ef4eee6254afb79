"""PyTorch state dicts → this project's Keras models: the authors' D²IM-Net and camera network, and
torchvision's ImageNet ResNet18 / VGG16 as starting weights of the encoders.

Every import is a list of *assignments* ``(key, variable, transform)``; :func:`apply_state_dict`
checks the whole state dict before touching a variable: every key the model needs is present, every
tensor has the variable's shape after the layout change, and every key of the file is used (or is on
the short list of keys the authors' forward pass never reads). A failure is one line naming the file
and the key (:class:`WeightImportError`, exit code 2 in the CLI). Shapes are compared in PyTorch's
layout before any layout change, and NaN or Inf weights are refused. The file is read within bounds
derived from the network being imported (:func:`checkpoint_limits`), so a crafted file cannot make the
reader allocate more than a real checkpoint of that network would.

Layout changes (PyTorch → Keras): Linear ``[out, in]`` → ``[in, out]``; Conv ``[out, in, kh, kw]`` →
``[kh, kw, in, out]``; BatchNorm ``weight, bias, running_mean, running_var`` → ``gamma, beta,
moving_mean, moving_variance`` (``num_batches_tracked`` is unused). VGG's first classifier layer reads
the last feature map flattened channel-first (``c·49 + h·7 + w``) where Keras flattens channel-last, so
its input rows are permuted.

Module correspondence (the authors' names → :mod:`d2im_tf.models`):

========================================== ==================================================
``image_encoder.conv1``, ``bn1``           ``encoder.stem`` (7×7 stride-1 convolution, batch norm)
``image_encoder.layerS.B.conv1/bn1``, …    ``encoder.layerS`` block B ``conv1``, ``conv2``;
``downsample.0/1``                         ``shortcut`` (subsample + 1×1 conv, batch norm)
``image_encoder.fc``, ``fc1``              ``encoder.embedding`` (512→1000), ``global_code`` (1000→128)
``detail_decoder.cK_conv`` (K = 5…1)       ``detail_decoder.lateral_{K−1}`` (on f4 … f0)
``detail_decoder.up_convK`` (K = 5…2)      ``detail_decoder.top_down_{K−2}``
``detail_decoder.up_conv1``, ``up_conv0``  unused: defined by the authors, never called
``detail_decoder.p0_conv``, ``pred_disp``  ``detail_decoder.smooth``, ``maps``
``im_decoder.l1`` … ``l5``, ``l6``, ``l7`` ``base_decoder.dense_0`` … ``dense_4``, ``dense_last``, ``sdf``
``vgg.features.N``, ``vgg.classifier.N``   ``backbone`` convolutions in order, classifier denses
``m2_fc1``, ``bn3``, ``m2_fc2``, ``bn4``,  ``rotation_head`` (6D rotation)
``m2_fc3``
``m1_fc1``, ``bn1``, ``m1_fc2``, ``bn2``,  ``translation_head`` (distance)
``m1_fc3``
========================================== ==================================================
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from d2im_tf.config import CameraConfig, ModelConfig
from d2im_tf.errors import UserError
from d2im_tf.interop.torch_checkpoint import checkpoint_limits, load_checkpoint
from d2im_tf.models.camera_net import VGG16, CameraNet, PoseHead
from d2im_tf.models.d2im import D2IMNet
from d2im_tf.models.decoders import DetailDecoder, ImplicitDecoder
from d2im_tf.models.encoder import ResNet18

# Keys of the authors' D²IM-Net state dict that its forward pass never reads.
D2IM_UNUSED_KEYS = frozenset(f"detail_decoder.up_conv{k}.{p}" for k in (0, 1) for p in ("weight", "bias"))
# torchvision's ResNet18 stem: 7×7 with stride 2; the authors replace it by a new stride-1 convolution.
TORCHVISION_RESNET_UNUSED_KEYS = frozenset({"conv1.weight"})

Assignment = tuple[str, "tf.Variable", Callable[[np.ndarray], np.ndarray]]


class WeightImportError(UserError):
    """A state dict that does not fit the model: a missing, unused or mis-shaped key."""


def _same(array):
    return array


def _linear(array):  # [out, in] → [in, out]
    return array.T


def _conv(array):  # [out, in, kh, kw] → [kh, kw, in, out]
    return array.transpose(2, 3, 1, 0)


def reference_model_config() -> ModelConfig:
    """The authors' D²IM-Net: the paper's network in the reference-compatible mode."""
    return ModelConfig(variant="full", image_size=224, compat="reference")


def reference_camera_config() -> CameraConfig:
    """The authors' camera network: VGG16, distance head, reference-compatible mode."""
    return CameraConfig(backbone="vgg16", translation="distance", image_size=224, compat="reference")


# ---------------------------------------------------------------------------------------------
# Assignments per module


def _find(sequential, kind):
    found = [layer for layer in sequential.layers if isinstance(layer, kind)]
    assert len(found) == 1, (sequential.name, kind)
    return found[0]


def _dense(key: str, layer) -> list[Assignment]:
    return [(f"{key}.weight", layer.kernel, _linear), (f"{key}.bias", layer.bias, _same)]


def _conv2d(key: str, layer) -> list[Assignment]:
    out = [(f"{key}.weight", layer.kernel, _conv)]
    if layer.use_bias:
        out.append((f"{key}.bias", layer.bias, _same))
    return out


def _batch_norm(key: str, layer) -> list[Assignment]:
    return [
        (f"{key}.weight", layer.gamma, _same),
        (f"{key}.bias", layer.beta, _same),
        (f"{key}.running_mean", layer.moving_mean, _same),
        (f"{key}.running_var", layer.moving_variance, _same),
    ]


def _conv_bn(conv_key: str, bn_key: str, sequential) -> list[Assignment]:
    return _conv2d(conv_key, _find(sequential, keras.layers.Conv2D)) + _batch_norm(
        bn_key, _find(sequential, keras.layers.BatchNormalization)
    )


def resnet18_assignments(encoder: ResNet18, prefix: str = "", imagenet: bool = False) -> list[Assignment]:
    """torchvision's ResNet18 names (``conv1``, ``bn1``, ``layerS.B.*``, ``fc``) + the authors' ``fc1``.

    ``imagenet=True``: torchvision's own file, without the first convolution (torchvision's is stride
    2; the authors replace it) and without ``fc1`` (the authors' addition).
    """
    stem = not imagenet
    out = _conv2d(f"{prefix}conv1", _find(encoder.stem, keras.layers.Conv2D)) if stem else []
    out += _batch_norm(f"{prefix}bn1", _find(encoder.stem, keras.layers.BatchNormalization))
    for s, stage in enumerate(encoder.stages, start=1):
        for b, block in enumerate(stage.layers):
            key = f"{prefix}layer{s}.{b}"
            out += _conv_bn(f"{key}.conv1", f"{key}.bn1", block.conv1)
            out += _conv_bn(f"{key}.conv2", f"{key}.bn2", block.conv2)
            if block.shortcut is not None:
                out += _conv_bn(f"{key}.downsample.0", f"{key}.downsample.1", block.shortcut)
    out += _dense(f"{prefix}fc", encoder.embedding)
    if encoder.global_head is not None and not imagenet:
        out += _dense(f"{prefix}fc1", encoder.global_head)
    return out


def implicit_decoder_assignments(decoder: ImplicitDecoder, prefix: str = "im_decoder.") -> list[Assignment]:
    layers = [*decoder.hidden, decoder.penultimate, decoder.output_layer]
    return [a for index, layer in enumerate(layers, start=1) for a in _dense(f"{prefix}l{index}", layer)]


def detail_decoder_assignments(decoder: DetailDecoder, prefix: str = "detail_decoder.") -> list[Assignment]:
    out = []
    for level, layer in enumerate(decoder.lateral):  # c1_conv on f0 … c5_conv on f4
        out += _conv2d(f"{prefix}c{level + 1}_conv", layer)
    for level, layer in enumerate(decoder.top_down):  # up_conv2 … up_conv5
        out += _conv2d(f"{prefix}up_conv{level + 2}", layer)
    return out + _conv2d(f"{prefix}p0_conv", decoder.smooth) + _conv2d(f"{prefix}pred_disp", decoder.output_layer)


def d2im_assignments(model: D2IMNet) -> list[Assignment]:
    """The authors' ``D2IM_Net`` state dict onto a built :class:`D2IMNet` (variant ``full``)."""
    return (
        resnet18_assignments(model.encoder, "image_encoder.")
        + detail_decoder_assignments(model.detail_decoder)
        + implicit_decoder_assignments(model.base_decoder)
    )


def _flatten_permutation(kernel_shape, channels: int):
    """VGG's first classifier layer: PyTorch reads its input as (c, h, w), Keras as (h, w, c)."""
    inputs, outputs = kernel_shape
    side = int(round(np.sqrt(inputs // channels)))

    def transform(array):  # [out, c·h·w] → [h·w·c, out]; the shape was checked before
        return array.reshape(array.shape[0], channels, side, side).transpose(2, 3, 1, 0).reshape(-1, array.shape[0])

    return transform


def vgg16_assignments(vgg: VGG16, prefix: str = "") -> list[Assignment]:
    """torchvision's VGG16 names: ``features.N`` (N = index in its layer list) and ``classifier.N``."""
    out, index = [], 0
    for stage in vgg.stages:
        for layer in stage.layers:
            if isinstance(layer, keras.layers.Conv2D):
                out += _conv2d(f"{prefix}features.{index}", layer)
                index += 2  # conv, ReLU
        index += 1  # max-pool
    denses = [layer for layer in vgg.classifier.layers if isinstance(layer, keras.layers.Dense)]
    channels = vgg.width * VGG16.STAGES[-1][1]
    first = _flatten_permutation(tuple(denses[0].kernel.shape), channels)
    out += [
        (f"{prefix}classifier.0.weight", denses[0].kernel, first),
        (f"{prefix}classifier.0.bias", denses[0].bias, _same),
    ]
    for index, layer in zip((3, 6), denses[1:]):  # Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear
        out += _dense(f"{prefix}classifier.{index}", layer)
    return out


def _pose_head(head: PoseHead, dense_keys, bn_keys) -> list[Assignment]:
    out = []
    for key, layer in zip(dense_keys, [*head.hidden, head.output_layer]):
        out += _dense(key, layer)
    for key, layer in zip(bn_keys, head.norms):
        out += _batch_norm(key, layer)
    return out


def camnet_assignments(model: CameraNet) -> list[Assignment]:
    """The authors' ``CamNet`` state dict onto a built reference-compatible :class:`CameraNet`."""
    return (
        vgg16_assignments(model.backbone, "vgg.")
        + _pose_head(model.translation_head, ("m1_fc1", "m1_fc2", "m1_fc3"), ("bn1", "bn2"))
        + _pose_head(model.rotation_head, ("m2_fc1", "m2_fc2", "m2_fc3"), ("bn3", "bn4"))
    )


# ---------------------------------------------------------------------------------------------
# Checking and applying


def state_dict_of(obj, source) -> dict[str, np.ndarray]:
    """The state dict inside a loaded checkpoint: ``obj["state_dict"]`` (the authors' checkpoints) or
    ``obj`` itself (torchvision's files); a ``module.`` prefix (``DataParallel``) is removed."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) for k in obj):
        raise WeightImportError(f"{source}: holds no state dict (a mapping of parameter names to tensors)")
    for key, value in obj.items():
        if not isinstance(value, np.ndarray):
            raise WeightImportError(f"{source}: {key} is not a tensor ({type(value).__name__})")
    if all(key.startswith("module.") for key in obj):
        obj = {key[len("module.") :]: value for key, value in obj.items()}
    return dict(obj)


def apply_state_dict(assignments: list[Assignment], state_dict: dict, source, unused=frozenset()) -> int:
    """Check ``state_dict`` against ``assignments`` completely, then assign; returns the values copied.

    ``unused``: keys that may be present and are skipped (besides ``*.num_batches_tracked``).
    """
    values = []
    for key, variable, transform in assignments:
        if key not in state_dict:
            raise WeightImportError(
                f"{source}: {key} is missing (the model needs shape {_torch_shape_hint(variable, transform)})"
            )
        array = state_dict[key]
        if not np.issubdtype(array.dtype, np.floating):
            raise WeightImportError(f"{source}: {key} has dtype {array.dtype}, expected floating point")
        expected = _torch_shape_hint(variable, transform)
        if list(array.shape) != expected:  # before the layout change, which needs the right rank
            raise WeightImportError(f"{source}: {key} has shape {list(array.shape)}, the model needs {expected}")
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise WeightImportError(f"{source}: {key} has {bad} NaN/Inf values")
        converted = transform(array)
        assert tuple(converted.shape) == tuple(variable.shape), key
        values.append(converted.astype(np.float32))
    used = {key for key, _, _ in assignments}
    for key in state_dict:
        if key not in used and key not in unused and not key.endswith("num_batches_tracked"):
            raise WeightImportError(f"{source}: {key} is not used by the model (not a checkpoint of this network?)")
    for (_, variable, _), value in zip(assignments, values):
        variable.assign(value)
    return int(sum(value.size for value in values))


def _torch_shape_hint(variable, transform) -> list[int]:
    """The variable's shape in PyTorch's layout, for error messages."""
    shape = list(variable.shape)
    if transform is _conv:
        return [shape[3], shape[2], shape[0], shape[1]]
    if transform is _same:
        return shape
    return shape[::-1]


def _read_state_dict(source, assignments: list[Assignment]) -> tuple[dict[str, np.ndarray], str]:
    """``(state dict, name for messages)`` of a checkpoint path or an already loaded state dict; a file is
    read within the bounds of the network that ``assignments`` fill."""
    if isinstance(source, dict):
        return state_dict_of(source, "state dict"), "state dict"
    if not Path(source).exists():
        raise WeightImportError(f"{source}: file not found")
    values = sum(int(np.prod(variable.shape)) for _, variable, _ in assignments)
    max_bytes, max_pickle_bytes = checkpoint_limits(values, len(assignments))
    return state_dict_of(load_checkpoint(source, max_bytes, max_pickle_bytes), source), str(source)


# ---------------------------------------------------------------------------------------------
# Entry points


def build_d2im(config: ModelConfig, sdf_scale: float = 10.0) -> D2IMNet:
    """A :class:`D2IMNet` with its variables created."""
    from d2im_tf.geometry import camera

    model = D2IMNet(config, sdf_scale=sdf_scale)
    size = config.image_size
    projection = camera.projection_matrix(30.0, 20.0, 0.8, size).astype(np.float32)[None]
    model({"image": tf.zeros([1, size, size, 3]), "points": tf.zeros([1, 4, 3]), "projection": projection})
    return model


def build_camera(config: CameraConfig) -> CameraNet:
    """A :class:`CameraNet` with its variables created."""
    model = CameraNet(config)
    model(tf.zeros([1, config.image_size, config.image_size, 3]), training=False)
    return model


def import_d2im(path) -> tuple[D2IMNet, int]:
    """The authors' D²IM-Net checkpoint (``best_model.pt.tar``) as a reference-compatible
    :class:`D2IMNet`; also returns the number of values copied."""
    model = build_d2im(reference_model_config())
    assignments = d2im_assignments(model)
    state_dict, name = _read_state_dict(path, assignments)
    return model, apply_state_dict(assignments, state_dict, name, D2IM_UNUSED_KEYS)


def import_camnet(path) -> tuple[CameraNet, int]:
    """The authors' camera network checkpoint (``CAMmodel.pt.tar``) as a reference-compatible :class:`CameraNet`."""
    model = build_camera(reference_camera_config())
    assignments = camnet_assignments(model)
    state_dict, name = _read_state_dict(path, assignments)
    return model, apply_state_dict(assignments, state_dict, name)


def load_imagenet_resnet18(encoder: ResNet18, source) -> int:
    """torchvision's ImageNet ``resnet18`` (a ``.pth`` path or a loaded state dict) into ``encoder``, as
    the authors start theirs: every layer but the first convolution (theirs is a new stride-1 one);
    ``fc`` becomes the 1000-d embedding layer. The encoder must be built and 64 wide."""
    assignments = resnet18_assignments(encoder, imagenet=True)
    state_dict, name = _read_state_dict(source, assignments)
    return apply_state_dict(assignments, state_dict, name, TORCHVISION_RESNET_UNUSED_KEYS)


def load_imagenet_vgg16(vgg: VGG16, source) -> int:
    """torchvision's ImageNet ``vgg16`` (a ``.pth`` path or a loaded state dict) into ``vgg``, all of it:
    the authors keep the classifier as the 1000-d embedding. Built, 64 wide, for 224-pixel images."""
    assignments = vgg16_assignments(vgg)
    state_dict, name = _read_state_dict(source, assignments)
    return apply_state_dict(assignments, state_dict, name)


def require_weights_file(key: str, path) -> None:
    """:class:`WeightImportError` naming the config ``key`` unless ``path`` is an existing file."""
    if not Path(path).is_file():
        raise WeightImportError(f"{key}: {path}: file not found")


def load_encoder_weights(model: D2IMNet, path) -> int:
    """``model.encoder_weights``: the ImageNet ResNet18 into a built D²IM-Net's encoder."""
    require_weights_file("model.encoder_weights", path)
    return load_imagenet_resnet18(model.encoder, path)


def load_backbone_weights(model: CameraNet, path) -> int:
    """``camera.backbone_weights``: the ImageNet VGG16 or ResNet18 into a built camera network's backbone."""
    require_weights_file("camera.backbone_weights", path)
    if isinstance(model.backbone, VGG16):
        return load_imagenet_vgg16(model.backbone, path)
    return load_imagenet_resnet18(model.backbone, path)
