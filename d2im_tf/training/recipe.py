"""Run a training recipe of stages (``make model`` / ``tools/train_bundled.py``), resuming after interruption.

A recipe (``configs/bundled.yaml``) names a base config, the ``make-data`` arguments of its dataset
and how the set grows, training stages, and an export. Stages run in order, each as a ``d2im``
subprocess:

- ``data``: ``make-data`` with the recipe's arguments, then once per ``grow`` entry with
  ``--extra-train-shapes N`` (each growth writes only its new shapes, so each is a stage of its own);
  each of ``data.extra_sets`` (``root``, ``args`` and ``grow`` of its own) likewise, as stages
  ``data_<folder name>``; training reads them all (``data.extra_roots``), or, for a set with
  ``stages: [names]``, only the training stages named there;
- each training stage: ``d2im train`` or ``d2im train-camera`` with the base config, the stage's
  ``set`` overrides, ``data.root`` = the dataset (``data.extra_roots`` = the extra sets) and the run
  folder ``RUNS/<stage name>``;
  ``init_from: <earlier stage>`` starts from that stage's result. A stage whose run folder holds a
  checkpoint is continued with ``--resume``, which resumes a run exactly;
- ``export``: ``d2im export`` of the last SDF stage with the camera stage into a staging folder, then
  moved to ``export.out``/1 (replacing what was there) — only once everything else is done.

``RUNS/recipe_state.json`` records each finished stage (with the command it finished with), so a
second run skips them up to the first stage that is unfinished or whose command changed; that stage and
every later one run (a finished training run given the same command does no more steps; one given more
epochs continues). A stage killed midway is run again (data: ``make-data`` writes only the shapes it
had not finished) or resumed (training). While a stage runs, ``RUNS/running.json`` names it and its
process id.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from d2im_tf.errors import UserError

STATE = "recipe_state.json"
RUNNING = "running.json"


@dataclass(frozen=True)
class Stage:
    """One step of a recipe: ``kind`` is ``data``, ``sdf``, ``camera`` or ``export``; ``args`` the
    arguments after ``d2im`` (without the run folder's resume flag)."""

    name: str
    kind: str
    args: tuple[str, ...]
    run_dir: Path | None = None


def load_recipe(path) -> dict:
    path = Path(path)
    try:
        recipe = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"{path}: unreadable recipe ({error.__class__.__name__})") from None
    for key in ("config", "data", "stages", "export"):
        if not isinstance(recipe, dict) or key not in recipe:
            raise UserError(f"{path}: the recipe needs a '{key}' entry")
    return recipe


def _value(value) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _data_stages(name: str, data: dict) -> list[Stage]:
    """``make-data`` of one set (``root``, ``args``), then one stage per ``grow`` entry."""
    make = ["make-data", "--out", str(data["root"]), *[str(a) for a in data["args"]]]
    stages = [Stage(name, "data", tuple(make))]
    for extra in data.get("grow", []):
        stages.append(Stage(f"{name}_grow_{extra}", "data", (*make, "--extra-train-shapes", str(extra))))
    return stages


def plan(recipe: dict, runs: Path) -> list[Stage]:
    """The stages of ``recipe`` with run folders under ``runs``, in order."""
    data = recipe["data"]
    root = str(data["root"])
    extra_sets = data.get("extra_sets", [])
    stages = _data_stages("data", data)
    for entry in extra_sets:
        if not isinstance(entry, dict) or "root" not in entry or "args" not in entry:
            raise UserError("each of the recipe's data.extra_sets needs a 'root' and 'args'")
        stages += _data_stages(f"data_{Path(str(entry['root'])).name}", entry)
    if len({s.name for s in stages}) < len(stages):
        raise UserError("the recipe's data sets need folders of different names")
    names = {str(entry["name"]) for entry in recipe["stages"]}
    for entry in extra_sets:
        unknown = set(entry.get("stages", names)) - names
        if unknown:
            raise UserError(f"data set {entry['root']}: 'stages' names no training stage {sorted(unknown)}")
    done: dict[str, Stage] = {}
    for entry in recipe["stages"]:
        name, kind = str(entry["name"]), str(entry["network"])
        if kind not in ("sdf", "camera") or name in done or name in ("data", "export"):
            raise UserError(f"recipe stage {name!r}: 'network' must be sdf or camera and names must be unique")
        section = "train" if kind == "sdf" else "camera"
        run_dir = runs / name
        overrides = {**entry.get("set", {}), "data.root": root, f"{section}.out_dir": str(run_dir)}
        extra_roots = [str(extra["root"]) for extra in extra_sets if name in extra.get("stages", names)]
        if extra_roots:
            overrides["data.extra_roots"] = extra_roots
        if entry.get("init_from"):
            if entry["init_from"] not in done:
                raise UserError(f"recipe stage {name!r}: init_from {entry['init_from']!r} is not an earlier stage")
            overrides[f"{section}.init_from"] = str(done[entry["init_from"]].run_dir)
        command = "train" if kind == "sdf" else "train-camera"
        args = [command, "--config", str(recipe["config"]), "--no-progress"]
        args += ["--no-export"] if kind == "sdf" else []
        for key, value in overrides.items():
            args += ["--set", f"{key}={_value(value)}"]
        done[name] = Stage(name, kind, tuple(args), run_dir)
        stages.append(done[name])
    sdf = [s for s in done.values() if s.kind == "sdf"]
    camera = [s for s in done.values() if s.kind == "camera"]
    if not sdf:
        raise UserError("the recipe has no sdf stage to export")
    export = ["export", "--checkpoint", str(sdf[-1].run_dir), "--out", str(runs / "export"), "--version", "1"]
    if camera:
        export += ["--camera-checkpoint", str(camera[-1].run_dir)]
    stages.append(Stage("export", "export", tuple(export)))
    return stages


def _read_state(runs: Path) -> dict:
    path = runs / STATE
    return json.loads(path.read_text()) if path.exists() else {"finished": {}}


def _write_state(runs: Path, state: dict) -> None:
    tmp = runs / (STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, runs / STATE)


def _has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / "checkpoints" / "checkpoint").exists()


def run_stage(stage: Stage, runs: Path, python: str = sys.executable) -> None:
    """Run one stage as a subprocess (``--resume`` for a training stage with a checkpoint); a failure
    raises :class:`UserError` naming the stage."""
    args = list(stage.args)
    if stage.kind in ("sdf", "camera") and _has_checkpoint(stage.run_dir):
        args.append("--resume")
    if stage.kind == "export":
        shutil.rmtree(runs / "export", ignore_errors=True)
    print(f"[{stage.name}] d2im {' '.join(args)}", flush=True)
    process = subprocess.Popen([python, "-m", "d2im_tf.cli", *args])
    (runs / RUNNING).write_text(json.dumps({"stage": stage.name, "pid": process.pid}) + "\n")
    code = process.wait()
    (runs / RUNNING).unlink(missing_ok=True)
    if code != 0:
        raise UserError(
            f"recipe stage {stage.name} failed (exit code {code}); run the same command again to continue from it"
        )


def install_export(runs: Path, out) -> Path:
    """Move the staged export ``RUNS/export/1`` to ``out/1``, replacing an earlier one."""
    out = Path(out)
    staged, target = runs / "export" / "1", out / "1"
    out.mkdir(parents=True, exist_ok=True)
    old = out / f".old.{os.getpid()}"
    if target.exists():
        target.rename(old)
    shutil.move(str(staged), str(target))
    shutil.rmtree(old, ignore_errors=True)
    return target


def run_recipe(recipe_path, runs, python: str = sys.executable) -> Path:
    """Run every unfinished stage of the recipe at ``recipe_path``; returns the installed export."""
    recipe = load_recipe(recipe_path)
    runs = Path(runs)
    runs.mkdir(parents=True, exist_ok=True)
    stages = plan(recipe, runs)
    state = _read_state(runs)
    ran = False  # once a stage runs, the later ones run too (their inputs may have changed)
    for stage in stages:
        signature = list(stage.args)
        if not ran and state["finished"].get(stage.name, {}).get("args") == signature:
            print(f"[{stage.name}] done", flush=True)
            continue
        ran = True
        start = time.time()
        run_stage(stage, runs, python)
        if stage.kind == "export":
            print(f"installed {install_export(runs, recipe['export']['out'])}", flush=True)
        state["finished"][stage.name] = {"args": signature, "wall_seconds": round(time.time() - start, 1)}
        _write_state(runs, state)
    return Path(recipe["export"]["out"]) / "1"
