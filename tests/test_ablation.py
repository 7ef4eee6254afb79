"""The ablation report: means and standard errors of the table against hand-computed values, the figure
grid's layout, and ``tools/ablation.py`` end to end on the toy data (stages skip finished work)."""

import csv
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from d2im_tf.evaluation import ablation
from d2im_tf.inference.preview import LABEL_HEIGHT, labelled_grid

from conftest import ROOT

TABLE = "04379243"


def _write_per_shape(path: Path, rows: list[tuple]) -> None:
    """rows: (camera, category, cd, iou, ecd_3d, ecd_2d)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["category", "shape", "camera", "view", "iou", "chamfer_l1", "ecd_3d", "ecd_2d", "fscore_1pct"])
        for index, (camera, category, cd, iou, ecd_3d, ecd_2d) in enumerate(rows):
            writer.writerow([category, f"s{index}", camera, 11, iou, cd, ecd_3d, ecd_2d, 0.5])


def _cells(table: str, title: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {title} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def test_table_means_errors_and_paper_numbers(tmp_path):
    _write_per_shape(
        ablation.eval_dir(tmp_path, "full") / "per_shape.csv",
        [
            ("gt", ablation.CHAIR, 0.01, 0.5, 0.1, 1.0),
            ("gt", ablation.CHAIR, 0.02, 0.6, 0.2, 2.0),
            ("gt", ablation.CHAIR, 0.03, 0.7, 0.3, 3.0),
            ("gt", TABLE, 0.05, 0.2, 0.4, 4.0),
            ("gt", TABLE, 0.07, 0.4, 0.4, 6.0),
            ("predicted", ablation.CHAIR, 9.0, 0.0, 9.0, 99.0),  # another camera: never counted
        ],
    )
    table = ablation.comparison_table(tmp_path)
    assert "3 test chairs and 5 test shapes over 2 categories" in table
    assert [line for line in table.splitlines() if line.startswith("| ")][1:] == [
        line for line in table.splitlines() if line.startswith("| Full |")
    ]  # only evaluated variants
    cells = _cells(table, "Full")
    assert cells[:4] == ["0.0297", "0.613", "0.0503", "1.456"]  # the paper's Table 1
    # chairs: CD 0.01, 0.02, 0.03 → mean 0.02, sample std 0.01, standard error 0.01/√3
    assert cells[4] == "0.020 ± 0.006" and cells[5] == "0.600 ± 0.058" and cells[7] == "2.00 ± 0.58"
    # mean of the two category means; error √(se_chair² + se_table²)/2 with se_table(CD) = 0.01414/√2
    cd_error = math.sqrt((0.01 / math.sqrt(3)) ** 2 + (0.02 / math.sqrt(2) / math.sqrt(2)) ** 2) / 2
    assert cells[8] == f"{(0.02 + 0.06) / 2:.3f} ± {cd_error:.3f}"
    assert cells[10] == "0.300 ± 0.029"  # ECD-3D: (0.2 + 0.4)/2; the tables' two values are equal
    longer = ablation.comparison_table(tmp_path, extra={"Full, longer": ablation.eval_dir(tmp_path, "full")})
    assert _cells(longer, "Full, longer") == ["–"] * 4 + cells[4:]  # an extra row: ours only


def test_relief_table_means_and_errors(tmp_path):
    path = ablation.eval_dir(tmp_path, "nolap") / "per_shape.csv"
    path.parent.mkdir(parents=True)
    rows = [("gt", ablation.CHAIR, 10.0), ("gt", ablation.CHAIR, 14.0), ("gt", TABLE, 30.0), ("predicted", TABLE, 99.0)]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["category", "shape", "camera", "relief_angle"])
        writer.writerows([category, f"s{index}", camera, angle] for index, (camera, category, angle) in enumerate(rows))
    _write_per_shape(
        ablation.eval_dir(tmp_path, "full") / "per_shape.csv", [("gt", ablation.CHAIR, 0.01, 0.5, 0.1, 1.0)]
    )
    table = ablation.relief_table(tmp_path)
    assert [line for line in table.splitlines() if line.startswith("| ") and "relief" not in line] == [
        line for line in table.splitlines() if line.startswith("| NoLap |")
    ]  # Full's evaluation has no relief column
    # chairs: mean 12, sample std 2.83, error 2; mean of categories (12 + 30)/2, error √(2² + 0²)/2
    assert _cells(table, "NoLap") == ["12.0 ± 2.0", "21.0 ± 1.0"]
    assert ablation.relief_table(tmp_path, variants=["full"]) == ""


def test_labelled_grid_places_panels_row_by_row():
    size = 20
    colours = [[(255, 0, 0), (0, 255, 0), (0, 0, 255)], [(10, 20, 30), (40, 50, 60), (70, 80, 90)]]
    cells = [[np.full((size, size, 3), colour, np.uint8) for colour in row] for row in colours]
    grid = np.asarray(labelled_grid(cells, ["a", "b", "c"], ["", ""]))
    assert grid.shape == (LABEL_HEIGHT + 2 * size, 3 * size, 3)
    for r, row in enumerate(colours):
        for c, colour in enumerate(row):
            assert tuple(grid[LABEL_HEIGHT + r * size + size - 2, c * size + size - 2]) == colour


@pytest.mark.slow
def test_tool_evaluates_tabulates_and_draws(model_dir, data_with_meshes, tmp_path):
    out, figure = tmp_path / "ablation", tmp_path / "ablation.png"
    for variant in ("baseline", "full"):  # the same tiny model stands in for two trained variants
        shutil.copytree(model_dir, ablation.export_dir(out, variant))
    command = [
        sys.executable,
        "tools/ablation.py",
        "all",
        "--variants",
        "baseline",
        "full",
        "--data",
        str(data_with_meshes),
        "--out",
        str(out),
        "--resolution",
        "32",
        "--figure",
        str(figure),
        "--size",
        "64",
        "--figure-resolution",
        "32",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "d2im train" not in result.stdout  # exported variants are not retrained
    with open(ablation.eval_dir(out, "full") / "metrics.csv") as handle:
        mean = next(row for row in csv.DictReader(handle) if row["category"] == "mean")
    table = (out / "table_eval.md").read_text()
    assert _cells(table, "Full")[8].startswith(f"{float(mean['chamfer_l1']):.3f} ± ")  # evaluate's own mean
    assert _cells(table, "Baseline")[4:] == _cells(table, "Full")[4:]  # same model, same numbers
    assert np.asarray(Image.open(figure)).shape == (LABEL_HEIGHT + 2 * 64, 4 * 64, 3)  # 1 shape × 2 views
    rerun = subprocess.run([*command[:2], "evaluate", *command[3:]], cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0 and "d2im evaluate" not in rerun.stdout  # evaluated ones are skipped


def test_tool_passes_config_overrides_to_training(tmp_path):
    out = tmp_path / "ablation"
    command = [
        sys.executable,
        "tools/ablation.py",
        "train",
        "--variants",
        "baseline",
        "--out",
        str(out),
        "--set",
        "train.warmup_steps=-3",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "d2im train failed" in result.stderr
    log = (out / "baseline.train.log").read_text()
    assert "train.warmup_steps: must be at least 0, got -3" in log  # d2im train refused the override it was given
