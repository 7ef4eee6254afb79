"""The ``convert`` benchmark: the SavedModel (default: the bundled one) converted by ``d2im convert`` to TFLite and
TF.js in the same run; file sizes, and per-image seconds (encode; SDF evaluation of a 128³ grid
coarse-to-fine, ``--resolution``; marching cubes) of one reconstruction of the example image through
the SavedModel, LiteRT float32, LiteRT float16 and TF.js in Node (wasm backend), with the same
extraction code (:func:`d2im_tf.deploy.runtimes.runtime_reconstructor`; decoding exactly at every
point, as the converted models have no one-pass bounds), as ratios against the SavedModel, and each
mesh's IoU against the SavedModel's (64³ voxels). Each runtime first reconstructs once at 16³ (warm-up:
first calls, Node start). Wall-clock seconds: on a shared machine
only the ratios within one run mean much."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from benchmarks import REPOSITORY

HELP = "SavedModel vs TFLite float32/float16 vs TF.js: sizes, per-image seconds"


def configure(parser) -> None:
    parser.add_argument("--model", default=None, help="SavedModel folder (default: the bundled model)")
    parser.add_argument("--resolution", type=int, default=128)


def _folder_bytes(folder: Path, pattern: str = "**/*") -> int:
    return sum(path.stat().st_size for path in folder.glob(pattern) if path.is_file())


def run(args) -> dict:
    import numpy as np
    from PIL import Image

    import d2im_tf.inference.reconstruct as reconstruct_module
    from d2im_tf.commands.reconstruct import BUNDLED_MODEL
    from d2im_tf.deploy import convert as conversion
    from d2im_tf.deploy.runtimes import runtime_reconstructor
    from d2im_tf.evaluation import metrics
    from d2im_tf.inference.reconstruct import Reconstructor, resolve_model_dir

    pixels = np.asarray(Image.open(REPOSITORY / "examples" / "03001627_syn00005.png"))
    view_row = np.array([103.02614414, 2.94991742, 0, 0.60377771, 35, 32, 1.75, 0, 0, 0])  # examples/README.md
    model_dir = resolve_model_dir(args.model or BUNDLED_MODEL)
    workdir = tempfile.TemporaryDirectory(prefix="d2im_bench_")
    converted, conversion_seconds = {}, {}
    for target in ("tflite", "tfjs"):
        start = time.perf_counter()
        converted[target] = conversion.convert(model_dir, target, Path(workdir.name) / target)
        conversion_seconds[target] = time.perf_counter() - start
    sizes = {
        "savedmodel": _folder_bytes(model_dir),
        "tflite_float32": _folder_bytes(converted["tflite"], "*[a-z].tflite"),
        "tflite_float16": _folder_bytes(converted["tflite"], "*.float16.tflite"),
        "tfjs": sum(
            _folder_bytes(converted["tfjs"] / part) for part in conversion.PARTS if (converted["tfjs"] / part).is_dir()
        ),
    }
    evaluations = []
    extract = reconstruct_module.extract_fused_mesh

    def counting_extract(*positional, **keywords):  # records how many SDF evaluations each run made
        mesh, stats = extract(*positional, **keywords)
        evaluations.append(stats.evaluations)
        return mesh, stats

    reconstruct_module.extract_fused_mesh = counting_extract
    same = {"fit_pose": False}  # the pose fit is the same NumPy work in every runtime
    runtimes = {
        "savedmodel": lambda resolution: Reconstructor(model_dir, resolution=resolution, one_pass_bounds=False, **same),
        "tflite_float32": lambda resolution: runtime_reconstructor(
            converted["tflite"], "tflite", "float32", resolution=resolution, **same
        ),
        "tflite_float16": lambda resolution: runtime_reconstructor(
            converted["tflite"], "tflite", "float16", resolution=resolution, **same
        ),
        "tfjs": lambda resolution: runtime_reconstructor(converted["tfjs"], "tfjs", resolution=resolution, **same),
    }
    result = {
        "model": str(model_dir),
        "resolution": args.resolution,
        "mode": "coarse_to_fine",
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "conversion_seconds": conversion_seconds,
        "runtimes": {},
    }
    meshes = {}
    try:
        for name, make in runtimes.items():
            warm_up = make(16)
            warm_up.reconstruct(pixels, view_row)  # first calls (and, for TF.js, Node's start)
            if hasattr(warm_up, "runtime_model"):
                warm_up.runtime_model.close()
            reconstructor = make(args.resolution)
            if name == "tfjs":
                result["tfjs_backend"] = reconstructor.runtime_model.backend
            start = time.perf_counter()
            run = reconstructor.reconstruct(pixels, view_row)
            total = time.perf_counter() - start
            meshes[name] = run.mesh
            result["runtimes"][name] = {
                "bytes": sizes[name],
                "encode_seconds": run.timings["encode"],
                "sdf_evaluation_seconds": run.timings["sdf_evaluation"],
                "marching_cubes_seconds": run.timings["marching_cubes"],
                "total_seconds": total,
                "evaluations": evaluations[-1],
                "faces": int(len(run.mesh.faces)),
            }
            if hasattr(reconstructor, "runtime_model"):
                reconstructor.runtime_model.close()
    finally:
        reconstruct_module.extract_fused_mesh = extract
        workdir.cleanup()
    reference = result["runtimes"]["savedmodel"]
    for name, row in result["runtimes"].items():
        row["iou_vs_savedmodel"] = (
            1.0 if name == "savedmodel" else float(metrics.iou(meshes[name], meshes["savedmodel"], 64))
        )
        row["ratios"] = {
            key: row[key] / reference[key]
            for key in ("bytes", "encode_seconds", "sdf_evaluation_seconds", "total_seconds")
        }
    return result


def show(result: dict) -> None:
    print(
        f"convert benchmark: {result['model']}; {result['resolution']}³ grid coarse-to-fine, one image, "
        f"{result['cores']} cores; TF.js backend {result.get('tfjs_backend')}; conversion "
        + ", ".join(f"{target} {seconds:.0f} s" for target, seconds in result["conversion_seconds"].items())
    )
    print(
        f"  {'runtime':<16}{'MB':>8}{'encode s':>10}{'SDF eval s':>12}{'total s':>10}{'evaluations':>13}"
        f"{'IoU':>8}   ratios to SavedModel (size, encode, SDF eval, total)"
    )
    for name, row in result["runtimes"].items():
        ratios = row["ratios"]
        print(
            f"  {name:<16}{row['bytes'] / 1e6:8.1f}{row['encode_seconds']:10.3f}{row['sdf_evaluation_seconds']:12.2f}"
            f"{row['total_seconds']:10.2f}{row['evaluations']:13,d}{row['iou_vs_savedmodel']:8.4f}   "
            f"{ratios['bytes']:.2f}, {ratios['encode_seconds']:.2f}, {ratios['sdf_evaluation_seconds']:.2f}, "
            f"{ratios['total_seconds']:.2f}"
        )
