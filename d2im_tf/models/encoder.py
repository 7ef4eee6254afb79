"""ResNet18 image encoder of D²IM-Net, as the authors' release builds it: a global code and five feature maps.

Differences from torchvision's ResNet18, as in the reference: the first convolution is 7×7 with
**stride 1** (no bias), so ``f0`` has the input's resolution. Feature maps for a ``S×S`` input and
``width`` w (64 in the reference; every stage scales with it):

===== ======================== ========= ==========
name  what                     size      channels
===== ======================== ========= ==========
f0    relu(bn(conv1))          S         w
f1    layer1 (after max-pool)  S/2       w
f2    layer2                   S/4       2w
f3    layer3                   S/8       4w
f4    layer4                   S/16      8w
===== ======================== ========= ==========

Global code: average pool of ``f4`` → dense 1000 → dense ``global_dim`` (no activation between or
after). ``global_dim=None`` drops the last dense (the camera network uses the 1000-d embedding).
Images in [0, 1] go in as they are: with random initialisation there are no ImageNet statistics to
match, and the stem's batch norm normalises.

Padding: every strided window (the 3×3 stride-2 convolutions and the 3×3 stride-2 max-pool) is padded
explicitly and symmetrically by one pixel, then run with ``"valid"``, as PyTorch does. Keras'
``"same"`` with stride 2 on an even size pads only bottom/right: its 3×3 windows would be centred one
input pixel away from those of the un-padded 1×1 stride-2 shortcut they are added to, and the
sampling grid would differ from the reference's. With symmetric padding both paths agree and pixel j
of a map s times coarser than f0 is centred on input pixel s·j (continuous s·j + 0.5);
:func:`d2im_tf.models.decoders.local_features` reads the maps with exactly that offset. Stride-1
convolutions use ``"same"`` (symmetric for odd kernels); the 1×1 stride-2 shortcut needs no padding
and is built as subsample + 1×1 convolution (TensorFlow 2.21's oneDNN gradient of a strided 1×1
convolution corrupts the heap; :func:`conv_bn`).
The max-pool's zero padding equals PyTorch's −∞ padding here because it follows a ReLU.
"""

from __future__ import annotations

import keras
from keras import layers

from d2im_tf.models.batch_norm import BatchNormalization

BN_MOMENTUM = 0.9  # PyTorch's momentum 0.1
BN_EPSILON = 1e-5
EMBEDDING_DIM = 1000  # the ImageNet classifier width the reference keeps as a hidden layer


def conv_bn(filters: int, kernel_size: int, stride: int = 1, name: str | None = None) -> keras.Sequential:
    """Bias-free convolution + batch norm, padded symmetrically so output size = ceil(input / stride)."""
    if stride == 1:
        conv_layers = [
            layers.Conv2D(filters, kernel_size, padding="same", use_bias=False, kernel_initializer="he_normal")
        ]
    elif kernel_size == 1:
        # Subsample, then a 1×1 convolution: the same map as a 1×1 stride-2 convolution, whose
        # gradient corrupts the heap in TensorFlow 2.21's oneDNN CPU kernels (crash seen at batch 1 and 3).
        conv_layers = [
            layers.MaxPooling2D(1, strides=stride),
            layers.Conv2D(filters, 1, use_bias=False, kernel_initializer="he_normal"),
        ]
    else:
        conv_layers = [
            layers.ZeroPadding2D((kernel_size - 1) // 2),
            layers.Conv2D(
                filters, kernel_size, strides=stride, padding="valid", use_bias=False, kernel_initializer="he_normal"
            ),
        ]
    return keras.Sequential(conv_layers + [BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON)], name=name)


class BasicBlock(layers.Layer):
    """ResNet basic block: two 3×3 conv-bn, identity or 1×1 conv-bn shortcut, ReLU after the sum."""

    def __init__(self, filters: int, stride: int = 1, project_shortcut: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.stride = stride
        self.project_shortcut = project_shortcut
        self.conv1 = conv_bn(filters, 3, stride, name="conv1")
        self.conv2 = conv_bn(filters, 3, 1, name="conv2")
        self.shortcut = conv_bn(filters, 1, stride, name="shortcut") if project_shortcut else None

    def call(self, inputs, training=None):
        x = keras.ops.relu(self.conv1(inputs, training=training))
        x = self.conv2(x, training=training)
        shortcut = self.shortcut(inputs, training=training) if self.shortcut is not None else inputs
        return keras.ops.relu(x + shortcut)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "stride": self.stride,
            "project_shortcut": self.project_shortcut,
        }


class ResNet18(keras.Model):
    """ResNet18 with a stride-1 stem; ``call(images)`` → dict of ``global_code``, ``embedding``, ``features``.

    ``images`` ``[B, S, S, 3]`` (S divisible by 16). Returns ``features`` = [f0, …, f4] (table in the
    module docstring), ``embedding`` ``[B, 1000]`` and, unless ``global_dim`` is None,
    ``global_code`` ``[B, global_dim]``.
    """

    def __init__(self, width: int = 64, global_dim: int | None = 128, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.global_dim = global_dim
        self.stem = conv_bn(width, 7, 1, name="stem")
        self.pool = keras.Sequential(
            [layers.ZeroPadding2D(1), layers.MaxPooling2D(3, strides=2, padding="valid")], name="max_pool"
        )
        self.stages = []
        for index, (multiplier, stride) in enumerate([(1, 1), (2, 2), (4, 2), (8, 2)]):
            filters = width * multiplier
            self.stages.append(
                keras.Sequential(
                    [BasicBlock(filters, stride, project_shortcut=stride != 1), BasicBlock(filters)],
                    name=f"layer{index + 1}",
                )
            )
        self.embedding = layers.Dense(EMBEDDING_DIM, name="embedding")
        self.global_head = layers.Dense(global_dim, name="global_code") if global_dim is not None else None

    def call(self, images, training=None):
        f0 = keras.ops.relu(self.stem(images, training=training))  # [B, S, S, w]
        x = self.pool(f0)  # [B, S/2, S/2, w]
        features = [f0]
        for stage in self.stages:
            x = stage(x, training=training)
            features.append(x)  # f1 [S/2, w], f2 [S/4, 2w], f3 [S/8, 4w], f4 [S/16, 8w]
        embedding = self.embedding(keras.ops.mean(x, axis=(1, 2)))  # [B, 1000]
        outputs = {"features": features, "embedding": embedding}
        if self.global_head is not None:
            outputs["global_code"] = self.global_head(embedding)  # [B, global_dim]
        return outputs

    def get_config(self):
        return {**super().get_config(), "width": self.width, "global_dim": self.global_dim}
