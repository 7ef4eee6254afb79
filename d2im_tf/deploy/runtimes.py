"""Reference clients of the converted models (:mod:`d2im_tf.deploy.convert`): LiteRT and TF.js.

A :class:`RuntimeModel` reads ``d2im_runtime.json`` and runs the three models of a converted folder:
``encode`` once per image, ``decode`` on a query of any number of points in chunks of the fixed
``chunk_points`` (the last one padded by repeating its last point, the padding dropped), ``camera``
once per image. :class:`TFLiteModel` runs ``.tflite`` files with LiteRT's interpreter
(``ai_edge_litert``; ``tf.lite.Interpreter`` is deprecated); :class:`TFJSModel` runs the graph models
in Node with ``@tensorflow/tfjs`` on its WebAssembly backend: ``tfjs_client.mjs``, set up by
:mod:`d2im_tf.deploy.tfjs`, answers requests on stdin/stdout (a little-endian uint32 length, a JSON
header, then the float32 tensors of the header's list back to back).

:class:`RuntimeReconstructor` is :class:`d2im_tf.inference.reconstruct.Reconstructor` with the SDF, encoder and
camera evaluated by such a model: image preparation, coarse-to-fine extraction and marching cubes are
the same code, so the meshes differ only by what the runtime computes differently.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

from d2im_tf.deploy.convert import DESCRIPTION_FILE, FORMAT_VERSION, MAX_CHUNK_POINTS, SMALL
from d2im_tf.deploy.tfjs import BACKENDS, CLIENT_SCRIPT, node_modules_dir
from d2im_tf.errors import UserError
from d2im_tf.inference.reconstruct import Reconstructor

RUNTIMES = ("savedmodel", "tflite", "tfjs")
PRECISIONS = ("float32", SMALL)


def read_description(folder) -> dict:
    """``folder/d2im_runtime.json``, checked against its schema (:func:`check_description`);
    :class:`UserError` naming the file and the key if missing, unreadable or out of schema."""
    folder = Path(folder)
    path = folder / DESCRIPTION_FILE
    if not folder.is_dir():
        problem = "converted model folder not found" if not folder.exists() else "not a folder"
        raise UserError(f"{folder}: {problem}")
    if not path.exists():
        raise UserError(f"{folder}: no {DESCRIPTION_FILE}; is it a folder written by 'd2im convert'?")
    try:
        description = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: unreadable ({error.__class__.__name__}: {error})") from None
    problem = check_description(description, folder)
    if problem:
        raise UserError(f"{path}: {problem}")
    return description


# The schema of d2im_runtime.json: key → (type, check of the value or None, what the check asks).
_MODEL_INFO = {
    "image_size": (int, lambda v: 16 <= v <= 4096 and v % 16 == 0, "a multiple of 16 from 16 to 4096"),
    "sdf_scale": ((int, float), lambda v: 0 < v < 1e6 and math.isfinite(v), "a positive finite number"),
    "frame": (str, lambda v: v in ("normalised", "world"), "'normalised' or 'world'"),
    "image_reading": (str, lambda v: v in ("white", "reference"), "'white' or 'reference'"),
}
PARTS = ("encode", "decode", "camera")


def _typed(value, expected) -> bool:
    return isinstance(value, expected) and not isinstance(value, bool)


def _file_problem(folder: Path, key: str, name) -> str | None:
    """What is wrong with ``name`` as a file of the converted folder: a relative path that stays inside."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or "\\" in name:
        return f"{key}: {name!r} is not a relative file name"
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        return f"{key}: {name!r} points outside the folder"
    if not path.is_file():
        return f"{key}: {name} is missing"
    return None


def check_description(description, folder) -> str | None:
    """The first problem of a ``d2im_runtime.json`` (types, ranges, file names inside ``folder``, and for
    TF.js each ``model.json``'s shards), or None."""
    folder = Path(folder)
    if not isinstance(description, dict):
        return "expected a JSON object"
    if description.get("format") not in RUNTIMES[1:]:
        return f"format: {description.get('format')!r} is not one of {', '.join(RUNTIMES[1:])}"
    if description.get("format_version") != FORMAT_VERSION:
        return f"format_version: {description.get('format_version')!r}, expected {FORMAT_VERSION}"
    chunk = description.get("chunk_points")
    if not _typed(chunk, int) or not 1 <= chunk <= MAX_CHUNK_POINTS:
        return f"chunk_points: {chunk!r} is not a whole number from 1 to {MAX_CHUNK_POINTS}"
    info = description.get("model")
    if not isinstance(info, dict):
        return "model: expected an object"
    for key, (kind, check, wanted) in _MODEL_INFO.items():
        if not _typed(info.get(key), kind) or not check(info[key]):
            return f"model.{key}: {info.get(key)!r} is not {wanted}"
    models = description.get("models")
    if not isinstance(models, dict) or not {"encode", "decode"} <= set(models) or not set(models) <= set(PARTS):
        return "models: expected an object with encode, decode and optionally camera"
    precisions = PRECISIONS if description["format"] == "tflite" else ("float32",)
    for part, spec in models.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("files"), dict) or not spec["files"]:
            return f"models.{part}.files: expected an object of file names"
        for precision, name in spec["files"].items():
            if precision not in precisions:
                return f"models.{part}.files: unknown precision {precision!r}"
            problem = _file_problem(folder, f"models.{part}.files.{precision}", name)
            if problem:
                return problem
        for side in ("inputs", "outputs"):
            entries = spec.get(side)
            if not isinstance(entries, dict) or not entries:
                return f"models.{part}.{side}: expected an object"
            for name, entry in entries.items():
                shape = entry.get("shape") if isinstance(entry, dict) else None
                if not isinstance(shape, list) or not all(_typed(n, int) and 0 < n <= 1 << 24 for n in shape):
                    return f"models.{part}.{side}.{name}.shape: {shape!r} is not a list of positive sizes"
        if description["format"] == "tfjs":
            problem = _graph_model_problem(folder / spec["files"]["float32"], folder)
            if problem:
                return problem
    return None


def _graph_model_problem(model_json: Path, folder: Path) -> str | None:
    """What is wrong with a TF.js ``model.json``: unreadable, shards outside ``folder`` or missing, or
    shards whose bytes differ from what its weight list needs (a truncated shard)."""
    try:
        graph = json.loads(model_json.read_text())
        groups = graph["weightsManifest"]
        names = [name for group in groups for name in group["paths"]]
        itemsize = {"float32": 4, "int32": 4, "bool": 1}
        needed = sum(
            int(np.prod(weight["shape"], dtype=np.int64)) * itemsize[weight["dtype"]]
            for group in groups
            for weight in group["weights"]
        )
    except (OSError, ValueError, TypeError, KeyError) as error:
        return f"{model_json}: not a readable TF.js model ({error.__class__.__name__}: {error})"
    base = model_json.parent.relative_to(folder)
    for name in names:
        problem = _file_problem(
            folder, f"{model_json} weightsManifest", str(base / name) if isinstance(name, str) else name
        )
        if problem:
            return problem
    size = sum((model_json.parent / name).stat().st_size for name in names)
    if size != needed:
        shards = ", ".join(str(model_json.parent / name) for name in names)
        return f"{shards}: the weight shards hold {size} bytes, {model_json.name} needs {needed} (truncated?)"
    return None


class RuntimeModel:
    """The converted models of ``folder``; subclasses implement :meth:`run` for one runtime."""

    format = ""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.description = read_description(self.folder)
        if self.description["format"] != self.format:
            raise UserError(
                f"{self.folder}: holds {self.description['format']} models, not {self.format}; "
                f"convert with --to {self.format}"
            )
        self.info = self.description["model"]
        self.chunk_points = int(self.description["chunk_points"])
        self.models = self.description["models"]
        self.image_size = int(self.info["image_size"])

    def run(self, part: str, inputs: dict) -> dict:
        """One call of model ``part`` on float32 arrays of its fixed input shapes → dict of arrays."""
        raise NotImplementedError

    @property
    def has_camera(self) -> bool:
        return "camera" in self.models

    def encode(self, image: np.ndarray) -> dict:
        """``image`` [1, S, S, 3] → what ``decode`` reads (``global_code``, and ``maps``, ``f0``… if used)."""
        return self.run("encode", {"image": np.asarray(image, np.float32)})

    def camera(self, image: np.ndarray) -> dict:
        """``image`` [1, S, S, 3] → ``projection`` [1, 3, 4], ``rotation`` [1, 3, 3], ``translation`` [1, 3]."""
        return self.run("camera", {"image": np.asarray(image, np.float32)})

    def decode(self, encoding: dict, points: np.ndarray, projection: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fused and base SDF ``[N]`` each at ``points`` [N, 3] seen through ``projection`` [1, 3, 4]."""
        points = np.asarray(points, np.float32).reshape(-1, 3)
        inputs = self.models["decode"]["inputs"]
        fixed = {name: np.asarray(value, np.float32) for name, value in encoding.items() if name in inputs}
        if "projection" in inputs:
            fixed["projection"] = np.asarray(projection, np.float32).reshape(1, 3, 4)
        chunk = self.chunk_points
        sdf, base = np.empty(len(points), np.float32), np.empty(len(points), np.float32)
        for start in range(0, len(points), chunk):
            piece = points[start : start + chunk]
            count = len(piece)
            if count < chunk:
                piece = np.concatenate([piece, np.repeat(piece[-1:], chunk - count, axis=0)])
            out = self.run("decode", {**fixed, "points": piece[None]})
            sdf[start : start + count] = out["sdf"][0, :count]
            base[start : start + count] = out["base"][0, :count]
        return sdf, base

    def close(self) -> None:
        pass


class TFLiteModel(RuntimeModel):
    """The ``.tflite`` files of ``folder`` at ``precision`` ("float32" or :data:`SMALL`), run by LiteRT."""

    format = "tflite"

    def __init__(self, folder, precision: str = "float32", num_threads: int | None = None):
        super().__init__(folder)
        from ai_edge_litert.interpreter import Interpreter

        from d2im_tf.quiet import quiet_litert

        if precision not in PRECISIONS:
            raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.runners = {}
        for part, spec in self.models.items():
            path = self.folder / spec["files"][precision]
            try:
                with quiet_litert():  # the "Created … XNNPACK delegate" INFO line, printed on allocation
                    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
                    interpreter.allocate_tensors()
                self.runners[part] = interpreter.get_signature_runner()
            except (ValueError, RuntimeError) as error:
                reason = " ".join(str(error).split())[:200]
                raise UserError(f"{path}: cannot load the TFLite model ({reason})") from None

    def run(self, part: str, inputs: dict) -> dict:
        return self.runners[part](**inputs)


class TFJSModel(RuntimeModel):
    """The graph models of a folder written by ``d2im convert --to tfjs``, run in Node by
    ``tfjs_client.mjs`` (one process for the three models, kept alive between calls)."""

    format = "tfjs"

    def __init__(self, folder, backend: str = "wasm"):
        super().__init__(folder)
        if backend not in BACKENDS:
            raise UserError(f"TF.js backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if shutil.which("node") is None:
            raise UserError("node not found: --runtime tfjs needs Node.js 20 or later")
        modules = node_modules_dir()
        self.process = subprocess.Popen(
            ["node", str(CLIENT_SCRIPT), str(self.folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "D2IM_TFJS_MODULES": str(modules / "node_modules"), "D2IM_TFJS_BACKEND": backend},
        )
        try:
            header, _ = self._receive()
        except RuntimeError as error:  # the client could not load a model: its message names the file
            self.close()
            raise UserError(f"{self.folder}: {error}") from None
        self.backend = header["backend"]  # "cpu" if wasm was asked for and failed to start
        if header.get("fallback"):
            print(
                f"warning: the TF.js wasm backend did not start ({header['fallback']}); "
                "using the much slower cpu backend",
                file=sys.stderr,
            )
        atexit.register(self.close)

    def _receive(self):
        size = self.process.stdout.read(4)
        if len(size) < 4:
            raise RuntimeError(f"the TF.js client stopped (exit code {self.process.wait()})")
        header = json.loads(self.process.stdout.read(struct.unpack("<I", size)[0]))
        if "error" in header:
            raise RuntimeError(f"the TF.js client failed: {header['error']}")
        arrays = {}
        for item in header.get("tensors", []):
            count = int(np.prod(item["shape"]))
            data = self.process.stdout.read(4 * count)
            arrays[item["name"]] = np.frombuffer(data, np.float32).reshape(item["shape"])
        return header, arrays

    def run(self, part: str, inputs: dict) -> dict:
        arrays = {name: np.ascontiguousarray(value, np.float32) for name, value in inputs.items()}
        header = json.dumps(
            {"model": part, "tensors": [{"name": name, "shape": list(value.shape)} for name, value in arrays.items()]}
        ).encode()
        self.process.stdin.write(struct.pack("<I", len(header)) + header)
        for value in arrays.values():
            self.process.stdin.write(value.tobytes())
        self.process.stdin.flush()
        return self._receive()[1]

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def open_runtime_model(folder, runtime: str, precision: str = "float32") -> RuntimeModel:
    """The :class:`RuntimeModel` of ``runtime`` ("tflite" or "tfjs") for a converted ``folder``."""
    if runtime == "tflite":
        return TFLiteModel(folder, precision)
    if precision != "float32":
        raise UserError(f"--precision {precision}: only the TFLite conversion has a {precision} variant")
    if runtime == "tfjs":
        return TFJSModel(folder)
    raise UserError(f"--runtime {runtime}: unknown runtime; choose one of {', '.join(RUNTIMES)}")


class _Signatures:
    """The SavedModel signatures :class:`d2im_tf.inference.reconstruct.Reconstructor` calls, run by a
    :class:`RuntimeModel`: keyword tensors in, dict of tensors out."""

    def __init__(self, model: RuntimeModel):
        import tensorflow as tf

        self.model, self.tf = model, tf
        self.signatures = {"encode": self.encode, "decode": self.decode}
        if model.has_camera:
            self.signatures["camera"] = self.camera

    def _tensors(self, outputs: dict) -> dict:
        return {name: self.tf.constant(value) for name, value in outputs.items()}

    def encode(self, image):
        encoding = self.model.encode(np.asarray(image))
        if "maps" not in encoding:  # variants without a detail decoder: the SavedModel's zero maps
            size = self.model.image_size
            encoding["maps"] = np.zeros((1, size, size, 2), np.float32)
        return self._tensors(encoding)

    def camera(self, image):
        return self._tensors(self.model.camera(np.asarray(image)))

    def decode(self, points, projection, **encoding):
        encoding = {name: np.asarray(value) for name, value in encoding.items()}
        sdf, base = self.model.decode(encoding, np.asarray(points)[0], np.asarray(projection))
        return self._tensors({"sdf": sdf[None], "base": base[None]})


def runtime_reconstructor(folder, runtime: str, precision: str = "float32", **options):
    """A :class:`d2im_tf.inference.reconstruct.Reconstructor` (same ``options``) whose networks run in ``runtime``
    from the converted ``folder``. The converted models have no one-pass bounds: every evaluated point
    is decoded exactly."""

    class RuntimeReconstructor(Reconstructor):
        def _load(self, model_path) -> None:
            self.runtime_model = open_runtime_model(model_path, runtime, precision)
            self.model_dir = Path(model_path)
            self.info = self.runtime_model.info
            self.image_size = self.runtime_model.image_size
            self.sdf_scale = float(self.info["sdf_scale"])
            self.has_camera = self.runtime_model.has_camera
            self.model = _Signatures(self.runtime_model)
            self.frame = self.info["frame"]
            self.image_reading = self.info["image_reading"]

    return RuntimeReconstructor(folder, **options)
