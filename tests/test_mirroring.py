"""Mirroring (d2im_tf.inference.mirroring): a mirrored reading must give the mesh and camera
that the flipped image gives, reflected back; the mirror algebra is checked against the flip's
definition on pixels."""

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from d2im_tf.data import framing
from d2im_tf.geometry import camera
from d2im_tf.inference import mirroring

from conftest import ROOT

SIZE = 137


def test_a_mirrored_pose_draws_the_reflected_shape_where_the_flip_puts_it():
    """Points seen by a pose in the flipped image: the reflected points, under the unmirrored pose, land
    at ``u → S − u`` of those pixels in the unflipped one, and that pose is a rotation."""
    rng = np.random.default_rng(3)
    points = rng.uniform(-0.4, 0.4, (50, 3))
    rotation, translation = camera.world_to_camera(70.0, 25.0, 0.8)
    k = camera.intrinsics(SIZE)
    flipped = points @ rotation.T + translation
    flipped_uv = (flipped @ k.T)[:, :2] / flipped[:, 2:]
    rotation_u, translation_u = mirroring.unmirrored_pose(rotation, translation)
    np.testing.assert_allclose(rotation_u @ rotation_u.T, np.eye(3), atol=1e-6)
    assert np.linalg.det(rotation_u) == pytest.approx(1.0, abs=1e-6)
    seen = (points * [-1.0, 1.0, 1.0]) @ rotation_u.T + translation_u
    uv = (seen @ k.T)[:, :2] / seen[:, 2:]
    np.testing.assert_allclose(uv[:, 0], SIZE - flipped_uv[:, 0], atol=1e-3)
    np.testing.assert_allclose(uv[:, 1], flipped_uv[:, 1], atol=1e-3)


def test_warp_by_a_flip_is_the_image_flipped():
    pixels = np.random.default_rng(0).integers(0, 256, (40, 40, 3)).astype(np.uint8)
    flipped = framing.warp(pixels, framing.flip_transform(40), 40)
    np.testing.assert_array_equal(flipped, pixels[:, ::-1])


def test_the_mirrored_reading_is_kept_only_when_it_fits_far_better():
    ratio = mirroring.SWITCH_RATIO
    assert mirroring.kept([1.0, ratio + 0.01]) == 0
    assert mirroring.kept([1.0, ratio - 0.01]) == 1
    assert mirroring.kept([np.inf, 3.0]) == 1  # a plain reading without a surface
    assert mirroring.kept([1.0, np.inf]) == 0
    assert mirroring.kept([np.inf, np.inf]) == 0


@pytest.fixture(scope="module")
def bundled():
    from d2im_tf.bundled import BUNDLED_MODEL
    from d2im_tf.inference.reconstruct import Reconstructor

    return Reconstructor(BUNDLED_MODEL, resolution=64)


def test_a_mirrored_reading_is_the_flipped_image_reflected_back(bundled, monkeypatch):
    """The mirrored reading of an image against the plain reading of the image flipped on disk (a second
    path: the flip made before matting and re-framing): the same surface reflected by x → −x, and the
    written projection that of the flipped file composed with both flips. A dark block beside the chair's
    right legs makes the object asymmetric, so that reflecting the surface matters."""
    pixels = np.asarray(Image.open(ROOT / "examples" / "03001627_syn00005.png").convert("RGB")).copy()
    pixels[74:114, 92:122] = 60
    height, width = pixels.shape[:2]
    monkeypatch.setattr(mirroring, "kept", lambda scores: 1)  # the mirrored reading, whatever it scores
    mirrored = bundled.with_mirroring(True).reconstruct(pixels)
    flipped = bundled.with_mirroring(False).reconstruct(pixels[:, ::-1].copy())
    assert mirrored.mirrored and not flipped.mirrored
    reflected = cKDTree(flipped.mesh.vertices * [-1.0, 1.0, 1.0]).query(mirrored.mesh.vertices)[0]
    unreflected = cKDTree(flipped.mesh.vertices).query(mirrored.mesh.vertices)[0]
    assert len(mirrored.mesh.faces) > 500 and np.median(reflected) < 0.003 and np.percentile(reflected, 99) < 0.03
    assert np.median(unreflected) > 5 * np.median(reflected)
    assert mirrored.mesh.is_winding_consistent and mirrored.mesh.volume > 0  # normals still point out
    expected = framing.flip_transform(width) @ flipped.input_projection @ np.diag([-1.0, 1.0, 1.0, 1.0])
    expected /= np.linalg.norm(expected[2, :3])
    got = mirrored.input_projection / np.linalg.norm(mirrored.input_projection[2, :3])
    np.testing.assert_allclose(got, expected, atol=0.02 * np.abs(expected).max())
    np.testing.assert_allclose(mirrored.maps, flipped.maps[:, ::-1], atol=1e-3)
    assert mirrored.foreground.shape == (height, width)


def test_both_readings_are_scored_and_a_given_camera_reads_once(bundled, monkeypatch):
    from d2im_tf.inference import reconstruct as module

    pixels = np.asarray(Image.open(ROOT / "examples" / "02933112_syn00003.png"))
    tried = []
    encode = module.Reconstructor._encode_once

    def recording(self, *args, **kwargs):
        encoded = encode(self, *args, **kwargs)
        tried.append(encoded)
        return encoded

    monkeypatch.setattr(module.Reconstructor, "_encode_once", recording)
    result = bundled.with_mirroring(True).reconstruct(pixels)
    assert [encoded.mirrored for encoded in tried] == [False, True]
    assert all(np.isfinite(encoded.score) for encoded in tried)
    assert result.mirrored == bool(mirroring.kept([encoded.score for encoded in tried]))
    assert "mirroring" in result.timings
    tried.clear()
    bundled.with_mirroring(True).encode_input(pixels, camera_row=[30, 20, 0, 0.8, 35, 32, 1.75, 0, 0, 0])
    assert [encoded.mirrored for encoded in tried] == [False]
