"""Training input pipeline: the weighted sampler against its distribution, and the examples."""

import numpy as np
import pytest
import tensorflow as tf
import trimesh
from scipy import stats

from d2im_tf.config import load_config
from d2im_tf.data import disn_format as fmt
from d2im_tf.data.pipeline import (
    ShapeDataset,
    sample_without_replacement,
    stratified_point_indices,
    uniform_point_indices,
    weighted_point_indices,
)
from d2im_tf.geometry import camera

from conftest import TOY_CATEGORY


def test_first_draw_follows_the_weights():
    """The first of k draws without replacement is a plain categorical draw: chi-square against w."""
    weights = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], np.float32)
    trials = 6000
    log_w = tf.math.log(tf.constant(weights))
    firsts = np.zeros(len(weights))
    for t in range(trials):
        keys_seed = tf.constant([7, t], tf.int64)
        idx = sample_without_replacement(log_w, 1, keys_seed).numpy()
        firsts[idx[0]] += 1
    expected = weights / weights.sum() * trials
    assert stats.chisquare(firsts, expected).pvalue > 1e-3


def test_inclusion_frequencies_match_numpy_weighted_choice():
    """k-of-n inclusion counts agree with NumPy's successive weighted choice (two-sample chi-square)."""
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.1, 3.0, 20)
    k, trials = 5, 3000
    ours = np.zeros(20)
    theirs = np.zeros(20)
    log_w = tf.math.log(tf.constant(weights, tf.float32))
    for t in range(trials):
        ours[sample_without_replacement(log_w, k, tf.constant([3, t], tf.int64)).numpy()] += 1
        theirs[rng.choice(20, size=k, replace=False, p=weights / weights.sum())] += 1
    table = np.stack([ours, theirs])
    assert stats.chi2_contingency(table).pvalue > 1e-3
    # And the weighting matters: uniform inclusion would be rejected.
    assert stats.chisquare(ours, np.full(20, k * trials / 20)).pvalue < 1e-6


def test_half_inside_half_outside_without_duplicates():
    rng = np.random.default_rng(1)
    sdf = tf.constant(rng.uniform(-0.1, 0.1, 5000), tf.float32)
    density = tf.constant(rng.uniform(0.1, 1.0, 5000), tf.float32)
    index = weighted_point_indices(sdf, density, 512, tf.constant([0, 0], tf.int64)).numpy()
    assert len(np.unique(index)) == 512
    assert np.sum(sdf.numpy()[index] < 0) == 256 and np.sum(sdf.numpy()[index] >= 0) == 256


def test_uniform_fallback_when_a_side_is_small():
    sdf = np.full(4000, 0.05, np.float32)
    sdf[:300] = -0.05  # 300 ≤ 2048/5 inside samples: the reference falls back to uniform sampling
    density = np.ones(4000, np.float32)
    density[:300] = 1000.0  # weighting would pull in every inside sample; uniform does not
    counts = []
    for t in range(20):
        index = weighted_point_indices(tf.constant(sdf), tf.constant(density), 2048, tf.constant([5, t], tf.int64))
        index = index.numpy()
        assert len(np.unique(index)) == 2048
        counts.append(np.sum(sdf[index] < 0))
    # Uniform: inside count ~ hypergeometric(4000, 300, 2048), mean 153.6.
    assert abs(np.mean(counts) - 2048 * 300 / 4000) < 15


def test_uniform_indices_are_a_uniform_subset():
    index = uniform_point_indices(100, 100, tf.constant([1, 2], tf.int64)).numpy()
    assert sorted(index) == list(range(100))


# ---------------------------------------------------------------------------------------------
# The dataset over files written with the layout's writers.


def _config(root, *extra):
    return load_config(
        None,
        [
            f"data.root={root}",
            f"data.categories=['{TOY_CATEGORY}']",
            "data.num_points=256",
            "model.image_size=32",
            "data.views=4",
            *extra,
        ],
    )


def test_examples_have_the_contract_shapes(toy_root):
    data = ShapeDataset(_config(toy_root))
    batch = next(iter(data.dataset(batch_size=2)))
    assert batch["image"].shape == (2, 32, 32, 3) and batch["normal_map"].shape == (2, 32, 32, 3)
    assert batch["points"].shape == (2, 256, 3) and batch["sdf"].shape == (2, 256)
    assert batch["gradients"].shape == (2, 256, 3) and batch["projection"].shape == (2, 3, 4)
    assert 0.0 <= batch["image"].numpy().min() and batch["image"].numpy().max() <= 1.0
    # sdf is ×10 and matches the sphere the points came from: sdf = 10·(|p| − 0.3).
    np.testing.assert_allclose(batch["sdf"], 10 * (np.linalg.norm(batch["points"], axis=-1) - 0.3), atol=1e-5)
    assert np.all(np.sum(batch["sdf"].numpy() < 0, axis=1) == 128)


def test_projection_folds_in_the_normalisation(toy_root):
    config = _config(toy_root)
    data = ShapeDataset(config)
    example = next(iter(data.dataset(batch_size=1, repeat=False)))
    # Find which shape/view this is by matching against every camera of every shape.
    points = example["points"].numpy()[0]
    found = False
    for record in data.records:
        params = fmt.read_norm_params(fmt.DatasetLayout(toy_root).samples_path("03001627", record.shape))
        metadata = fmt.read_metadata(fmt.DatasetLayout(toy_root).metadata_path("03001627", record.shape))
        for row in metadata:
            P_world = camera.projection_matrix(row[0], row[1], row[3], 32)
            if np.allclose(
                example["projection"].numpy()[0],
                P_world @ np.block([[params[3] * np.eye(3), params[:3, None]], [np.zeros((1, 3)), 1]]),
                atol=1e-4,
            ):
                uv_world, _ = camera.project(points * params[3] + params[:3], P_world)
                uv_norm, _ = camera.project(points, example["projection"].numpy()[0].astype(np.float64))
                np.testing.assert_allclose(uv_norm, uv_world, atol=1e-3)
                found = True
    assert found


def test_stream_is_deterministic_and_resumable(toy_root):
    data = ShapeDataset(_config(toy_root))
    first = [b["points"].numpy() for b in data.dataset(batch_size=2).take(5)]
    again = [b["points"].numpy() for b in data.dataset(batch_size=2).take(5)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    resumed = [b["points"].numpy() for b in data.dataset(batch_size=2, start=6).take(2)]
    np.testing.assert_array_equal(resumed[0], first[3])
    np.testing.assert_array_equal(resumed[1], first[4])


def test_every_shape_once_per_epoch(toy_root):
    data = ShapeDataset(_config(toy_root))
    # ‖P[2, :3]‖ is the shape's norm scale m (K's last row is (0, 0, 1)).
    scales = [float(np.linalg.norm(b["projection"][0, 2, :3])) for b in data.dataset(batch_size=1).take(6)]
    assert sorted(np.round(scales[:3], 3)) == [0.5, 0.6, 0.7]
    assert sorted(np.round(scales[3:], 3)) == [0.5, 0.6, 0.7]


def test_extra_roots_join_their_shapes_to_the_stream(toy_root, tmp_path):
    """A second dataset (the same shapes, norm scales doubled) given as data.extra_roots: one epoch
    holds each shape of both once, each read from its own folder; a missing extra root is refused by
    the pre-training check, naming it."""
    import dataclasses
    import shutil

    from d2im_tf.data import pipeline
    from d2im_tf.data.check import validate_for_training
    from d2im_tf.errors import UserError

    second = tmp_path / "second"
    shutil.copytree(toy_root, second)
    layout = fmt.DatasetLayout(second)
    for shape in fmt.read_split(layout.split_path(TOY_CATEGORY, "train")):
        samples = fmt.read_samples(layout.samples_path(TOY_CATEGORY, shape))
        doubled = samples.norm_params * np.array([1, 1, 1, 2], np.float32)
        fmt.write_samples(layout.samples_path(TOY_CATEGORY, shape), dataclasses.replace(samples, norm_params=doubled))
    pipeline._read_samples.cache_clear()
    data = ShapeDataset(_config(toy_root, f"data.extra_roots=['{second}']"))
    assert [r.layout.root for r in data.records] == [toy_root] * 3 + [second] * 3
    assert all(str(second) in p.decode() for p in data._image_paths.numpy()[3:].ravel())
    scales = [float(np.linalg.norm(b["projection"][0, 2, :3])) for b in data.dataset(batch_size=1).take(6)]
    assert sorted(np.round(scales, 3)) == [0.5, 0.6, 0.7, 1.0, 1.2, 1.4]
    with pytest.raises(UserError, match=r"missing: dataset folder not found \(data.extra_roots\)"):
        validate_for_training(_config(toy_root, f"data.extra_roots=['{tmp_path / 'missing'}']"), "sdf")


def test_an_extra_root_adds_the_categories_it_holds(toy_root, tmp_path):
    """A second category in data.root and an extra root holding only the first (a set of tables alone,
    say): the extra root adds its shapes of that category; one holding none of them is refused."""
    import shutil

    from d2im_tf.data.check import validate_for_training
    from d2im_tf.errors import UserError

    other = "04379243"
    both = tmp_path / "both"
    shutil.copytree(toy_root, both)
    for path in sorted(both.rglob(f"{TOY_CATEGORY}*"), key=lambda p: len(p.parts)):
        if path.exists() and (path.parent.name in ("splits", "SDF_v1", "image", "normal_processed", "depth", "meshes")):
            copy = path.with_name(path.name.replace(TOY_CATEGORY, other))
            (shutil.copytree if path.is_dir() else shutil.copyfile)(path, copy)
    config = _config(both, f"data.categories=['{TOY_CATEGORY}', '{other}']", f"data.extra_roots=['{toy_root}']")
    validate_for_training(config, "sdf")
    records = ShapeDataset(config).records
    assert [(r.layout.root, r.category) for r in records] == (
        [(both, TOY_CATEGORY)] * 3 + [(both, other)] * 3 + [(toy_root, TOY_CATEGORY)] * 3
    )
    empty = tmp_path / "empty"
    (empty / "splits").mkdir(parents=True)
    (empty / "splits" / "02691156_train.lst").write_text("x\n")
    with pytest.raises(UserError, match=r"empty/splits: no split lists of 03001627, 04379243 \(data.extra_roots\)"):
        categories = f"data.categories=['{TOY_CATEGORY}', '{other}']"
        validate_for_training(_config(both, categories, f"data.extra_roots=['{empty}']"), "sdf")


def test_baseline_samples_uniformly(toy_root):
    data = ShapeDataset(_config(toy_root, "model.variant=baseline"))
    assert not data.weighted
    sdf = np.concatenate([b["sdf"].numpy().ravel() for b in data.dataset(batch_size=1).take(6)])
    # The sphere fills 4/3·π·0.3³ ≈ 11% of the box: uniform sampling keeps that ratio, not half/half.
    assert 0.07 < np.mean(sdf < 0) < 0.16


def test_missing_density_is_a_clear_error(toy_root, tmp_path):
    layout = fmt.DatasetLayout(toy_root)
    path = layout.samples_path("03001627", "a")
    original = fmt.read_samples(path)
    try:
        fmt.write_samples(path, fmt.SdfSamples(original.samples, original.norm_params))
        from d2im_tf.data import pipeline

        pipeline._read_samples.cache_clear()
        with pytest.raises(Exception, match="run `d2im preprocess`"):
            for _ in ShapeDataset(_config(toy_root)).dataset(batch_size=1, repeat=False):
                pass
    finally:
        fmt.write_samples(path, original)
        pipeline._read_samples.cache_clear()


def test_far_fraction_mixes_in_far_field_samples(toy_root):
    layout = fmt.DatasetLayout(toy_root)
    far_sets = {
        shape: fmt.read_samples(layout.samples_path(TOY_CATEGORY, shape)).far_samples[:, :3]
        for shape in ("a", "b", "c")
    }
    data = ShapeDataset(_config(toy_root, "data.far_fraction=0.25"))
    assert data.num_far_points == 64  # of 256
    for batch in data.dataset(batch_size=1).take(4):
        points = batch["points"].numpy()[0]
        near, far = points[:192], points[192:]
        # The last 64 points are distinct members of one shape's far-field set; the others are not.
        owners = [
            shape for shape, pool in far_sets.items() if all(np.any(np.all(pool == point, axis=1)) for point in far)
        ]
        assert len(owners) == 1 and len(np.unique(far, axis=0)) == 64
        assert not any(np.any(np.all(far_sets[owners[0]] == point, axis=1)) for point in near)
        assert np.abs(near).max() <= 0.5 < np.abs(far).max()  # the near samples lie in [-0.5, 0.5]³
        # Their SDF and gradients are the sphere's, like every other sample.
        np.testing.assert_allclose(batch["sdf"][0], 10 * (np.linalg.norm(points, axis=-1) - 0.3), atol=1e-5)
        np.testing.assert_allclose(
            batch["gradients"][0], points / np.linalg.norm(points, axis=-1, keepdims=True), atol=1e-5
        )
        # The weighted half/half split applies to the near samples.
        assert np.sum(batch["sdf"].numpy()[0, :192] < 0) == 96


def test_stratified_draws_take_exact_shares_uniformly_within_each_side():
    sdf = np.where(np.arange(1000) % 5 == 0, -1.0, 1.0).astype(np.float32)  # 200 inside, 800 outside
    counts = np.zeros(1000)
    for trial in range(300):
        index = stratified_point_indices(tf.constant(sdf), 100, 0.5, tf.constant([7, trial])).numpy()
        assert len(np.unique(index)) == 100 and np.sum(sdf[index] < 0) == 50
        counts[index] += 1
    # Within a side every sample is equally likely: 300·50/200 and 300·50/800 draws expected.
    for side, expected in ((sdf < 0, 75.0), (sdf >= 0, 18.75)):
        assert stats.chisquare(counts[side], np.full(side.sum(), expected)).pvalue > 1e-3
    # A side short of its share gives all it has; the other makes up the count.
    few = np.where(np.arange(1000) < 30, -1.0, 1.0).astype(np.float32)
    index = stratified_point_indices(tf.constant(few), 100, 0.5, tf.constant([1, 2])).numpy()
    assert len(np.unique(index)) == 100 and set(np.flatnonzero(few < 0)) <= set(index)
    index = stratified_point_indices(tf.constant(-few), 100, 0.5, tf.constant([1, 2])).numpy()
    assert len(np.unique(index)) == 100 and np.sum(-few[index] < 0) == 70


def test_far_inside_draws_the_far_field_samples_inside_the_shape(toy_root):
    layout = fmt.DatasetLayout(toy_root)
    pools = {shape: fmt.read_samples(layout.samples_path(TOY_CATEGORY, shape)).far_samples for shape in ("a", "b", "c")}
    data = ShapeDataset(_config(toy_root, "data.far_fraction=0.25", "data.far_inside=0.25"))
    for batch in data.dataset(batch_size=1).take(4):
        far_sdf = batch["sdf"].numpy()[0, 192:] / 10
        pool = next(p for p in pools.values() if np.isclose(p[:, 3], far_sdf[0]).any())
        # 16 of the 64 wanted inside; the sphere fills ~1.4% of the box, so all of its inside samples.
        assert 0 < np.sum(pool[:, 3] < 0) < 16
        assert np.sum(far_sdf < 0) == np.sum(pool[:, 3] < 0)


def test_far_fraction_without_far_samples_is_a_clear_error(toy_root, tmp_path):
    from d2im_tf.data import pipeline

    layout = fmt.DatasetLayout(toy_root)
    path = layout.samples_path(TOY_CATEGORY, "a")
    original = fmt.read_samples(path)
    try:
        stripped = fmt.read_samples(path)
        stripped.far_samples = stripped.far_gradients = None
        fmt.write_samples(path, stripped)
        pipeline._read_samples.cache_clear()
        for _ in ShapeDataset(_config(toy_root)).dataset(batch_size=3, repeat=False):
            pass  # without far-field sampling, DISN-layout data without them trains as before
        with pytest.raises(Exception, match="lacks far-field samples"):
            for _ in ShapeDataset(_config(toy_root, "data.far_fraction=0.1")).dataset(batch_size=3, repeat=False):
                pass
    finally:
        fmt.write_samples(path, original)
        pipeline._read_samples.cache_clear()


def test_coarse_base_target_reads_the_relief_free_sdf_at_the_same_points(toy_root, tmp_path):
    """model.base_target coarse_sdf: ``sdf_base`` holds pc_sdf_coarse (near) and pc_sdf_uniform_coarse
    (far) of the very points drawn — here a sphere of radius 0.25 inside the toy's 0.3 one."""
    import shutil

    from d2im_tf.data import pipeline

    root = tmp_path / "data"
    shutil.copytree(toy_root, root)
    layout = fmt.DatasetLayout(root)
    settings = ("model.base_target=coarse_sdf", "data.far_fraction=0.25")
    with pytest.raises(Exception, match="lacks the relief-free SDF"):
        next(iter(ShapeDataset(_config(root, *settings)).dataset(batch_size=1)))
    for shape in ("a", "b", "c"):
        path = layout.samples_path(TOY_CATEGORY, shape)
        samples = fmt.read_samples(path)
        samples.coarse_sdf = np.linalg.norm(samples.points, axis=1) - 0.25
        samples.far_coarse_sdf = np.linalg.norm(samples.far_samples[:, :3], axis=1) - 0.25
        fmt.write_samples(path, samples)
    pipeline._read_samples.cache_clear()
    try:
        for batch in ShapeDataset(_config(root, *settings)).dataset(batch_size=2).take(2):
            radius = np.linalg.norm(batch["points"], axis=-1)
            np.testing.assert_allclose(batch["sdf_base"], 10 * (radius - 0.25), atol=1e-5)
            np.testing.assert_allclose(batch["sdf"], 10 * (radius - 0.3), atol=1e-5)
            assert np.abs(batch["points"].numpy()[:, 192:]).max() > 0.5  # far-field points among them
        assert "sdf_base" not in next(iter(ShapeDataset(_config(root)).dataset(batch_size=1)))
    finally:
        pipeline._read_samples.cache_clear()


def test_camera_examples_project_like_the_world_camera(toy_root):
    from d2im_tf.data.pipeline import CameraDataset

    config = _config(toy_root, "camera.image_size=32", "camera.points=64")
    data = CameraDataset(config)
    layout = fmt.DatasetLayout(toy_root)
    example = next(iter(data.dataset(batch_size=1, repeat=False)))
    points = example["points"].numpy()[0].astype(np.float64)
    R, t = example["rotation"].numpy()[0], example["translation"].numpy()[0]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-5)
    P_pose = camera.intrinsics(32) @ np.column_stack([R, t])
    uv_pose, _ = camera.project(points, P_pose)
    # Some view of some shape projects the same world points to the same pixels.
    matches = 0
    for record in data.records:
        params = fmt.read_norm_params(layout.samples_path(TOY_CATEGORY, record.shape))
        for row in record.metadata:
            uv_world, _ = camera.project(points * params[3] + params[:3], camera.projection_from_metadata(row, 32))
            matches += np.allclose(uv_pose, uv_world, atol=1e-3)
    assert matches == 1
    # The points are on the toy sphere of radius 0.3 (normalised frame).
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), 0.3, atol=1e-5)


def test_framing_crops_the_image_and_moves_the_projection_with_it(tmp_path):
    """data.framing_object_size: renders of the toy spheres, cropped to 0.8 of the side. GT surface points
    projected with the example's projection land on the object in the cropped image and its normal map
    (before and after), and their box spans 0.8 of the side, centred: the framing's definition."""
    from d2im_tf.data import framing
    from d2im_tf.data.render import Renderer

    from conftest import write_toy_dataset

    layout = write_toy_dataset(tmp_path, image_size=48)
    for i, shape in enumerate(("a", "b", "c")):
        centre, m = np.array([0.01 * i, 0.0, -0.02]), 0.5 + 0.1 * i
        sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.3 * m)
        sphere.apply_translation(centre)
        renderer = Renderer(sphere)
        for v, row in enumerate(fmt.read_metadata(layout.metadata_path(TOY_CATEGORY, shape))):
            view = renderer.render(row, 48)
            fmt.write_png(layout.image_path(TOY_CATEGORY, shape, v), view.rgba)
            fmt.write_normal_map(layout.normal_path(TOY_CATEGORY, shape, v), view.normals, view.mask)
    sphere_points = trimesh.creation.icosphere(subdivisions=3, radius=0.3).vertices  # normalised frame
    for fraction in (0.0, 0.8):
        batch = next(iter(ShapeDataset(_config(tmp_path, f"data.framing_object_size={fraction}")).dataset(6)))
        for image, normals, projection in zip(
            batch["image"].numpy(), batch["normal_map"].numpy(), batch["projection"].numpy()
        ):
            uv, _ = camera.project(sphere_points[None], projection[None])
            uv = uv.numpy()[0]  # [N, 2]
            pixels = np.floor(uv).astype(int)
            centre = -np.linalg.solve(projection[:, :3], projection[:, 3])  # the camera's optical centre
            rays = sphere_points - centre
            facing = (
                np.einsum("ij,ij->i", rays / np.linalg.norm(rays, axis=1, keepdims=True), sphere_points / 0.3) < -0.3
            )  # front points away from the silhouette
            foreground = image.min(axis=-1) < 0.9
            assert foreground[pixels[facing, 1], pixels[facing, 0]].all()
            # nearest-neighbour resizing of the normal map may shift it by half a pixel
            assert (np.abs(normals[pixels[facing, 1], pixels[facing, 0]]).sum(axis=-1) > 0).mean() > 0.9
            if fraction:
                box = np.concatenate([uv.min(axis=0), uv.max(axis=0)])  # the sphere's silhouette's box
                # the crop's box is the 48² render's whole-pixel box: ±1 render pixel is ±1.5 pixels here
                assert max(box[2] - box[0], box[3] - box[1]) / 32 == pytest.approx(fraction, abs=3 / 32)
                np.testing.assert_allclose((box[:2] + box[2:]) / 2, 16, atol=1.5)
                assert framing.object_size(foreground) == pytest.approx(fraction, abs=3 / 32)
    # The camera network's examples: the same crop, the pose moved with it.
    from d2im_tf.data.pipeline import CameraDataset

    config = _config(tmp_path, "data.framing_object_size=0.8", "camera.image_size=32", "camera.points=64")
    batch = next(iter(CameraDataset(config).dataset(6)))
    for image, rotation, translation in zip(batch["image"].numpy(), batch["rotation"], batch["translation"]):
        projection = camera.intrinsics(32) @ np.column_stack([rotation.numpy(), translation.numpy()])
        uv, _ = camera.project(sphere_points[None], projection[None])
        uv = uv.numpy()[0]
        box = np.concatenate([uv.min(axis=0), uv.max(axis=0)])
        assert max(box[2] - box[0], box[3] - box[1]) / 32 == pytest.approx(0.8, abs=3 / 32)
        np.testing.assert_allclose((box[:2] + box[2:]) / 2, 16, atol=1.5)
        assert framing.object_size(image.min(axis=-1) < 0.9) == pytest.approx(0.8, abs=3 / 32)
