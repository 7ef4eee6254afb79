"""Tests of the SDF network (d2im_tf.models: encoder, decoders, D2IMNet) on analytic synthetic shapes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from d2im_tf.config import VARIANTS, ModelConfig, load_config
from d2im_tf.geometry import camera
from d2im_tf.geometry.frames import normalised_projection
from d2im_tf.models import D2IMNet, ResNet18
from d2im_tf.models.d2im import front_from_gradients, norm_scale_from_projection
from d2im_tf.models.decoders import local_features
from d2im_tf.models.losses import laplacian_loss, laplacian_mask

import helpers
from helpers import unproject

TINY = load_config("configs/tiny.yaml")
IMAGE = TINY.model.image_size
NUM_POINTS = 256


# ------------------------------------------------------------------------------------------------
# Synthetic shapes: analytic SDFs (normalised frame), a camera of camera.py, a sphere-traced normal map.


def bumpy_sphere(points):
    """A sphere of radius 0.4 with a bump pattern (approximately an SDF for small bumps)."""
    return np.linalg.norm(points, axis=-1) - 0.4 - 0.005 * np.sin(10 * points[..., 0]) * np.sin(10 * points[..., 1])


def rounded_box(points):
    """Exact SDF of a box of half-sizes (0.3, 0.25, 0.2) with edges rounded by 0.05."""
    q = np.abs(points) - np.array([0.25, 0.2, 0.15])
    return np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(axis=-1), 0.0) - 0.05


def sdf_gradient(shape, points, step=1e-4):
    columns = [(shape(points + step * e) - shape(points - step * e)) / (2 * step) for e in np.eye(3)]
    gradient = np.stack(columns, axis=-1)
    return gradient / np.linalg.norm(gradient, axis=-1, keepdims=True)


def render_scene(shape, az, el, dist, norm_center, norm_scale, seed):
    """One training example of the batch contract (``D2IMNet`` module docstring) for ``shape``."""
    rng = np.random.default_rng(seed)
    world_projection = camera.projection_matrix(az, el, dist, IMAGE)
    # float32, as the pipeline feeds it
    projection = normalised_projection(world_projection, np.array([*norm_center, norm_scale]))
    projection = projection.astype(np.float32).astype(np.float64)
    # The reference's four SDF bands in equal shares (docs/conventions.md, "Data layout").
    candidates = rng.uniform(-0.5, 0.5, (60000, 3))
    values = shape(candidates)
    bands = [(-0.1, -0.03), (-0.03, 0.0), (0.0, 0.03), (0.03, 0.1)]
    points = np.concatenate([candidates[(values >= low) & (values < high)][: NUM_POINTS // 4] for low, high in bands])
    # Sphere tracing from the optical centre through every pixel centre, in the normalised frame.
    centre = -np.linalg.solve(projection[:, :3], projection[:, 3])
    x, y = np.meshgrid(np.arange(IMAGE) + 0.5, np.arange(IMAGE) + 0.5)
    pixels = np.stack([x.ravel(), y.ravel()], -1)
    targets = unproject(pixels, np.ones(len(pixels)), projection).numpy()
    directions = targets - centre
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    travel = np.zeros(len(pixels))
    for _ in range(200):
        travel += 0.5 * shape(centre + travel[:, None] * directions)
    hits = centre + travel[:, None] * directions
    rotation, _ = camera.world_to_camera(az, el, dist)
    hit = np.abs(shape(hits)) < 1e-3
    normals = np.zeros_like(hits)  # background: zeros
    normals[hit] = sdf_gradient(shape, hits[hit]) @ rotation.T  # normalised-frame directions = world directions
    return {
        "image": rng.uniform(0, 1, (IMAGE, IMAGE, 3)).astype(np.float32),
        "points": points.astype(np.float32),
        "sdf": (10.0 * shape(points)).astype(np.float32),
        "gradients": sdf_gradient(shape, points).astype(np.float32),
        "projection": projection.astype(np.float32),
        "normal_map": normals.reshape(IMAGE, IMAGE, 3).astype(np.float32),
    }


@pytest.fixture(scope="module")
def batch():
    examples = [
        render_scene(bumpy_sphere, 30.0, 20.0, 0.6, np.array([0.02, -0.01, 0.03]), 1.2, seed=0),
        render_scene(rounded_box, 140.0, 25.0, 0.55, np.array([0.0, 0.05, 0.0]), 1.1, seed=1),
    ]
    return {key: np.stack([example[key] for example in examples]) for key in examples[0]}


def tiny_config(variant):
    config = load_config("configs/tiny.yaml", [f"model.variant={variant}"])
    return config.model


# ------------------------------------------------------------------------------------------------


def test_scene_has_front_points_on_the_rendered_surface(batch):
    assert batch["points"].shape == (2, NUM_POINTS, 3)
    foreground = np.any(batch["normal_map"] != 0, axis=-1).mean(axis=(1, 2))
    assert np.all(foreground > 0.1)
    front = front_from_gradients(batch["gradients"], batch["projection"]).numpy()
    assert 0.2 < front.mean() < 0.8


def test_training_front_split_uses_the_camera_frame_z_of_the_gradient():
    rng = np.random.default_rng(3)
    gradients = rng.normal(size=(1, 100, 3))
    gradients /= np.linalg.norm(gradients, axis=-1, keepdims=True)
    az, el, dist, scale = 75.0, -10.0, 0.9, 0.6
    projection = normalised_projection(camera.projection_matrix(az, el, dist)[None], np.array([[0.0, 0.0, 0.0, scale]]))
    rotation, _ = camera.world_to_camera(az, el, dist)
    expected = (gradients @ rotation.T)[..., 2] < 0
    np.testing.assert_array_equal(front_from_gradients(gradients, projection).numpy(), expected)


def test_encoder_shapes_scale_with_width():
    encoder = ResNet18(width=8, global_dim=16)
    outputs = encoder(np.zeros((2, 32, 32, 3), np.float32))
    shapes = [tuple(f.shape) for f in outputs["features"]]
    assert shapes == [(2, 32, 32, 8), (2, 16, 16, 8), (2, 8, 8, 16), (2, 4, 4, 32), (2, 2, 2, 64)]
    assert tuple(outputs["global_code"].shape) == (2, 16)
    assert tuple(outputs["embedding"].shape) == (2, 1000)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_encoder_gradient_at_odd_batch_sizes(batch_size):
    """Regression: a strided 1×1 convolution's gradient crashed the process at these sizes."""
    encoder = ResNet18(width=8, global_dim=16)
    images = np.random.default_rng(5).uniform(0, 1, (batch_size, 32, 32, 3)).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(encoder(images, training=True)["global_code"])
    gradients = tape.gradient(loss, encoder.trainable_weights)
    assert all(np.all(np.isfinite(g.numpy())) for g in gradients)


def test_coarse_feature_pixels_are_centred_where_local_features_read_them():
    """Centre-tap kernels turn the encoder into a subsampler: an impulse at input pixel (r, c), r and
    c multiples of 16, must land on pixel (r/s, c/s) of every map and be read back at its uv."""
    encoder = ResNet18(width=4, global_dim=8)
    image = np.zeros((1, 64, 64, 3), np.float32)
    row, col = 32, 16
    image[0, row, col] = 1.0
    encoder(image)
    for layer in encoder._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Conv2D):
            kernel = np.zeros(layer.kernel.shape, np.float32)
            k = kernel.shape[0] // 2
            kernel[k, k] = 1.0 / kernel.shape[2]
            layer.kernel.assign(kernel)
    features = encoder(image, training=False)["features"]
    uv = np.array([[[col + 0.5, row + 0.5]]], np.float32)
    for level, feature in enumerate(features):
        peak = np.unravel_index(np.argmax(feature.numpy()[0, ..., 0]), feature.shape[1:3])
        assert peak == (row >> level, col >> level)
    sampled = local_features(features, uv).numpy()[0, 0]
    peaks = np.concatenate([feature.numpy()[0].max(axis=(0, 1)) for feature in features])
    np.testing.assert_allclose(sampled, peaks, rtol=1e-5)


def test_default_network_has_the_reference_parameter_count():
    """Exactly the count of the layer sizes (:func:`helpers.d2im_net`), and the reference's 12.19 M once
    the two 1×1 convolutions (64 → 64) its detail decoder declares but never uses are added."""
    model = D2IMNet(ModelConfig())  # variant full, 224 px; the count does not depend on the input size
    encoding = model.encode(np.zeros((1, 32, 32, 3), np.float32))
    model.decode(encoding, np.zeros((1, 4, 3), np.float32), camera.projection_matrix(30, 20, 0.8)[None])
    count = helpers.Parameters.of(model)
    assert count == helpers.d2im_net(ModelConfig())
    assert round((count.trainable + 2 * (64 * 64 + 64)) / 1e4) == 1219


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variable_gets_a_gradient(variant, batch):
    model = D2IMNet(tiny_config(variant))
    with tf.GradientTape() as tape:
        outputs = model(batch, training=True)
        losses = model.compute_losses(batch, outputs)
    assert np.isfinite(losses["loss"].numpy())
    if model.spec.laplacian:
        assert losses["loss_lap"].numpy() > 0
    gradients = tape.gradient(losses["loss"], model.trainable_weights)
    for variable, gradient in zip(model.trainable_weights, gradients):
        assert gradient is not None, variable.path
        gradient = tf.convert_to_tensor(gradient).numpy()
        if not model.spec.maps and variable.path.endswith("base_decoder/sdf/bias"):
            # The loss is L_sdf alone, mean |f − F|: the output bias's gradient is the mean sign of f − F,
            # which is 0 whenever as many samples lie above the GT as below (it happens at random init).
            np.testing.assert_allclose(gradient, [np.mean(np.sign(outputs["sdf"].numpy() - batch["sdf"]))], atol=1e-6)
            continue
        assert np.any(gradient != 0), variable.path


def test_noback_never_displaces_back_points(batch):
    model = D2IMNet(tiny_config("noback"))
    outputs = model(batch)
    back = ~outputs["front"].numpy()
    assert back.any()
    np.testing.assert_array_equal(outputs["displacement"].numpy()[back], 0.0)
    np.testing.assert_array_equal(outputs["maps"].numpy()[..., 1], 0.0)


def test_inside_weight_weighs_the_samples_below_the_threshold(batch):
    """DISN's weighting: GT sdf < inside_threshold (normalised units, so × sdf_scale in the network's)
    weighs inside_weight in L_B and L_sdf; L_lap is unchanged."""
    config = load_config("configs/tiny.yaml", ["model.inside_weight=4", "model.inside_threshold=0.01"]).model
    model = D2IMNet(config, sdf_scale=10.0)
    outputs = model(batch, training=False)
    weighted = model.compute_losses(batch, outputs)
    sdf = batch["sdf"]
    below = sdf < 0.1
    assert below.any() and (~below).any() and (below & (sdf > 0)).any()  # inside and near outside both count
    weights = np.where(below, 4.0, 1.0)
    base, fused = outputs["base"].numpy(), outputs["sdf"].numpy()
    total = weights.sum()
    assert weighted["loss_base"].numpy() == pytest.approx(np.sum(weights * (base - sdf) ** 2) / total, rel=1e-5)
    assert weighted["loss_sdf"].numpy() == pytest.approx(np.sum(weights * np.abs(fused - sdf)) / total, rel=1e-5)
    model.model_config = load_config("configs/tiny.yaml").model  # inside_weight 1: the plain means
    plain = model.compute_losses(batch, outputs)
    assert plain["loss_sdf"].numpy() == pytest.approx(np.mean(np.abs(fused - sdf)), rel=1e-5)
    assert plain["loss_lap"].numpy() == pytest.approx(weighted["loss_lap"].numpy())


def test_coarse_base_target_fits_the_base_field_to_sdf_base_and_the_fused_field_to_the_gt(batch):
    """model.base_target coarse_sdf: L_B is mean (f_B − sdf_base)², L_sdf and L_lap are unchanged."""
    model = D2IMNet(load_config("configs/tiny.yaml", ["model.base_target=coarse_sdf"]).model, sdf_scale=10.0)
    outputs = model(batch, training=False)
    with pytest.raises(ValueError, match="sdf_base"):
        model.compute_losses(batch, outputs)
    sdf_base = batch["sdf"] - 0.3 * np.cos(7 * batch["points"][..., 0])  # any field other than the GT
    coarse = model.compute_losses({**batch, "sdf_base": sdf_base}, outputs)
    base, fused = outputs["base"].numpy(), outputs["sdf"].numpy()
    assert coarse["loss_base"].numpy() == pytest.approx(np.mean((base - sdf_base) ** 2), rel=1e-5)
    assert coarse["loss_sdf"].numpy() == pytest.approx(np.mean(np.abs(fused - batch["sdf"])), rel=1e-5)
    model.model_config = load_config("configs/tiny.yaml").model  # the paper's target ignores sdf_base
    plain = model.compute_losses({**batch, "sdf_base": sdf_base}, outputs)
    assert plain["loss_base"].numpy() == pytest.approx(np.mean((base - batch["sdf"]) ** 2), rel=1e-5)
    assert plain["loss_lap"].numpy() == pytest.approx(coarse["loss_lap"].numpy())


def test_laplacian_weight_scales_only_the_laplacian_term_of_the_total(batch):
    """λ·L_lap in the total; the logged terms are the unweighted losses, equal for every λ."""
    outputs, losses = None, {}
    for weight in (1.0, 0.25, 0.0):
        model = D2IMNet(load_config("configs/tiny.yaml", [f"model.laplacian_weight={weight}"]).model, sdf_scale=10.0)
        if outputs is None:
            outputs = model(batch, training=False)
        losses[weight] = {key: value.numpy() for key, value in model.compute_losses(batch, outputs).items()}
    paper = losses[1.0]
    assert paper["loss_lap"] > 0.0
    assert paper["loss"] == pytest.approx(paper["loss_sdf"] + paper["loss_base"] + paper["loss_lap"], rel=1e-6)
    for weight in (0.25, 0.0):
        for key in ("loss_base", "loss_sdf", "loss_lap"):
            assert losses[weight][key] == pytest.approx(paper[key], rel=1e-6)
        expected = paper["loss_sdf"] + paper["loss_base"] + weight * paper["loss_lap"]
        assert losses[weight]["loss"] == pytest.approx(expected, rel=1e-6)


def test_flat_laplacian_option_restricts_the_laplacian_loss_to_the_flat_mask(batch):
    """model.laplacian_flat_sigma > 0: L_lap is the masked mean over the flat part of P_F only."""
    config = load_config("configs/tiny.yaml", ["model.laplacian_flat_sigma=2", "model.laplacian_flat_tolerance=0.05"])
    model = D2IMNet(config.model, sdf_scale=10.0)
    outputs = model(batch, training=False)
    flat = model.compute_losses(batch, outputs)["loss_lap"].numpy()
    model.model_config = load_config("configs/tiny.yaml").model
    every = model.compute_losses(batch, outputs)["loss_lap"].numpy()
    args = (
        outputs["maps"][..., :1],
        batch["normal_map"],
        outputs["uv"],
        outputs["depth"],
        norm_scale_from_projection(tf.constant(batch["projection"])),
        model.focal,
    )
    mask = laplacian_mask(batch["sdf"], outputs["front"], batch["normal_map"], outputs["uv"], flat_sigma=2.0)
    assert (
        0
        < mask.numpy().sum()
        < laplacian_mask(batch["sdf"], outputs["front"], batch["normal_map"], outputs["uv"]).numpy().sum()
    )
    assert flat == pytest.approx(laplacian_loss(*args, mask, 10.0).numpy(), rel=1e-5)
    assert flat != pytest.approx(every, rel=1e-3)


def test_test_time_front_split_follows_the_base_field_along_the_ray(batch):
    """With f_B replaced by the analytic sphere, the split must mark the camera-facing points."""
    model = D2IMNet(tiny_config("full"))
    projection = tf.constant(batch["projection"][:1])
    points = batch["points"][:1]
    model.base_field = lambda encoding, p, proj: tf.cast(10.0 * bumpy_sphere(np.asarray(p, np.float64)), tf.float32)
    encoding = model.encode(batch["image"][:1])
    front = model.front_from_base(encoding, points, projection).numpy()[0]
    centre = -np.linalg.solve(batch["projection"][0, :, :3], batch["projection"][0, :, 3])
    view = points[0] - centre
    view /= np.linalg.norm(view, axis=-1, keepdims=True)
    facing = np.sum(sdf_gradient(bumpy_sphere, points[0].astype(np.float64)) * view, axis=-1)
    clear = np.abs(facing) > 0.3  # away from grazing angles, where a 0.03 step may cross the surface
    assert np.mean(front[clear] == (facing[clear] < 0)) > 0.97


@pytest.mark.parametrize("variant", ["full", "noback", "baseline"])
def test_decode_bounds_hold_the_base_and_the_two_displacements_the_split_chooses_from(variant, batch):
    """What coarse-to-fine extraction relies on: decode's f_B is decode_bounds' f_B, the fused value is f_B
    plus the front or the back displacement of decode_bounds, as the test-time split says, and fuse gives
    that value from decode_bounds' outputs."""
    model = D2IMNet(tiny_config(variant))
    encoding = model.encode(batch["image"], training=False)
    decoded = model.decode(encoding, batch["points"], batch["projection"])
    base, displacements = (
        value.numpy() for value in model.decode_bounds(encoding, batch["points"], batch["projection"])
    )
    assert displacements.shape == base.shape + (2,)
    np.testing.assert_allclose(base, decoded["base"].numpy(), atol=1e-6)
    chosen = np.where(decoded["front"].numpy(), displacements[..., 0], displacements[..., 1])
    np.testing.assert_allclose(decoded["sdf"].numpy() - base, chosen, atol=1e-5)
    fused, _, front = model.fuse(encoding, batch["points"], batch["projection"], base, displacements)
    np.testing.assert_array_equal(front.numpy(), decoded["front"].numpy())  # fuse completes the bounds to decode
    np.testing.assert_allclose(fused.numpy(), decoded["sdf"].numpy(), atol=1e-6)
    if variant != "baseline":
        assert np.abs(displacements[..., 0] - displacements[..., 1]).max() > 1e-3  # the choice matters


def test_point_encoding_is_the_fourier_features():
    from d2im_tf.models.decoders import encode_points

    points = np.array([[0.25, -0.5, 0.125]], np.float32)
    encoded = np.asarray(encode_points(tf.constant(points), 2))  # [1, 15]
    angles = np.concatenate([points * np.pi, points * 2 * np.pi], axis=-1)  # k = 0, 1
    np.testing.assert_allclose(encoded, np.concatenate([points, np.sin(angles), np.cos(angles)], -1), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(encode_points(tf.constant(points), 0)), points)  # L = 0: raw xyz


@pytest.mark.parametrize(
    "overrides",
    [[], ["model.point_frequencies=3", "model.code_norm=batch"], ["model.variant=gl", "model.point_frequencies=2"]],
)
def test_config_round_trip_rebuilds_the_same_function(overrides, batch):
    config = load_config("configs/tiny.yaml", overrides).model
    model = D2IMNet(config, sdf_scale=7.0)
    inputs = {key: batch[key] for key in ("image", "points", "projection")}
    expected = model(inputs, training=False)["sdf"].numpy()
    clone = D2IMNet.from_config(model.get_config())
    assert clone.model_config == config and clone.sdf_scale == 7.0
    clone(inputs, training=False)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(inputs, training=False)["sdf"].numpy(), expected, atol=1e-5)


def test_chunked_prediction_equals_one_decode(batch):
    model = D2IMNet(tiny_config("full"))
    query = np.random.default_rng(4).uniform(-0.5, 0.5, (2, 1000, 3)).astype(np.float32)
    chunked = model.predict_sdf(batch["image"], query, batch["projection"], chunk_size=300)
    whole = model.decode(model.encode(batch["image"], training=False), query, batch["projection"])
    # The compiled (graph) and eager decodes round differently. Untrained SDFs reach |20|, and a value
    # near 0 carries the rounding of the large terms it came from, so float32 agreement is judged
    # against the field's scale (a wrong chunk or padding would differ by O(1)).
    for key in ("sdf", "base"):
        expected = whole[key].numpy()
        tolerance = 2e-5 * max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(chunked[key], expected, rtol=0, atol=tolerance)


@pytest.mark.slow
def test_full_variant_overfits_two_shapes(batch):
    """1,000 Adam steps of ``full`` (all three losses) on one batch, with the tiny config's decoder widened
    to 64 so that the fit is not capacity-bound. Learning through the data pipeline and the study
    recipe is test_learning.py's memorisation test."""
    keras.utils.set_random_seed(0)
    config = load_config("configs/tiny.yaml", ["model.variant=full", "model.decoder_widths=[64,64,64,32,32]"])
    model = D2IMNet(config.model)
    steps = 1000
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(5e-3, steps)))

    def training_losses():
        return {name: float(value) for name, value in model.compute_losses(batch, model(batch, training=True)).items()}

    initial = training_losses()
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(), epochs=1, steps_per_epoch=steps, verbose=0)
    final = training_losses()
    assert final["loss"] < initial["loss"] / 10, (initial, final)
    # Full's initial total is dominated by L_lap; the fused SDF itself must be fitted too.
    assert final["loss_sdf"] < initial["loss_sdf"] / 5, (initial, final)
