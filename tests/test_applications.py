"""Detail transfer and paste-n-reconstruct (d2im_tf.applications): the composed fields against the Keras
model's own pieces, the paste's exact invariance outside the logo, the logo's camera, and bad input."""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from d2im_tf.applications.fields import FieldModel
from d2im_tf.applications.paste import LogoPaste, Placement, logo_paste, logo_projection, pasted_image, place
from d2im_tf.applications.transfer import BoxPair, DetailTransfer, detail_transfer
from d2im_tf.cli import main
from d2im_tf.data import framing
from d2im_tf.data.framing import square_transform
from d2im_tf.errors import UserError
from d2im_tf.geometry import camera
from d2im_tf.geometry.interpolation import sample_bspline
from d2im_tf.inference.reconstruct import Reconstructor

ROW_T = np.array([30.0, 20.0, 0, 0.8, 35, 32, 1.75, 0, 0, 0])
ROW_S = np.array([120.0, 10.0, 0, 0.7, 35, 32, 1.75, 0, 0, 0])
LINE_T = "[30, 20, 0, 0.8, 35, 32, 1.75, 0, 0, 0]"


@pytest.fixture(scope="module")
def tiny(tiny_export):
    return tiny_export("full", "none", with_camera=True)


@pytest.fixture(scope="module")
def field_model(tiny):
    # the noise images stand for objects filling the frame: not matted (their preparation as a
    # reconstruction's is tested on an object on white at the end)
    return FieldModel(Reconstructor(tiny.path, resolution=16, matting=False))


def images(seed: int, count: int = 2, size: int = 32):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def cloud(count=400, seed=3):
    return np.random.default_rng(seed).uniform(-0.6, 0.6, (count, 3)).astype(np.float32)


def test_transfer_matches_the_keras_pieces(tiny, field_model):
    """f_B of the target + the source's maps read by the B-spline at u_S(C(p)), the target's front/back
    test choosing the map: recomputed from the Keras model that was exported."""
    source_pixels, target_pixels = images(0)
    source = field_model.encode(source_pixels, ROW_S)
    target = field_model.encode(target_pixels, ROW_T)
    pair = BoxPair(np.array([[-0.4, -0.3, -0.5], [0.4, 0.5, 0.3]]), np.array([[-0.2, -0.6, -0.3], [0.5, 0.2, 0.4]]))
    composed = field_model.field(target, DetailTransfer(field_model, source, [pair], source_mask=False), cloud())

    model = tiny.sdf
    points = tf.constant(cloud()[None])
    enc_t = model.encode(tf.constant(target.image[None]), training=False)
    enc_s = model.encode(tf.constant(source.image[None]), training=False)
    base = model.base_field(enc_t, points, target.projection)
    front = model.front_from_base(enc_t, points, target.projection, base)
    q = pair.map(cloud()).astype(np.float32)
    uv_s, _ = camera.project(tf.constant(q[None]), source.projection)
    theirs = sample_bspline(enc_s["maps"], uv_s)  # [1, N, 2]
    expected = (base + tf.where(front, theirs[..., 0], theirs[..., 1])).numpy()[0]
    np.testing.assert_allclose(composed, expected, atol=1e-5)
    assert np.abs(composed - field_model.field(target, None, cloud())).max() > 1e-3  # it did change something


def test_the_source_mask_keeps_the_target_where_the_source_shows_background(field_model):
    """A source image white but for its left half: corresponding points seen on its white right half keep
    the target's own displacements, the others take the source's."""
    source_pixels = np.full((32, 32, 3), 255, np.uint8)
    source_pixels[:, :16] = images(10, 1)[0][:, :16] // 2
    source = field_model.encode(source_pixels, ROW_S)
    target = field_model.encode(images(11, 1)[0], ROW_T)
    pair = BoxPair(np.array([[-0.5] * 3, [0.5] * 3]), np.array([[-0.5] * 3, [0.5] * 3]))
    points = cloud(2000, 12)
    _, own = field_model.bounds(target, points)
    out = DetailTransfer(field_model, source, [pair]).displacements(points, own)
    uv = camera.project_numpy(points, source.projection.numpy())
    seen = (uv[:, 0] >= 0) & (uv[:, 0] < 16) & (uv[:, 1] >= 0) & (uv[:, 1] < 32)  # off the image: not seen
    assert 100 < seen.sum() < len(points) - 100
    np.testing.assert_array_equal(out[~seen], own[~seen])
    _, theirs = field_model.bounds(source, points[seen])
    np.testing.assert_allclose(out[seen], theirs, atol=1e-6)


def test_box_pair_maps_corners_and_centres():
    pair = BoxPair.from_numbers([-1, -1, -1, 1, 1, 1, 0, 0, 0, 2, 4, 1])
    np.testing.assert_allclose(
        pair.map(np.array([[-1, -1, -1], [1, 1, 1], [0, 0, 0]])), [[0, 0, 0], [2, 4, 1], [1, 2, 0.5]]
    )
    with pytest.raises(UserError, match="lower < upper"):
        BoxPair.from_numbers([0, 0, 0, 1, 1, -1, 0, 0, 0, 1, 1, 1])


def test_where_and_parts_keep_the_target_elsewhere(field_model):
    source_pixels, target_pixels = images(1)
    source, target = field_model.encode(source_pixels, ROW_S), field_model.encode(target_pixels, ROW_T)
    points = cloud()
    _, own = field_model.bounds(target, points)
    pair = BoxPair(np.array([[-0.2] * 3, [0.2] * 3]), np.array([[-0.3] * 3, [0.3] * 3]))
    front_only = DetailTransfer(field_model, source, [pair], "front").displacements(points, own)
    np.testing.assert_array_equal(front_only[:, 1], own[:, 1])
    parts = detail_transfer(field_model, source, target, "both", [pair]).displacements(points, own)
    outside = ~pair.inside(points)
    assert outside.any() and (~outside).any()
    np.testing.assert_array_equal(parts[outside], own[outside])
    _, theirs = field_model.bounds(source, pair.map(points[~outside]).astype(np.float32))
    np.testing.assert_allclose(parts[~outside], theirs, atol=1e-6)


def test_coarse_box_bounds_the_negative_base_field(field_model, tiny):
    target = field_model.encode(images(2)[0], ROW_T)
    box = field_model.coarse_box(target)
    points = np.random.default_rng(0).uniform(-1, 1, (4000, 3)).astype(np.float32)
    base, _ = field_model.bounds(target, points)
    inside = points[base < 0]
    assert len(inside) > 0
    assert np.all(inside >= box[0] - 1e-6) and np.all(inside <= box[1] + 1e-6)


def test_logo_projection_maps_the_pasted_rectangle_onto_the_logo_image():
    """With P = [I₂ 0 | 0 0 0 1] a point (x, y, z) projects to the pixel (x, y): the rectangle's corners in
    the prepared target must land on the corners of the logo's content in the prepared logo image, for
    a target padded to a square and for one re-framed (an arbitrary scale and shift)."""
    target_shape, logo_shape, size = (80, 100), (20, 40), 32  # target padded to 100², logo to 40²
    placement = Placement(left=30, top=20, width=20, height=10)
    identity = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1.0]])
    k_t, k_l = size / 100, size / 40
    corners_file = np.array([[30, 20], [50, 30]], float)  # left-top, right-bottom of the rectangle
    padded = square_transform(*target_shape, size)
    reframed = np.array([[0.7, 0.0, -5.0], [0.0, 0.7, 3.0], [0.0, 0.0, 1.0]])
    for target_transform, prepared in (
        (padded, (corners_file + [0, 10]) * k_t),  # the target's padding: 10 rows on top
        (reframed, corners_file * 0.7 + [-5.0, 3.0]),
    ):
        np.testing.assert_allclose(prepared, corners_file @ target_transform[:2, :2].T + target_transform[:2, 2])
        logo_transform = square_transform(*logo_shape, size)
        projection = logo_projection(identity, target_transform, logo_transform, logo_shape, placement)[0]
        uv = camera.project_numpy(np.column_stack([prepared, np.zeros(2)]), projection)
        np.testing.assert_allclose(uv, np.array([[0, 10], [40, 30]]) * k_l, atol=1e-5)  # logo padded 10 rows


def test_place_and_paste_image():
    placement = place((60, 80), (10, 20), (40, 30), size=40)
    assert placement == Placement(20, 20, 40, 20)
    target = np.zeros((60, 80, 3), np.uint8)
    logo = np.zeros((10, 20, 4), np.uint8)
    logo[2:8, 5:15] = [255, 0, 0, 255]
    image, mask = pasted_image(target, logo, placement)
    assert mask.sum() == 12 * 20 and mask[24:36, 30:50].all()
    inner = image[26:34, 32:48].astype(int)  # away from the resampled edges
    assert np.abs(inner - [255, 0, 0]).max() <= 8 and (image[~mask] == 0).all()
    for at, size, phrase in [
        ((90, 10), None, "outside the target"),
        ((40, 30), 100, "larger than the target"),
        ((2, 30), 40, "reaches outside"),
    ]:
        with pytest.raises(UserError, match=phrase):
            place((60, 80), (10, 20), at, size)


def test_paste_changes_nothing_outside_the_logo(field_model):
    """Bit for bit the target's own field where the point's projection misses the pasted foreground; the
    target's plus the logo's front map (read through the pasted place's camera) on front points under it."""
    target_pixels = images(4, 1, 64)[0]
    logo = np.zeros((16, 16, 4), np.uint8)
    logo[4:12, 2:14] = [0, 0, 0, 255]
    target, logo_view, paste, _ = logo_paste(field_model, target_pixels, logo, (32, 30), 24, "add", ROW_T)
    points = np.random.default_rng(5).uniform(-0.5, 0.5, (3000, 3)).astype(np.float32)
    covered = paste.covered(points)
    assert 50 < covered.sum() < len(points) - 50
    own = field_model.field(target, None, points)
    pasted = field_model.field(target, paste, points)
    np.testing.assert_array_equal(pasted[~covered], own[~covered])
    base, own_displacements = field_model.bounds(target, points)
    _, logo_displacements = field_model.bounds(logo_view, points, paste.projection)
    front = np.abs(own - (base + own_displacements[:, 0])) < np.abs(own - (base + own_displacements[:, 1]))
    chosen = covered & front & (np.abs(own_displacements[:, 0] - own_displacements[:, 1]) > 1e-3)
    assert chosen.sum() > 10
    np.testing.assert_allclose(pasted[chosen], own[chosen] + logo_displacements[chosen, 0], atol=1e-5)
    # The mask in the target's pixels: the covered points project into the pasted rectangle.
    uv = camera.project_numpy(points[covered], target.projection.numpy()) * 64 / field_model.image_size
    assert uv.min() >= 32 - 12 - 1e-4 and uv.max() <= 32 + 12 + 1e-4


def test_replace_blend_uses_the_logo_map_alone(field_model):
    target_pixels = images(6, 1, 64)[0]
    logo = np.full((16, 16, 3), 255, np.uint8)
    logo[4:12, 4:12] = 0  # no alpha: the dark square is the foreground
    target, logo_view, paste, _ = logo_paste(field_model, target_pixels, logo, (30, 34), 30, "replace", ROW_T)
    assert isinstance(paste, LogoPaste)
    points = cloud(2000, 7)
    _, own = field_model.bounds(target, points)
    changed = paste.displacements(points, own)
    covered = paste.covered(points)
    _, theirs = field_model.bounds(logo_view, points[covered], paste.projection)
    np.testing.assert_array_equal(changed[covered, 0], theirs[:, 0])
    np.testing.assert_array_equal(changed[:, 1], own[:, 1])


# ---------------------------------------------------------------- the commands


def write_png(path, pixels):
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.mark.slow
def test_transfer_and_paste_commands_write_meshes_and_previews(tiny, tmp_path):
    source, target = (write_png(tmp_path / f"{n}.png", p) for n, p in zip("st", images(8, 2, 48)))
    logo = np.zeros((12, 12, 4), np.uint8)
    logo[3:9, 3:9] = [200, 0, 0, 255]
    logo_path = write_png(tmp_path / "logo.png", logo)
    common = ["--model", str(tiny.path), "--resolution", "16", "--target-camera", LINE_T]
    assert (
        main(
            [
                "transfer",
                "--source",
                source,
                "--target",
                target,
                "-o",
                str(tmp_path / "t"),
                "--source-camera",
                LINE_T,
                *common,
            ]
        )
        == 0
    )
    assert (tmp_path / "t" / "transfer_preview.png").exists()
    assert (
        main(
            [
                "paste",
                target,
                "--logo",
                logo_path,
                "--at",
                "24",
                "20",
                "--size",
                "16",
                "-o",
                str(tmp_path / "p"),
                *common,
            ]
        )
        == 0
    )
    written = {p.name for p in (tmp_path / "p").iterdir()}
    assert {"paste_preview.png", "pasted.png"} <= written
    preview = np.asarray(Image.open(tmp_path / "p" / "paste_preview.png"))
    assert preview.shape[1] == 6 * (preview.shape[0] - 18) == 6 * 192  # pasted, logo, two meshes from two views


@pytest.fixture(scope="module")
def world_frame_model(tiny, tmp_path_factory):
    """A copy of the tiny export whose description says it works in the world frame (an imported model)."""
    folder = tmp_path_factory.mktemp("world") / "model"
    shutil.copytree(tiny.path, folder)
    info_path = folder / "assets.extra" / "d2im.json"
    info = json.loads(info_path.read_text())
    info.update(frame="world", compat="reference", image_reading="reference")
    info_path.write_text(json.dumps(info))
    return folder


@pytest.mark.parametrize(
    "case", ["missing source", "missing logo", "logo larger", "at outside", "world frame", "bad part"]
)
def test_bad_input_one_line_exit_2_nothing_written(case, tiny, world_frame_model, tmp_path, capsys):
    target = write_png(tmp_path / "t.png", images(9, 1, 32)[0])
    logo = write_png(tmp_path / "logo.png", np.zeros((40, 40, 3), np.uint8))
    small = write_png(tmp_path / "small.png", np.zeros((8, 8, 3), np.uint8))
    out = tmp_path / "out"
    model = ["--model", str(tiny.path), "--target-camera", LINE_T, "--resolution", "16"]
    argv, phrase = {
        "missing source": (
            ["transfer", "--source", str(tmp_path / "nope.png"), "--target", target, *model, "--source-camera", LINE_T],
            "nope.png",
        ),
        "missing logo": (["paste", target, "--logo", str(tmp_path / "nope.png"), "--at", "5", "5", *model], "nope.png"),
        "logo larger": (["paste", target, "--logo", logo, "--at", "16", "16", *model], "larger than the target"),
        "at outside": (["paste", target, "--logo", small, "--at", "40", "5", *model], "outside the target"),
        "world frame": (
            [
                "paste",
                target,
                "--logo",
                small,
                "--at",
                "16",
                "16",
                "--model",
                str(world_frame_model),
                "--target-camera",
                LINE_T,
                "--resolution",
                "16",
            ],
            "world frame",
        ),
        "bad part": (
            [
                "transfer",
                "--source",
                target,
                "--target",
                target,
                *model,
                "--source-camera",
                LINE_T,
                "--part",
                *"0 0 0 1 1 1 0 0 0 1 -1 1".split(),
            ],
            "lower < upper",
        ),
    }[case]
    assert main([*argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and phrase in err, err
    assert not out.exists()


# ---------------------------------------------------------------- transfer ground truth


def test_make_data_transfer_pairs(tmp_path):
    """One chair pair: the rebuilt shape is the target's coarse shape with another relief, the source is
    the rebuilt shape stretched per axis, and all differ from the coarse shape only near the relief."""
    import trimesh

    from d2im_tf.data.disn_format import DataError
    from d2im_tf.data.synth.pairs import read_pairs, remarched
    from d2im_tf.evaluation.metrics import normal_map
    from d2im_tf.evaluation.relief import relief_pixels

    out = tmp_path / "pairs"
    assert (
        main(
            [
                "make-data",
                "--out",
                str(out),
                "--transfer-pairs",
                "1",
                "--categories",
                "03001627",
                "--image-size",
                "64",
                "--resolution",
                "96",
            ]
        )
        == 0
    )
    (entry,) = read_pairs(out)
    folder = out / "03001627" / "pair00000"
    meshes = {
        key: trimesh.load(folder / f"{key}.obj", force="mesh") for key in ("target", "source", "rebuilt", "coarse")
    }
    assert all(mesh.is_watertight for mesh in meshes.values())
    # target, rebuilt and coarse share the target's placement: their boxes agree up to the relief's height
    for key in ("rebuilt", "coarse"):
        np.testing.assert_allclose(meshes[key].bounds, meshes["target"].bounds, atol=0.03)
    ratios = np.ptp(meshes["source"].vertices, axis=0) / np.ptp(meshes["rebuilt"].vertices, axis=0)
    assert np.ptp(ratios) > 0.01  # stretched unevenly (then rescaled to the same diagonal)
    view = entry["target_view"]
    maps = {key: normal_map(meshes[key], view, 128) for key in ("target", "rebuilt", "coarse")}
    target_relief, rebuilt_relief = (relief_pixels(maps[key], maps["coarse"]) for key in ("target", "rebuilt"))
    assert target_relief.any() and rebuilt_relief.any() and (target_relief != rebuilt_relief).any()
    assert Image.open(folder / "source.png").size == (64, 64)
    assert main(["make-data", "--out", str(out), "--transfer-pairs", "1"]) == 2  # not empty

    # Marched again from the recorded seed at about the stored meshes' step, then at twice it: the same
    # surfaces (within the corners a grid cuts), each nearer its own relief than the other's.
    assert (entry["seed"], entry["resolution"]) == (0, 96)
    for step in (0.8 / 96, 1.6 / 96):
        again = remarched(out, entry, step)
        for key, other in (("target", "rebuilt"), ("rebuilt", "target")):
            there = np.abs(trimesh.proximity.signed_distance(meshes[key], again[key].vertices))
            back = np.abs(trimesh.proximity.signed_distance(again[key], meshes[key].vertices[::7]))
            assert max(there.max(), back.max()) < 1.5 * step and np.mean(there) < step / 4, (key, step)
            to_other = np.abs(trimesh.proximity.signed_distance(meshes[other], again[key].vertices))
            assert np.mean(there) < np.mean(to_other), (key, step)  # its own relief, not the other's
    lines = (folder / "target.obj").read_text().splitlines(keepends=True)
    (folder / "target.obj").write_text("v 0.1 0.2 0.3\n" + "".join(lines[1:]))  # the first vertex moved
    with pytest.raises(DataError, match="target.obj: is not the shape the generator makes with seed 0"):
        remarched(out, entry, 0.01)
    with pytest.raises(DataError, match="pairs.json: has no seed"):
        remarched(out, {key: value for key, value in entry.items() if key != "seed"}, 0.01)


def test_transfer_benchmark_rows_against_its_references(tiny, tmp_path):
    """One pair through ``tools/benchmark.py transfer``'s measure: the re-marched rebuilt GT (a perfect
    transfer at the extraction grid) scores below the coarse GT and the re-marched target GT on the
    source's relief pixels, and the tiny model's two meshes get a row each."""
    from benchmarks.transfer import ROWS, measure_pair, reconstruction_step
    from d2im_tf.data.synth.pairs import read_pairs

    out = tmp_path / "pairs"
    args = ["--categories", "03001627", "--image-size", "64", "--resolution", "128"]
    assert main(["make-data", "--out", str(out), "--transfer-pairs", "1", *args]) == 0
    (entry,) = read_pairs(out)
    model = FieldModel(Reconstructor(tiny.path, resolution=128, matting=False))
    assert reconstruction_step(model.reconstructor, entry) == pytest.approx(2 / 128 * entry["target_norm_params"][3])
    row = measure_pair(model, out, entry)
    assert row["relief_pixels"] > 100
    assert {f"{key}_relief_angle" for key in ROWS} <= set(row)
    assert row["grid_rebuilt_relief_angle"] < min(row["gt_coarse_relief_angle"], row["grid_target_relief_angle"])
    assert row["grid_rebuilt_coverage"] > 0.95 and row["grid_rebuilt_silhouette_iou"] > 0.95


def test_transfer_benchmark_leaves_out_a_pair_a_surface_does_not_cover():
    """A surface that covers none of a pair's relief pixels has no angle there (relief_error returns 0°
    for it): the pair is left out of every row's mean, as is a pair without relief pixels."""
    from benchmarks.transfer import summarise

    def row(pixels, own, transfer, transfer_coverage=1.0):
        return {"category": "c", "pair": "p", "relief_pixels": pixels, "own_relief_angle": own,
                "own_coverage": 1.0, "transfer_relief_angle": transfer, "transfer_coverage": transfer_coverage,
                "own_silhouette_iou": 0.9, "transfer_silhouette_iou": 0.9}  # fmt: skip

    rows = [row(50, 40.0, 20.0), row(80, 30.0, 30.0), row(60, 44.0, 0.0, transfer_coverage=0.0), row(0, 0.0, 0.0)]
    summary = summarise(rows)
    assert (summary["pairs"], summary["pairs_with_relief"]) == (4, 2)
    assert summary["mean"]["own_relief_angle"] == pytest.approx(35.0)  # (40 + 30) / 2
    assert summary["mean"]["transfer_relief_angle"] == pytest.approx(25.0)  # (20 + 30) / 2, not (20 + 30 + 0) / 3
    assert summary["relief_reduction"] == pytest.approx(1 - 25 / 35) and summary["meets_relief_target"]  # 28.6 %


def test_an_application_prepares_its_target_as_a_reconstruction_does(field_model):
    """An off-centre object on white with the predicted camera: the target is re-framed exactly as
    ``reconstruct`` re-frames it (same network input, same camera onto the file's pixels), and a logo
    pasted on it changes the points that project, in the file's pixels, into the pasted rectangle."""
    pixels = np.full((64, 64, 3), 255, np.uint8)
    pixels[8:32, 34:58] = images(6, 1, 24)[0] // 2  # dark noise: the object, off-centre
    target = field_model.encode(pixels)
    reconstruction = field_model.reconstructor.reconstruct(pixels)
    assert not np.allclose(target.transform, square_transform(64, 64, field_model.image_size))  # re-framed
    size = field_model.reconstructor.object_size
    assert framing.object_size(target.image.min(axis=-1) < 0.9) == pytest.approx(size, abs=2 / field_model.image_size)
    np.testing.assert_array_equal(target.image, reconstruction.image)
    to_file = np.linalg.inv(target.transform) @ target.projection.numpy()[0]
    np.testing.assert_allclose(to_file, reconstruction.input_projection, rtol=1e-5, atol=1e-4)

    logo = np.zeros((8, 8, 4), np.uint8)
    logo[..., 3] = 255
    _, _, paste, _ = logo_paste(field_model, pixels, logo, (46, 20), 8)
    points = np.random.default_rng(7).uniform(-0.8, 0.8, (20000, 3)).astype(np.float32)
    covered = paste.covered(points)
    assert covered.sum() > 50
    uv = camera.project_numpy(points, to_file)
    inside = np.all((uv >= [42, 16]) & (uv < [50, 24]), axis=1)
    np.testing.assert_array_equal(covered, inside)
