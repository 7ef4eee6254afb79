"""Image → mesh with an exported SavedModel: image preparation, the CLI, coarse-to-fine = dense."""

import json

import numpy as np
import pytest
import trimesh
from PIL import Image

from d2im_tf.cli import main
from d2im_tf.commands.reconstruct import BUNDLED_MODEL
from d2im_tf.evaluation import metrics
from d2im_tf.geometry import camera
from d2im_tf.inference.reconstruct import Reconstructor, input_warnings, prepare_image, view_row_from_pose

from conftest import ROOT

VIEW_LINE = "[30, 20, 0, 0.8, 35, 32, 1.75, 0, 0, 0]"


def test_prepare_image_composites_pads_and_resizes():
    rgba = np.zeros((20, 60, 4), np.uint8)  # transparent black, wider than tall
    rgba[:, 20:40] = [0, 0, 0, 255]  # an opaque black square in the middle
    image = prepare_image(rgba, 30)  # [30, 30, 3]
    assert image.shape == (30, 30, 3) and image.dtype == np.float32
    assert np.allclose(image[:6], 1.0) and np.allclose(image[-6:], 1.0)  # white padding above and below
    assert np.allclose(image[12:18, :6], 1.0)  # transparent → white
    assert np.allclose(image[13:17, 13:17], 0.0, atol=0.02)  # the opaque square stays black, centred
    grey = prepare_image(np.full((8, 8), 100, np.uint8), 16)
    assert np.allclose(grey, 100 / 255, atol=1e-6)  # grey → equal RGB channels


def test_view_row_from_pose_inverts_the_metadata_camera():
    rotation, translation = camera.world_to_camera(200.0, 25.0, 0.8)
    row = view_row_from_pose(rotation, translation)
    np.testing.assert_allclose(row[[0, 1, 3]], [200.0 - 360.0, 25.0, 0.8], atol=1e-9)
    np.testing.assert_allclose(
        camera.projection_from_metadata(row, 32), camera.projection_matrix(200.0, 25.0, 0.8, 32), atol=1e-9
    )


def test_cli_reconstructs_every_readable_image(model_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 40, 4), dtype=np.uint8), "RGBA").save(images / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (50, 50), dtype=np.uint8), "L").save(images / "grey.jpg")
    Image.fromarray(rng.integers(0, 256, (30, 70, 3), dtype=np.uint8)).save(images / "wide.png")
    (images / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    paths = [str(images / name) for name in ("rgba.png", "broken.png", "grey.jpg", "wide.png")]
    code = main(
        [
            "reconstruct",
            *paths,
            "--model",
            str(model_dir),
            "-o",
            str(out),
            "--camera",
            VIEW_LINE,
            "--norm-params",
            "0.1",
            "0",
            "0",
            "0.5",
            "--resolution",
            "32",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert [line for line in err.splitlines() if "broken.png" in line] == [
        line for line in err.splitlines() if line.startswith("error:")
    ]
    assert "broken.png" in err
    assert "no surface" not in err
    for stem in ("rgba", "grey", "wide"):  # every readable image gives a mesh and a preview
        preview = np.asarray(Image.open(out / f"{stem}_preview.png"))
        assert preview.shape == (128, 5 * 128, 3)
        mesh = trimesh.load(out / f"{stem}.obj", force="mesh")
        assert len(mesh.faces) > 0
        # World frame: the normalised box [-1, 1]³ scaled by m = 0.5 and moved by c = (0.1, 0, 0).
        assert np.all(mesh.bounds[0] >= [-0.4, -0.5, -0.5]) and np.all(mesh.bounds[1] <= [0.6, 0.5, 0.5])
    assert not (out / "broken.obj").exists() and not list(out.glob(".*"))  # no temporary files left


def test_model_without_camera_needs_camera_option(model_dir, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    assert main(["reconstruct", str(image), "--model", str(model_dir), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--camera" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("mesh_format", ["ply", "glb"])
def test_other_formats_without_preview(model_dir, tmp_path, mesh_format):
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    assert (
        main(
            [
                "reconstruct",
                str(image),
                "--model",
                str(model_dir),
                "-o",
                str(out),
                "--camera",
                VIEW_LINE,
                "--resolution",
                "32",
                "--format",
                mesh_format,
                "--no-preview",
                "--no-progress",
            ]
        )
        == 0
    )
    assert len(trimesh.load(out / f"a.{mesh_format}", force="mesh").faces) > 0
    assert not (out / "a_preview.png").exists()


def test_an_earlier_result_is_replaced_only_with_overwrite(model_dir, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.obj").write_text("# an earlier mesh\n")
    argv = [
        "reconstruct",
        str(image),
        "--model",
        str(model_dir),
        "-o",
        str(out),
        "--camera",
        VIEW_LINE,
        "--resolution",
        "32",
        "--no-preview",
        "--no-progress",
    ]
    assert main(argv) == 2
    assert "a.obj: already exists" in capsys.readouterr().err
    assert (out / "a.obj").read_text() == "# an earlier mesh\n"
    assert main([*argv, "--overwrite"]) == 0
    assert len(trimesh.load(out / "a.obj", force="mesh").faces) > 0


@pytest.mark.parametrize(
    "flags, fill, bridge",
    [([], True, True), (["--keep-cavities"], False, True), (["--keep-gaps"], True, False)],
)
def test_cavities_are_filled_and_gaps_bridged_unless_kept(model_dir, tmp_path, monkeypatch, flags, fill, bridge):
    """``d2im reconstruct`` fills enclosed cavities and bridges hairline gaps by default (the frame's
    settings: the normalised box's side 2, the model's SDF scale); ``--keep-cavities`` and ``--keep-gaps``
    extract as the paper."""
    import d2im_tf.inference.reconstruct as reconstruct_module
    from d2im_tf.inference.bridging import GapBridging

    seen = []
    original = reconstruct_module.extract_fused_mesh

    def recording(*args, **kwargs):
        seen.append((kwargs["fill_cavities"], kwargs["bridging"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(reconstruct_module, "extract_fused_mesh", recording)
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(image)
    assert (
        main(
            [
                "reconstruct",
                str(image),
                "--model",
                str(model_dir),
                "-o",
                str(tmp_path / "out"),
                "--camera",
                VIEW_LINE,
                "--resolution",
                "32",
                "--no-preview",
                "--no-progress",
                *flags,
            ]
        )
        == 0
    )
    info = reconstruct_module.resolve_model_dir(model_dir) / "assets.extra" / "d2im.json"
    sdf_scale = json.loads(info.read_text())["sdf_scale"]
    assert seen == [(fill, GapBridging.for_box(2.0, sdf_scale) if bridge else None)]


def test_coarse_to_fine_gives_the_dense_mesh(model_dir):
    """Coarse-to-fine with the one-pass ``decode_bounds`` gives the mesh of an exact dense grid (the
    reference: ``decode`` everywhere)."""
    row = np.array([30, 20, 0, 0.8, 35, 32, 1.75, 0, 0, 0], float)
    dense_reconstructor = Reconstructor(model_dir, resolution=64, mode="dense", one_pass_bounds=False)
    for seed in range(4):  # the first input for which the barely trained SDF crosses zero in the box
        pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        dense = dense_reconstructor.reconstruct(pixels, row).mesh
        if len(dense.faces):
            break
    assert len(dense.faces) > 0
    fine_reconstructor = Reconstructor(model_dir, resolution=64, mode="coarse_to_fine")
    assert fine_reconstructor.one_pass_bounds and not dense_reconstructor.one_pass_bounds
    fine = fine_reconstructor.reconstruct(pixels, row).mesh
    assert len(fine.faces) == len(dense.faces)
    assert metrics.iou(dense, fine) >= 0.995
    points_dense, _ = metrics.sample_surface(dense, 20000)
    points_fine, _ = metrics.sample_surface(fine, 20000)
    assert metrics.chamfer_l1(points_dense, points_fine) < 1e-4


def test_input_warnings_flag_inputs_unlike_the_training_renders():
    render = np.ones((64, 64, 3), np.float32)
    render[24:40, 26:42] = 0.3  # a centred object on white: like the training renders
    assert input_warnings(render) == []
    photo = np.random.default_rng(0).uniform(0.2, 0.8, (64, 64, 3)).astype(np.float32)
    assert "of its border is white background" in " ".join(input_warnings(photo))
    corner = np.ones((64, 64, 3), np.float32)
    corner[6:22, 6:22] = 0.3
    assert "off-centre" in " ".join(input_warnings(corner))
    assert input_warnings(np.ones((64, 64, 3), np.float32)) == ["the image is blank (all white)"]


def test_cli_warns_about_a_photo_like_input_only_without_matting(model_dir, tmp_path, capsys):
    rng = np.random.default_rng(1)
    photo = rng.integers(40, 200, (64, 64, 3), dtype=np.uint8)  # a textured background
    photo[20:44, 20:44] = 90
    render = np.full((64, 64, 3), 255, np.uint8)
    render[20:44, 20:44] = 90
    Image.fromarray(photo).save(tmp_path / "photo.jpg")
    Image.fromarray(render).save(tmp_path / "render.png")
    code = main(
        [
            "reconstruct",
            str(tmp_path / "photo.jpg"),
            str(tmp_path / "render.png"),
            "--model",
            str(model_dir),
            "-o",
            str(tmp_path / "out"),
            "--camera",
            VIEW_LINE,
            "--resolution",
            "32",
            "--no-preview",
            "--no-progress",
            "--no-matting",
        ]
    )
    assert code == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "white background" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {tmp_path / 'photo.jpg'}: only "), warnings
    code = main(
        [
            "reconstruct",
            str(tmp_path / "photo.jpg"),
            "--model",
            str(model_dir),
            "-o",
            str(tmp_path / "matted"),
            "--camera",
            VIEW_LINE,
            "--resolution",
            "32",
            "--no-preview",
            "--no-progress",
        ]
    )
    assert code == 0  # matted onto white: no warning
    assert not [line for line in capsys.readouterr().err.splitlines() if "white background" in line]


@pytest.mark.slow
def test_reconstruct_defaults_to_the_bundled_model(tmp_path, capsys):
    image = ROOT / "examples" / "03001627_syn00005.png"
    out = tmp_path / "out"
    assert main(["reconstruct", str(image), "-o", str(out), "--resolution", "32", "--no-preview", "--no-progress"]) == 0
    assert "1 of 1 images reconstructed" in capsys.readouterr().out
    assert len(trimesh.load(out / "03001627_syn00005.obj", force="mesh").faces) > 0
    from d2im_tf.cli import build_parser

    for argv in (["reconstruct", "x.png", "-o", "o"], ["evaluate", "--data", "d", "-o", "o"]):
        assert build_parser(argv[0]).parse_args(argv).model == str(BUNDLED_MODEL)
