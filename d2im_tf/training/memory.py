"""A training run's memory need, estimated from its config before anything is built.

A config whose sizes are absurd (``train.batch_size=1000000000``, ``model.image_size=100000``,
``model.encoder_width=1000000``) would otherwise make TensorFlow fail deep inside (an int32 shape
overflow, an out-of-memory kill after minutes, a segfault). :func:`check_run_memory` refuses it first,
with the estimate, when it exceeds the machine's memory.

The estimate is a lower bound, so that no run that fits is refused: float32 weights with their
gradients and Adam's two moments (4 copies), plus one output per convolution of every example of a
batch, kept for the backward pass (the batch norms' and activations' own outputs, which TensorFlow
also keeps, are not counted), plus the point decoders' activations. Shapes follow
:mod:`d2im_tf.models.encoder` (stride-1 stem, then S/2 … S/16), :mod:`d2im_tf.models.decoders` and
:class:`d2im_tf.models.camera_net.VGG16` (five stages, 2-2-3-3-3 convolutions, each halving).
"""

from __future__ import annotations

from d2im_tf.config import Config
from d2im_tf.errors import UserError, size_text
from d2im_tf.resources import machine_memory_bytes

FLOAT_BYTES = 4
WEIGHT_COPIES = 4  # weights, gradients, Adam's first and second moments
VGG_STAGES = ((2, 1), (2, 2), (3, 4), (3, 8), (3, 8))  # (convolutions, channels / width) per stage


def _resnet18(size: int, width: int) -> tuple[int, int]:
    """(weights, activation values per image) of the encoder: stem at S, stage k at S/2^k, 4 convolutions each."""
    weights, values = 49 * 3 * width, size * size * width
    for stage in range(1, 5):
        channels, side = width << (stage - 1), size >> stage
        inputs = channels if stage == 1 else channels // 2
        weights += 9 * channels * (inputs + 3 * channels)
        values += 4 * side * side * channels
    return weights + 8 * width * 1000, values


def _vgg16(size: int, width: int) -> tuple[int, int]:
    """(weights, activation values per image) of VGG16 at ``width`` (64: the paper's) and its classifier."""
    weights = values = 0
    inputs, side = 3, size
    for convolutions, factor in VGG_STAGES:
        channels = width * factor
        for _ in range(convolutions):
            weights += 9 * inputs * channels
            values += side * side * channels
            inputs = channels
        side //= 2
    hidden = 4096 * width // 64
    return weights + side * side * inputs * hidden + hidden * hidden + hidden * 1000, values


def network_sizes(config: Config, network: str) -> tuple[int, int]:
    """(weights, activation values per example) of ``network`` ("sdf" or "camera"), lower bounds."""
    if network == "camera":
        backbone = _vgg16 if config.camera.backbone == "vgg16" else _resnet18
        weights, values = backbone(config.camera.image_size, config.camera.width)
        heads = 2 * (1000 * 512 + 512 * 256)  # rotation and translation: 1000-d embedding → 512 → 256
        return weights + heads, values + config.camera.points * 3
    model = config.model
    size = model.image_size
    weights, values = _resnet18(size, model.encoder_width)
    widths = [model.global_dim + 3 + 2 * model.point_frequencies * 3, *model.decoder_widths]
    weights += sum(a * b for a, b in zip(widths, widths[1:]))
    values += 2 * size * size * model.detail_channels  # the detail decoder's top-down maps, S and finer
    return weights, values + config.data.num_points * sum(model.decoder_widths)


def run_memory_bytes(config: Config, network: str) -> int:
    """A lower bound of the bytes a training run of ``network`` needs (module docstring)."""
    weights, values = network_sizes(config, network)
    batch = config.camera.batch_size if network == "camera" else config.train.batch_size
    return FLOAT_BYTES * (WEIGHT_COPIES * weights + batch * values)


def check_run_memory(config: Config, network: str, available: int | None = None) -> int:
    """The estimate of :func:`run_memory_bytes`; a :class:`UserError` with it if it exceeds ``available``
    (default: :func:`machine_memory_bytes`)."""
    need = run_memory_bytes(config, network)
    available = machine_memory_bytes() if available is None else available
    if need > available:
        keys = (
            "camera.batch_size, camera.image_size or camera.width"
            if network == "camera"
            else "train.batch_size, model.image_size or model.encoder_width"
        )
        raise UserError(
            f"the {network} network's training needs at least {size_text(need)} of memory (an "
            f"estimate from the config), more than the {size_text(available)} this machine has; "
            f"lower {keys}"
        )
    return need
