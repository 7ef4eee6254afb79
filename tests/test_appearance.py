"""make-data's variety options: varied appearance changes only the RGB(A) renders (normal maps, depth,
metadata, meshes and SDF samples keep their bytes), anti-aliases edges (the alpha of a square is its
analytic area), is deterministic across worker counts and recorded; framing sets each view's distance
so the rendered silhouette spans the drawn share of the image."""

import json

import numpy as np
import pytest
import trimesh

from d2im_tf.cli import main
from d2im_tf.data import disn_format as fmt
from d2im_tf.data.render import Renderer, framed_views, projected_span
from d2im_tf.data.synth import appearance, shapes
from d2im_tf.geometry import camera

from helpers import file_hashes

TINY = [
    "--categories",
    "03001627",
    "04379243",
    "--shapes-per-category",
    "2",
    "--views",
    "3",
    "--image-size",
    "48",
    "--samples",
    "1024",
    "--resolution",
    "64",
    "--seed",
    "4",
]
VARIED = ["--appearance", "varied", "--render-sizes", "40", "64"]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("looks")
    assert main(["make-data", "--out", str(root / "plain"), *TINY]) == 0
    assert main(["make-data", "--out", str(root / "varied"), *TINY, *VARIED]) == 0
    return root / "plain", root / "varied"


def test_appearance_changes_only_the_renders(datasets):
    plain, varied = (file_hashes(root) for root in datasets)
    assert plain.keys() == varied.keys()
    renders = {key for key in plain if key.startswith("image/") and key.endswith(".png")}
    assert len(renders) == 2 * 2 * 3
    differing = {key for key in plain if plain[key] != varied[key]}
    assert differing == renders | {"make_data.json"}
    for key in sorted(renders):
        mask = fmt.read_image(datasets[0] / key)[..., 3] > 0
        alpha = fmt.read_image(datasets[1] / key)[..., 3]
        # the plain mask is the pixel centres hit; coverage is positive there and full inside
        interior = mask & np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1)
        assert np.all(alpha[interior] > 128)  # (resampling from 40 px softens 3-pixel-wide parts)
        assert np.mean(alpha[mask] > 0) > 0.98
        # beyond the hit pixels' neighbours only parts thinner than a pixel that centre rays missed
        assert alpha[~_grown(mask, 2)].sum() < 0.03 * alpha.sum()
    record = json.loads((datasets[1] / "make_data.json").read_text())
    assert record["appearance"] == "varied" and record["render_sizes"] == [40, 64]
    assert "appearance" not in json.loads((datasets[0] / "make_data.json").read_text())


def _grown(mask, pixels):
    grown = mask.copy()
    for _ in range(pixels):
        grown = grown | np.roll(grown, 1, 0) | np.roll(grown, -1, 0) | np.roll(grown, 1, 1) | np.roll(grown, -1, 1)
    return grown


def test_varied_set_is_the_same_bytes_with_two_workers_and_refuses_other_settings(datasets, tmp_path, capsys):
    again = tmp_path / "again"
    assert main(["make-data", "--out", str(again), *TINY, *VARIED, "--workers", "2"]) == 0
    assert file_hashes(again) == file_hashes(datasets[1])
    assert main(["make-data", "--out", str(again), *TINY]) == 2
    assert "--appearance" in capsys.readouterr().err


def test_supersampled_alpha_of_a_square_is_its_area():
    """Camera on +z at 1.4 (az 90°): the cube's front face z = 0.25 is a square of side f·0.5/1.15 px."""
    size = 41
    look = appearance.Look([appearance.random_material(np.random.default_rng(0), "paint")], np.zeros(12, dtype=int))
    lighting = appearance.random_lighting(np.random.default_rng(1))
    renderer = Renderer(trimesh.creation.box(extents=[0.5, 0.5, 0.5]))
    rgba = renderer.render_appearance([90, 0, 0, 0.8], size, look, lighting, supersample=5)
    side = camera.focal_pixels(size) * 0.5 / 1.15
    assert side % 1 > 0.1  # partly covered edge pixels
    coverage = rgba[..., 3].astype(float) / 255
    np.testing.assert_allclose(coverage.sum(), side**2, rtol=4 * (1 / 5) / side)  # ±1/5 px per edge
    assert np.sum((coverage > 0.05) & (coverage < 0.95)) >= 4 * int(side) - 4


def test_framing_puts_the_silhouette_at_the_drawn_span():
    mesh = shapes.generate_mesh("04379243", np.random.default_rng(3), 64)
    rows = framed_views(np.random.default_rng(0), 6, mesh.vertices, (0.45, 0.9))
    spans = [projected_span(mesh.vertices, row) for row in rows]
    assert all(0.45 - 1e-3 <= s <= 0.9 + 1e-3 for s in spans) and np.ptp(spans) > 0.1
    renderer, size = Renderer(mesh), 128
    for row, span in zip(rows, spans):
        v, u = np.nonzero(renderer.render(row, size).mask)
        measured = 2 * max(np.abs(u + 0.5 - size / 2).max(), np.abs(v + 0.5 - size / 2).max()) / size
        assert abs(measured - span) < 2.5 / size


def test_shading_is_lambert_plus_ambient_for_a_matte_material():
    """A paint without highlight lit head-on: colour = albedo · (ambient + headlight·cos + key·cos) · exposure."""
    paint = appearance.Material("paint", (0.6, 0.4, 0.2), 0.0, 8.0, 0.0, 0.0, (1.0, 0.0, 0.0), 0.0)
    lighting = appearance.Lighting(0.2, (0.0, 0.0, -1.0), 0.5, (0.0, -1.0, 0.0), 0.3, 0.1, 1.1)
    angle = np.radians([0.0, 30.0, 60.0])
    normals = np.column_stack([np.sin(angle), np.zeros(3), -np.cos(angle)])  # tilted away from the viewer's axis
    view = np.tile([0.0, 0.0, 1.0], (3, 1))  # camera frame = world frame (to_world = I)
    colors = appearance.shade(np.zeros((3, 3)), normals, view, np.zeros(3, dtype=int), [paint], lighting, np.eye(3))
    expected = np.outer((0.2 + 0.1 * np.cos(angle) + 0.5 * np.cos(angle)) * 1.1, paint.color)  # fill ⟂ normals
    np.testing.assert_allclose(colors, expected, atol=1e-12)


def test_user_meshes_get_a_material_group_per_component():
    bulky = trimesh.creation.box(extents=[0.4, 0.3, 0.4])
    rod = trimesh.creation.box(extents=[0.02, 0.4, 0.02])
    rod.apply_translation([0.5, 0.0, 0.0])
    mesh = trimesh.util.concatenate([bulky, rod])
    labels, thin = appearance.mesh_groups(mesh)
    assert labels.tolist() == [0] * 12 + [1] * 12 and thin.tolist() == [False, True]


def test_render_sizes_need_varied_appearance(tmp_path, capsys):
    assert main(["make-data", "--out", str(tmp_path / "x"), *TINY, "--render-sizes", "137"]) == 2
    assert capsys.readouterr().err.strip().endswith("--render-sizes needs --appearance varied")
    assert not (tmp_path / "x").exists()


def test_framed_set_moves_shapes_off_centre_and_keeps_every_view_in_its_span(tmp_path):
    root = tmp_path / "framed"
    assert main(["make-data", "--out", str(root), *TINY, "--framing", "0.5", "0.8"]) == 0
    layout = fmt.DatasetLayout(root)
    offsets = []
    for category in ("03001627", "04379243"):
        for shape in ("syn00000", "syn00001"):
            mesh = trimesh.load(layout.mesh_path(category, shape), process=False)
            offsets.append(mesh.bounds.mean(axis=0))
            for view in range(3):
                mask = fmt.read_image(layout.image_path(category, shape, view))[..., 3] > 0
                v, u = np.nonzero(mask)
                span = 2 * max(np.abs(u + 0.5 - 24).max(), np.abs(v + 0.5 - 24).max()) / 48
                assert 0.5 - 2.5 / 48 <= span <= 0.8 + 2.5 / 48
    offsets = np.array(offsets)
    assert np.all(np.abs(offsets) <= 0.06 * shapes.WORLD_DIAGONAL + 1e-6) and np.abs(offsets).max() > 0.01


def test_plain_share_keeps_the_plain_render_for_a_share_of_the_views(datasets, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    assert main(["make-data", "--out", str(mixed), *TINY, *VARIED, "--plain-share", "0.5"]) == 0
    plain, varied, both = file_hashes(datasets[0]), file_hashes(datasets[1]), file_hashes(mixed)
    renders = {key for key in plain if key.startswith("image/") and key.endswith(".png")}
    kept = {key for key in renders if both[key] == plain[key]}
    assert 2 <= len(kept) <= len(renders) - 2  # 12 views, each kept with probability 0.5 (seed 4: fixed)
    assert all(plain[key] != varied[key] for key in kept)  # so "kept" is not a render varied alike
    assert {key for key in plain if both[key] != plain[key]} == (renders - kept) | {"make_data.json"}
    assert json.loads((mixed / "make_data.json").read_text())["plain_share"] == 0.5
    for bad, message in (
        (["--plain-share", "0.5"], "--plain-share needs --appearance varied"),
        ([*VARIED, "--plain-share", "1"], "--plain-share must be in [0, 1), got 1.0"),
    ):
        assert main(["make-data", "--out", str(tmp_path / "bad"), *TINY, *bad]) == 2
        assert capsys.readouterr().err.strip().endswith(message)
        assert not (tmp_path / "bad").exists()
