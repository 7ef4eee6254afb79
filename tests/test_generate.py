"""Dataset generation end to end through the ``d2im`` CLI: layout, determinism across worker counts,
``preprocess`` and mesh conversion with bad input."""

import shutil

import h5py
import numpy as np
import pytest
import trimesh

from d2im_tf.cli import main
from d2im_tf.data import disn_format as fmt
from d2im_tf.data.synth import generate, mesh_sdf
from d2im_tf.evaluation.evaluate import EvaluationCase

from helpers import file_hashes, read_depth

CATEGORIES = ["03001627", "04379243"]
TINY = [
    "--categories",
    *CATEGORIES,
    "--shapes-per-category",
    "2",
    "--views",
    "4",
    "--image-size",
    "64",
    "--samples",
    "2048",
    "--resolution",
    "80",
    "--seed",
    "3",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "data"
    assert main(["make-data", "--out", str(root), *TINY, "--workers", "1"]) == 0
    return root


def test_layout_is_complete_and_readable(tiny):
    layout = fmt.DatasetLayout(tiny)
    assert layout.categories() == CATEGORIES
    for category in CATEGORIES:
        train = fmt.read_split(layout.split_path(category, "train"))
        test = fmt.read_split(layout.split_path(category, "test"))
        assert sorted(train + test) == ["syn00000", "syn00001"] and len(test) == 1
        for shape in train + test:
            samples = fmt.read_samples(layout.samples_path(category, shape))
            assert samples.samples.shape == (2048, 4)
            assert samples.gradients.shape == (2048, 3) and samples.density.shape == (2048,)
            rows = fmt.read_metadata(layout.metadata_path(category, shape))
            assert rows.shape == (4, 10)
            np.testing.assert_array_equal(rows[:, 4:], [[35, 32, 1.75, 0, 0, 0]] * 4)
            mesh = trimesh.load(layout.mesh_path(category, shape), process=False)
            assert mesh.is_watertight
            for view in range(4):
                image = fmt.read_image(layout.image_path(category, shape, view))
                assert image.shape == (64, 64, 4)
                depth, mask = read_depth(layout.depth_path(category, shape, view))
                np.testing.assert_array_equal(mask, image[..., 3] > 0)
                normals = fmt.read_normal_map(layout.normal_path(category, shape, view))
                assert np.all(np.linalg.norm(normals[mask], axis=1) > 0.99)
                assert depth[mask].min() > 0.3


def test_same_seed_gives_identical_bytes_with_any_worker_count(tiny, tmp_path):
    again = tmp_path / "again"
    assert main(["make-data", "--out", str(again), *TINY, "--workers", "2"]) == 0
    assert file_hashes(again) == file_hashes(tiny)


def test_a_different_seed_gives_different_shapes(tiny, tmp_path):
    other = tmp_path / "other"
    arguments = [a if a != "3" else "4" for a in TINY]
    arguments[arguments.index("--shapes-per-category") + 1] = "1"
    assert main(["make-data", "--out", str(other), *arguments]) == 0
    path = "meshes/03001627/syn00000/model.obj"
    assert (other / path).read_bytes() != (tiny / path).read_bytes()


def test_extra_train_shapes_join_training_only_and_a_dataset_grows_by_writing_only_them(tiny, tmp_path, monkeypatch):
    grown = tmp_path / "grown"
    shutil.copytree(tiny, grown)
    written = []
    task = generate._synthetic_task
    monkeypatch.setattr(generate, "_synthetic_task", lambda t: written.append(t[1:]) or task(t))
    assert main(["make-data", "--out", str(grown), *TINY, "--extra-train-shapes", "1"]) == 0
    assert written == [(c, 2) for c in CATEGORIES]  # only the new shape of each category

    def split(root, category, name):
        return fmt.read_split(fmt.DatasetLayout(root).split_path(category, name))

    for category in CATEGORIES:
        assert split(grown, category, "test") == split(tiny, category, "test")
        assert split(grown, category, "train") == sorted(split(tiny, category, "train") + ["syn00002"])
    old = {k: v for k, v in file_hashes(tiny).items() if k != "make_data.json" and not k.startswith("splits/")}
    assert {k: v for k, v in file_hashes(grown).items() if k in old} == old
    monkeypatch.setattr(generate, "_synthetic_task", task)
    fresh = tmp_path / "fresh"  # growing gives the bytes of making the larger dataset at once
    assert main(["make-data", "--out", str(fresh), *TINY, "--extra-train-shapes", "1", "--workers", "1"]) == 0
    assert file_hashes(fresh) == file_hashes(grown)


def test_the_same_command_after_a_kill_writes_only_the_unfinished_shapes(tiny, tmp_path, monkeypatch):
    """A shape without its metadata file (written last) is unfinished: the same command run again
    writes it alone, and the folder ends with the bytes of an uninterrupted run."""
    killed = tmp_path / "killed"
    shutil.copytree(tiny, killed)
    layout = fmt.DatasetLayout(killed)
    layout.metadata_path(CATEGORIES[1], "syn00001").unlink()
    layout.image_path(CATEGORIES[1], "syn00001", 2).unlink()
    for split in ("train", "test"):
        layout.split_path(CATEGORIES[0], split).unlink()
    written = []
    task = generate._synthetic_task
    monkeypatch.setattr(generate, "_synthetic_task", lambda t: written.append(t[1:]) or task(t))
    assert main(["make-data", "--out", str(killed), *TINY]) == 0
    assert written == [(CATEGORIES[1], 1)]
    assert file_hashes(killed) == file_hashes(tiny)


def test_coarse_sdf_added_to_a_dataset_gives_the_bytes_of_making_it_with_the_option(
    tiny, tmp_path, monkeypatch, capsys
):
    """--coarse-sdf on a finished dataset writes only pc_sdf_coarse and pc_sdf_uniform_coarse into the
    samples (no shape is generated anew), with the bytes of a dataset made with it from the start."""
    added = tmp_path / "added"
    shutil.copytree(tiny, added)
    written = []
    task = generate._synthetic_task
    monkeypatch.setattr(generate, "_synthetic_task", lambda t: written.append(t[1:]) or task(t))
    assert main(["make-data", "--out", str(added), *TINY, "--coarse-sdf"]) == 0
    assert written == []
    before, after = file_hashes(tiny), file_hashes(added)
    changed = sorted(k for k in after if after[k] != before.get(k))
    new_files = sorted(k for k in after if k.endswith("coarse.obj"))
    assert len(new_files) == 4 and not any(k in before for k in new_files)
    assert changed == sorted(["make_data.json"] + new_files + [k for k in after if k.endswith("ori_sample.h5")])
    for category in CATEGORIES:
        for shape in ("syn00000", "syn00001"):
            old = fmt.read_samples(fmt.DatasetLayout(tiny).samples_path(category, shape))
            new = fmt.read_samples(fmt.DatasetLayout(added).samples_path(category, shape))
            for field in ("samples", "gradients", "density", "far_samples", "far_gradients", "surface_points"):
                np.testing.assert_array_equal(getattr(new, field), getattr(old, field))
            assert new.coarse_sdf.shape == (2048,) and new.far_coarse_sdf.shape == (len(old.far_samples),)
            case = EvaluationCase.load(fmt.DatasetLayout(added), category, shape)  # evaluate reads coarse.obj
            assert case.coarse is not None and case.coarse.is_watertight
            # The relief only adds material or carves a little: most samples keep their distance.
            assert 0.5 < np.mean(np.abs(new.coarse_sdf - old.sdf) < 1e-6) < 1.0
    monkeypatch.setattr(generate, "_synthetic_task", task)
    fresh = tmp_path / "fresh"
    assert main(["make-data", "--out", str(fresh), *TINY, "--coarse-sdf", "--workers", "2"]) == 0
    assert file_hashes(fresh) == after
    capsys.readouterr()
    assert main(["make-data", "--out", str(fresh), *TINY]) == 2  # the option cannot be taken back
    assert f"error: {fresh}: holds a dataset made with --coarse-sdf; choose" in capsys.readouterr().err
    assert main(["make-data", "--out", str(fresh), *TINY, "--coarse-sdf"]) == 0  # all done: nothing to show
    assert "shape" not in capsys.readouterr().err


def test_coarse_sdf_refuses_meshes_it_did_not_generate(tiny, tmp_path, capsys):
    changed = tmp_path / "changed"
    shutil.copytree(tiny, changed)
    mesh_path = fmt.DatasetLayout(changed).mesh_path(CATEGORIES[0], "syn00001")
    lines = mesh_path.read_text().splitlines(keepends=True)
    mesh_path.write_text("v 0.1 0.2 0.3\n" + "".join(lines[1:]))  # one vertex moved: not the generator's shape
    assert main(["make-data", "--out", str(changed), *TINY, "--coarse-sdf"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: {mesh_path}: is not the shape")
    assert main(["make-data", "--out", str(tmp_path / "m"), "--from-meshes", str(tmp_path), "--coarse-sdf"]) == 2
    assert "--coarse-sdf needs generated shapes" in capsys.readouterr().err


def test_unknown_category_fails_with_one_line(tmp_path, capsys):
    assert main(["make-data", "--out", str(tmp_path / "x"), "--categories", "02691156"]) == 2
    assert "no procedural family for 02691156" in capsys.readouterr().err


def test_preprocess_adds_missing_gradients_and_density(tiny, tmp_path):
    root = tmp_path / "disn"
    source = fmt.DatasetLayout(tiny).samples_path("03001627", "syn00000")
    target = fmt.DatasetLayout(root).samples_path("03001627", "shape")
    target.parent.mkdir(parents=True)
    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        for name in ("pc_sdf_sample", "norm_params", "pc_sdf_original", "sdf_params"):
            dst.create_dataset(name, data=src[name][()])
        dst.create_dataset("extra", data=np.arange(3))
    assert main(["preprocess", str(root)]) == 0
    updated = fmt.read_samples(target)
    expected = mesh_sdf.add_gradients_and_density(fmt.SdfSamples(updated.samples, updated.norm_params))
    np.testing.assert_array_equal(updated.density, expected.density)
    np.testing.assert_array_equal(updated.gradients, expected.gradients)
    with h5py.File(target, "r") as h5:
        assert list(h5["extra"][()]) == [0, 1, 2]  # other datasets survive
    # The plane fit agrees in direction with the analytic gradients of the mesh pipeline.
    analytic = fmt.read_samples(source).gradients
    assert np.median(np.sum(analytic * updated.gradients, axis=1)) > 0.9  # sparse samples: a rough fit


def test_preprocess_without_files_fails(tmp_path, capsys):
    assert main(["preprocess", str(tmp_path)]) == 2
    assert "ori_sample.h5" in capsys.readouterr().err


@pytest.mark.slow
def test_from_meshes_converts_good_repairs_open_and_names_bad_files(tmp_path, capsys):
    source = tmp_path / "meshes"
    box = trimesh.creation.box(extents=[0.4, 0.3, 0.5])
    (source / "02933112" / "closed").mkdir(parents=True)
    box.export(source / "02933112" / "closed" / "model.obj")
    (source / "02933112" / "open").mkdir()
    trimesh.Trimesh(box.vertices, box.faces[:-2]).export(source / "02933112" / "open" / "model.obj")
    (source / "02933112" / "broken").mkdir()
    (source / "02933112" / "broken" / "model.obj").write_text("v 0 0 0\nf 1 1 1\n")
    out = tmp_path / "out"
    code = main(
        [
            "make-data",
            "--out",
            str(out),
            "--from-meshes",
            str(source),
            "--views",
            "2",
            "--image-size",
            "32",
            "--samples",
            "1024",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "1 mesh(es) skipped" in err
    assert "broken/model.obj" in err and "open/model.obj: not watertight, remeshed" in err
    layout = fmt.DatasetLayout(out)
    shapes = [s for split in ("train", "test") for s in fmt.read_split(layout.split_path("02933112", split))]
    assert sorted(shapes) == ["closed", "open"]
    converted = trimesh.load(layout.mesh_path("02933112", "open"), process=False)
    assert converted.is_watertight
    samples = fmt.read_samples(layout.samples_path("02933112", "closed"))
    world = samples.points * samples.norm_params[3] + samples.norm_params[:3]
    assert np.mean(box.contains(world) == (samples.sdf < 0)) >= 0.995
