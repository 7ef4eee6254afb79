"""The ``d2im`` command: help, info, and check-data on a hand-written dataset, good and broken."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from d2im_tf import commands
from d2im_tf.cli import COMMANDS
from d2im_tf.data import disn_format as fmt
from d2im_tf.quiet import _LOG_LINE, ABSL_PREAMBLE, shown


def d2im(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "d2im_tf.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def without_tf_log_level():
    """The environment of a user who has not set TF_CPP_MIN_LOG_LEVEL (the tests' conftest sets it)."""
    return {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}


def test_help_lists_every_subcommand():
    """Every module of d2im_tf.commands is a subcommand, and ``d2im --help`` lists each with its help line."""
    result = d2im("--help")
    assert result.returncode == 0, result.stderr
    modules = sorted(path.stem for path in Path(commands.__file__).parent.glob("*.py") if path.stem != "__init__")
    assert sorted(module for module, _ in COMMANDS.values()) == modules
    text = " ".join(result.stdout.split())  # argparse wraps the help lines at the terminal's width
    positions = [text.find(f" {name} {help_text}") for name, (_, help_text) in COMMANDS.items()]
    assert -1 not in positions, [name for name, at in zip(COMMANDS, positions) if at == -1]
    assert positions == sorted(positions)  # listed in the order of COMMANDS


def test_info_prints_versions_and_config_and_no_tensorflow_noise():
    result = d2im("info", "--set", "model.image_size=64", env=without_tf_log_level())
    assert result.returncode == 0, result.stderr
    assert "tensorflow" in result.stdout and "keras       3." in result.stdout
    assert "image_size: 64" in result.stdout
    assert result.stderr == ""  # no "Could not find cuda drivers", "failed call to cuInit", oneDNN notices


def test_verbose_shows_tensorflow_logs():
    result = d2im("info", "--verbose", env=without_tf_log_level())
    assert result.returncode == 0, result.stderr
    assert any(_LOG_LINE.match(line) for line in result.stderr.splitlines()), result.stderr


def test_only_tensorflow_log_lines_below_the_level_are_hidden():
    info = "I0000 00:00:1795304348.257262    3741 cudart_stub.cc:31] Could not find cuda drivers on your machine."
    error = "E0000 00:00:1795304357.164319    3741 cuda_platform.cc:52] failed call to cuInit: INTERNAL"
    ours = "/work/d2im_tf/x.py:3: UserWarning: something of ours"
    assert [shown(line, 2) for line in (info, error, ours, ABSL_PREAMBLE)] == [False, True, True, False]
    assert [shown(line, 3) for line in (info, error, ours)] == [False, False, True]
    assert all(shown(line, 0) for line in (info, error, ours, ABSL_PREAMBLE))


def test_parsing_any_subcommand_leaves_tensorflow_unloaded():
    """So ``--help`` is fast and TF's start-up can still be quietened after the arguments are read."""
    script = (
        "import sys; from d2im_tf.cli import COMMANDS, build_parser\n"
        "for name in COMMANDS: build_parser(name)\n"
        "assert 'tensorflow' not in sys.modules, name"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_info_bad_key_is_one_line_and_exit_2():
    result = d2im("info", "--set", "model.imagesize=64")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "model.imagesize" in result.stderr


@pytest.fixture
def dataset(tmp_path):
    """Two categories, 3 shapes, 2 views each, written with the layout's own writers; category 04379243
    has no test shape (a warning, not a problem)."""
    rng = np.random.default_rng(0)
    layout = fmt.DatasetLayout(tmp_path)
    shapes = {"03001627": (["s1", "s2"], ["s3"]), "04379243": (["t1"], [])}
    for category, (train, test) in shapes.items():
        fmt.write_split(layout.split_path(category, "train"), train)
        fmt.write_split(layout.split_path(category, "test"), test)
        for shape in train + test:
            fmt.write_metadata(
                layout.metadata_path(category, shape), [[30 * v, 20, 0, 0.8, 35, 32, 1.75, 0, 0, 0] for v in range(2)]
            )
            for view in range(2):
                fmt.write_png(
                    layout.image_path(category, shape, view), rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
                )
                fmt.write_normal_map(
                    layout.normal_path(category, shape, view), np.dstack([np.zeros((16, 16, 2)), -np.ones((16, 16))])
                )
            fmt.write_samples(
                layout.samples_path(category, shape),
                fmt.SdfSamples(
                    rng.normal(size=(16, 4)).astype(np.float32),
                    np.array([0, 0, 0, 1.0]),
                    gradients=np.tile([[1.0, 0, 0]], (16, 1)).astype(np.float32),
                    density=np.ones(16, np.float32),
                ),
            )
    return layout


def test_check_data_summary(dataset):
    result = d2im("check-data", str(dataset.root), "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "categories: 2" in result.stdout
    assert "03001627: train 2, test 1" in result.stdout
    assert "04379243: train 1, test 0" in result.stdout
    assert "2 views: 4 shapes" in result.stdout
    assert "problems: 0" in result.stdout
    assert f"warnings: 1\n  {dataset.split_path('04379243', 'test')}: lists no shapes" in result.stdout


def test_check_data_lists_every_problem(dataset):
    dataset.image_path("03001627", "s1", 1).write_bytes(b"garbage")
    dataset.normal_path("04379243", "t1", 0).unlink()
    dataset.metadata_path("03001627", "s3").write_text("[1, 2, 3]\n")
    result = d2im("check-data", str(dataset.root), "--no-progress")
    assert result.returncode == 2
    problems = [line.strip() for line in result.stdout.split("problems: ", 1)[1].splitlines()[1:]]
    assert len(problems) == 3
    assert any(
        p.startswith(str(dataset.image_path("03001627", "s1", 1))) and "not a readable image" in p for p in problems
    )
    assert any(p.startswith(str(dataset.normal_path("04379243", "t1", 0))) and "file not found" in p for p in problems)
    assert any(p.startswith(str(dataset.metadata_path("03001627", "s3"))) and "3 fields" in p for p in problems)


def test_check_data_on_empty_folder(tmp_path):
    result = d2im("check-data", str(tmp_path), "--no-progress")
    assert result.returncode == 2
    assert "no split lists" in result.stdout
