"""Tests of the camera network (d2im_tf.models.camera_net) against camera.py's matrices."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from d2im_tf.config import load_config
from d2im_tf.geometry import camera
from d2im_tf.geometry.frames import normalised_projection
from d2im_tf.models import CameraNet
from d2im_tf.models.camera_net import translation_from_distance

RNG = np.random.default_rng(2)
VIEWS = [(30.0, 20.0, 0.8), (-100.0, 5.0, 0.65), (215.0, -15.0, 0.9), (350.0, 40.0, 0.7)]


def tiny_camera_config(backbone="resnet18", translation="distance", width=8):
    return load_config(
        "configs/tiny.yaml",
        [f"camera.backbone={backbone}", f"camera.translation={translation}", f"camera.width={width}"],
    ).camera


def ground_truth(views):
    rotations, translations = zip(*(camera.world_to_camera(*view) for view in views))
    return np.stack(rotations).astype(np.float32), np.stack(translations).astype(np.float32)


@pytest.mark.parametrize("backbone, translation", [("resnet18", "distance"), ("vgg16", "full")])
def test_network_outputs_proper_rotations(backbone, translation):
    model = CameraNet(tiny_camera_config(backbone, translation, width=4))
    outputs = model(RNG.uniform(0, 1, (3, 32, 32, 3)).astype(np.float32), training=False)
    rotation = outputs["rotation"].numpy()
    np.testing.assert_allclose(
        rotation @ np.transpose(rotation, (0, 2, 1)), np.broadcast_to(np.eye(3), (3, 3, 3)), atol=1e-5
    )
    np.testing.assert_allclose(np.linalg.det(rotation), 1.0, atol=1e-5)
    assert outputs["translation"].shape == (3, 3)
    if translation == "distance":
        np.testing.assert_array_equal(outputs["translation"].numpy()[:, :2], 0.0)


def test_distance_translation_lies_on_the_axis_of_camera_extrinsics():
    for az, el, dist in VIEWS:
        _, translation = camera.world_to_camera(az, el, dist)
        np.testing.assert_allclose(translation_from_distance(np.array([[dist]])).numpy()[0], translation, atol=1e-6)


def test_projection_from_pose_matches_camera_and_the_reference_check_value():
    rotation, translation = camera.world_to_camera(30.0, 20.0, 0.8)
    projection = camera.projection_from_pose(tf.constant(rotation[None]), tf.constant(translation[None]), 224)
    np.testing.assert_allclose(projection.numpy()[0], camera.projection_matrix(30.0, 20.0, 0.8), atol=1e-9)
    uv, depth = camera.project(np.array([[[0.1, -0.2, 0.3]]]), projection)
    np.testing.assert_allclose(uv.numpy()[0, 0], [70.7480, 164.8630], atol=1e-3)
    np.testing.assert_allclose(depth.numpy()[0, 0], 1.246070, atol=1e-5)


def test_normalised_projection_folds_the_normalisation():
    world_projection = np.stack([camera.projection_matrix(*view) for view in VIEWS[:2]])
    center = RNG.normal(0, 0.1, (2, 3))
    scale = np.array([0.7, 1.3])
    points = RNG.uniform(-0.5, 0.5, (2, 50, 3))
    folded = normalised_projection(world_projection, np.column_stack([center, scale]))
    uv_folded, depth_folded = camera.project(points, folded)
    uv_world, depth_world = camera.project(points * scale[:, None, None] + center[:, None, :], world_projection)
    np.testing.assert_allclose(uv_folded.numpy(), uv_world.numpy(), atol=1e-8)
    np.testing.assert_allclose(depth_folded.numpy(), depth_world.numpy(), atol=1e-10)


def test_camera_loss_is_zero_for_the_true_camera_only():
    rotation, translation = ground_truth(VIEWS)
    model = CameraNet(tiny_camera_config())
    batch = {
        "points": RNG.uniform(-0.5, 0.5, (4, 100, 3)).astype(np.float32),
        "rotation": rotation,
        "translation": translation,
    }
    # The true pose expressed through the heads' parameterisations (6D rotation, distance).
    true_outputs = {
        "rotation": camera.rotation_from_6d(camera.rotation_to_6d(rotation)),
        "translation": translation_from_distance(np.array([[view[2]] for view in VIEWS], np.float32)),
    }
    assert model.compute_losses(batch, true_outputs)["loss"].numpy() < 1e-10
    wrong = {"rotation": tf.reverse(true_outputs["rotation"], [0]), "translation": true_outputs["translation"]}
    assert model.compute_losses(batch, wrong)["loss"].numpy() > 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("translation", ["distance", "full"])
def test_fit_reduces_the_camera_loss(translation):
    keras.utils.set_random_seed(0)
    rotation, translation_true = ground_truth(VIEWS)
    batch = {
        "image": RNG.uniform(0, 1, (4, 32, 32, 3)).astype(np.float32),
        "points": RNG.uniform(-0.5, 0.5, (4, 200, 3)).astype(np.float32),
        "rotation": rotation,
        "translation": translation_true,
    }
    model = CameraNet(tiny_camera_config(translation=translation))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    initial = float(model.compute_losses(batch, model(batch["image"], training=True))["loss"])
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(), epochs=1, steps_per_epoch=60, verbose=0)
    final = float(model.compute_losses(batch, model(batch["image"], training=True))["loss"])
    assert final < initial / 5, (initial, final)
    projection = model.projection(model(batch["image"], training=False))
    assert projection.shape == (4, 3, 4)
