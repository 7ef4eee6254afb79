"""The training input pipeline: ``tf.data`` over a DISN-layout dataset.

Each example is one shape seen from one random view: the image, the GT normal map, the camera, and
``num_points`` SDF samples drawn by the paper's density-weighted sampling (docs/conventions.md, "Data layout") — half
inside, half outside, without replacement, with probability ∝ density — or uniformly for the Baseline.
With ``data.far_fraction`` = φ > 0, round(φ·num_points) of them are instead drawn uniformly from the
shape's far-field samples (``pc_sdf_uniform``, uniform over the [-1, 1]³ box; written by ``make-data``),
so the base field is supervised away from the surface too; DISN's data has none and trains with φ = 0.
With ``data.far_inside`` = ψ > 0, round(ψ·round(φ·num_points)) of those far-field draws come from the
samples inside the shape and the rest from outside (each side uniformly): a uniform draw over the box
puts only the shape's share of its volume inside (~8% for a cabinet), too few to keep a bulky shape's
deep interior negative (docs/notes/training_study.md, "The interior of bulky shapes").

With ``data.framing_object_size`` = σ > 0, each image is cropped to its object's box (the render's
alpha) and resized so the box spans σ of the side (:func:`d2im_tf.data.framing.reframe`); the normal
map is cropped the same way (nearest neighbour) and the projection is multiplied by the crop's affine
map, so every point still projects onto its pixel (the camera network's examples are not cropped).
With ``model.base_target`` "coarse_sdf", examples also carry ``sdf_base``: the relief-free SDF
(``pc_sdf_coarse``, ``pc_sdf_uniform_coarse``) at the same points, the target of L_B.

Determinism and resume: element ``k`` of the stream is fully determined by ``(seed, k)``. Its shape is
position ``k mod S`` of a permutation drawn for epoch ``k // S``; its view and points come from
stateless random ops seeded with ``(seed, k)``. Parallel map therefore changes nothing, and resuming
from element ``k`` is ``start=k`` — no replay. Under ``tf.distribute`` the stream is sharded by
element (``AutoShardPolicy.DATA``), so each worker sees a disjoint part of it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from d2im_tf.config import Config
from d2im_tf.data import disn_format as fmt
from d2im_tf.geometry import camera, frames

UNIFORM_FALLBACK_FRACTION = 0.2  # a side with ≤ num_points/5 samples → uniform sampling (reference)


# ------------------------------------------------------------------------------------------
# Point sampling, in the graph.


def _gumbel(shape, seed):
    uniform = tf.random.stateless_uniform(shape, seed, minval=1e-12, maxval=1.0)
    return -tf.math.log(-tf.math.log(uniform))


def sample_without_replacement(log_weights, k, seed):
    """Indices ``[k]`` drawn without replacement with probability ∝ ``exp(log_weights)``.

    Gumbel-top-k: perturbing log-weights with Gumbel noise and keeping the k largest is equivalent to
    k successive weighted draws without replacement. Entries with weight 0 (``-inf``) are never drawn
    unless fewer than k entries have positive weight.
    """
    keys = log_weights + _gumbel(tf.shape(log_weights), seed)
    return tf.math.top_k(keys, k=k, sorted=False).indices


def weighted_point_indices(sdf, density, num_points, seed):
    """The paper's sampling: ``num_points // 2`` indices with sdf < 0 and the rest with sdf ≥ 0.

    Each side is drawn without replacement ∝ ``density``. If either side cannot supply its half, or
    has at most ``num_points / 5`` samples (the reference's rule), all samples are drawn uniformly.
    ``sdf``, ``density``: ``[M]``. Returns ``[num_points]`` int32 indices.
    """
    inside = sdf < 0
    n_inside = tf.reduce_sum(tf.cast(inside, tf.int32))
    n_outside = tf.size(sdf) - n_inside
    half_in = num_points // 2
    half_out = num_points - half_in
    threshold = int(num_points * UNIFORM_FALLBACK_FRACTION)
    balanced = (n_inside > threshold) & (n_outside > threshold) & (n_inside >= half_in) & (n_outside >= half_out)
    seed_in, seed_out = tf.unstack(tf.random.experimental.stateless_split(seed, 2))

    def weighted():
        log_density = tf.math.log(tf.maximum(density, 1e-30))
        never = tf.fill(tf.shape(sdf), -np.inf)
        idx_in = sample_without_replacement(tf.where(inside, log_density, never), half_in, seed_in)
        idx_out = sample_without_replacement(tf.where(inside, never, log_density), half_out, seed_out)
        return tf.concat([idx_in, idx_out], axis=0)

    return tf.cond(balanced, weighted, lambda: uniform_point_indices(tf.size(sdf), num_points, seed))


def uniform_point_indices(count, num_points, seed):
    """``num_points`` indices of ``range(count)`` without replacement, uniformly."""
    return sample_without_replacement(tf.zeros([count]), num_points, seed)


def stratified_point_indices(sdf, num_points, inside_share, seed):
    """``num_points`` indices ``[num_points]`` without replacement: round(``inside_share``·num_points) of
    them where ``sdf`` ``[M]`` < 0 and the rest where sdf ≥ 0, uniformly within each side. A side with
    too few samples gives all it has and the other side makes up the count (M ≥ num_points)."""
    inside = sdf < 0
    n_inside = tf.reduce_sum(tf.cast(inside, tf.int32))
    n_outside = tf.size(sdf) - n_inside
    wanted = int(round(inside_share * num_points))
    take_inside = tf.minimum(tf.maximum(wanted, num_points - n_outside), n_inside)
    keys = _gumbel(tf.shape(sdf), seed)  # a uniform random order within each side
    never = tf.fill(tf.shape(sdf), -np.inf)
    order_inside = tf.math.top_k(tf.where(inside, keys, never), k=num_points).indices
    order_outside = tf.math.top_k(tf.where(inside, never, keys), k=num_points).indices
    return tf.concat([order_inside[:take_inside], order_outside[: num_points - take_inside]], axis=0)


# ------------------------------------------------------------------------------------------
# Shapes on disk.


@dataclass(frozen=True)
class ShapeRecord:
    """What the pipeline knows about one shape before reading its samples."""

    category: str
    shape: str
    metadata: np.ndarray  # [V, 10] rendering_metadata rows
    norm_params: np.ndarray  # [4]: cx, cy, cz, m
    projections: np.ndarray  # [V, 3, 4]: normalised-frame points → model-resolution pixels
    layout: fmt.DatasetLayout  # the dataset the shape belongs to (data.root or one of data.extra_roots)


def has_split(config: Config, split: str) -> bool:
    """Whether any configured category lists at least one shape in ``split`` (of any dataset)."""
    sets = fmt.DatasetLayout.all_from_config(config)
    paths = [layout.split_path(category, split) for layout, categories in sets for category in categories]
    return any(path.exists() and fmt.read_split(path) for path in paths)


def load_records(config: Config, split: str) -> list[ShapeRecord]:
    """Read the split lists, cameras and norm params of every shape of ``split``: ``data.root``'s, then
    those of each of ``data.extra_roots``."""
    sets = fmt.DatasetLayout.all_from_config(config)
    records = []
    for layout, categories in sets:
        for category in categories:
            for shape in fmt.read_split(layout.split_path(category, split)):
                metadata = fmt.read_metadata(layout.metadata_path(category, shape))[: config.data.views]
                norm_params = fmt.read_norm_params(layout.samples_path(category, shape))
                world = [camera.projection_from_metadata(row, config.model.image_size) for row in metadata]
                projections = np.stack([frames.normalised_projection(p, norm_params) for p in world])
                records.append(ShapeRecord(category, shape, metadata, norm_params, projections, layout))
    if not records:
        raise fmt.DataError(sets[0][0].split_dir, f"no shapes in the {split} split of {config.data.categories}")
    return records


@functools.lru_cache(maxsize=2048)  # ~1 MB a shape: a synthetic dataset (or several) fits whole
def _read_samples(path: str) -> fmt.SdfSamples:
    return fmt.read_samples(path)


def _surface_points(path: bytes):
    """``[S, 3]`` surface points of a shape (``pc_sdf_original``, else the samples nearest the surface)."""
    samples = _read_samples(path.decode())
    if samples.surface_points is not None:
        return samples.surface_points.astype(np.float32)
    nearest = np.argsort(np.abs(samples.sdf))[: len(samples.sdf) // 8]
    return samples.points[nearest].astype(np.float32)


def _shape_arrays(path: bytes, need_density: bool, need_far: bool, need_coarse: bool = False):
    """NumPy side of the pipeline: ``[M, 3]`` points, ``[M]`` sdf, ``[M, 3]`` gradients, ``[M]`` density,
    ``[M]`` base target, and the far-field ``[K, 3]`` points, ``[K]`` sdf, ``[K, 3]`` gradients, ``[K]``
    base target (K = 0 unless ``need_far``). The base target is the coarse SDF with ``need_coarse``,
    else the sdf itself."""
    path = path.decode()
    samples = _read_samples(path)
    if samples.gradients is None or (need_density and samples.density is None):
        raise fmt.DataError(path, "lacks pc_gradients/density: run `d2im preprocess` on the dataset")
    density = samples.density if samples.density is not None else np.ones(len(samples.samples))
    if need_far:
        if samples.far_samples is None or samples.far_gradients is None:
            raise fmt.DataError(
                path,
                "lacks far-field samples (pc_sdf_uniform, pc_gradients_uniform): "
                "set data.far_fraction=0 or regenerate the data with `d2im make-data`",
            )
        far, far_gradients = samples.far_samples, samples.far_gradients
    else:
        far, far_gradients = np.zeros((0, 4)), np.zeros((0, 3))
    base, far_base = samples.sdf, far[:, 3]
    if need_coarse:
        if samples.coarse_sdf is None or (need_far and samples.far_coarse_sdf is None):
            raise fmt.DataError(
                path,
                "lacks the relief-free SDF (pc_sdf_coarse, pc_sdf_uniform_coarse) that model.base_target "
                "'coarse_sdf' trains on: run the make-data command of the dataset again with --coarse-sdf",
            )
        base, far_base = samples.coarse_sdf, samples.far_coarse_sdf if need_far else far_base
    return tuple(
        np.asarray(array, np.float32)
        for array in (samples.points, samples.sdf, samples.gradients, density, base, far[:, :3], far[:, 3])
    ) + (np.asarray(far_gradients, np.float32), np.asarray(far_base, np.float32))


# ------------------------------------------------------------------------------------------
# The dataset.


def framed_example(image_path: bytes, normal_path: bytes, image_size: int, object_size: float):
    """NumPy side of ``data.framing_object_size``: ``(image [S, S, 3], normals [S, S, 3], A [3, 3])`` —
    the render composited on white and re-framed, its normal map likewise, and the affine A of the
    pixels of the render resized to S (the projection's pixels) to the re-framed image's."""
    from PIL import Image

    from d2im_tf.data import framing

    image, transform, projection_affine, (height, width) = _reframed_render(image_path, image_size, object_size)
    normals = fmt.read_normal_map(normal_path.decode())  # [h, w, 3] unit normals, zeros on the background
    to_normals = np.diag([normals.shape[1] / width, normals.shape[0] / height, 1.0])  # render → normal-map pixels
    normals = framing.warp(normals, transform @ np.linalg.inv(to_normals), image_size, fill=0.0, resample=Image.NEAREST)
    return image, normals.astype(np.float32), projection_affine


def framed_image(image_path: bytes, image_size: int, object_size: float):
    """:func:`framed_example` without the normal map (the camera network's examples): ``(image [S, S, 3],
    A [3, 3])``."""
    image, _, projection_affine, _ = _reframed_render(image_path, image_size, object_size)
    return image, projection_affine


def _reframed_render(image_path: bytes, image_size: int, object_size: float):
    """The render on white, re-framed, in [0, 1]; the affine of its pixels to the result's; the affine of
    the projection's pixels (the render resized to S) to the result's; the render's size."""
    from d2im_tf.data import framing

    rgba = fmt.read_image(image_path.decode())
    if rgba.shape[-1] != 4:
        raise fmt.DataError(image_path.decode(), "data.framing_object_size needs RGBA renders (the alpha is the mask)")
    mask = rgba[..., 3] > 127
    image, transform = framing.reframe(fmt.on_white(rgba).astype(np.float32), mask, object_size, image_size)
    height, width = rgba.shape[:2]
    resized = np.diag([image_size / width, image_size / height, 1.0])  # render → the projection's pixels
    projection_affine = (transform @ np.linalg.inv(resized)).astype(np.float32)
    return np.clip(image / 255.0, 0.0, 1.0).astype(np.float32), transform, projection_affine, (height, width)


def decode_image(path, image_size: int):
    """PNG → ``[S, S, 3]`` float32 in [0, 1]; RGBA is composited on white, as the renders' background."""
    image = tf.image.decode_png(tf.io.read_file(path), channels=4)
    image = tf.cast(image, tf.float32) / 255.0
    rgb, alpha = image[..., :3], image[..., 3:]
    image = rgb * alpha + (1.0 - alpha)
    return tf.image.resize(image, [image_size, image_size], antialias=True)


def _decode_normals(path, image_size: int):
    """``_mnormal.png`` → ``[S, S, 3]`` unit camera-space normals, zeros on the (black) background."""
    encoded = tf.image.decode_png(tf.io.read_file(path), channels=3)
    background = tf.reduce_all(tf.equal(encoded, 0), axis=-1, keepdims=True)
    normals = tf.cast(encoded, tf.float32) / 255.0 * 2.0 - 1.0
    normals = tf.where(background, 0.0, normals)
    normals = tf.image.resize(normals, [image_size, image_size], method="nearest")
    return tf.math.divide_no_nan(normals, tf.norm(normals, axis=-1, keepdims=True))


class ShapeDataset:
    """Builds the ``tf.data.Dataset`` of training examples for a config and split.

    Examples follow the batch contract of :mod:`d2im_tf.models.d2im`: ``image``, ``normal_map``,
    ``points``, ``sdf`` (× ``sdf_scale``), ``gradients`` and ``projection`` (normalised frame → pixels).
    """

    def __init__(self, config: Config, split: str = "train"):
        self.config = config
        self.split = split
        self.records = load_records(config, split)
        views = min(len(r.projections) for r in self.records)
        self.num_views = views
        self._image_paths = tf.constant(
            [[str(r.layout.image_path(r.category, r.shape, v)) for v in range(views)] for r in self.records]
        )
        self._normal_paths = tf.constant(
            [[str(r.layout.normal_path(r.category, r.shape, v)) for v in range(views)] for r in self.records]
        )
        self._sample_paths = tf.constant([str(r.layout.samples_path(r.category, r.shape)) for r in self.records])
        self._projections = tf.constant(np.stack([r.projections[:views] for r in self.records]), tf.float32)

    @property
    def weighted(self) -> bool:
        """Density-weighted sampling for every variant but the Baseline (paper's Table 1)."""
        return self.config.model.variant != "baseline"

    @property
    def num_far_points(self) -> int:
        """Points per example drawn from the far-field samples (``data.far_fraction``)."""
        return int(round(self.config.data.num_points * self.config.data.far_fraction))

    def __len__(self) -> int:
        return len(self.records)

    def _epoch_order(self, epoch):
        """The shape indices ``[S]`` of an epoch: a permutation drawn from ``(seed, −1 − epoch)``."""
        seed = tf.stack([tf.constant(self.config.data.seed, tf.int64), -1 - epoch])
        order = tf.random.experimental.stateless_shuffle(tf.range(len(self.records), dtype=tf.int64), seed=seed)
        return tf.data.Dataset.from_tensor_slices(tf.cast(order, tf.int32))

    def _element(self, k):
        """Element ``k``'s view index and the seed for its points."""
        seed = tf.stack([tf.constant(self.config.data.seed, tf.int64), k])
        view = tf.random.stateless_uniform([], seed, maxval=self.num_views, dtype=tf.int32)
        return view, tf.random.experimental.stateless_fold_in(seed, 1)

    def _example(self, k, shape):
        view, points_seed = self._element(k)
        size = self.config.model.image_size
        num_far = self.num_far_points
        coarse = self.config.model.base_target == "coarse_sdf"
        arrays = tf.numpy_function(
            functools.partial(_shape_arrays, need_density=self.weighted, need_far=num_far > 0, need_coarse=coarse),
            [self._sample_paths[shape]],
            [tf.float32] * 9,
            stateful=False,
        )
        points, sdf, gradients, density, base = arrays[:5]
        far_points, far_sdf, far_gradients, far_base = arrays[5:]
        num = self.config.data.num_points
        num_near = num - num_far
        near_seed, far_seed = points_seed, None  # without far-field points, the streams of earlier versions
        if num_far:
            near_seed, far_seed = tf.unstack(tf.random.experimental.stateless_split(points_seed, 2))
        if self.weighted:
            index = weighted_point_indices(sdf, density, num_near, near_seed)
        else:
            index = uniform_point_indices(tf.size(sdf), num_near, near_seed)
        points, sdf, gradients, base = (tf.gather(x, index) for x in (points, sdf, gradients, base))
        if num_far:
            if self.config.data.far_inside:
                far_index = stratified_point_indices(far_sdf, num_far, self.config.data.far_inside, far_seed)
            else:
                far_index = uniform_point_indices(tf.size(far_sdf), num_far, far_seed)
            points = tf.concat([points, tf.gather(far_points, far_index)], axis=0)
            sdf = tf.concat([sdf, tf.gather(far_sdf, far_index)], axis=0)
            gradients = tf.concat([gradients, tf.gather(far_gradients, far_index)], axis=0)
            base = tf.concat([base, tf.gather(far_base, far_index)], axis=0)
        projection = self._projections[shape, view]  # [3, 4]
        if self.config.data.framing_object_size:
            image, normal_map, transform = tf.numpy_function(
                framed_example,
                [
                    self._image_paths[shape, view],
                    self._normal_paths[shape, view],
                    size,
                    self.config.data.framing_object_size,
                ],
                [tf.float32] * 3,
                stateful=False,
            )
            image, normal_map = tf.ensure_shape(image, [size, size, 3]), tf.ensure_shape(normal_map, [size, size, 3])
            projection = tf.ensure_shape(transform, [3, 3]) @ projection
        else:
            image = decode_image(self._image_paths[shape, view], size)
            normal_map = _decode_normals(self._normal_paths[shape, view], size)
        example = {
            "image": image,
            "normal_map": normal_map,
            "points": tf.ensure_shape(points, [num, 3]),
            "sdf": tf.ensure_shape(sdf * self.config.data.sdf_scale, [num]),
            "gradients": tf.ensure_shape(gradients, [num, 3]),
            "projection": projection,
        }
        if coarse:
            example["sdf_base"] = tf.ensure_shape(base * self.config.data.sdf_scale, [num])
        return example

    def dataset(self, batch_size: int, start: int = 0, repeat: bool = True) -> tf.data.Dataset:
        """Batched examples from stream element ``start`` on (endless if ``repeat``)."""
        count = len(self.records)
        end = np.iinfo(np.int64).max if repeat else start + count
        # Each epoch's permutation is drawn once, and element k pairs with position k mod S of it.
        epochs = tf.data.Dataset.range(start // count, (end - 1) // count + 1)
        shapes = epochs.flat_map(self._epoch_order).skip(start % count)
        data = tf.data.Dataset.zip(tf.data.Dataset.range(start, end), shapes)
        data = data.map(self._example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        data = data.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return data.with_options(options)


class CameraDataset(ShapeDataset):
    """Examples for the camera network (batch contract of :mod:`d2im_tf.models.camera_net`).

    ``image``; ``points`` — ``camera.points`` surface points of the shape in the normalised frame; and
    the GT ``rotation`` [3, 3] and ``translation`` [3] of :func:`~d2im_tf.geometry.frames.normalised_pose`
    for the view.
    """

    def __init__(self, config: Config, split: str = "train"):
        super().__init__(config, split)
        poses = [
            [
                frames.normalised_pose(*camera.world_to_camera(r[0], r[1], r[3]), rec.norm_params)
                for r in rec.metadata[: self.num_views]
            ]
            for rec in self.records
        ]
        self._rotations = tf.constant([[p[0] for p in views] for views in poses], tf.float32)  # [S, V, 3, 3]
        self._translations = tf.constant([[p[1] for p in views] for views in poses], tf.float32)  # [S, V, 3]

    def _example(self, k, shape):
        view, points_seed = self._element(k)
        surface = tf.numpy_function(_surface_points, [self._sample_paths[shape]], tf.float32, stateful=False)
        count = self.config.camera.points
        index = uniform_point_indices(tf.shape(surface)[0], count, points_seed)
        points = tf.gather(surface, index)
        size = self.config.camera.image_size
        rotation, translation = self._rotations[shape, view], self._translations[shape, view]
        if self.config.data.framing_object_size:  # re-framed as the SDF network's, the pose moved with it
            image, transform = tf.numpy_function(
                framed_image,
                [self._image_paths[shape, view], size, self.config.data.framing_object_size],
                [tf.float32] * 2,
                stateful=False,
            )
            image, transform = tf.ensure_shape(image, [size, size, 3]), tf.ensure_shape(transform, [3, 3])
            rotation, translation = camera.reframed_pose(rotation, translation, transform, size)
        else:
            image = decode_image(self._image_paths[shape, view], size)
        return {
            "image": image,
            "points": tf.ensure_shape(points, [count, 3]),
            "rotation": rotation,
            "translation": translation,
        }
