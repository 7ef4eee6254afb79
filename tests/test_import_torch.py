"""Parity with the authors' PyTorch code: ``d2im import-torch`` and the ImageNet encoder weights.

The truth is ``fixtures/reference/reference_outputs_subset.npz``: outputs of the authors' release
(``D2IM_Net``, ``CamNet``) run on a CPU with every parameter set by the formula of
``parity_helpers.formula_tensor`` (a subset: 1024 of the 4096 query points, a 48×48 lattice of the
displacement maps including the borders). The tests regenerate the formula's weights, write them as
the authors' checkpoint file, import it with the CLI and run the exported SavedModel — the path a user
takes — and compare every output within 1e-4 (absolute, or relative to values above 1).
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from d2im_tf import cli
from d2im_tf.config import ModelConfig
from d2im_tf.geometry import camera
from d2im_tf.inference.reconstruct import Reconstructor
from d2im_tf.interop.import_torch import (
    D2IM_UNUSED_KEYS,
    WeightImportError,
    apply_state_dict,
    build_d2im,
    d2im_assignments,
    import_camnet,
    load_encoder_weights,
    load_imagenet_vgg16,
    reference_model_config,
)

from parity_helpers import (
    FIXTURES,
    Strided,
    formula_state_dict,
    formula_tensor,
    state_dict_keys,
    torchvision_entries,
    write_torch_zip,
)

TOLERANCE = 1e-4
REFERENCE = np.load(FIXTURES / "reference_outputs_subset.npz")
IMAGE_BGR = REFERENCE["image_chw"].transpose(1, 2, 0)  # [224, 224, 3], channel 0 blue, as the authors feed it
IMAGE_RGB = np.ascontiguousarray(IMAGE_BGR[..., ::-1])  # what a client of the SavedModel passes
MAP_LATTICE = np.ix_(REFERENCE["map_rows"], REFERENCE["map_cols"])


def assert_parity(name, ours, theirs, errors=None):
    """|ours − theirs| ≤ 1e-4·max(1, |theirs|); records the max abs / rel errors in ``errors``."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, name
    difference = np.abs(ours - theirs)
    if errors is not None:
        errors[name] = (difference.max(), (difference / np.maximum(np.abs(theirs), 1e-6)).max())
    assert np.all(difference <= TOLERANCE * np.maximum(1.0, np.abs(theirs))), (
        f"{name}: max abs error {difference.max():.3g}"
    )


@pytest.fixture(scope="module")
def d2im_weights():
    return formula_state_dict(state_dict_keys("d2im"))


@pytest.fixture(scope="module")
def imported(d2im_weights, tmp_path_factory):
    """``d2im import-torch --sdf <formula checkpoint>``: the SavedModel folder."""
    folder = tmp_path_factory.mktemp("import")
    checkpoint = folder / "best_model.pt.tar"
    write_torch_zip(checkpoint, {"epoch": 300, "state_dict": d2im_weights, "optimizer": {}})
    assert cli.main(["import-torch", "--sdf", str(checkpoint), "--out", str(folder / "saved")]) == 0
    return folder / "saved" / "1"


def test_imported_savedmodel_computes_what_the_authors_code_computes(imported):
    model = tf.saved_model.load(str(imported))
    errors = {}
    encoding = model.signatures["encode"](image=tf.constant(IMAGE_RGB[None]))
    assert_parity("global_code", encoding["global_code"][0], REFERENCE["global_code"], errors)
    maps = encoding["maps"][0].numpy()  # [224, 224, 2]
    assert_parity("maps", maps[..., 0][MAP_LATTICE], REFERENCE["maps_chw_subset"][0], errors)
    assert_parity("maps_back", maps[..., 1][MAP_LATTICE], REFERENCE["maps_chw_subset"][1], errors)
    points = tf.constant(REFERENCE["points_world"][None])
    projection = tf.constant(REFERENCE["projection_world"][None])
    decoded = model.signatures["decode"](points=points, projection=projection, **encoding)
    assert_parity("base", decoded["base"][0], REFERENCE["base"], errors)
    assert_parity("sdf", decoded["sdf"][0], REFERENCE["sdf"], errors)
    zero_code = {**encoding, "global_code": tf.zeros_like(encoding["global_code"])}
    decoded_zero = model.signatures["decode"](points=points, projection=projection, **zero_code)
    assert_parity("base_zero_code", decoded_zero["base"][0], REFERENCE["base_zero_code"], errors)
    served = model.signatures["serving_default"](
        image=tf.constant(IMAGE_RGB[None]), points=points, projection=projection
    )
    assert_parity("sdf (serving_default)", served["sdf"][0], REFERENCE["sdf"], errors)
    print("parity, max abs / max rel error:", {k: f"{a:.2g} / {r:.2g}" for k, (a, r) in errors.items()})
    # The fused test is not vacuous: the displacements move the SDF far beyond the tolerance, and
    # both the front and the back map are used.
    displacement = REFERENCE["sdf"] - REFERENCE["base"]
    assert np.abs(displacement).max() > 100 * TOLERANCE
    maps_at_points = [np.abs(displacement - m) < 1e-6 for m in _bilinear_maps(maps, points, projection)]
    assert maps_at_points[0].sum() > 50 and maps_at_points[1].sum() > 50


def _bilinear_maps(maps, points, projection):
    """Front and back maps read at the points' pixels (the fusion picks one of them per point)."""
    from d2im_tf.geometry.interpolation import sample_bilinear

    uv, _ = camera.project(points, projection)
    values = sample_bilinear(tf.constant(maps[None]), uv)[0].numpy()  # [N, 2]
    return values[:, 0], values[:, 1]


def test_description_and_reconstructor_of_an_imported_model(imported):
    info = json.loads((imported / "assets.extra" / "d2im.json").read_text())
    assert info["compat"] == "reference" and info["frame"] == "world" and info["image_reading"] == "reference"
    assert info["variant"] == "full" and info["image_size"] == 224 and not info["has_camera"]
    reconstructor = Reconstructor(imported.parent, resolution=32)
    row = [30, 20, 0, 0.8, 35, 32, 1.75, 0, 0, 0]
    # a given view is used as it is, in the world frame: the norm params do not enter the network
    projection, _, _ = reconstructor.projection(tf.zeros([1, 224, 224, 3]), row, norm_params=[0.1, 0, 0, 0.6])
    np.testing.assert_allclose(projection.numpy()[0], camera.projection_from_metadata(row), rtol=1e-6)
    pixels = np.round(IMAGE_RGB * 255).astype(np.uint8)
    result = reconstructor.reconstruct(pixels, row, norm_params=[0.1, 0, 0, 0.6])
    assert result.frame == "world"
    if len(result.mesh.vertices):  # the reference's test box, not moved by the norm params
        assert np.all(np.abs(result.mesh.vertices) <= 0.5 + 1e-6)


def test_reference_image_reading_drops_alpha_and_pads_black():
    from d2im_tf.inference.reconstruct import prepare_image

    rgba = np.zeros((4, 8, 4), np.uint8)
    rgba[..., :3] = 200  # colour under full transparency: the authors' reading keeps it
    rgba[..., 3] = 0
    reference = prepare_image(rgba, 8, "reference")
    np.testing.assert_allclose(reference[2:6], 200 / 255, atol=1e-6)  # the image, alpha ignored
    np.testing.assert_allclose(reference[:2], 0.0)  # padding: black
    np.testing.assert_allclose(prepare_image(rgba, 8, "white"), 1.0)  # this project: composited on white


@pytest.fixture(scope="module")
def keras_d2im(d2im_weights):
    model = build_d2im(reference_model_config())
    apply_state_dict(d2im_assignments(model), d2im_weights, "formula", D2IM_UNUSED_KEYS)
    return model


def test_every_key_is_checked(keras_d2im, d2im_weights):
    assignments = d2im_assignments(keras_d2im)
    missing = {k: v for k, v in d2im_weights.items() if k != "im_decoder.l3.weight"}
    message = r"^ckpt: im_decoder\.l3\.weight is missing \(the model needs shape \[128, 259\]\)$"
    with pytest.raises(WeightImportError, match=message):
        apply_state_dict(assignments, missing, "ckpt", D2IM_UNUSED_KEYS)
    wrong = {**d2im_weights, "image_encoder.layer2.0.downsample.0.weight": np.zeros((128, 64, 3, 3), np.float32)}
    mismatch = r"downsample\.0\.weight has shape \[128, 64, 3, 3\], the model needs \[128, 64, 1, 1\]"
    with pytest.raises(WeightImportError, match=mismatch):
        apply_state_dict(assignments, wrong, "ckpt", D2IM_UNUSED_KEYS)
    extra = {**d2im_weights, "im_decoder.l8.weight": np.zeros((1, 1), np.float32)}
    with pytest.raises(WeightImportError, match=r"im_decoder\.l8\.weight is not used by the model"):
        apply_state_dict(assignments, extra, "ckpt", D2IM_UNUSED_KEYS)
    # nothing was assigned by the failed attempts
    np.testing.assert_array_equal(
        keras_d2im.base_decoder.hidden[2].kernel.numpy(), d2im_weights["im_decoder.l3.weight"].T
    )


def test_shapes_are_checked_before_the_layout_change_and_weights_must_be_finite(keras_d2im, d2im_weights):
    assignments = d2im_assignments(keras_d2im)
    flat = {**d2im_weights, "image_encoder.conv1.weight": np.zeros((64, 147), np.float32)}  # 2-D for a conv
    with pytest.raises(
        WeightImportError,
        match=r"^ckpt: image_encoder\.conv1\.weight has shape \[64, 147\], "
        r"the model needs \[64, 3, 7, 7\]$",
    ):
        apply_state_dict(assignments, flat, "ckpt", D2IM_UNUSED_KEYS)
    poisoned = dict(d2im_weights)
    poisoned["im_decoder.l2.weight"] = poisoned["im_decoder.l2.weight"].copy()
    poisoned["im_decoder.l2.weight"][3, :2] = [np.nan, np.inf]
    with pytest.raises(WeightImportError, match=r"^ckpt: im_decoder\.l2\.weight has 2 NaN/Inf values$"):
        apply_state_dict(assignments, poisoned, "ckpt", D2IM_UNUSED_KEYS)


def test_cli_refuses_a_crafted_checkpoint_before_allocating(tmp_path, capsys):
    """A 600-byte file whose tensor is a stride-0 view of 10¹² elements: refused within the limits
    derived from the network, one line, exit 2, nothing written."""
    path = tmp_path / "expand.pt"
    write_torch_zip(
        path, {"state_dict": {"image_encoder.conv1.weight": Strided(np.zeros(1, np.float32), (10**6, 10**6), (0, 0))}}
    )
    out = tmp_path / "saved"
    assert cli.main(["import-torch", "--sdf", str(path), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error
    assert "expand.pt: a tensor of size [1000000, 1000000] would need 4.0 TB, beyond the 406.9 MB" in error
    assert not out.exists()


def test_cli_reports_a_checkpoint_that_does_not_fit(tmp_path, capsys):
    """The authors' format holding only the small tensors: the first big one is missing."""
    out = tmp_path / "saved"
    assert cli.main(["import-torch", "--sdf", str(FIXTURES / "tiny_checkpoint.pt.tar"), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error
    assert "tiny_checkpoint.pt.tar: image_encoder.conv1.weight is missing" in error
    assert not out.exists()


def test_imagenet_resnet18_file_starts_the_encoder_as_the_authors(keras_d2im, d2im_weights, tmp_path):
    """A torchvision-format ``resnet18`` file (keys and shapes as torchvision's) under the formula.

    Entry i of torchvision's ResNet18 is entry i of the authors' encoder (their state dict starts
    with it), so the formula gives both the same values: loaded into a fresh encoder, with the two
    layers torchvision lacks (the stride-1 stem, ``fc1``) taken from the authors' weights, the encoder
    must reproduce the authors' global code. The stem must be left alone by the ImageNet file.
    """
    entries = torchvision_entries("resnet18")
    assert entries[0] == ("conv1.weight", (64, 3, 7, 7)) and entries[-1] == ("fc.bias", (1000,))
    assert ("layer2.0.downsample.0.weight", (128, 64, 1, 1)) in entries
    path = tmp_path / "resnet18-f37072fd.pth"
    write_torch_zip(path, formula_state_dict(entries))
    model = build_d2im(ModelConfig())  # this project's default network, as training builds it
    stem = model.encoder.stem.layers[0].kernel
    stem_before = stem.numpy()
    assert load_encoder_weights(model, path) > 11_000_000
    np.testing.assert_array_equal(stem.numpy(), stem_before)  # torchvision's stride-2 conv1 is not used
    stem.assign(d2im_weights["image_encoder.conv1.weight"].transpose(2, 3, 1, 0))
    model.encoder.global_head.kernel.assign(d2im_weights["image_encoder.fc1.weight"].T)
    model.encoder.global_head.bias.assign(d2im_weights["image_encoder.fc1.bias"])
    code = model.encoder(tf.constant(IMAGE_BGR[None]), training=False)["global_code"][0]
    assert_parity("global_code (ImageNet path)", code, REFERENCE["global_code"])
    with pytest.raises(WeightImportError, match="model.encoder_weights: .*absent.pth: file not found"):
        load_encoder_weights(model, tmp_path / "absent.pth")


@pytest.fixture(scope="module")
def camnet_weights():
    return formula_state_dict(state_dict_keys("camnet"))


def test_camera_network_computes_what_the_authors_code_computes(camnet_weights):
    model, count = import_camnet(camnet_weights)
    assert count > 138_000_000
    outputs = model(tf.constant(IMAGE_RGB[None]), training=False)
    rotation, translation = outputs["rotation"][0].numpy(), outputs["translation"][0].numpy()
    transmat = REFERENCE["camera_transmat"]  # [4, 3]: the authors' row-vector [M; t] (Blender object frame)
    axis_change = camera.AXIS_CHANGE[:3, :3]
    errors = {}
    assert_parity("camera rotation", axis_change @ rotation.T, transmat[:3], errors)
    assert_parity("camera translation", translation, transmat[3], errors)
    # the world-frame projection is the one the authors build from it: K·[Mᵀ | t]·A
    extrinsic = np.concatenate([transmat[:3].T, transmat[3][:, None]], axis=1)
    authors = camera.intrinsics(224) @ extrinsic @ camera.AXIS_CHANGE
    ours = model.projection(outputs)[0].numpy()
    assert_parity("camera projection", ours, authors, errors)
    print("camera parity, max abs / max rel error:", {k: f"{a:.2g} / {r:.2g}" for k, (a, r) in errors.items()})
    # torchvision's vgg16 (keys without the authors' "vgg." prefix) loads into the same layers
    vgg = model.backbone
    for variable in vgg.weights:
        variable.assign(tf.zeros_like(variable))
    entries = torchvision_entries("vgg16")
    assert entries[0] == ("features.0.weight", (64, 3, 3, 3)) and entries[-1] == ("classifier.6.bias", (1000,))
    # the formula numbers torchvision's entries as the authors' (whose state dict starts with them):
    for index, (key, shape) in enumerate(entries):
        if np.prod(shape) < 1e6:
            np.testing.assert_array_equal(formula_tensor(key, shape, index), camnet_weights[f"vgg.{key}"])
    load_imagenet_vgg16(vgg, {key: camnet_weights[f"vgg.{key}"] for key, _ in entries})
    again = model(tf.constant(IMAGE_RGB[None]), training=False)
    np.testing.assert_array_equal(again["rotation"].numpy(), outputs["rotation"].numpy())


def test_config_and_training_guards(tmp_path):
    from d2im_tf.config import ConfigError, load_config
    from d2im_tf.training.run import train

    with pytest.raises(ConfigError, match="model.compat: 'bogus' is not one of none, reference"):
        load_config(None, ["model.compat=bogus"])
    with pytest.raises(ConfigError, match="model.compat: 'reference' needs model.variant 'full'"):
        load_config(None, ["model.compat=reference", "model.variant=nolap"])
    with pytest.raises(ConfigError, match="camera.compat: 'reference' needs camera.backbone 'vgg16'"):
        load_config(None, ["camera.compat=reference", "camera.backbone=resnet18", "camera.translation=distance"])
    with pytest.raises(ConfigError, match="model.compat: 'reference' is for weights imported"):
        train(load_config(None, ["model.compat=reference"]), "sdf")
    with pytest.raises(ConfigError, match="camera.compat: 'reference' is for weights imported"):
        train(load_config(None, ["camera.compat=reference", "camera.translation=distance"]), "camera")
    absent = tmp_path / "resnet18.pth"
    with pytest.raises(WeightImportError, match=r"^model\.encoder_weights: .*resnet18\.pth: file not found$"):
        train(load_config(None, [f"model.encoder_weights={absent}"]), "sdf")
    with pytest.raises(WeightImportError, match=r"^camera\.backbone_weights: .*vgg16\.pth: file not found$"):
        train(load_config(None, [f"camera.backbone_weights={tmp_path / 'vgg16.pth'}"]), "camera")


def test_world_frame_export_with_camera_network(tmp_path):
    """A small reference-mode pair (random weights): the export bundles the camera, whose pose is of
    the world frame, and reconstruction through the predicted camera stays in the world frame."""
    from d2im_tf.config import CameraConfig
    from d2im_tf.deploy.export import export_saved_model
    from d2im_tf.errors import UserError
    from d2im_tf.interop.import_torch import build_camera
    from d2im_tf.models import CameraNet

    small = dict(image_size=32, encoder_width=8, global_dim=16, decoder_widths=[32, 16, 16, 8, 8], detail_channels=8)
    sdf_model = build_d2im(ModelConfig(compat="reference", **small))
    camera_model = build_camera(
        CameraConfig(backbone="vgg16", translation="distance", image_size=32, width=8, compat="reference")
    )
    with pytest.raises(UserError, match="pose of the normalised frame, the SDF network works in the world frame"):
        export_saved_model(sdf_model, tmp_path / "mixed", CameraNet(CameraConfig(image_size=32, width=8)))
    target = export_saved_model(sdf_model, tmp_path / "saved", camera_model)
    reconstructor = Reconstructor(target, resolution=16)
    assert reconstructor.frame == "world" and reconstructor.has_camera and reconstructor.lipschitz == 40.0
    image = tf.constant(np.random.default_rng(0).uniform(0, 1, (1, 32, 32, 3)).astype(np.float32))
    pose = reconstructor.model.signatures["camera"](image=image)
    outputs = camera_model(image, training=False)
    transmat_rotation = camera.rotation_from_6d(outputs["rotation_6d"])[0].numpy()  # the authors' M
    np.testing.assert_allclose(pose["rotation"][0].numpy(), transmat_rotation.T @ camera.AXIS_CHANGE[:3, :3], atol=1e-6)
    np.testing.assert_allclose(pose["translation"][0, :2].numpy(), 0.0)
    expected = (
        camera.intrinsics(32)
        @ np.concatenate([transmat_rotation.T, pose["translation"][0].numpy()[:, None]], axis=1)
        @ camera.AXIS_CHANGE
    )
    np.testing.assert_allclose(pose["projection"][0].numpy(), expected, rtol=1e-5, atol=1e-5)
    pixels = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)  # untrained: not black
    result = reconstructor.reconstruct(pixels)
    assert result.frame == "world"
