"""tools/relief_recovery.py: the relief error of every view with relief, for the output, f_B and the
relief-free shape, on a generated dataset with its coarse shapes; refused without them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from d2im_tf.cli import main
from d2im_tf.evaluation.relief import RELIEF_THRESHOLD

ROOT = Path(__file__).resolve().parents[1]
TOOL = [sys.executable, str(ROOT / "tools" / "relief_recovery.py")]
DATA = ["--categories", "03001627", "--shapes-per-category", "1", "--views", "3", "--image-size", "64",
        "--samples", "2048", "--resolution", "80", "--seed", "3", "--test-fraction", "0", "--workers", "1"]  # fmt: skip
SCORES = r"output ([\d.]+|nan)°, base ([\d.]+|nan)°, relief-free ([\d.]+)°"
SCORES_GROUP = {"output": 4, "base": 5}  # LINE's group of each surface
LINE = re.compile(rf"^03001627/(\S+) view (\d): (\d+) relief pixels; {SCORES}$")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("relief_recovery")
    assert main(["make-data", "--out", str(root / "coarse"), *DATA, "--coarse-sdf"]) == 0
    assert main(["make-data", "--out", str(root / "plain"), *DATA]) == 0
    return root


def test_every_view_with_relief_is_scored_and_the_relief_free_shape_misses_it(datasets, tiny_export):
    model = tiny_export("full").path
    done = subprocess.run([*TOOL, str(model), "--data", str(datasets / "coarse"), "--split", "train",
                           "--resolution", "32"], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    rows = [LINE.match(line) for line in lines[:-3]]
    assert rows and all(rows), lines
    assert len({row[2] for row in rows}) == len(rows) <= 3  # each view once
    for row in rows:
        assert int(row[3]) > 0
        # a relief pixel is one where the GT's normal departs from the relief-free shape's by more than
        # the threshold, so the relief-free shape scores above it
        assert float(row[6]) > RELIEF_THRESHOLD
    assert lines[-3] == f"{len(rows)} views with relief; relief error (°) on the views each surface covers:"
    for line, key in zip(lines[-2:], ("output", "base")):  # each mean against the relief-free one on its views
        covered = [row for row in rows if row[SCORES_GROUP[key]] != "nan"]  # printed to 0.1°: means within 0.1°
        mean = sum(float(row[SCORES_GROUP[key]]) for row in covered) / len(covered)
        free = sum(float(row[6]) for row in covered) / len(covered)
        expected = rf"\s+{key}\s+([\d.]+), the relief-free shape\s+([\d.]+) on the same {len(covered)} views"
        match = re.fullmatch(expected, line)
        assert match, line
        assert float(match[1]) == pytest.approx(mean, abs=0.1) and float(match[2]) == pytest.approx(free, abs=0.1)


def test_a_dataset_without_coarse_shapes_is_refused_in_one_line(datasets, tiny_export):
    done = subprocess.run([*TOOL, str(tiny_export("full").path), "--data", str(datasets / "plain"),
                           "--split", "train"], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert re.fullmatch(r"error: \S+/coarse\.obj: not found \(make-data --coarse-sdf writes it\)\n", done.stderr)
