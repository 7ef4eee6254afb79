"""``get_config`` / ``from_config`` round trips: every model and layer of the package that defines a
config rebuilds from it into the same configuration and, once built, the same weights' shapes."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from d2im_tf.config import CameraConfig, ModelConfig
from d2im_tf.geometry import camera
from d2im_tf.models.camera_net import VGG16, CameraNet, PoseHead
from d2im_tf.models.d2im import D2IMNet
from d2im_tf.models.decoders import DetailDecoder, GlobalLocalDecoder, ImplicitDecoder
from d2im_tf.models.encoder import BasicBlock, ResNet18

SIZE = 32
SMALL_MODEL = dict(image_size=SIZE, encoder_width=8, global_dim=16, decoder_widths=[32, 16, 16, 8, 8],
                   detail_channels=8)


def _images(batch=1):
    return tf.zeros([batch, SIZE, SIZE, 3])


def _d2im_batch():
    projection = camera.projection_matrix(30.0, 20.0, 0.8, SIZE).astype(np.float32)[None]
    return {"image": _images(), "points": tf.zeros([1, 8, 3]), "projection": projection}


def _features():
    return ResNet18(8, 16)(_images())["features"]


# (object, a call that builds it)
CASES = {
    "D2IMNet": (lambda: D2IMNet(ModelConfig(variant="gl", point_frequencies=2, code_norm="layer", **SMALL_MODEL),
                                sdf_scale=5.0), lambda model: model(_d2im_batch())),
    "CameraNet-vgg16": (lambda: CameraNet(CameraConfig(backbone="vgg16", translation="distance", image_size=SIZE,
                                                       width=8)), lambda model: model(_images())),
    "CameraNet-resnet18": (lambda: CameraNet(CameraConfig(backbone="resnet18", image_size=SIZE, width=8)),
                           lambda model: model(_images())),
    "VGG16": (lambda: VGG16(8), lambda model: model(_images())),
    "PoseHead": (lambda: PoseHead(3, reference=True), lambda layer: layer(tf.zeros([2, 20]))),
    "ResNet18": (lambda: ResNet18(8, None), lambda model: model(_images())),
    "BasicBlock": (lambda: BasicBlock(16, stride=2, project_shortcut=True),
                   lambda layer: layer(tf.zeros([1, 8, 8, 8]))),
    "ImplicitDecoder": (lambda: ImplicitDecoder([32, 16, 16, 8, 8], point_frequencies=3),
                        lambda layer: layer(tf.zeros([1, 16]), tf.zeros([1, 5, 3]))),
    "GlobalLocalDecoder": (lambda: GlobalLocalDecoder([32, 16, 16, 8, 8]),
                           lambda layer: layer(tf.zeros([1, 16]), tf.zeros([1, 5, 3]), _features(),
                                               tf.fill([1, 5, 2], 4.0))),
    "DetailDecoder": (lambda: DetailDecoder(8, out_channels=1), lambda layer: layer(_features())),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_round_trip(name):
    make, build = CASES[name]
    original = make()
    config = original.get_config()
    clone = type(original).from_config(config)
    assert clone.get_config() == config
    if isinstance(original, (D2IMNet, CameraNet)):  # the dataclass comes back whole
        section = original.model_config if isinstance(original, D2IMNet) else original.camera_config
        assert dataclasses.asdict(section) == config["config"]
    build(original)
    build(clone)
    assert [tuple(w.shape) for w in clone.weights] == [tuple(w.shape) for w in original.weights]
