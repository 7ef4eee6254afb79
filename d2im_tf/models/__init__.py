"""Keras models of d2im_tf: the D²IM-Net SDF network, its parts, and the separate camera network."""

from d2im_tf.models.camera_net import CameraNet
from d2im_tf.models.d2im import VARIANT_SPECS, D2IMNet
from d2im_tf.models.decoders import DetailDecoder, GlobalLocalDecoder, ImplicitDecoder
from d2im_tf.models.encoder import ResNet18

__all__ = [
    "CameraNet",
    "D2IMNet",
    "DetailDecoder",
    "GlobalLocalDecoder",
    "ImplicitDecoder",
    "ResNet18",
    "VARIANT_SPECS",
]
