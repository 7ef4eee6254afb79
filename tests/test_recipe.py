"""The bundled model's recipe runner: the plan of a recipe (run folders, init_from, the export last),
and end to end on a tiny recipe: a training subprocess SIGKILLed midway, the same command again resumes
that stage (not from step 0), finishes every stage once and installs the export."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tensorflow as tf
import yaml

from d2im_tf.errors import UserError
from d2im_tf.training import recipe as recipe_module

ROOT = Path(__file__).resolve().parents[1]


def _tiny_recipe(tmp_path) -> Path:
    recipe = {
        "config": str(ROOT / "configs" / "tiny.yaml"),
        "data": {
            "root": str(tmp_path / "data"),
            "args": [
                "--categories",
                "03001627",
                "04379243",
                "--shapes-per-category",
                "2",
                "--views",
                "4",
                "--image-size",
                "32",
                "--samples",
                "1024",
                "--resolution",
                "48",
                "--appearance",
                "varied",
                "--shape-families",
                "extended",
            ],
            "grow": [1],
        },
        "stages": [
            {"name": "camera", "network": "camera", "set": {"train.steps_per_epoch": 2, "camera.epochs": 1}},
            {
                "name": "main",
                "network": "sdf",
                "set": {"train.steps_per_epoch": 10, "train.epochs": 8, "train.checkpoint_every": 2},
            },
            {
                "name": "average",
                "network": "sdf",
                "init_from": "main",
                "set": {"train.epochs": 1, "train.ema_decay": 0.9, "data.far_inside": 0.5},
            },
        ],
        "export": {"out": str(tmp_path / "saved")},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_plan_orders_stages_and_links_init_from(tmp_path):
    stages = recipe_module.plan(recipe_module.load_recipe(_tiny_recipe(tmp_path)), tmp_path / "runs")
    assert [s.name for s in stages] == ["data", "data_grow_1", "camera", "main", "average", "export"]
    assert stages[1].args[-2:] == ("--extra-train-shapes", "1")
    average = " ".join(stages[4].args)
    assert f"train.init_from={tmp_path / 'runs' / 'main'}" in average and "--no-export" in average
    assert stages[5].args[stages[5].args.index("--checkpoint") + 1] == str(tmp_path / "runs" / "average")
    assert stages[5].args[stages[5].args.index("--camera-checkpoint") + 1] == str(tmp_path / "runs" / "camera")
    broken = yaml.safe_load(_tiny_recipe(tmp_path).read_text())
    broken["stages"][2]["init_from"] = "later"
    with pytest.raises(UserError, match="init_from 'later'"):
        recipe_module.plan(broken, tmp_path / "runs")


def test_extra_sets_are_data_stages_and_extra_roots_of_their_training_stages(tmp_path):
    recipe = yaml.safe_load(_tiny_recipe(tmp_path).read_text())
    recipe["data"]["extra_sets"] = [{"root": str(tmp_path / "plain"), "args": ["--seed", "1"], "grow": [2]}]
    stages = recipe_module.plan(recipe, tmp_path / "runs")
    names = [s.name for s in stages]
    assert names == ["data", "data_grow_1", "data_plain", "data_plain_grow_2", "camera", "main", "average", "export"]
    assert stages[2].args == ("make-data", "--out", str(tmp_path / "plain"), "--seed", "1")
    assert stages[3].args[-2:] == ("--extra-train-shapes", "2")
    for stage in stages[4:7]:
        assert f'data.extra_roots=["{tmp_path / "plain"}"]' in stage.args
    recipe["data"]["extra_sets"].append({"root": str(tmp_path / "tables"), "args": [], "stages": ["average"]})
    stages = recipe_module.plan(recipe, tmp_path / "runs")  # a set for one stage: only it reads the set
    assert f'data.extra_roots=["{tmp_path / "plain"}"]' in stages[6].args  # main
    assert f'data.extra_roots=["{tmp_path / "plain"}", "{tmp_path / "tables"}"]' in stages[7].args  # average
    recipe["data"]["extra_sets"][1]["stages"] = ["later"]
    with pytest.raises(UserError, match="names no training stage"):
        recipe_module.plan(recipe, tmp_path / "runs")
    recipe["data"]["extra_sets"][1] = {"root": str(tmp_path / "other" / "plain"), "args": []}
    with pytest.raises(UserError, match="folders of different names"):
        recipe_module.plan(recipe, tmp_path / "runs")


@pytest.mark.parametrize("name", ["bundled.yaml", "bundled_finetune.yaml"])
def test_the_shipped_recipes_plan(name, tmp_path):
    """The repository's recipes are well formed: every stage planned, the export of the last SDF stage."""
    stages = recipe_module.plan(recipe_module.load_recipe(ROOT / "configs" / name), tmp_path)
    sdf = [s for s in stages if s.kind == "sdf"]
    export = stages[-1].args
    assert stages[-1].kind == "export" and export[export.index("--checkpoint") + 1] == str(sdf[-1].run_dir)


def _runner(recipe, runs):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "train_bundled.py"), "--recipe", str(recipe), "--runs", str(runs)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_sigkill_midway_then_the_same_command_resumes_and_finishes(tmp_path):
    recipe, runs = _tiny_recipe(tmp_path), tmp_path / "runs"
    first = _runner(recipe, runs)
    checkpoints = runs / "main" / "checkpoints"
    deadline = time.time() + 600
    while not (checkpoints / "checkpoint").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    running = json.loads((runs / "running.json").read_text())
    assert running["stage"] == "main"
    os.kill(running["pid"], signal.SIGKILL)  # the training subprocess, midway
    output = first.communicate(timeout=120)[0]
    assert first.returncode == 2 and "recipe stage main failed" in output
    killed_at = int(tf.train.latest_checkpoint(str(checkpoints)).rsplit("-", 1)[-1])
    state = json.loads((runs / "recipe_state.json").read_text())
    assert list(state["finished"]) == ["data", "data_grow_1", "camera"]

    second = _runner(recipe, runs)
    output = second.communicate(timeout=900)[0]
    assert second.returncode == 0, output
    assert "[data] done" in output and "[camera] done" in output
    main_command = next(line for line in output.splitlines() if line.startswith("[main] d2im"))
    assert main_command.endswith("--resume")  # continued, not restarted
    assert 1 <= killed_at < 80  # killed midway (80 steps planned)
    state = json.loads((runs / "recipe_state.json").read_text())
    assert list(state["finished"]) == ["data", "data_grow_1", "camera", "main", "average", "export"]
    loaded = tf.saved_model.load(str(tmp_path / "saved" / "1"))
    assert {"serving_default", "camera"} <= set(loaded.signatures)
    third = _runner(recipe, runs)  # everything done: nothing runs again
    assert third.communicate(timeout=300)[0].count("done") == 6 and third.returncode == 0
