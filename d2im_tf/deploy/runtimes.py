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
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

from d2im_tf.deploy.convert import DESCRIPTION_FILE, FORMAT_VERSION, SMALL
from d2im_tf.deploy.tfjs import BACKENDS, CLIENT_SCRIPT, node_modules_dir
from d2im_tf.errors import UserError
from d2im_tf.inference.reconstruct import Reconstructor

RUNTIMES = ("savedmodel", "tflite", "tfjs")
PRECISIONS = ("float32", SMALL)


def read_description(folder) -> dict:
    """``folder/d2im_runtime.json`` (:class:`UserError` if missing or unreadable)."""
    folder = Path(folder)
    path = folder / DESCRIPTION_FILE
    if not folder.is_dir():
        problem = "converted model folder not found" if not folder.exists() else "not a folder"
        raise UserError(f"{folder}: {problem}")
    if not path.exists():
        raise UserError(f"{folder}: no {DESCRIPTION_FILE}; is it a folder written by 'd2im convert'?")
    try:
        description = json.loads(path.read_text())
        if description["format_version"] != FORMAT_VERSION:
            raise ValueError(f"format_version {description['format_version']}, expected {FORMAT_VERSION}")
        description["model"]["image_size"], description["chunk_points"], description["models"]["decode"]
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise UserError(f"{path}: unreadable ({error.__class__.__name__}: {error})") from None
    return description


class RuntimeModel:
    """The converted models of ``folder``; subclasses implement :meth:`run` for one runtime."""

    format = ""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.description = read_description(self.folder)
        if self.description["format"] != self.format:
            raise UserError(f"{self.folder}: holds {self.description['format']} models, not {self.format}; "
                            f"convert with --to {self.format}")
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
            ["node", str(CLIENT_SCRIPT), str(self.folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, "D2IM_TFJS_MODULES": str(modules / "node_modules"), "D2IM_TFJS_BACKEND": backend})
        header, _ = self._receive()
        self.backend = header["backend"]  # "cpu" if wasm was asked for and failed to start
        if header.get("fallback"):
            print(f"warning: the TF.js wasm backend did not start ({header['fallback']}); "
                  "using the much slower cpu backend", file=sys.stderr)
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
        header = json.dumps({"model": part, "tensors": [{"name": name, "shape": list(value.shape)}
                                                        for name, value in arrays.items()]}).encode()
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
