"""``d2im convert``: an exported SavedModel split into the three models a client runs, for TFLite or TF.js.

A client reconstructs an image in three steps, so the SavedModel's signatures become three models:

``encode``  image [1, S, S, 3] → global_code [1, G], and what ``decode`` reads of the encoder's output:
            ``maps`` [1, S, S, 2] (front and back displacement maps; absent for the variants without a
            detail decoder) and, for the ``gl`` variant, the feature maps ``f0``…``f4``.
``decode``  those + points [1, C, 3] + projection [1, 3, 4] → sdf, base [1, C]: a fixed chunk of C
            points (``chunk_points``); the client pads the last chunk of a query and drops the padding.
``camera``  image [1, S, S, 3] → projection [1, 3, 4], rotation [1, 3, 3], translation [1, 3]
            (only for a SavedModel with a camera network).

Each is the SavedModel signature of the same name (:mod:`d2im_tf.deploy.export`) frozen (weights become
constants) with its inputs fixed to batch 1 and C points, inputs the signature ignores dropped (the
encoder's feature maps for all variants but ``gl``, the maps for ``baseline`` and ``wsamp``) and
outputs nobody reads dropped with them. The batch of 1 is what a phone or a browser reconstructs;
fixed shapes let TFLite plan its memory once.

Ops the converters cannot lower are rewritten in the frozen graph (:data:`LOWERINGS`) with plain
arithmetic that both TFLite's builtins and TF.js's kernels have:

* ``MatrixSolve`` (the camera centre ``−M⁻¹·p₄`` of the test-time front/back split, and the
  reference mode's step ``M⁻¹·(0, 0, 1)``): a 3×3 solve by the adjugate, ``M⁻¹ = adj(M) / det(M)``.
  M = K·R is a camera's, far from singular.
* ``Cross`` (the camera network's 6D → rotation): the three components written out.
* ``Einsum``, for TF.js only (:data:`TFJS_LOWERINGS`; its WebAssembly backend has no Einsum kernel,
  TFLite lowers it itself): the B-spline sampler's prefilter ``hk,bkwc,vw->bhvc`` and tap weighting
  ``bnijc,bni,bnj->bnc`` as a broadcast product and a sum.

Nothing stays in the client but what always was there: image preparation, chunking the points, and
mesh extraction. The B-spline sampler's ``GatherV2``/``MirrorPad`` (and, for TFLite, ``Einsum``) and
the front/back ``Less``/``SelectV2`` lower to builtins as they are, so the models use TFLite builtins only (no
``SELECT_TF_OPS``, no Flex delegate).

Output folder ``OUT`` (written into a temporary folder beside it, then renamed):

``d2im_runtime.json``  :data:`DESCRIPTION_FILE`: the SavedModel's ``d2im.json`` (image size, SDF
                       scale, variant, frame, image reading, Lipschitz bound), ``chunk_points``, and per
                       model its files and its inputs' and outputs' names, shapes and dtypes.
TFLite                 ``encode.tflite``, ``decode.tflite``, ``camera.tflite`` (float32) and
                       ``*.float16.tflite`` (:data:`SMALL`: weights stored as float16, half the size,
                       widened to float32 when the interpreter loads them; arithmetic stays float32).
                       Not dynamic-range int8: its on-the-fly int8 activations move the bundled
                       model's SDF by up to 1.5 units (base field 0.08), enough to flip the front/back
                       split, and its mesh IoU against float32 was 0.74 (float16: README).
TF.js                  ``encode/``, ``decode/``, ``camera/``: graph models (``model.json`` + weight
                       shards), converted by :mod:`d2im_tf.deploy.tfjs`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from d2im_tf.deploy import tfjs
from d2im_tf.errors import UserError, writing
from d2im_tf.inference.reconstruct import resolve_model_dir
from d2im_tf.io import check_output_dir, current_umask, new_folders

TARGETS = ("tflite", "tfjs")
PARTS = ("encode", "decode", "camera")
DESCRIPTION_FILE = "d2im_runtime.json"
DEFAULT_CHUNK_POINTS = 8192
MAX_CHUNK_POINTS = 1 << 20
SMALL = "float16"  # the smaller TFLite variant: float16 weights (module docstring, README)
FORMAT_VERSION = 1
# What encode may hand to decode (the SavedModel's encode outputs that decode also takes).
ENCODING_NAMES = ("global_code", "maps", "f0", "f1", "f2", "f3", "f4")


# ------------------------------------------------------------------------------------------
# Lowering: ops without a TFLite builtin / TF.js kernel, rewritten in plain arithmetic.


def _solve_3x3(matrix, rhs):
    """``matrix⁻¹ · rhs`` for ``matrix`` [..., 3, 3], ``rhs`` [..., 3, K] by the adjugate (Cramer's rule)."""
    m = [[matrix[..., i, j] for j in range(3)] for i in range(3)]  # 9 × [...]

    def cofactor(i, j):
        r0, r1 = [r for r in range(3) if r != i]
        c0, c1 = [c for c in range(3) if c != j]
        minor = m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0]
        return minor if (i + j) % 2 == 0 else -minor

    cofactors = [[cofactor(i, j) for j in range(3)] for i in range(3)]
    determinant = m[0][0] * cofactors[0][0] + m[0][1] * cofactors[0][1] + m[0][2] * cofactors[0][2]  # [...]
    adjugate = tf.stack([tf.stack([cofactors[j][i] for j in range(3)], axis=-1) for i in range(3)], axis=-2)
    return tf.matmul(adjugate, rhs) / determinant[..., None, None]  # [..., 3, K]


def _cross(a, b):
    """``a × b`` for [..., 3] vectors."""
    a0, a1, a2 = (a[..., k] for k in range(3))
    b0, b1, b2 = (b[..., k] for k in range(3))
    return tf.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)


def _matrix_solve(node, inputs):
    if node.attr["adjoint"].b:
        raise ValueError(f"{node.name}: MatrixSolve with adjoint=True is not lowered")
    return _solve_3x3(*inputs)


def _einsum_by_broadcast(equation: str, *operands):
    """``tf.einsum(equation, *operands)`` as transposes, reshapes, one broadcast product and a sum
    (known ranks; no ``...`` and no label repeated within an operand)."""
    specs, arrow, output = equation.replace(" ", "").partition("->")
    specs = specs.split(",")
    if "." in equation or not arrow or len(specs) != len(operands) or any(len(set(s)) != len(s) for s in specs):
        raise ValueError(f"einsum {equation!r} is not lowered")
    labels = []
    for spec in specs:
        labels.extend(label for label in spec if label not in labels)
    product = None
    for spec, operand in zip(specs, operands):
        order = sorted(range(len(spec)), key=lambda axis: labels.index(spec[axis]))
        if order != list(range(len(spec))):
            operand = tf.transpose(operand, order)
        dynamic = tf.shape(operand)  # for unknown sizes (folded to constants once the inputs are fixed)
        sizes = {
            spec[axis]: operand.shape[position] if operand.shape[position] is not None else dynamic[position]
            for position, axis in enumerate(order)
        }
        operand = tf.reshape(operand, tf.stack([sizes.get(label, 1) for label in labels]))
        product = operand if product is None else product * operand
    summed = [axis for axis, label in enumerate(labels) if label not in output]
    if summed:
        product = tf.reduce_sum(product, axis=summed)
    kept = [label for label in labels if label in output]
    order = [kept.index(label) for label in output]
    return product if order == list(range(len(order))) else tf.transpose(product, order)


def _einsum(node, inputs):
    return _einsum_by_broadcast(node.attr["equation"].s.decode(), *inputs)


LOWERINGS = {"MatrixSolve": _matrix_solve, "Cross": lambda node, inputs: _cross(*inputs)}
# Lowered for TF.js only: its wasm backend has no Einsum kernel (TFLite lowers Einsum to its builtins).
TFJS_LOWERINGS = {"Einsum": _einsum}


def _lower(graph_def, node_shapes: dict, lowerings=None) -> tf.compat.v1.GraphDef:
    """``graph_def`` with every node of ``lowerings`` (default :data:`LOWERINGS`) replaced by its
    rewrite, spliced in by name.

    ``node_shapes``: node name → static shapes of its inputs (those of the rewrite's placeholders)."""
    lowerings = LOWERINGS if lowerings is None else lowerings
    lowered = tf.compat.v1.GraphDef()
    lowered.CopyFrom(graph_def)
    replaced = {}
    nodes = []
    for node in graph_def.node:
        if node.op not in lowerings:
            nodes.append(node)
            continue
        if node.op == "MatrixSolve" and tuple(node_shapes[node.name][0][-2:]) != (3, 3):
            raise ValueError(f"{node.name}: only 3×3 MatrixSolve is lowered, got {node_shapes[node.name][0]}")
        dtype = tf.as_dtype(node.attr["T"].type)
        scratch = tf.Graph()
        with scratch.as_default():
            shapes = node_shapes[node.name]
            placeholders = [
                tf.compat.v1.placeholder(dtype, shape=shapes[k] if k < len(shapes) else None, name=f"input_{k}")
                for k in range(len(node.input))
            ]
            tf.identity(lowerings[node.op](node, placeholders), name="output")
        prefix = f"{node.name}/lowered"
        sources = {f"input_{k}": name for k, name in enumerate(node.input)}
        for piece in scratch.as_graph_def().node:
            if piece.op == "Placeholder":
                continue
            copy = tf.compat.v1.NodeDef()
            copy.CopyFrom(piece)
            copy.name = f"{prefix}/{piece.name}"
            del copy.input[:]
            for name in piece.input:
                control, bare = name.startswith("^"), name.lstrip("^")
                op_name, _, port = bare.partition(":")
                if op_name in sources:  # input_k → the replaced node's k-th input
                    copy.input.append(sources[op_name])
                else:
                    copy.input.append(("^" if control else "") + f"{prefix}/{bare}")
            nodes.append(copy)
        replaced[node.name] = f"{prefix}/output"
    del lowered.node[:]
    for node in nodes:
        for k, name in enumerate(node.input):
            control, bare = name.startswith("^"), name.lstrip("^")
            op_name, _, port = bare.partition(":")
            if op_name in replaced:
                if port not in ("", "0"):
                    raise ValueError(f"{node.name} reads output {port} of {op_name}, which has one output")
                node.input[k] = ("^" if control else "") + replaced[op_name]
        lowered.node.append(node)
    return lowered


# ------------------------------------------------------------------------------------------
# The three models


@dataclass
class Part:
    """One model a client runs: a concrete function with fixed shapes, its inputs and outputs."""

    name: str
    module: tf.Module  # ``module.run``: a tf.function of the inputs (by name) → dict of the outputs
    inputs: dict  # name → shape (all float32)
    outputs: dict  # name → shape (all float32)

    @property
    def function(self):
        """The concrete function (fixed shapes)."""
        return self.module.run.get_concrete_function()

    def spec(self) -> dict:
        return {
            "inputs": {name: {"shape": list(shape), "dtype": "float32"} for name, shape in self.inputs.items()},
            "outputs": {name: {"shape": list(shape), "dtype": "float32"} for name, shape in self.outputs.items()},
        }


class FrozenSignature:
    """A SavedModel signature with its variables folded into constants, as a GraphDef."""

    def __init__(self, signature):
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        frozen = convert_variables_to_constants_v2(signature)
        self.graph_def = frozen.graph.as_graph_def()
        # Keyword inputs: the placeholders are named after them. Outputs: flattened in key order.
        self.input_specs = dict(signature.structured_input_signature[1])  # name → TensorSpec
        self.placeholders = {}
        for tensor in frozen.inputs:
            name = tensor.name.split(":")[0]
            if name in self.input_specs:
                self.placeholders[name] = tensor.name
        output_names = sorted(signature.structured_outputs)
        self.outputs = {name: tensor.name for name, tensor in zip(output_names, frozen.outputs)}
        self.node_shapes = {
            op.name: [tensor.shape.as_list() if tensor.shape.rank is not None else None for tensor in op.inputs]
            for op in frozen.graph.get_operations()
        }

    def _reachable(self, outputs) -> set[str]:
        """Names of the nodes the ``outputs`` (names) depend on."""
        by_name = {node.name: node for node in self.graph_def.node}
        pending = [self.outputs[name].split(":")[0] for name in outputs]
        seen = set()
        while pending:
            name = pending.pop()
            if name not in seen:
                seen.add(name)
                pending.extend(source.lstrip("^").split(":")[0] for source in by_name[name].input)
        return seen

    def used_inputs(self, outputs) -> list[str]:
        """The inputs the ``outputs`` (names) depend on, in the signature's order."""
        reachable = self._reachable(outputs)
        return [name for name in self.placeholders if name in reachable]

    def function(self, inputs: dict, outputs: list[str], lowerings=None):
        """The graph lowered by ``lowerings`` (default :data:`LOWERINGS`) as a module whose ``run``
        takes ``inputs`` (name → fixed shape) and returns ``outputs`` (a dict)."""
        reachable = self._reachable(outputs)
        graph_def = tf.compat.v1.GraphDef()
        graph_def.CopyFrom(self.graph_def)
        del graph_def.node[:]
        graph_def.node.extend(node for node in self.graph_def.node if node.name in reachable)
        graph_def = _lower(graph_def, self.node_shapes, lowerings)
        names = list(inputs)

        def run(*tensors):
            results = tf.graph_util.import_graph_def(
                graph_def,
                input_map={self.placeholders[name]: tensor for name, tensor in zip(names, tensors)},
                return_elements=[self.outputs[name] for name in outputs],
                name="model",
            )
            return {name: tf.identity(result, name=name) for name, result in zip(outputs, results)}

        signature = [tf.TensorSpec(shape, tf.float32, name=name) for name, shape in inputs.items()]
        module = tf.Module()  # owns the function (what the TFLite converter and tf.saved_model.save take)
        module.run = tf.function(run, input_signature=signature, autograph=False)
        module.run.get_concrete_function()  # traced now: a graph that does not import fails here
        return module


def _fixed(shape, points: int | None = None) -> list[int]:
    """A signature shape with the batch set to 1 and the points axis (if any) to ``points``."""
    shape = [1, *shape[1:]]
    return [points if size is None else size for size in shape]


def prepare_parts(loaded, chunk_points: int = DEFAULT_CHUNK_POINTS, target: str = "tflite") -> list[Part]:
    """The :class:`Part` list of a loaded SavedModel: encode, decode, and camera if it has one,
    lowered for ``target`` (:data:`LOWERINGS`, and for "tfjs" :data:`TFJS_LOWERINGS` as well)."""
    lowerings = {**LOWERINGS, **(TFJS_LOWERINGS if target == "tfjs" else {})}
    decode = FrozenSignature(loaded.signatures["decode"])
    decode_inputs = decode.used_inputs(["sdf", "base"])
    encoding = [name for name in ENCODING_NAMES if name in decode_inputs]
    inputs = {name: _fixed(decode.input_specs[name].shape.as_list(), chunk_points) for name in decode_inputs}
    parts = [
        Part(
            "decode",
            decode.function(inputs, ["sdf", "base"], lowerings),
            inputs,
            {"sdf": [1, chunk_points], "base": [1, chunk_points]},
        )
    ]

    encode = FrozenSignature(loaded.signatures["encode"])
    image_shape = _fixed(encode.input_specs["image"].shape.as_list())
    encode_outputs = {name: inputs[name] for name in encoding}
    parts.insert(
        0,
        Part(
            "encode",
            encode.function({"image": image_shape}, list(encode_outputs), lowerings),
            {"image": image_shape},
            encode_outputs,
        ),
    )
    if "camera" in loaded.signatures:
        camera = FrozenSignature(loaded.signatures["camera"])
        outputs = {"projection": [1, 3, 4], "rotation": [1, 3, 3], "translation": [1, 3]}
        parts.append(
            Part(
                "camera",
                camera.function({"image": image_shape}, list(outputs), lowerings),
                {"image": image_shape},
                outputs,
            )
        )
    return parts


# ------------------------------------------------------------------------------------------
# TFLite


def tflite_bytes(part: Part, precision: str = "float32") -> bytes:
    """``part`` as a TFLite flatbuffer, TFLite builtins only; ``precision`` "float32" or :data:`SMALL`."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([part.function], part.module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == SMALL:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]  # weights only: float16, computed in float32
    elif precision != "float32":
        raise ValueError(f"unknown precision {precision!r}")
    return converter.convert()


def tflite_file(part: str, precision: str) -> str:
    return f"{part}.tflite" if precision == "float32" else f"{part}.{precision}.tflite"


def write_tflite(parts: list[Part], folder: Path, precisions=("float32", SMALL)) -> dict:
    """The ``.tflite`` files of every part at each precision → ``{part: {precision: file}}``."""
    files = {}
    for part in parts:
        files[part.name] = {}
        for precision in precisions:
            name = tflite_file(part.name, precision)
            (folder / name).write_bytes(tflite_bytes(part, precision))
            files[part.name][precision] = name
    return files


# ------------------------------------------------------------------------------------------
# The command's work


def read_model_description(model_dir: Path) -> dict:
    """The SavedModel's ``assets.extra/d2im.json`` with the defaults of older exports filled in."""
    path = model_dir / "assets.extra" / "d2im.json"
    try:
        info = json.loads(path.read_text())
        sdf_scale = float(info["sdf_scale"])
        int(info["image_size"])
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise UserError(f"{path}: unreadable model description ({error.__class__.__name__}: {error})") from None
    info.setdefault("frame", "normalised")
    info.setdefault("image_reading", "white")
    info.setdefault("compat", "none")
    info.setdefault("lipschitz", 2.0 * sdf_scale)
    return info


def load_saved_model(path):
    """``(model_dir, loaded SavedModel, description)``; :class:`UserError` for anything else."""
    model_dir = resolve_model_dir(path)
    info = read_model_description(model_dir)
    try:
        loaded = tf.saved_model.load(str(model_dir))
    except Exception as error:  # protobuf, OS and TF errors alike
        reason = " ".join(str(error).split())[:200] or error.__class__.__name__
        raise UserError(f"{model_dir}: cannot load the SavedModel ({reason})") from None
    missing = [name for name in ("encode", "decode") if name not in loaded.signatures]
    if missing:
        raise UserError(f"{model_dir}: no '{missing[0]}' signature (exported by an older version?); export it again")
    return model_dir, loaded, info


def check_arguments(target: str, out, chunk_points: int) -> Path:
    """:class:`UserError` for an unknown target, an unusable or existing OUT, a bad chunk size."""
    if target not in TARGETS:
        raise UserError(f"--to {target}: unsupported target; choose one of {', '.join(TARGETS)}")
    if not 1 <= chunk_points <= MAX_CHUNK_POINTS:
        raise UserError(f"--chunk-points must be between 1 and {MAX_CHUNK_POINTS}, got {chunk_points}")
    out = Path(out)
    if out.exists():
        raise UserError(f"{out}: already exists; choose a new output folder or remove it")
    check_output_dir(out.parent, "output folder")
    return out


def convert(
    saved_model, target: str, out, chunk_points: int = DEFAULT_CHUNK_POINTS, precisions=("float32", SMALL)
) -> Path:
    """Convert ``saved_model`` (a SavedModel folder or TF Serving's ``NAME/`` with versions) to
    ``target`` in the new folder ``out``; returns ``out``. Nothing is left at ``out`` on failure.
    ``precisions``: the TFLite files to write (the command writes both)."""
    out = check_arguments(target, out, chunk_points)
    if target == "tfjs":
        tfjs.check_converter_available()  # before the slow load; installs it on first use
    model_dir, loaded, info = load_saved_model(saved_model)
    parts = prepare_parts(loaded, chunk_points, target)
    with new_folders(out.parent), writing(out):  # a full disk: one line, nothing left
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_converted(out, target, parts, model_dir, info, chunk_points, precisions)
    return out


def _write_converted(out: Path, target: str, parts, model_dir: Path, info, chunk_points: int, precisions) -> None:
    """The converted files in a staging folder beside ``out``, renamed to ``out`` once complete."""
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if target == "tflite":
            files = write_tflite(parts, staging, precisions)
        else:
            files = tfjs.write_tfjs(parts, staging)
        description = {
            "format": target,
            "format_version": FORMAT_VERSION,
            "source": str(model_dir.resolve()),
            "model": info,
            "chunk_points": chunk_points,
            "models": {part.name: {"files": files[part.name], **part.spec()} for part in parts},
        }
        (staging / DESCRIPTION_FILE).write_text(json.dumps(description, indent=2) + "\n")
        os.chmod(staging, 0o777 & ~current_umask())
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
