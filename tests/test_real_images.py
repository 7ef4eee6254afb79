"""Images the project did not make: foreground, re-framing, matting, silhouette scores, camera.json and
``d2im evaluate --images`` — each against an analytic case or a known mask."""

import json

import numpy as np
import pytest
import trimesh
from PIL import Image

from d2im_tf.cli import main
from d2im_tf.data import framing
from d2im_tf.data.render import Renderer
from d2im_tf.data.synth import backgrounds
from d2im_tf.evaluation.silhouette import fragmentation, mask_iou, render_with_projection, silhouette_scores
from d2im_tf.geometry import camera
from d2im_tf.inference.matting import matte, was_matted
from d2im_tf.inference.reconstruct import prepare_input

VIEW = [30.0, 20.0, 0.0, 0.8, 35.0, 32.0, 1.75, 0.0, 0.0, 0.0]


def look_at_projection(distance: float, focal: float, size: int) -> np.ndarray:
    """P = K·[I | (0, 0, distance)]: a camera on the −z axis looking at the origin along +z."""
    k = np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]])
    return k @ np.concatenate([np.eye(3), [[0.0], [0.0], [distance]]], axis=1)


def test_a_projected_sphere_covers_its_closed_form_area():
    """A sphere of radius r at distance D on the axis projects to a disc of radius f·r/√(D² − r²)."""
    r, distance, focal, size = 0.5, 2.0, 150.0, 160
    sphere = trimesh.creation.icosphere(subdivisions=6, radius=r)
    mask, shading = render_with_projection(sphere, look_at_projection(distance, focal, size), size, size)
    radius = focal * r / np.sqrt(distance**2 - r**2)
    assert mask.sum() == pytest.approx(np.pi * radius**2, rel=0.01)
    v, u = np.mgrid[0:size, 0:size] + 0.5
    disc = np.hypot(u - size / 2, v - size / 2) < radius
    assert mask_iou(mask, disc) > 0.98
    assert shading[size // 2, size // 2] == pytest.approx(1.0, abs=1e-3)  # faces the headlight


def test_a_projected_box_is_its_front_face_square():
    """A cube of half side h facing the camera projects to a square of side 2·f·h/(D − h)."""
    h, distance, focal, size = 0.4, 3.0, 200.0, 96
    cube = trimesh.creation.box(extents=[2 * h] * 3)
    mask, _ = render_with_projection(cube, look_at_projection(distance, focal, size), size, size)
    half = focal * h / (distance - h)
    v, u = np.mgrid[0:size, 0:size] + 0.5
    square = (np.abs(u - size / 2) < half) & (np.abs(v - size / 2) < half)
    np.testing.assert_array_equal(mask, square)


def test_silhouette_scores_of_two_known_masks():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0:4, 0:5] = True  # 20 pixels
    b[2:6, 0:5] = True  # 20 pixels, 10 shared
    scores = silhouette_scores(a, b)
    assert scores["iou"] == pytest.approx(10 / 30)
    assert scores["outside"] == pytest.approx(0.5) and scores["missed"] == pytest.approx(0.5)
    assert silhouette_scores(b, b) == {"iou": 1.0, "outside": 0.0, "missed": 0.0}


def test_fragmentation_counts_parts_by_their_share_of_the_area():
    """Boxes apart, areas by their sides: a box alone is one part; a second of a quarter of its area
    is a part holding 0.2 of the whole; a speck below 1% is detached area but no part."""
    big = trimesh.creation.box(extents=[2.0, 2.0, 2.0])  # area 24
    second = trimesh.creation.box(extents=[1.0, 1.0, 1.0])  # area 6
    second.apply_translation([5.0, 0.0, 0.0])
    speck = trimesh.creation.box(extents=[0.2, 0.2, 0.2])  # area 0.24
    speck.apply_translation([0.0, 5.0, 0.0])
    assert fragmentation(big) == {"parts": 1, "detached": 0.0}
    two = fragmentation(trimesh.util.concatenate([big, second]))
    assert two["parts"] == 2 and two["detached"] == pytest.approx(6 / 30)
    with_speck = fragmentation(trimesh.util.concatenate([big, speck]))
    assert with_speck["parts"] == 1 and with_speck["detached"] == pytest.approx(0.24 / 24.24)
    assert fragmentation(trimesh.Trimesh()) == {"parts": 0, "detached": 0.0}


def test_foreground_is_alpha_else_non_white():
    rgba = np.full((8, 8, 4), 255, np.uint8)
    rgba[..., 3] = 0
    rgba[2:5, 3:6, 3] = 255
    np.testing.assert_array_equal(framing.foreground_mask(rgba), rgba[..., 3] > 0)
    rgb = np.full((8, 8, 3), 250, np.uint8)  # JPEG-like near-white background
    rgb[1:3, 1:7] = [255, 255, framing.WHITE_THRESHOLD - 1]
    assert framing.foreground_mask(rgb).sum() == 12
    assert framing.object_box(framing.foreground_mask(rgb)).tolist() == [1, 1, 7, 3]
    assert framing.object_size(framing.foreground_mask(rgb)) == pytest.approx(6 / 8)


def test_reframe_scales_the_object_box_and_moves_points_with_it():
    size, fraction = 64, 0.5
    image = np.full((90, 120, 3), 255, np.uint8)
    image[20:50, 70:100] = [200, 40, 40]  # a 30 px object off-centre in a non-square image
    mask = framing.foreground_mask(image)
    out, transform = framing.reframe(image, mask, fraction, size)
    out_mask = framing.foreground_mask(out)
    assert framing.object_size(out_mask) == pytest.approx(fraction, abs=1.5 / size)
    assert framing.object_offset(out_mask) < 1.0 / size
    # The box's corners map onto the re-framed box: A·(70, 20) and A·(100, 50) are its corners.
    corners = transform @ np.array([[70, 100], [20, 50], [1, 1]], float)
    np.testing.assert_allclose(corners[:2].T, [[16, 16], [48, 48]])
    box = framing.object_box(out_mask)
    np.testing.assert_allclose(box, [16, 16, 48, 48], atol=1)


def test_square_transform_matches_the_padding_of_prepare_image():
    pixels = np.full((40, 64, 3), 255, np.uint8)
    pixels[10:12, 30:32] = 0  # a dark 2×2 dot
    prepared = prepare_input(pixels, 32, object_size=None)
    centre = prepared.transform @ np.array([31.0, 11.0, 1.0])  # the dot's centre in input pixels
    dark = np.argwhere(prepared.image.mean(axis=-1) < 0.8)  # [K, 2] (row, column)
    np.testing.assert_allclose(dark.mean(axis=0) + 0.5, centre[[1, 0]], atol=0.5)


def composited_renders(count: int, size: int = 128):
    """``count`` (composite RGB, true mask) pairs: synthetic shapes on every kind of background."""
    from d2im_tf.data.render import random_views
    from d2im_tf.data.synth import shapes
    from d2im_tf.data.synth.generate import random_color

    rng = np.random.default_rng(7)
    categories = ["03001627", "04379243", "02933112", "04256520"]
    for index in range(count):
        mesh = shapes.generate_mesh(categories[index % 4], np.random.default_rng(100 + index), 40)
        view = Renderer(mesh, random_color(rng)).render(random_views(rng, 1)[0], size)
        background = backgrounds.textured_background(rng, size, backgrounds.KINDS[index % len(backgrounds.KINDS)])
        yield backgrounds.composite(view.rgba, background), view.mask


def test_grabcut_mattes_renders_on_textured_backgrounds():
    """10 renders on procedural backgrounds (two of each kind): mean mask IoU ≥ 0.95, none below 0.9."""
    ious = []
    for image, truth in composited_renders(10):
        assert was_matted(image)
        ious.append(mask_iou(matte(image)[..., 3] > 127, truth))
    assert np.mean(ious) >= 0.95 and min(ious) >= 0.9, ious


def test_matting_keeps_alpha_and_white_backgrounds():
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[4:9, 4:9] = 255
    np.testing.assert_array_equal(matte(rgba), rgba)
    white = np.full((16, 16, 3), 255, np.uint8)
    white[5:10, 6:9] = 30
    assert not was_matted(white)
    np.testing.assert_array_equal(matte(white)[..., 3] > 0, white[..., 0] < 255)
    photo = backgrounds.textured_background(np.random.default_rng(0), 16, "checker")
    assert was_matted(photo) and not was_matted(photo, matting=False)
    np.testing.assert_array_equal(matte(photo, matting=False)[..., 3] > 0, framing.foreground_mask(photo))


def test_camera_json_is_the_view_in_the_input_pixels_and_matches_the_mesh(model_dir, tmp_path):
    """With a given camera, the written projection is the view's, mapped back through the re-framing, the
    resize and the padding onto the input as given: the analytic P of the padded square minus the padding.
    The mesh's vertices it projects land on the mesh drawn with it (ray casting, an independent method)."""
    image = np.full((100, 140, 3), 255, np.uint8)
    image[30:75, 50:95] = 90  # off-centre, in a non-square image
    Image.fromarray(image).save(tmp_path / "box.png")
    line = "[" + ", ".join(map(str, VIEW)) + "]"
    expected = camera.projection_from_metadata(VIEW, 140)  # the padded 140² square
    expected[1] -= (140 - 100) // 2 * expected[2]  # v = v_square − top padding
    for size in ("0.6", "off"):
        out = tmp_path / size
        assert (
            main(
                [
                    "reconstruct",
                    str(tmp_path / "box.png"),
                    "--model",
                    str(model_dir),
                    "-o",
                    str(out),
                    "--camera",
                    line,
                    "--resolution",
                    "32",
                    "--object-size",
                    size,
                    "--no-preview",
                    "--no-progress",
                ]
            )
            == 0
        )
        description = json.loads((out / "box_camera.json").read_text())
        assert description["image_size"] == [140, 100]
        projection = np.array(description["projection"])
        np.testing.assert_allclose(projection, expected, rtol=1e-5, atol=1e-3)
    mesh = trimesh.load(tmp_path / "off" / "box.obj", force="mesh")
    mask, _ = render_with_projection(mesh, projection, 100, 140)
    uv, depth = (x.numpy()[0] for x in camera.project(mesh.vertices[None], projection[None]))
    seen = (depth > 0.1) & (uv >= 1).all(axis=1) & (uv[:, 0] < 139) & (uv[:, 1] < 99)
    pixels = np.floor(uv[seen]).astype(int)
    grown = mask | np.roll(mask, 1, 0) | np.roll(mask, -1, 0) | np.roll(mask, 1, 1) | np.roll(mask, -1, 1)
    assert seen.sum() > 100 and grown[pixels[:, 1], pixels[:, 0]].mean() > 0.99


def test_evaluate_images_writes_tables_and_contact_sheet(tiny_export, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, top in (("a.png", 8), ("b.jpg", 14)):
        image = np.full((48, 48, 3), 255, np.uint8)
        image[top : top + 20, 12:36] = [120, 80, 40]
        Image.fromarray(image).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    model = tiny_export("full", with_camera=True).path
    out = tmp_path / "out"
    assert (
        main(
            [
                "evaluate",
                "--images",
                str(folder),
                "--model",
                str(model),
                "-o",
                str(out),
                "--resolution",
                "16",
                "--no-progress",
            ]
        )
        == 0
    )
    rows = (out / "silhouette.csv").read_text().splitlines()
    header = "image,iou,outside,missed,object_size,parts,detached"
    assert rows[0] == header and len(rows) == 4 and rows[3].startswith("mean,")
    values = np.array([[float(x) for x in row.split(",")[1:]] for row in rows[1:]])
    assert ((values[:, :3] >= 0) & (values[:, :3] <= 1)).all()
    np.testing.assert_allclose(values[:2, 3], 24 / 48, atol=3 / 48)  # the object's size (JPEG ringing: ±2 px)
    np.testing.assert_allclose(values[2], values[:2].mean(axis=0), atol=1e-4)
    sheet = np.asarray(Image.open(out / "contact_sheet.png"))
    assert sheet.shape[0] > 2 * 160 and sheet.shape[1] == 3 * 160
    assert "| mean |" in (out / "silhouette.md").read_text()
    assert main(["evaluate", "--images", str(tmp_path / "none"), "--model", str(model), "-o", str(out)]) == 2
    assert "image folder not found" in capsys.readouterr().err


def test_object_size_option_accepts_auto_off_and_a_share_only():
    from d2im_tf.commands.reconstruct import object_size_option
    from d2im_tf.errors import UserError

    assert object_size_option("auto") == "auto" and object_size_option("off") is None
    assert object_size_option("0.6") == 0.6
    for bad in ("0", "1.5", "big"):
        with pytest.raises(UserError, match="--object-size"):
            object_size_option(bad)


def test_a_model_trained_re_framed_is_re_framed_to_its_stored_size(tiny_export, tmp_path):
    import shutil

    from d2im_tf.deploy.export import model_description
    from d2im_tf.inference.reconstruct import TRAINING_OBJECT_SIZE, Reconstructor

    export = tiny_export("full", with_camera=True)
    assert "framing_object_size" not in model_description(export.sdf, export.camera)
    assert model_description(export.sdf, export.camera, 0.6)["framing_object_size"] == 0.6
    plain = Reconstructor(export.path, resolution=16)
    assert plain.reframing_size() == TRAINING_OBJECT_SIZE and plain.reframing_size(VIEW) is None
    copy = tmp_path / "model"
    shutil.copytree(export.path, copy)
    info_path = copy / "assets.extra" / "d2im.json"
    info_path.write_text(json.dumps({**json.loads(info_path.read_text()), "framing_object_size": 0.6}))
    framed = Reconstructor(copy, resolution=16)
    assert framed.reframing_size() == 0.6 and framed.reframing_size(VIEW) == 0.6
    assert Reconstructor(copy, resolution=16, object_size=None).reframing_size() is None
    # "trained" (d2im evaluate --data's default): only a model trained re-framed is re-framed
    assert Reconstructor(copy, resolution=16, object_size="trained").reframing_size(VIEW) == 0.6
    assert Reconstructor(export.path, resolution=16, object_size="trained").reframing_size() is None
