"""The D²IM-Net SDF network: encoder, base decoder, detail decoder, fusion, losses and training step.

f(p) = f_B(p) + f_DF(u(p)) for front points, f_B(p) + f_DB(u(p)) otherwise (paper eq. 3), with the
displacement maps f_DF, f_DB read at the point's projection u(p) by the C² interpolating B-spline
(:func:`d2im_tf.geometry.interpolation.sample_bspline`). All SDF values are in the network's units: ``sdf_scale``
(10) × the signed distance in the normalised frame, positive outside.

Variants (``ModelConfig.variant``, the paper's Table 1 plus D²IM-Net_GL), :data:`VARIANT_SPECS`:

============ ============== ======== ========= ===================================================
variant      base decoder   maps     L_lap     total loss
============ ============== ======== ========= ===================================================
baseline     IM-NET         none     no        L_sdf on f = f_B (the paper: "L_sdf defined on the
                                               output of the base decoder"; uniform sampling)
wsamp        IM-NET         none     no        as baseline (weighted sampling is the pipeline's)
noback       IM-NET         front    yes       L_B + L_sdf + L_lap; back points get 0 displacement
nolap        IM-NET         both     no        L_B + L_sdf
full         IM-NET         both     yes       L_B + L_sdf + L_lap
gl           DISN global +  both     yes       L_B + L_sdf + L_lap
             local
============ ============== ======== ========= ===================================================

``loss_base`` is reported for every variant; in baseline/wsamp it is a metric only. L_lap enters the
total weighted by ``model.laplacian_weight`` (λ, 1 in the paper); ``loss_lap`` is logged unweighted. With
``model.laplacian_flat_sigma`` > 0 it leaves out the points where the coarse surface bends
(:func:`d2im_tf.models.losses.coarse_divergence`).

Batch contract (what ``train_step`` / ``test_step`` read; a dict, or a 1-tuple holding it)
------------------------------------------------------------------------------------------
=============== =============== =================================================================
key             shape, dtype    meaning
=============== =============== =================================================================
``image``       [B, S, S, 3] f32 RGB in [0, 1], S = ``model.image_size`` (divisible by 16); the
                                focal length f = 35·S/32 px of the Laplacian scale assumes P was
                                built for S-pixel images
``points``      [B, N, 3] f32   sample points in the *normalised* frame (world = xyz·m + c)
``sdf``         [B, N] f32      GT SDF × ``sdf_scale`` (positive outside)
``sdf_base``    [B, N] f32      only with ``model.base_target`` "coarse_sdf": the SDF of the shape
                                without its relief × ``sdf_scale``, the target of L_B
``gradients``   [B, N, 3] f32   unit GT SDF gradient at the points (normalised frame = world axes)
``projection``  [B, 3, 4] f32   P mapping *normalised* homogeneous points to pixels:
                                ``camera.projection_matrix(...) @ [[m·I, c], [0, 1]]``
``normal_map``  [B, S, S, 3] f32 camera-frame unit normals (x right, y down, z away from the
                                viewer; front-facing normals have n_z < 0), background 0. Decoded
                                from the PNG (R = n_x, G = n_y, B = n_z, ``v/255·2 − 1``); only the
                                variants with L_lap read it
=============== =============== =================================================================

Nothing else is needed: with K's last row (0, 0, 1), as ``camera.intrinsics`` gives,
P[2, :3] = m·(third row of the world→camera rotation), so the norm scale m is ‖P[2, :3]‖ and the
camera's viewing axis in the normalised frame is P[2, :3]/m; the third homogeneous coordinate of a
projected point is its depth in world units. Front/back in training: front where the GT gradient's
camera-frame z component (gradient · P[2, :3]/m) is negative.

Reference compatibility (``model.compat: reference``, for weights imported from the authors' PyTorch
release with ``d2im import-torch``): the network computes what the authors' ``D2IM_Net`` computes.

* ``image`` is still RGB in [0, 1]; the model reverses the channels first (the authors read images with
  OpenCV, BGR) and expects DISN's black background (:mod:`d2im_tf.inference.reconstruct` prepares it).
* ``points`` and ``projection`` are in ShapeNet's **world** frame (the authors feed world coordinates
  and regress the normalised-frame SDF × 10 there), so every "normalised frame" above reads "world
  frame" for such a model; its exported ``d2im.json`` says ``"frame": "world"``.
* Displacements are read bilinearly (``grid_sample``, ``align_corners=False``, border) instead of by
  the B-spline.
* Test-time front/back split: one step ``d = front_offset·N(M⁻¹·(0, 0, 1))`` for all points, M = P[:, :3]
  (the authors map the camera's z vector back with the full projection matrix, intrinsics included,
  which gives the ray through the image's corner pixel rather than the optical axis); weight
  w = ½ − ½·sign(f_B(p + d) − f_B(p)), fused f = f_B + w·f_DF + (1 − w)·f_DB.

Inference: ``encode(images)`` once (global code, features, maps), then ``decode(encoding, points,
projection)`` for any number of points; :meth:`D2IMNet.predict_sdf` chunks a large query (a 128³
grid) through one compiled decode. ``projection`` is the caller's: from GT metadata or from the
camera network (:meth:`d2im_tf.models.camera_net.CameraNet.projection` folded with the normalisation).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from d2im_tf.config import BATCH_POINTS, ModelConfig
from d2im_tf.geometry import camera
from d2im_tf.geometry.interpolation import sample_bilinear, sample_bspline
from d2im_tf.models.base import DistributableModel
from d2im_tf.models.decoders import DetailDecoder, GlobalLocalDecoder, ImplicitDecoder
from d2im_tf.models.encoder import ResNet18
from d2im_tf.models.losses import base_loss, laplacian_loss, laplacian_mask, sdf_loss


@dataclass(frozen=True)
class VariantSpec:
    """What a variant's network has and which loss terms it trains with."""

    maps: int  # displacement maps predicted: 0 none, 1 front only, 2 front and back
    laplacian: bool  # L_lap in the total
    global_local: bool  # DISN's two-stream base decoder instead of IM-NET's


VARIANT_SPECS = {
    "baseline": VariantSpec(maps=0, laplacian=False, global_local=False),
    "wsamp": VariantSpec(maps=0, laplacian=False, global_local=False),
    "noback": VariantSpec(maps=1, laplacian=True, global_local=False),
    "nolap": VariantSpec(maps=2, laplacian=False, global_local=False),
    "full": VariantSpec(maps=2, laplacian=True, global_local=False),
    "gl": VariantSpec(maps=2, laplacian=True, global_local=True),
}


def norm_scale_from_projection(projection):
    """m = ‖P[2, :3]‖ ``[B]`` for ``[B, 3, 4]`` normalised-frame projections (module docstring)."""
    return tf.norm(projection[:, 2, :3], axis=-1)


def viewing_axis(projection):
    """The camera's +z axis in the normalised frame, ``[B, 3]`` unit vectors."""
    return tf.math.l2_normalize(projection[:, 2, :3], axis=-1)


def reference_front_step(projection, offset: float):
    """The authors' test-time front/back step ``[B, 3]``: ``offset·N(M⁻¹·(0, 0, 1))``, M = P[:, :3]."""
    direction = tf.linalg.solve(
        projection[:, :, :3], tf.tile(tf.constant([[[0.0], [0.0], [1.0]]]), [tf.shape(projection)[0], 1, 1])
    )[..., 0]
    return offset * tf.math.l2_normalize(direction, axis=-1)


def front_from_gradients(gradients, projection):
    """Training split ``[B, N]`` bool: the GT gradient ``[B, N, 3]`` points towards the camera (z < 0)."""
    return tf.reduce_sum(gradients * viewing_axis(projection)[:, None, :], axis=-1) < 0.0


class D2IMNet(DistributableModel):
    """D²IM-Net (or an ablation variant) built from a :class:`~d2im_tf.config.ModelConfig`.

    Trained by the base class's ``train_step`` on :meth:`compute_losses`. ``call(batch)`` reads
    ``image``, ``points``, ``projection`` and, if present, ``gradients`` (the
    training front/back split; without it the test-time split of :meth:`front_from_base` is used)
    and returns the dict of :meth:`decode` plus ``maps`` when the variant has them.
    """

    LOSS_NAMES = ("loss", "loss_base", "loss_sdf", "loss_lap")

    def __init__(self, config: ModelConfig | None = None, sdf_scale: float = 10.0, **kwargs):
        # Inputs stay as given (points and projections in float32) under a mixed-precision policy; the
        # encoder casts the image to the policy's type itself.
        kwargs["autocast"] = False
        super().__init__(**kwargs)
        self.model_config = config if config is not None else ModelConfig()
        self.sdf_scale = float(sdf_scale)
        self.spec = VARIANT_SPECS[self.model_config.variant]
        cfg = self.model_config
        self.reference = cfg.compat == "reference"
        self.focal = camera.focal_pixels(cfg.image_size)
        self.encoder = ResNet18(cfg.encoder_width, cfg.global_dim, name="encoder")
        self.code_norm = None  # model.code_norm "none": the paper's code as it is
        if cfg.code_norm == "batch":
            self.code_norm = keras.layers.BatchNormalization(momentum=0.9, name="code_norm")
        elif cfg.code_norm == "layer":
            self.code_norm = keras.layers.LayerNormalization(name="code_norm")
        base_decoder = GlobalLocalDecoder if self.spec.global_local else ImplicitDecoder
        # float32 under every policy (module docstring of d2im_tf.models.decoders); cheap beside the encoder
        self.base_decoder = base_decoder(
            cfg.decoder_widths, cfg.point_frequencies, dtype="float32", name="base_decoder"
        )
        self.detail_decoder = (
            DetailDecoder(cfg.detail_channels, self.spec.maps, name="detail_decoder") if self.spec.maps else None
        )
        # No AutoGraph: encode and decode branch on Python values only, and AutoGraph's cache of converted
        # code once handed this encode another function's conversion in a long test session.
        self._compiled_encode = tf.function(self.encode, autograph=False)
        self._compiled_decode = tf.function(self._decode_sdf, reduce_retracing=True, autograph=False)  # any N

    # ---------------------------------------------------------------- forward pieces

    def encode(self, images, training=None):
        """``images`` ``[B, S, S, 3]`` → dict: ``global_code`` [B, G], ``features`` [f0…f4], and
        ``maps`` [B, S, S, 2] (front, back; back ≡ 0 for noback) when the variant has a detail decoder."""
        if self.reference:
            images = tf.reverse(images, axis=[-1])  # RGB → the authors' BGR
        encoded = self.encoder(images, training=training)
        code = encoded["global_code"]  # [B, G]
        if self.code_norm is not None:
            code = self.code_norm(code, training=training)
        encoding = {"global_code": code, "features": encoded["features"]}
        if self.detail_decoder is not None:
            maps = self.detail_decoder(encoded["features"])  # [B, S, S, maps]
            if self.spec.maps == 1:
                maps = tf.concat([maps, tf.zeros_like(maps)], axis=-1)
            encoding["maps"] = maps
        return encoding

    def base_field(self, encoding, points, projection):
        """f_B ``[B, N]`` at normalised-frame ``points`` ``[B, N, 3]``."""
        if self.spec.global_local:
            uv, _ = camera.project(points, projection)
            return self.base_decoder(encoding["global_code"], points, encoding["features"], uv)
        return self.base_decoder(encoding["global_code"], points)

    def front_from_base(self, encoding, points, projection, base=None):
        """Test-time split ``[B, N]`` bool: f_B decreases along the viewing ray (the ray enters the shape).

        Compares f_B(p + δ·v) with f_B(p), v the unit direction from the camera centre to p,
        δ = ``model.front_offset`` (0.03, normalised frame), as the reference does. A finite
        difference rather than autodiff's directional derivative: it costs one more forward pass of
        the decoder instead of a backward pass, needs no tape inside the chunked inference, and the
        0.03 step averages out the MLP's small-scale wiggles, so the split follows the coarse
        shape's front surface, which is what the front map was trained against.
        """
        if base is None:
            base = self.base_field(encoding, points, projection)
        centre = camera.projection_centre(projection)  # [B, 3]
        direction = tf.math.l2_normalize(points - centre[:, None, :], axis=-1)  # [B, N, 3]
        ahead = self.base_field(encoding, points + self.model_config.front_offset * direction, projection)
        return ahead < base

    def displacements_at(self, encoding, uv):
        """Front and back displacement ``[B, N, 2]`` at pixel positions ``uv`` ``[B, N, 2]``: the maps read
        by the B-spline (bilinearly in the reference mode), zeros for variants without maps."""
        if "maps" not in encoding:
            return tf.zeros(tf.concat([tf.shape(uv)[:2], [2]], axis=0), uv.dtype)
        sample = sample_bilinear if self.reference else sample_bspline
        return sample(encoding["maps"], uv)

    def decode_bounds(self, encoding, points, projection):
        """f_B ``[B, N]`` and both displacements ``[B, N, 2]`` at ``points`` ``[B, N, 3]``, without the
        front/back split: the fused f of :meth:`decode` lies between f_B + the smaller and f_B + the larger
        displacement, for one decoder pass instead of two (what coarse-to-fine extraction needs far from
        the surface, :func:`d2im_tf.inference.extraction.extract_fused_mesh`); :meth:`fuse` completes
        them to f where the exact value is needed, with the second pass."""
        points = tf.cast(points, tf.float32)
        projection = tf.cast(projection, tf.float32)
        uv, _ = camera.project(points, projection)  # [B, N, 2]
        return self.base_field(encoding, points, projection), self.displacements_at(encoding, uv)

    def decode(self, encoding, points, projection, gradients=None):
        """SDF at ``points`` ``[B, N, 3]`` (normalised frame) seen through ``projection`` ``[B, 3, 4]``.

        ``gradients`` ``[B, N, 3]``: GT SDF gradients for the training front/back split; None at
        test time. Returns a dict of ``[B, N]`` tensors: ``sdf`` (fused f), ``base`` (f_B),
        ``displacement`` (f − f_B), ``front`` (bool), ``depth`` (world units) and ``uv`` [B, N, 2].
        """
        points = tf.cast(points, tf.float32)
        projection = tf.cast(projection, tf.float32)
        uv, depth = camera.project(points, projection)  # [B, N, 2], [B, N]
        base = self.base_field(encoding, points, projection)  # [B, N]
        displacements = self.displacements_at(encoding, uv)  # [B, N, 2]
        sdf, displacement, front = self.fuse(encoding, points, projection, base, displacements, gradients)
        return {"sdf": sdf, "base": base, "displacement": displacement, "front": front, "depth": depth, "uv": uv}

    def fuse(self, encoding, points, projection, base, displacements, gradients=None):
        """The fused f ``[B, N]`` from f_B ``[B, N]`` and both displacements ``[B, N, 2]`` at ``points``
        (as :meth:`decode_bounds` gives them): the front/back split chooses the displacement. Returns
        ``(sdf, displacement, front)``, each ``[B, N]``.

        The split comes from ``gradients`` when training, else from one more pass of the base decoder
        (:meth:`front_from_base`; the reference mode's own step and its ½ weights on ties, module
        docstring); variants without maps have nothing to choose.
        """
        points = tf.cast(points, tf.float32)
        projection = tf.cast(projection, tf.float32)
        if self.reference and gradients is None:
            step = reference_front_step(projection, self.model_config.front_offset)  # [B, 3]
            ahead = self.base_field(encoding, points + step[:, None, :], projection)  # [B, N]
            weight = 0.5 - 0.5 * tf.sign(ahead - base)  # [B, N]: 1 front, 0 back
            displacement = weight * displacements[..., 0] + (1.0 - weight) * displacements[..., 1]
            return base + displacement, displacement, weight > 0.5
        if gradients is not None:
            front = front_from_gradients(tf.cast(gradients, tf.float32), projection)
        elif "maps" in encoding:
            front = self.front_from_base(encoding, points, projection, base)
        else:
            front = tf.zeros_like(base, dtype=tf.bool)
        displacement = tf.where(front, displacements[..., 0], displacements[..., 1])
        return base + displacement, displacement, front

    def call(self, inputs, training=None):
        encoding = self.encode(inputs["image"], training=training)
        outputs = self.decode(encoding, inputs["points"], inputs["projection"], inputs.get("gradients"))
        if "maps" in encoding:
            outputs["maps"] = encoding["maps"]
        return outputs

    # ---------------------------------------------------------------- losses and training

    def forward(self, batch, training):
        """``call`` on the whole batch (it reads ``image``, ``points``, ``projection``, ``gradients``)."""
        return self(batch, training=training)

    def compute_losses(self, batch, outputs):
        """The loss terms of the variant (table in the module docstring) → dict over :attr:`LOSS_NAMES`."""
        sdf = tf.cast(batch["sdf"], tf.float32)
        weights = None  # model.inside_weight: DISN's weighting of the samples below inside_threshold
        if self.model_config.inside_weight != 1.0:
            below = sdf < self.model_config.inside_threshold * self.sdf_scale  # [B, N], network units
            weights = tf.where(below, self.model_config.inside_weight, 1.0)
        base_target = sdf  # model.base_target "sdf": the paper's L_B
        if self.model_config.base_target == "coarse_sdf":
            if "sdf_base" not in batch:
                raise ValueError("model.base_target 'coarse_sdf' needs the batch's 'sdf_base' (the relief-free SDF)")
            base_target = tf.cast(batch["sdf_base"], tf.float32)
        loss_base = base_loss(outputs["base"], base_target, weights)
        loss_sdf = sdf_loss(outputs["sdf"], sdf, weights)
        loss_lap = self.laplacian_term(batch, outputs) if self.spec.laplacian else tf.zeros_like(loss_sdf)
        total = loss_sdf + self.model_config.laplacian_weight * loss_lap + (loss_base if self.spec.maps else 0.0)
        return {"loss": total, "loss_base": loss_base, "loss_sdf": loss_sdf, "loss_lap": loss_lap}

    def laplacian_term(self, batch, outputs):
        """L_lap of ``outputs["maps"]``' front map against the batch's normal map (any variant with maps;
        the mask as in training: front points near the surface, away from the background and, with
        ``model.laplacian_flat_sigma``, from the coarse surface's bends)."""
        sdf = tf.cast(batch["sdf"], tf.float32)
        projection = tf.cast(batch["projection"], tf.float32)
        normal_map = tf.cast(batch["normal_map"], tf.float32)
        mask = laplacian_mask(
            sdf,
            outputs["front"],
            normal_map,
            outputs["uv"],
            flat_sigma=self.model_config.laplacian_flat_sigma,
            flat_tolerance=self.model_config.laplacian_flat_tolerance,
        )
        return laplacian_loss(
            outputs["maps"][..., :1],
            normal_map,
            outputs["uv"],
            outputs["depth"],
            norm_scale_from_projection(projection),
            self.focal,
            mask,
            self.sdf_scale,
        )

    # ---------------------------------------------------------------- chunked inference

    def _decode_sdf(self, encoding, points, projection):
        outputs = self.decode(encoding, points, projection)
        return {key: outputs[key] for key in ("sdf", "base", "displacement", "front")}

    def predict_sdf(self, images, points, projection, chunk_size: int = BATCH_POINTS):
        """Fused and base SDF at many points: encode once, decode ``chunk_size`` points at a time.

        ``images`` [B, S, S, 3]; ``points`` [B, N, 3] (normalised frame, any N, e.g. a 128³ grid);
        ``projection`` [B, 3, 4]. Test-time front/back split. Returns NumPy ``[B, N]`` arrays
        ``sdf``, ``base``, ``displacement`` and ``front``. The last chunk is padded so that one
        compiled decode serves every chunk.
        """
        points = np.asarray(points, np.float32)
        projection = tf.constant(projection, tf.float32)
        encoding = self._compiled_encode(tf.constant(images, tf.float32), training=False)
        num_points = points.shape[1]
        chunk_size = min(chunk_size, num_points)
        pieces = []
        for start in range(0, num_points, chunk_size):
            chunk = points[:, start : start + chunk_size]
            count = chunk.shape[1]
            if count < chunk_size:
                chunk = np.concatenate([chunk, np.repeat(chunk[:, -1:], chunk_size - count, axis=1)], axis=1)
            outputs = self._compiled_decode(encoding, tf.constant(chunk), projection)
            pieces.append({key: value.numpy()[:, :count] for key, value in outputs.items()})
        return {key: np.concatenate([piece[key] for piece in pieces], axis=1) for key in pieces[0]}

    def get_config(self):
        return {**super().get_config(), "config": dataclasses.asdict(self.model_config), "sdf_scale": self.sdf_scale}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        model_config = ModelConfig(**config.pop("config"))
        return cls(model_config, **config)
