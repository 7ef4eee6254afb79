"""DISN layout I/O: write→read round trips of every file kind, and each bad-input case."""

import os

import h5py
import numpy as np
import pytest
from PIL import Image

from d2im_tf.data import disn_format as fmt

from helpers import read_depth


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _samples(rng, n=64, extras=True):
    return fmt.SdfSamples(
        samples=rng.normal(size=(n, 4)).astype(np.float32),
        norm_params=np.array([0.1, -0.2, 0.3, 0.7]),
        surface_points=rng.normal(size=(n, 3)).astype(np.float32),
        sdf_params=np.array([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]),
        gradients=rng.normal(size=(n, 3)).astype(np.float32) if extras else None,
        density=rng.uniform(size=n).astype(np.float32) if extras else None,
    )


def test_split_round_trip(tmp_path):
    path = tmp_path / "splits" / "03001627_train.lst"
    fmt.write_split(path, ["a1", "b2", "c3"])
    assert fmt.read_split(path) == ["a1", "b2", "c3"]


def test_metadata_round_trip_is_exact(tmp_path, rng):
    rows = np.column_stack(
        [
            rng.uniform(0, 360, 36),
            rng.uniform(0, 45, 36),
            np.zeros(36),
            rng.uniform(0.6, 1, 36),
            np.full(36, 35),
            np.full(36, 32),
            np.full(36, 1.75),
            np.zeros((36, 3)),
        ]
    )
    path = tmp_path / "rendering_metadata.txt"
    fmt.write_metadata(path, rows)
    np.testing.assert_array_equal(fmt.read_metadata(path), rows)  # repr() of a float round-trips exactly
    # DISN's own files have this form.
    path.write_text("[30.0, 20.0, 0, 0.8, 35, 32, 1.75, 0, 0, 0]\n")
    np.testing.assert_array_equal(fmt.read_metadata(path)[0], [30, 20, 0, 0.8, 35, 32, 1.75, 0, 0, 0])


def test_image_round_trip_is_bit_exact(tmp_path, rng):
    for channels in (3, 4):
        image = rng.integers(0, 256, (9, 7, channels), dtype=np.uint8)
        path = tmp_path / f"{channels}.png"
        fmt.write_png(path, image)
        np.testing.assert_array_equal(fmt.read_image(path), image)


def test_normal_map_round_trip(tmp_path, rng):
    normals = rng.normal(size=(16, 16, 3))
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    mask = rng.uniform(size=(16, 16)) > 0.3
    path = tmp_path / "00_mnormal.png"
    fmt.write_normal_map(path, normals, mask)
    raw = np.asarray(Image.open(path))
    # The file convention: (n·0.5 + 0.5)·255 with R = n_x, G = n_y, B = n_z; background black.
    np.testing.assert_array_equal(raw[mask], np.round((normals[mask] * 0.5 + 0.5) * 255).astype(np.uint8))
    assert not raw[~mask].any()
    decoded = fmt.read_normal_map(path)
    cos = np.sum(decoded[mask] * normals[mask], axis=-1)
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() < 0.6  # 8-bit quantisation only
    assert not decoded[~mask].any()


def test_blender_srgb_normals_are_linearised():
    # A normal n encoded linearly as n·0.5+0.5 then sRGB-encoded must decode back to n.
    normal = np.array([0.3, -0.5, -0.8])
    normal /= np.linalg.norm(normal)
    linear = normal * 0.5 + 0.5
    srgb = np.where(linear > 0.0031308, 1.055 * linear ** (1 / 2.4) - 0.055, 12.92 * linear)  # the spec's inverse
    raw = np.round(srgb * 255).astype(np.uint8).reshape(1, 1, 3)
    decoded = fmt.decode_normals(fmt.mnormal_from_blender(raw))[0, 0]
    assert np.degrees(np.arccos(np.clip(decoded @ normal, -1, 1))) < 1.5
    # Without linearisation the error would be large: the conversion matters.
    naive = raw[0, 0] / 255 * 2 - 1
    naive /= np.linalg.norm(naive)
    assert np.degrees(np.arccos(naive @ normal)) > 5
    assert not fmt.mnormal_from_blender(np.zeros((2, 2, 3), np.uint8)).any()


def test_depth_round_trip(tmp_path, rng):
    depth = rng.uniform(0.5, 2.5, (8, 8))
    mask = rng.uniform(size=(8, 8)) > 0.5
    path = tmp_path / "00_depth.png"
    fmt.write_depth(path, depth, mask)
    back, back_mask = read_depth(path)
    np.testing.assert_array_equal(back_mask, mask)
    assert np.abs(back[mask] - depth[mask]).max() <= 0.5 / fmt.DEPTH_SCALE + 1e-7


def test_samples_round_trip_is_bit_exact(tmp_path, rng):
    samples = _samples(rng)
    path = tmp_path / "ori_sample.h5"
    fmt.write_samples(path, samples)
    back = fmt.read_samples(path)
    for name in ("samples", "norm_params", "surface_points", "sdf_params", "gradients", "density"):
        np.testing.assert_array_equal(getattr(back, name), getattr(samples, name))
        assert getattr(back, name).dtype == getattr(samples, name).dtype
    with h5py.File(path) as h5:  # the reference's dataset names
        assert {"pc_sdf_sample", "norm_params", "pc_sdf_original", "sdf_params", "pc_gradients", "density"} <= set(h5)
    without = _samples(rng, extras=False)
    fmt.write_samples(path, without)
    assert fmt.read_samples(path).gradients is None


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the file and the problem.


def _assert_one_line(error, path):
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(path))


def test_missing_files(tmp_path):
    for reader in (fmt.read_split, fmt.read_metadata, fmt.read_image, fmt.read_samples, fmt.read_normal_map):
        with pytest.raises(fmt.DataError, match="file not found") as error:
            reader(tmp_path / "nothing")
        _assert_one_line(error, tmp_path / "nothing")


def test_truncated_h5(tmp_path, rng):
    path = tmp_path / "ori_sample.h5"
    fmt.write_samples(path, _samples(rng, n=4096))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(fmt.DataError, match="not a readable HDF5 file") as error:
        fmt.read_samples(path)
    _assert_one_line(error, path)


def test_corrupt_png(tmp_path, rng):
    path = tmp_path / "00.png"
    fmt.write_png(path, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[:60])
    with pytest.raises(fmt.DataError, match="not a readable image") as error:
        fmt.read_image(path)
    _assert_one_line(error, path)
    path.write_bytes(b"this is not a png")
    with pytest.raises(fmt.DataError, match="not a readable image"):
        fmt.read_image(path)


def test_metadata_with_wrong_field_count(tmp_path):
    path = tmp_path / "rendering_metadata.txt"
    path.write_text("[30, 20, 0, 0.8, 35, 32, 1.75, 0, 0, 0]\n[30, 20, 0, 0.8, 35]\n")
    with pytest.raises(fmt.DataError, match="line 2 has 5 fields, expected 10") as error:
        fmt.read_metadata(path)
    _assert_one_line(error, path)


def test_nans_in_samples(tmp_path, rng):
    samples = _samples(rng)
    samples.samples[5, 3] = np.nan
    path = tmp_path / "ori_sample.h5"
    fmt.write_samples(path, samples)
    with pytest.raises(fmt.DataError, match="'pc_sdf_sample' has 1 NaN/Inf values") as error:
        fmt.read_samples(path)
    _assert_one_line(error, path)


def test_missing_and_misshapen_datasets(tmp_path):
    path = tmp_path / "ori_sample.h5"
    with h5py.File(path, "w") as h5:
        h5["pc_sdf_sample"] = np.zeros((10, 3), np.float32)
        h5["norm_params"] = np.zeros(4)
    with pytest.raises(fmt.DataError, match=r"shape \(10, 3\), expected \[N, 4\]"):
        fmt.read_samples(path)
    with h5py.File(path, "w") as h5:
        h5["pc_sdf_sample"] = np.zeros((10, 4), np.float32)
    with pytest.raises(fmt.DataError, match="missing dataset 'norm_params'"):
        fmt.read_samples(path)


def test_writer_leaves_nothing_half_written(tmp_path, rng):
    path = tmp_path / "ori_sample.h5"
    fmt.write_samples(path, _samples(rng))
    before = path.read_bytes()
    broken = _samples(rng)
    broken.density = object()  # h5py cannot store it: the write fails midway
    with pytest.raises(TypeError):
        fmt.write_samples(path, broken)
    assert path.read_bytes() == before  # the old file is intact
    assert os.listdir(tmp_path) == ["ori_sample.h5"]  # and no temporary file is left


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    grey = np.full((8, 8), 65535, np.uint16)
    grey[2:6, 2:6] = 20000  # a dark square on white
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    pixels = fmt.read_image(tmp_path / "grey16.png")
    assert pixels.shape == (8, 8, 3) and pixels.dtype == np.uint8
    assert np.all(pixels[0, 0] == 255) and np.all(pixels[3, 3] == round(20000 / 257))


def test_integer_datasets_are_refused(tmp_path):
    path = tmp_path / "ori_sample.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("pc_sdf_sample", data=np.zeros((10, 4), np.int32))
        h5.create_dataset("norm_params", data=np.array([0, 0, 0, 1.0]))
    with pytest.raises(fmt.DataError, match="ori_sample.h5: dataset 'pc_sdf_sample' has dtype int32, expected"):
        fmt.read_samples(path)
