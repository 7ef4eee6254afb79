"""TF.js: the converter's environment, the conversion, and the Node client (``tfjs_client.mjs``).

**Converter.** The ``tensorflowjs`` pip package cannot be installed beside TF 2.21: it requires
TF Decision Forests (whose wheels pin one TF version, none 2.21), JAX and Flax, and ``packaging~=23.1``.
Its SavedModel → graph-model converter needs none of them, only TensorFlow (the project's own) and
three pure-Python packages. So the first ``d2im convert --to tfjs`` installs exactly
:data:`CONVERTER_PACKAGES` with ``pip install --no-deps --target`` into a cache folder
(:func:`converter_dir`, under :func:`cache_root`), and every conversion runs
``tensorflowjs.converters.tf_saved_model_conversion_v2`` in a subprocess of the project's interpreter
with that folder on its path (this file's ``__main__``). The subprocess enters the converter module
without running ``tensorflowjs/__init__.py`` (which imports the JAX converter) and gives
``tensorflow_decision_forests`` an empty module: the converter imports it only so that TF-DF's
custom ops are registered for decision-forest models, and a D²IM graph has none (an unknown op would
stop the conversion). Once installed, conversion works offline.

**Node client.** ``node/package.json`` and its ``package-lock.json`` (committed) pin
``@tensorflow/tfjs`` and ``@tensorflow/tfjs-backend-wasm`` (not ``tfjs-node``, whose install
downloads a native library). The client runs on the WebAssembly backend, whose ``.wasm`` files ship
inside the npm package (``setWasmPaths`` points at its ``dist/`` folder, so nothing is fetched); if it
cannot start, on the pure-JS cpu backend, ~10× slower, with a warning. :func:`node_modules_dir` runs
``npm ci --ignore-scripts`` once into a cache folder named after
the lockfile's hash; after that the client works offline. ``tfjs_client.mjs`` loads the three graph
models of a converted folder and answers requests on stdin/stdout; its Python side is
:class:`d2im_tf.deploy.runtimes.TFJSModel`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from d2im_tf.errors import UserError

TFJS_VERSION = "4.22.0"
# What the SavedModel → graph-model converter imports, beyond TensorFlow; installed with --no-deps.
CONVERTER_PACKAGES = (f"tensorflowjs=={TFJS_VERSION}", "tensorflow-hub==0.16.1", "tf-keras==2.21.0")
NODE_FOLDER = Path(__file__).resolve().parent / "node"
CLIENT_SCRIPT = Path(__file__).resolve().parent / "tfjs_client.mjs"
SHARD_BYTES = 4 * 1024 * 1024
# The client's TF.js backends: WebAssembly (default; falls back to cpu if it cannot start) or pure JS.
BACKENDS = ("wasm", "cpu")


def cache_root() -> Path:
    """``$D2IM_CACHE``, else ``$XDG_CACHE_HOME/d2im_tf``, else ``~/.cache/d2im_tf``."""
    if os.environ.get("D2IM_CACHE"):
        return Path(os.environ["D2IM_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "d2im_tf"


def converter_dir() -> Path:
    tag = hashlib.sha256(" ".join(CONVERTER_PACKAGES).encode()).hexdigest()[:10]
    return cache_root() / f"tfjs-converter-{TFJS_VERSION}-{tag}"


def _install_once(target: Path, install, what: str) -> Path:
    """Run ``install(staging)`` into a fresh folder beside ``target`` and rename it to ``target``,
    unless ``target`` exists (an interrupted install leaves only a staging folder, removed here)."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        result = install(staging)
        if result.returncode != 0:
            reason = (result.stderr or result.stdout).strip().splitlines()
            raise UserError(
                f"{target}: cannot install {what} ({reason[-1] if reason else 'no output'}); "
                "the first use needs the package registry, later uses work offline"
            )
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def check_converter_available() -> Path:
    """The converter's folder, installed on first use (module docstring)."""

    def install(staging):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--target",
                str(staging),
                *CONVERTER_PACKAGES,
            ],
            capture_output=True,
            text=True,
        )

    return _install_once(converter_dir(), install, "the TF.js converter (" + ", ".join(CONVERTER_PACKAGES) + ")")


def write_tfjs(parts, folder: Path) -> dict:
    """Each part as a graph model in ``folder/<part>/`` → ``{part: {"float32": "<part>/model.json"}}``."""
    import tensorflow as tf

    converter = check_converter_available()
    files = {}
    with tempfile.TemporaryDirectory(prefix="d2im_tfjs_") as scratch:
        arguments = []
        for part in parts:
            saved = Path(scratch) / part.name
            tf.saved_model.save(part.module, str(saved), signatures={"serving_default": part.function})
            arguments += [str(saved), str(folder / part.name)]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(converter), str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
            ),
        }
        # One subprocess for all parts: importing TensorFlow there is most of a conversion's time.
        result = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), *arguments], capture_output=True, text=True, env=env
        )
        if result.returncode != 0:
            raise RuntimeError(f"TF.js conversion failed:\n{result.stderr[-4000:]}")
        for part in parts:
            _name_outputs(folder / part.name / "model.json", sorted(part.outputs))
            files[part.name] = {"float32": f"{part.name}/model.json"}
    return files


def _name_outputs(model_json: Path, names: list[str]) -> None:
    """Key the graph model's signature outputs by ``names``. The converter keys them by tensor name
    (``Identity_k:0``) when the frozen graph renamed them; the function returns its dict flattened in
    key order, so ``Identity_k`` is the k-th name in sorted order (the parity tests check the result)."""
    model = json.loads(model_json.read_text())
    outputs = model["signature"]["outputs"]
    if set(outputs) == set(names):
        return
    by_index = {}
    for key, entry in outputs.items():
        node = entry["name"].split(":")[0]
        if node == "Identity":
            index = 0
        else:
            index = int(node.removeprefix("Identity_")) if node.startswith("Identity_") else None
        if index is None or index >= len(names):
            raise RuntimeError(f"{model_json}: unexpected output {key!r} ({entry['name']})")
        by_index[index] = entry
    model["signature"]["outputs"] = {names[index]: entry for index, entry in sorted(by_index.items())}
    model_json.write_text(json.dumps(model))


# ------------------------------------------------------------------------------------------
# Node


def node_modules_dir() -> Path:
    """The folder holding ``node_modules/`` of ``node/package-lock.json``, installed on first use."""
    lock = (NODE_FOLDER / "package-lock.json").read_bytes()
    target = cache_root() / f"tfjs-node-client-{hashlib.sha256(lock).hexdigest()[:12]}"

    def install(staging):
        if shutil.which("npm") is None:
            raise UserError("npm not found: the TF.js client needs Node.js (20 or later) and npm")
        for name in ("package.json", "package-lock.json"):
            shutil.copy(NODE_FOLDER / name, staging / name)
        return subprocess.run(
            ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=staging,
            capture_output=True,
            text=True,
        )

    return _install_once(target, install, "the TF.js client's npm packages (npm ci)")


# ------------------------------------------------------------------------------------------
# The converter's subprocess: python tfjs.py SAVED_MODEL OUT [SAVED_MODEL OUT ...] (module docstring)


def _run_converter(saved_model: str, out: str) -> None:
    import importlib.machinery
    import types

    for name in ("tensorflowjs", "tensorflowjs.converters"):  # packages entered without their __init__
        if name in sys.modules:  # an earlier part of the same run
            continue
        spec = importlib.machinery.PathFinder.find_spec(
            name.split(".")[-1], None if "." not in name else sys.modules["tensorflowjs"].__path__
        )
        module = types.ModuleType(name)
        module.__path__ = list(spec.submodule_search_locations)
        sys.modules[name] = module
    sys.modules.setdefault("tensorflow_decision_forests", types.ModuleType("tensorflow_decision_forests"))
    from tensorflowjs.converters import tf_saved_model_conversion_v2 as conversion

    conversion.convert_tf_saved_model(
        saved_model,
        out,
        signature_def="serving_default",
        saved_model_tags="serve",
        weight_shard_size_bytes=SHARD_BYTES,
        strip_debug_ops=True,
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for _saved, _out in zip(sys.argv[1::2], sys.argv[2::2]):
        _run_converter(_saved, _out)
