"""Shared test fixtures: a toy DISN-layout dataset written with the layout's own writers."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from d2im_tf.data import disn_format as fmt

TOY_CATEGORY = "03001627"
TOY_SAMPLES = 3000
TOY_FAR_SAMPLES = 500


def write_toy_dataset(root, shapes=("a", "b", "c"), views=4, image_size=48, test_shapes=("t",)):
    """Spheres of radius 0.3 (normalised frame) with different norm params; random images.

    Norm params of shape i: c = (0.01·i, 0, −0.02), m = 0.5 + 0.1·i; view v of shape i has azimuth
    90·v + 10·i, elevation 15 + 5·v, distance ratio 0.7. Samples are uniform in [−0.5, 0.5]³ with the
    sphere's exact SDF, unit gradients and random densities; far-field samples are uniform in
    [−1, 1]³ with the same exact SDF and gradients.
    """
    layout = fmt.DatasetLayout(root)
    rng = np.random.default_rng(0)
    fmt.write_split(layout.split_path(TOY_CATEGORY, "train"), shapes)
    fmt.write_split(layout.split_path(TOY_CATEGORY, "test"), test_shapes)
    for i, shape in enumerate([*shapes, *test_shapes]):
        points = rng.uniform(-0.5, 0.5, (TOY_SAMPLES, 3)).astype(np.float32)
        sdf = (np.linalg.norm(points, axis=1) - 0.3).astype(np.float32)
        gradients = (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)
        far = rng.uniform(-1.0, 1.0, (TOY_FAR_SAMPLES, 3)).astype(np.float32)
        far_sdf = (np.linalg.norm(far, axis=1) - 0.3).astype(np.float32)
        surface = rng.normal(size=(500, 3))
        surface = (0.3 * surface / np.linalg.norm(surface, axis=1, keepdims=True)).astype(np.float32)
        fmt.write_samples(layout.samples_path(TOY_CATEGORY, shape), fmt.SdfSamples(
            np.column_stack([points, sdf]), np.array([0.01 * i, 0.0, -0.02, 0.5 + 0.1 * i]),
            surface_points=surface, gradients=gradients,
            density=rng.uniform(0.1, 1.0, TOY_SAMPLES).astype(np.float32),
            far_samples=np.column_stack([far, far_sdf]),
            far_gradients=(far / np.linalg.norm(far, axis=1, keepdims=True)).astype(np.float32)))
        fmt.write_metadata(layout.metadata_path(TOY_CATEGORY, shape),
                           [[90 * v + 10 * i, 15 + 5 * v, 0, 0.7, 35, 32, 1.75, 0, 0, 0] for v in range(views)])
        for v in range(views):
            fmt.write_png(layout.image_path(TOY_CATEGORY, shape, v),
                          rng.integers(0, 256, (image_size, image_size, 4), dtype=np.uint8))
            normals = rng.normal(size=(image_size, image_size, 3))
            fmt.write_normal_map(layout.normal_path(TOY_CATEGORY, shape, v),
                                 normals / np.linalg.norm(normals, axis=-1, keepdims=True))
    return layout


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_data")
    write_toy_dataset(root)
    return root
