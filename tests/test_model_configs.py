"""Every model and layer of :mod:`d2im_tf.models`: ``get_config`` / ``from_config`` round trip, exact
parameter count (from the layer sizes by formula, :mod:`helpers`), and a ``.keras`` save and load that
computes the same outputs (:func:`helpers.check_keras_object`)."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from d2im_tf.config import CameraConfig, ModelConfig
from d2im_tf.geometry import camera
from d2im_tf.models.batch_norm import BatchNormalization
from d2im_tf.models.camera_net import VGG16, CameraNet, PoseHead
from d2im_tf.models.d2im import D2IMNet
from d2im_tf.models.decoders import DetailDecoder, GlobalLocalDecoder, ImplicitDecoder
from d2im_tf.models.encoder import BasicBlock, ResNet18

import helpers

SIZE = 32
SMALL_MODEL = dict(
    image_size=SIZE, encoder_width=8, global_dim=16, decoder_widths=[32, 16, 16, 8, 8], detail_channels=8
)
WIDTHS = [32, 16, 16, 8, 8]


def _random(*shape, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(-0.5, 0.5, shape).astype(np.float32))


def _images(batch=1):
    return _random(batch, SIZE, SIZE, 3) + 0.5


def _d2im_inputs():
    projection = camera.projection_matrix(30.0, 20.0, 0.8, SIZE).astype(np.float32)[None]
    return ({"image": _images(), "points": _random(1, 8, 3, seed=1), "projection": tf.constant(projection)},)


def _features():
    return [
        _random(
            1, SIZE >> max(level, 1) if level else SIZE, SIZE >> max(level, 1) if level else SIZE, channels, seed=level
        )
        for level, channels in enumerate(helpers.feature_channels(8))
    ]


D2IM_CONFIGS = {
    "gl": ModelConfig(variant="gl", point_frequencies=2, code_norm="layer", **SMALL_MODEL),
    "full": ModelConfig(variant="full", code_norm="batch", **SMALL_MODEL),
    "noback": ModelConfig(variant="noback", **SMALL_MODEL),
    "baseline": ModelConfig(variant="baseline", point_frequencies=1, **SMALL_MODEL),
}
CAMERA_CONFIGS = {
    "vgg16": CameraConfig(backbone="vgg16", translation="distance", image_size=SIZE, width=8),
    "resnet18": CameraConfig(backbone="resnet18", image_size=SIZE, width=8),
}

# name: (object, its inputs, its parameters by formula)
CASES = {
    **{
        f"D2IMNet-{name}": (
            lambda config=config: D2IMNet(config, sdf_scale=5.0),
            _d2im_inputs,
            lambda config=config: helpers.d2im_net(config),
        )
        for name, config in D2IM_CONFIGS.items()
    },
    **{
        f"CameraNet-{name}": (
            lambda config=config: CameraNet(config),
            lambda: (_images(),),
            lambda config=config: helpers.camera_net(config),
        )
        for name, config in CAMERA_CONFIGS.items()
    },
    "VGG16": (lambda: VGG16(8), lambda: (_images(),), lambda: helpers.vgg16(8, SIZE)),
    "PoseHead": (lambda: PoseHead(3, reference=True), lambda: (_random(2, 20),), lambda: helpers.pose_head(20, 3)),
    "ResNet18": (lambda: ResNet18(8, None), lambda: (_images(),), lambda: helpers.resnet18(8, None)),
    "ResNet18-global": (lambda: ResNet18(8, 16), lambda: (_images(),), lambda: helpers.resnet18(8, 16)),
    "BasicBlock": (
        lambda: BasicBlock(16, stride=2, project_shortcut=True),
        lambda: (_random(1, 8, 8, 8),),
        lambda: helpers.basic_block(8, 16, project=True),
    ),
    "BasicBlock-identity": (
        lambda: BasicBlock(8),
        lambda: (_random(1, 8, 8, 8),),
        lambda: helpers.basic_block(8, 8, project=False),
    ),
    "ImplicitDecoder": (
        lambda: ImplicitDecoder(WIDTHS, point_frequencies=3),
        lambda: (_random(1, 16), _random(1, 5, 3, seed=1)),
        lambda: helpers.implicit_decoder(16, WIDTHS, 3),
    ),
    "GlobalLocalDecoder": (
        lambda: GlobalLocalDecoder(WIDTHS),
        lambda: (_random(1, 16), _random(1, 5, 3, seed=1), _features(), tf.fill([1, 5, 2], 4.0)),
        lambda: helpers.global_local_decoder(16, sum(helpers.feature_channels(8)), WIDTHS),
    ),
    "DetailDecoder": (
        lambda: DetailDecoder(8, out_channels=1),
        lambda: (_features(),),
        lambda: helpers.detail_decoder(helpers.feature_channels(8), 8, 1),
    ),
    "BatchNormalization": (
        lambda: BatchNormalization(momentum=0.9, epsilon=1e-5),
        lambda: (_random(2, 4, 4, 3),),
        lambda: helpers.batch_norm(3),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_parameters_and_saving(name, tmp_path):
    make, inputs, parameters = CASES[name]
    original = make()
    helpers.check_keras_object(original, inputs(), parameters(), tmp_path)
    if isinstance(original, (D2IMNet, CameraNet)):  # the dataclass comes back whole
        section = original.model_config if isinstance(original, D2IMNet) else original.camera_config
        assert dataclasses.asdict(section) == original.get_config()["config"]


def test_every_keras_class_of_the_models_package_is_checked():
    """A new model or layer class in d2im_tf.models needs a case here."""
    import inspect

    import keras

    import d2im_tf.models.base
    import d2im_tf.models.batch_norm
    import d2im_tf.models.camera_net
    import d2im_tf.models.d2im
    import d2im_tf.models.decoders
    import d2im_tf.models.encoder

    modules = [
        d2im_tf.models.base,
        d2im_tf.models.batch_norm,
        d2im_tf.models.camera_net,
        d2im_tf.models.d2im,
        d2im_tf.models.decoders,
        d2im_tf.models.encoder,
    ]
    classes = {
        cls
        for module in modules
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, keras.layers.Layer) and cls.__module__ == module.__name__
    }
    checked = {type(make()) for make, _, _ in CASES.values()}
    # DistributableModel is the abstract base of D2IMNet and CameraNet (no layers of its own).
    assert {cls.__name__ for cls in classes - checked} == {"DistributableModel"}
