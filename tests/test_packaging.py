"""What an installed package holds: every non-Python file of ``d2im_tf`` is package data, the bundled
model included, so ``d2im reconstruct`` finds its default model after ``pip install .`` (not only in a
checkout)."""

import glob
import shutil
import subprocess
import sys
import zipfile

import pytest

import d2im_tf
from d2im_tf.bundled import BUNDLED_MODEL
from d2im_tf.commands.reconstruct import BUNDLED_MODEL as RECONSTRUCT_DEFAULT

from conftest import ROOT

PACKAGE = ROOT / "d2im_tf"


def data_files() -> set[str]:
    """The package's files that are not Python source, relative to the package (from git when available)."""
    listed = subprocess.run(["git", "ls-files", "d2im_tf"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout:
        paths = [line.removeprefix("d2im_tf/") for line in listed.stdout.splitlines()]
    else:  # not a git checkout
        paths = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*") if path.is_file()]
    return {path for path in paths if not path.endswith((".py", ".pyc")) and "__pycache__" not in path}


def package_data_patterns() -> list[str]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["d2im_tf"]


def test_bundled_model_is_inside_the_package():
    assert RECONSTRUCT_DEFAULT == BUNDLED_MODEL
    assert BUNDLED_MODEL.is_relative_to(PACKAGE.resolve()) and d2im_tf.__file__.startswith(str(PACKAGE))
    versions = [path for path in BUNDLED_MODEL.iterdir() if path.name.isdigit()]
    assert versions and all((version / "saved_model.pb").is_file() for version in versions)
    assert (versions[0] / "assets.extra" / "d2im.json").is_file()


def test_every_data_file_is_package_data():
    """setuptools globs each package-data pattern in the package folder: together they must match every
    non-Python file (the bundled model's five files, the TF.js client and its npm manifest and lockfile)."""
    files = data_files()
    assert {
        "deploy/tfjs_client.mjs",
        "bundled/d2im_synthetic/1/saved_model.pb",
        "bundled/d2im_synthetic/1/variables/variables.index",
    } <= files
    matched = {  # setuptools globs recursively (``**``), as glob.glob does with recursive=True
        path for pattern in package_data_patterns() for path in glob.glob(pattern, root_dir=PACKAGE, recursive=True)
    }
    assert files - matched == set()


@pytest.mark.slow
def test_wheel_holds_the_bundled_model(tmp_path):
    """A wheel built from a copy of the checkout's package (no dependencies, this environment's setuptools)
    lists the bundled model's files and the TF.js client."""
    source = tmp_path / "source"
    shutil.copytree(PACKAGE, source / "d2im_tf", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path / "wheels"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = (tmp_path / "wheels").glob("d2im_tf-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"d2im_tf/{path}" for path in data_files()} <= names
