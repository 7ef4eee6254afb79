"""The decoders of D²IM-Net: base SDF decoders and the detail (displacement map) decoder.

How their outputs are fused and in which units: docs/conventions.md, "Fused SDF and the front/back rule".

* :class:`ImplicitDecoder` — IM-NET's MLP, f_B(p) from the global code and the point.
* :class:`GlobalLocalDecoder` — DISN's two-stream decoder, the base decoder of D²IM-Net_GL: a global
  stream and a local stream (features read at the point's projection) whose outputs are summed.
* :class:`DetailDecoder` — the top-down feature pyramid after Yu et al. (CVPR 2019) that turns the
  encoder's f0…f4 into the front and back displacement maps at input resolution.

Point encoding (``point_frequencies`` L, an option of this project; 0 — the paper — feeds raw xyz):
each decoder sees ``[p, sin(2^k·π·p), cos(2^k·π·p)]`` for k < L instead of p (Fourier features,
Tancik et al. 2020). A ReLU MLP on raw xyz fits sharp SDFs slowly (spectral bias); with L = 4 it
memorises shapes an order of magnitude faster (docs/training.md).

Activations are ReLU as in the reference (IM-NET's own release uses leaky ReLU; nothing here needs
it). Under a mixed-precision policy the detail decoder computes in the policy's type and only its last
layer is float32 (the maps); :class:`~d2im_tf.models.d2im.D2IMNet` builds the point decoders in float32
throughout, and their layers take the decoder's policy (``dtype=self.dtype_policy``): a point's
coordinates in bfloat16 would be rounded by up to 1/128 of the box's half-width, the size of the details.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from d2im_tf.geometry.interpolation import sample_bilinear


def encode_points(points, frequencies: int):
    """``[..., 3]`` points → ``[..., 3 + 6L]``: p, sin(2^k·π·p) for k < L, then cos(2^k·π·p) for k < L
    (``frequencies`` L; 0 returns the points)."""
    if not frequencies:
        return points
    angles = [points * (2.0**k * math.pi) for k in range(frequencies)]  # L × [..., 3]
    return keras.ops.concatenate(
        [points] + [keras.ops.sin(a) for a in angles] + [keras.ops.cos(a) for a in angles], axis=-1
    )


class ImplicitDecoder(layers.Layer):
    """IM-NET decoder: ``call(global_code [B, G], points [B, N, 3])`` → base SDF ``[B, N]``.

    The point (encoded by :func:`encode_points` when ``point_frequencies`` > 0) is concatenated to
    the input of each of the ``widths`` layers (512, 256, 128, 64, 32 in the reference), then come a
    dense layer as wide as the last one and a dense layer to one value.
    """

    def __init__(self, widths=(512, 256, 128, 64, 32), point_frequencies: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.widths = list(widths)
        self.point_frequencies = point_frequencies
        dtype = self.dtype_policy  # sublayers do not inherit it
        self.hidden = [
            layers.Dense(w, activation="relu", dtype=dtype, name=f"dense_{i}") for i, w in enumerate(self.widths)
        ]
        self.penultimate = layers.Dense(self.widths[-1], activation="relu", dtype=dtype, name="dense_last")
        self.output_layer = layers.Dense(1, dtype="float32", name="sdf")

    def call(self, global_code, points):
        points = encode_points(keras.ops.cast(points, self.compute_dtype), self.point_frequencies)  # [B, N, P]
        # The first layer on [code, p]: its code half is the same for every point of a shape, so it is
        # computed once per shape, ``[B, w0]``, not once per point (the code is most of that layer's input).
        first = self.hidden[0]
        code_dim = global_code.shape[-1]
        if not first.built:
            first.build((None, code_dim + points.shape[-1]))
        kernel = keras.ops.cast(first.kernel, self.compute_dtype)  # [G + P, w0]
        per_shape = keras.ops.matmul(keras.ops.cast(global_code, self.compute_dtype), kernel[:code_dim])
        per_shape = per_shape + keras.ops.cast(first.bias, self.compute_dtype)  # [B, w0]
        x = keras.ops.relu(per_shape[:, None, :] + keras.ops.matmul(points, kernel[code_dim:]))  # [B, N, w0]
        for layer in self.hidden[1:]:
            x = layer(keras.ops.concatenate([x, points], axis=-1))  # [B, N, w]
        x = self.penultimate(x)
        return self.output_layer(x)[..., 0]  # [B, N]

    def get_config(self):
        return {**super().get_config(), "widths": self.widths, "point_frequencies": self.point_frequencies}


def local_features(features, uv):
    """DISN's local features: each map read bilinearly at the projection ``uv`` ``[B, N, 2]``.

    ``features`` [f0 (full resolution), …, f4]; ``uv`` in pixels of the input image (= f0's size).
    With the encoder's symmetric padding (as PyTorch's), pixel j of a map ``s`` times coarser than
    f0 is centred on input pixel ``s·j`` (continuous coordinate s·j + 0.5), not on the middle of
    its s×s cell, so ``uv`` maps to ``(uv − 0.5)/s + 0.5`` in that map's pixels. Sampling runs in
    float32 (pixel coordinates in float16 would be off by up to 1/8 px at 224 px).
    Returns the concatenation ``[B, N, sum of channels]`` in float32.
    """
    full_width = features[0].shape[2]
    samples = []
    for feature in features:
        stride = full_width / feature.shape[2]
        samples.append(sample_bilinear(keras.ops.cast(feature, "float32"), (uv - 0.5) / stride + 0.5))
    return keras.ops.concatenate(samples, axis=-1)


class GlobalLocalDecoder(layers.Layer):
    """DISN's two-stream SDF decoder, used as the base decoder of D²IM-Net_GL.

    A point MLP lifts xyz to a feature; one stream decodes it with the global code, the other with
    the local features at the point's projection; the SDF is the sum of the two streams. With
    ``widths`` = IM-NET's (w0…w4) the point MLP is (w3, w1, w0) and each stream (w0, w1, 1): DISN's
    (64, 256, 512) and (512, 256, 1) for the reference widths.

    ``call(global_code [B, G], points [B, N, 3], features [f0…f4], uv [B, N, 2])`` → ``[B, N]``.
    """

    def __init__(self, widths=(512, 256, 128, 64, 32), point_frequencies: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.widths = list(widths)
        self.point_frequencies = point_frequencies
        w = self.widths
        dtype = self.dtype_policy  # sublayers do not inherit it
        self.point_mlp = [
            layers.Dense(n, activation="relu", dtype=dtype, name=f"point_{i}") for i, n in enumerate((w[3], w[1], w[0]))
        ]
        self.global_stream = self._stream("global")
        self.local_stream = self._stream("local")

    def _stream(self, name):
        return [
            layers.Dense(self.widths[0], activation="relu", dtype=self.dtype_policy, name=f"{name}_0"),
            layers.Dense(self.widths[1], activation="relu", dtype=self.dtype_policy, name=f"{name}_1"),
            layers.Dense(1, dtype="float32", name=f"{name}_sdf"),
        ]

    @staticmethod
    def _run(stack, x):
        for layer in stack:
            x = layer(x)
        return x

    def call(self, global_code, points, features, uv):
        num_points = keras.ops.shape(points)[1]
        points = encode_points(keras.ops.cast(points, self.compute_dtype), self.point_frequencies)
        point_features = self._run(self.point_mlp, points)  # [B, N, w0]
        global_code = keras.ops.repeat(global_code[:, None, :], num_points, axis=1)  # [B, N, G]
        local = keras.ops.cast(local_features(features, uv), self.compute_dtype)  # [B, N, sum C]
        global_sdf = self._run(self.global_stream, keras.ops.concatenate([point_features, global_code], axis=-1))
        local_sdf = self._run(self.local_stream, keras.ops.concatenate([point_features, local], axis=-1))
        return (global_sdf + local_sdf)[..., 0]  # [B, N]

    def get_config(self):
        return {**super().get_config(), "widths": self.widths, "point_frequencies": self.point_frequencies}


class DetailDecoder(layers.Layer):
    """Displacement maps from the feature pyramid: ``call([f0, …, f4])`` → ``[B, S, S, out_channels]``.

    Lateral 1×1 convs + ReLU bring every f_k to ``channels``; top-down, p4 = lateral(f4) and
    p_k = 1×1conv(bilinear ×2 upsample(p_{k+1})) + lateral(f_k) down to p0 at full resolution; then a
    3×3 conv + ReLU and a 1×1 conv to ``out_channels`` maps (2: front, back).
    """

    def __init__(self, channels: int = 64, out_channels: int = 2, levels: int = 5, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.out_channels = out_channels
        self.levels = levels
        self.lateral = [layers.Conv2D(channels, 1, activation="relu", name=f"lateral_{k}") for k in range(levels)]
        self.top_down = [layers.Conv2D(channels, 1, name=f"top_down_{k}") for k in range(levels - 1)]
        self.upsample = layers.UpSampling2D(2, interpolation="bilinear")
        self.smooth = layers.Conv2D(channels, 3, padding="same", activation="relu", name="smooth")
        self.output_layer = layers.Conv2D(out_channels, 1, dtype="float32", name="maps")

    def call(self, features):
        p = self.lateral[-1](features[-1])  # [B, S/16, S/16, c]
        for k in range(self.levels - 2, -1, -1):
            p = self.top_down[k](self.upsample(p)) + self.lateral[k](features[k])  # [B, S/2^k, S/2^k, c]
        return self.output_layer(self.smooth(p))  # [B, S, S, out_channels]

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "out_channels": self.out_channels,
            "levels": self.levels,
        }
