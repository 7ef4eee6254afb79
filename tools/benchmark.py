"""Benchmarks of the project's pipelines (not tests): ``python tools/benchmark.py <stage> [--json]``.

``data``: one synthetic chair, 36 views at 224², 32,768 SDF samples with gradients and densities, on
one core; seconds per stage, and a plain baseline measured in the same run
(``trimesh.proximity.signed_distance`` on a subset of the same samples, extrapolated linearly).

``fit``: memorisation — the study config trained on 4 shapes (batch 4), IoU per shape and sign
accuracy at the training samples every 250 steps up to 1,500 (:mod:`d2im_tf.training.fit_probe`);
with ``train.ema_decay`` set, of the weight average, the run's result.

``train``: seconds per training step at the authors' setting (``configs/default.yaml``: full network,
224² input, 2048 points per shape; batch 4 by default) in float32 and in ``mixed_bfloat16``
(``train.precision``), against the authors' PyTorch step time on this machine (a quoted figure), with
an independent check of each figure — the step's FLOPs (TensorFlow's profiler on the traced
``train_step``) and the GFLOP/s they imply, beside what a large matrix product reaches on this machine
in each type — and a baseline in the same run: the float32 step with Keras' stock batch normalisation
instead of :mod:`d2im_tf.models.batch_norm`'s fused kernel. Then the step's parts (encoder, detail
decoder, SDF decoder and map lookup, Laplacian loss), each timed forward + backward on its own; the
input pipeline's rate; optionally XLA.

``reconstruct``: seconds per image → mesh at 128³ (``--resolution``) through an exported SavedModel
(:class:`d2im_tf.inference.reconstruct.Reconstructor`; GT camera of a rendered sphere, or ``--image``
through the model's camera network), dense vs coarse-to-fine, split into encode / SDF evaluation /
marching cubes, and the ratio dense / c2f; and two same-run baselines of coarse-to-fine: decoding
exactly (with the front/back split's second decoder pass) at every evaluated point instead of the
one-pass bounds (``one_pass_bounds=False``), and evaluating ``--baseline-batch-points`` points per call
instead of :data:`d2im_tf.inference.extraction.BATCH_POINTS`.
Without ``--model`` it exports a default-size (224², ``full``) *untrained* model, adjusted to look like
a trained one where it matters for the comparison (the output says it is untrained): the base
decoder's output is scaled so that its steepest slope on a 32³ grid is a true SDF's (``sdf_scale``;
a random field is much flatter, and nothing could be certified far from its surface) and shifted so
that its zero level crosses the box (otherwise coarse-to-fine would have no surface to refine and the
comparison would flatter it), and the detail decoder's output
is scaled to displacements of at most 0.1 SDF units (1% of the box), a detail's size — random maps
are large, and their jumps force a wide band (:class:`d2im_tf.inference.reconstruct.Reconstructor`).

``convert``: the SavedModel (default: the bundled one) converted by ``d2im convert`` to TFLite and
TF.js in the same run; file sizes, and per-image seconds (encode; SDF evaluation of a 128³ grid
coarse-to-fine, ``--resolution``; marching cubes) of one reconstruction of the example image through
the SavedModel, LiteRT float32, LiteRT float16 and TF.js in Node (wasm backend), with the same
extraction code (:func:`d2im_tf.inference.runtimes.runtime_reconstructor`; decoding exactly at every
point, as the converted models have no one-pass bounds), as ratios against the SavedModel, and each
mesh's IoU against the SavedModel's (64³ voxels). Each runtime first reconstructs once at 16³ (warm-up:
first calls, Node start). Wall-clock seconds: on a shared machine
only the ratios within one run mean much.

``app``: a bounded load test of ``d2im app`` on localhost (benchmarks/app.py).
"""
from __future__ import annotations

import os

# One core, one thread: set before NumPy/SciPy/embree load their thread pools.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TBB_NUM_THREADS"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from d2im_tf.config import PRECISIONS, add_config_arguments  # noqa: E402
from d2im_tf.data.categories import SYNTHETIC_CATEGORIES  # noqa: E402
from d2im_tf.errors import UserError  # noqa: E402


def _pin_to_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    return "not pinned (no sched_setaffinity)"


class Stopwatch:
    """Accumulates wall-clock and CPU seconds per named stage (CPU time is robust to other load)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    def __call__(self, name, function, *args, **kwargs):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = function(*args, **kwargs)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + time.process_time() - start_cpu
        return result


def bench_data(args) -> dict:
    import numpy as np
    import trimesh

    from d2im_tf.data.render import Renderer, random_views
    from d2im_tf.data.synth import generate, mesh_sdf

    pinned = _pin_to_one_core()
    workdir = tempfile.TemporaryDirectory(prefix="d2im_bench_")
    settings = generate.Settings(out=Path(workdir.name), views=args.views,
                                 image_size=args.image_size, samples=args.samples, seed=args.seed)
    streams = generate.shape_streams(args.seed, args.category, 0)
    clock = Stopwatch()
    mesh = clock("shape (SDF grid + marching cubes)", generate.synthetic_mesh, settings, args.category, streams)
    samples = clock("samples (normalise, exact SDF, bands, gradients)", mesh_sdf.sample_sdf, mesh,
                    streams["samples"], args.samples, with_density=False)
    world = samples.points * samples.norm_params[3] + samples.norm_params[:3]
    samples.density = clock("density", mesh_sdf.sample_density, world, samples.sdf)
    rows = random_views(streams["views"], args.views)
    renderer = clock("render setup (embree scene)", Renderer, mesh)
    render_stage = f"render {args.views} views at {args.image_size}²"
    views = [clock(render_stage, renderer.render, row, args.image_size) for row in rows]
    layout = settings.layout
    clock("write files (OBJ, h5, PNGs)", generate.write_shape_files, layout, "bench", "shape", mesh, samples, rows,
          views)
    workdir.cleanup()

    subset = np.random.default_rng(0).choice(len(world), size=min(args.baseline_subset, len(world)), replace=False)
    baseline_sdf = -clock("baseline", trimesh.proximity.signed_distance, mesh, world[subset])  # trimesh: + inside
    baseline = clock.cpu_seconds.pop("baseline") * len(world) / len(subset)
    clock.seconds.pop("baseline")
    ours_sdf = clock.cpu_seconds["samples (normalise, exact SDF, bands, gradients)"]
    sign_agreement = float(np.mean((baseline_sdf < 0) == (samples.sdf[subset] < 0)))
    distance_error = float(np.max(np.abs(np.abs(baseline_sdf) / samples.norm_params[3] - np.abs(samples.sdf[subset]))))
    return {
        "pinning": pinned,
        "mesh_faces": int(len(mesh.faces)),
        "stages_wall_seconds": clock.seconds,
        "stages_cpu_seconds": clock.cpu_seconds,
        "total_wall_seconds": sum(clock.seconds.values()),
        "total_cpu_seconds": sum(clock.cpu_seconds.values()),
        "baseline": f"trimesh.proximity.signed_distance on {len(subset)} of the {len(world)} samples, extrapolated",
        "baseline_cpu_seconds_extrapolated": baseline,
        "speedup_of_sdf_stage_vs_baseline": baseline / ours_sdf,
        "baseline_sign_agreement": sign_agreement,
        "baseline_max_abs_distance_difference": distance_error,
    }


def print_data(result: dict) -> None:
    wall, cpu = result["stages_wall_seconds"], result["stages_cpu_seconds"]
    width = max(len(name) for name in wall) + 2
    print(f"data benchmark: one chair, {result['mesh_faces']} faces, {result['pinning']}")
    print(f"  {'stage':<{width}} {'CPU s':>7} {'wall s':>7}")
    for name in wall:
        print(f"  {name:<{width}} {cpu[name]:7.2f} {wall[name]:7.2f}")
    print(f"  {'total per shape':<{width}} {result['total_cpu_seconds']:7.2f} {result['total_wall_seconds']:7.2f}"
          "   (target ≤ 5 s)")
    print(f"  baseline: {result['baseline']}: {result['baseline_cpu_seconds_extrapolated']:.1f} CPU s")
    print(f"  SDF stage speed-up over the baseline (CPU time): {result['speedup_of_sdf_stage_vs_baseline']:.1f}×"
          f"  (sign agreement {result['baseline_sign_agreement']:.4f},"
          f" max |distance| difference {result['baseline_max_abs_distance_difference']:.1e})")


MAX_DISPLACEMENT = 0.1  # SDF units (×10): the untrained benchmark model's largest displacement


def _untrained_model(out: Path, image, view_row) -> Path:
    """Export the default config's random-init SDF network: small maps, SDF-like base field with
    its zero level in the box (module docstring)."""
    import numpy as np

    from d2im_tf.config import load_config
    from d2im_tf.geometry import camera
    from d2im_tf.inference.export import export_saved_model
    from d2im_tf.inference.extraction import sdf_grid_points
    from d2im_tf.training.run import build_model

    config = load_config(REPOSITORY / "configs" / "default.yaml")
    model = build_model(config, "sdf")
    size = config.model.image_size
    maps_layer = model.detail_decoder.output_layer
    factor = MAX_DISPLACEMENT / float(np.abs(model.encode(image[None])["maps"]).max())
    maps_layer.kernel.assign(maps_layer.kernel * factor)
    maps_layer.bias.assign(maps_layer.bias * factor)
    projection = camera.projection_from_metadata(view_row, size)[None].astype(np.float32)  # [1, 3, 4]
    base_layer = model.base_decoder.output_layer
    grid = model.predict_sdf(image[None], sdf_grid_points(32)[None], projection)["base"].reshape(32, 32, 32)
    slope = max(float(np.abs(np.diff(grid, axis=axis)).max()) for axis in range(3)) * 32  # per unit length
    factor = model.sdf_scale / slope
    base_layer.kernel.assign(base_layer.kernel * factor)
    base_layer.bias.assign(base_layer.bias * factor)
    values = model.predict_sdf(image[None], sdf_grid_points(16)[None], projection)["sdf"]  # [1, 16³]
    base_layer.bias.assign(base_layer.bias - float(np.median(values)))  # half the grid inside: a surface
    return export_saved_model(model, out)


def bench_reconstruct(args) -> dict:
    import numpy as np
    import trimesh

    from d2im_tf.data.disn_format import read_image
    from d2im_tf.data.render import Renderer
    from d2im_tf.inference.extraction import BATCH_POINTS
    from d2im_tf.inference.reconstruct import Reconstructor, prepare_image

    if args.image is not None and args.model is None:
        raise UserError("--image needs --model (a trained model with a camera network)")
    if args.image is None:  # a rendered sphere seen from a known camera
        view_row = np.array([30.0, 20.0, 0.0, 0.8, 35.0, 32.0, 1.75, 0.0, 0.0, 0.0])
        pixels = Renderer(trimesh.creation.icosphere(3, radius=0.3)).render(view_row, 224).rgba  # [224, 224, 4]
    else:  # the model's camera network gives the view
        view_row, pixels = None, read_image(args.image)
    workdir = tempfile.TemporaryDirectory(prefix="d2im_bench_")
    trained = args.model is not None
    model = args.model or _untrained_model(Path(workdir.name), prepare_image(pixels, 224), view_row)
    result = {"model": str(model), "trained": trained, "resolution": args.resolution,
              "image": str(args.image or "rendered sphere"), "batch_points": BATCH_POINTS,
              "baseline_batch_points": args.baseline_batch_points,
              "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
              "modes": {}}
    baseline_batch = f"c2f_batch_{args.baseline_batch_points}"
    settings = {  # name: (mode, points per call, one-pass bounds)
        "dense": ("dense", BATCH_POINTS, True),
        "coarse_to_fine": ("coarse_to_fine", BATCH_POINTS, True),
        "c2f_exact_split": ("coarse_to_fine", BATCH_POINTS, False),
        baseline_batch: ("coarse_to_fine", args.baseline_batch_points, True),
    }
    reconstructors = {name: Reconstructor(model, resolution=args.resolution, mode=mode, batch_points=batch_points,
                                          one_pass_bounds=one_pass_bounds)
                      for name, (mode, batch_points, one_pass_bounds) in settings.items()}
    for reconstructor in reconstructors.values():
        reconstructor.reconstruct(pixels, view_row)  # warm-up: first calls of the signatures
    runs = {name: [] for name in settings}
    for _ in range(args.repeats):  # interleaved, so that a drift of the machine's speed hits every mode alike
        for name, reconstructor in reconstructors.items():
            runs[name].append(reconstructor.reconstruct(pixels, view_row))
    for name in settings:
        timings = [run.timings for run in runs[name]]
        stages = {stage: float(np.median([timing[stage] for timing in timings])) for stage in timings[0]}
        result["modes"][name] = {"stages_seconds": stages, "total_seconds": sum(stages.values()),
                                 "faces": int(len(runs[name][0].mesh.faces))}
    workdir.cleanup()
    modes = result["modes"]
    dense, fine = modes["dense"], modes["coarse_to_fine"]
    result["ratio_total"] = dense["total_seconds"] / fine["total_seconds"]
    result["ratio_sdf_evaluation"] = (dense["stages_seconds"]["sdf_evaluation"]
                                      / fine["stages_seconds"]["sdf_evaluation"])
    result["ratio_one_pass_bounds"] = modes["c2f_exact_split"]["total_seconds"] / fine["total_seconds"]
    result["ratio_batch"] = modes[baseline_batch]["total_seconds"] / fine["total_seconds"]
    return result


def print_reconstruct(result: dict) -> None:
    state = "trained" if result["trained"] else ("UNTRAINED: random init, base scaled to an SDF's slope and shifted"
                                                 " to cross zero, maps ≤ 0.1")
    print(f"reconstruct benchmark: {result['model']} — {state}; input: {result['image']}; "
          f"{result['resolution']}³ grid, {result['cores']} cores, median seconds per image")
    modes = result["modes"]
    names = list(modes["dense"]["stages_seconds"])
    print(f"  {'stage':<16}" + "".join(f"{mode:>20}" for mode in modes))
    for name in names:
        print(f"  {name:<16}" + "".join(f"{modes[mode]['stages_seconds'][name]:20.3f}" for mode in modes))
    print(f"  {'total':<16}" + "".join(f"{modes[mode]['total_seconds']:20.3f}" for mode in modes))
    print(f"  {'mesh faces':<16}" + "".join(f"{modes[mode]['faces']:20d}" for mode in modes))
    print(f"  dense / coarse-to-fine: {result['ratio_total']:.1f}× in total, "
          f"{result['ratio_sdf_evaluation']:.1f}× in SDF evaluation")
    print(f"  coarse-to-fine decoding exactly at every point / with the one-pass bounds (the default): "
          f"{result['ratio_one_pass_bounds']:.2f}×")
    print(f"  coarse-to-fine at {result['baseline_batch_points']} points per call / at {result['batch_points']} "
          f"(the default): {result['ratio_batch']:.2f}×")


def _folder_bytes(folder: Path, pattern: str = "**/*") -> int:
    return sum(path.stat().st_size for path in folder.glob(pattern) if path.is_file())


def bench_convert(args) -> dict:
    import numpy as np
    from PIL import Image

    import d2im_tf.inference.reconstruct as reconstruct_module
    from d2im_tf.commands.reconstruct import BUNDLED_MODEL
    from d2im_tf.evaluation import metrics
    from d2im_tf.inference import convert as conversion
    from d2im_tf.inference.reconstruct import Reconstructor, resolve_model_dir
    from d2im_tf.inference.runtimes import runtime_reconstructor

    pixels = np.asarray(Image.open(REPOSITORY / "examples" / "03001627_syn00005.png"))
    view_row = np.array([103.02614414, 2.94991742, 0, 0.60377771, 35, 32, 1.75, 0, 0, 0])  # examples/README.md
    model_dir = resolve_model_dir(args.model or BUNDLED_MODEL)
    workdir = tempfile.TemporaryDirectory(prefix="d2im_bench_")
    converted, conversion_seconds = {}, {}
    for target in ("tflite", "tfjs"):
        start = time.perf_counter()
        converted[target] = conversion.convert(model_dir, target, Path(workdir.name) / target)
        conversion_seconds[target] = time.perf_counter() - start
    sizes = {"savedmodel": _folder_bytes(model_dir),
             "tflite_float32": _folder_bytes(converted["tflite"], "*[a-z].tflite"),
             "tflite_float16": _folder_bytes(converted["tflite"], "*.float16.tflite"),
             "tfjs": sum(_folder_bytes(converted["tfjs"] / part) for part in conversion.PARTS
                         if (converted["tfjs"] / part).is_dir())}
    evaluations = []
    extract = reconstruct_module.extract_fused_mesh

    def counting_extract(*positional, **keywords):  # records how many SDF evaluations each run made
        mesh, stats = extract(*positional, **keywords)
        evaluations.append(stats.evaluations)
        return mesh, stats

    reconstruct_module.extract_fused_mesh = counting_extract
    runtimes = {"savedmodel": lambda resolution: Reconstructor(model_dir, resolution=resolution, one_pass_bounds=False),
                "tflite_float32": lambda resolution: runtime_reconstructor(converted["tflite"], "tflite", "float32",
                                                                           resolution=resolution),
                "tflite_float16": lambda resolution: runtime_reconstructor(converted["tflite"], "tflite", "float16",
                                                                           resolution=resolution),
                "tfjs": lambda resolution: runtime_reconstructor(converted["tfjs"], "tfjs", resolution=resolution)}
    result = {"model": str(model_dir), "resolution": args.resolution, "mode": "coarse_to_fine",
              "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
              "conversion_seconds": conversion_seconds, "runtimes": {}}
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
            result["runtimes"][name] = {"bytes": sizes[name], "encode_seconds": run.timings["encode"],
                                        "sdf_evaluation_seconds": run.timings["sdf_evaluation"],
                                        "marching_cubes_seconds": run.timings["marching_cubes"],
                                        "total_seconds": total, "evaluations": evaluations[-1],
                                        "faces": int(len(run.mesh.faces))}
            if hasattr(reconstructor, "runtime_model"):
                reconstructor.runtime_model.close()
    finally:
        reconstruct_module.extract_fused_mesh = extract
        workdir.cleanup()
    reference = result["runtimes"]["savedmodel"]
    for name, row in result["runtimes"].items():
        row["iou_vs_savedmodel"] = 1.0 if name == "savedmodel" else float(
            metrics.iou(meshes[name], meshes["savedmodel"], 64))
        row["ratios"] = {key: row[key] / reference[key] for key in
                         ("bytes", "encode_seconds", "sdf_evaluation_seconds", "total_seconds")}
    return result


def print_convert(result: dict) -> None:
    print(f"convert benchmark: {result['model']}; {result['resolution']}³ grid coarse-to-fine, one image, "
          f"{result['cores']} cores; TF.js backend {result.get('tfjs_backend')}; conversion "
          + ", ".join(f"{target} {seconds:.0f} s" for target, seconds in result["conversion_seconds"].items()))
    print(f"  {'runtime':<16}{'MB':>8}{'encode s':>10}{'SDF eval s':>12}{'total s':>10}{'evaluations':>13}"
          f"{'IoU':>8}   ratios to SavedModel (size, encode, SDF eval, total)")
    for name, row in result["runtimes"].items():
        ratios = row["ratios"]
        print(f"  {name:<16}{row['bytes'] / 1e6:8.1f}{row['encode_seconds']:10.3f}{row['sdf_evaluation_seconds']:12.2f}"
              f"{row['total_seconds']:10.2f}{row['evaluations']:13,d}{row['iou_vs_savedmodel']:8.4f}   "
              f"{ratios['bytes']:.2f}, {ratios['encode_seconds']:.2f}, {ratios['sdf_evaluation_seconds']:.2f}, "
              f"{ratios['total_seconds']:.2f}")


# The authors' PyTorch release, same setting (224², full network, 2048 points, batch 4), measured on
# this 2-core machine with nothing else running (issue #15). Not re-measurable here: PyTorch is not part
# of this project's environment.
REFERENCE_SECONDS_PER_STEP = (2.8, 3.6)


def _seconds_per_step(model, stream, steps: int) -> float:
    """Mean seconds of ``fit``'s steps on ``stream`` after one warm-up step (which traces and compiles)."""
    model.fit(stream, steps_per_epoch=1, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(stream, steps_per_epoch=steps, epochs=1, verbose=0)
    return (time.perf_counter() - start) / steps


def _pipeline_batches_per_second(data, batch: int, batches: int) -> float:
    stream = iter(data.dataset(batch))
    next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return batches / (time.perf_counter() - start)


def graph_flops(function, *args) -> int:
    """Floating-point operations of one call of ``function`` (a ``tf.function``) on ``args``, as counted by
    TensorFlow's profiler from the traced graph: convolutions (with both of their gradients), matmuls and
    element-wise ops. Ops without a registered count (gathers, fused batch norm) add nothing."""
    from tensorflow.python.profiler import model_analyzer, option_builder

    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    graph = function.get_concrete_function(*args).graph
    return int(model_analyzer.profile(graph, options=options).total_float_ops)


def matmul_gflops(precision: str = "float32", size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a ``size``² matrix product in the compute type of ``precision`` (a Keras policy) on this
    machine: what a compute-bound op reaches here."""
    import keras
    import tensorflow as tf

    dtype = keras.DTypePolicy(precision).compute_dtype
    a = tf.cast(tf.random.normal([size, size]), dtype)
    b = tf.cast(tf.random.normal([size, size]), dtype)
    product = tf.function(lambda: tf.matmul(a, b))
    product().numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        product().numpy()
    return 2.0 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def _median_seconds(function, *args, repeats: int = 3) -> float:
    function(*args)  # trace
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _step_breakdown(model, batch) -> dict:
    """Seconds of the training step's parts on ``batch``, each forward + backward in its own compiled
    function (the gradient of a sum of its outputs w.r.t. its weights and tensor inputs)."""
    import tensorflow as tf

    from d2im_tf.models import losses

    def forward_backward(part, weights, *inputs):
        inputs = [tf.identity(x) for x in inputs]

        @tf.function
        def run(*xs):
            with tf.GradientTape() as tape:
                tape.watch(list(xs))
                total = part(*xs)
            return tape.gradient(total, list(weights) + list(xs))

        return _median_seconds(run, *inputs)

    def encoder(images):
        encoded = model.encoder(images, training=True)
        return tf.reduce_sum(encoded["global_code"]) + tf.add_n([tf.reduce_sum(f) for f in encoded["features"]])

    encoding = model.encode(batch["image"], training=True)
    features = encoding["features"]  # [f0 … f4]
    outputs = model.decode(encoding, batch["points"], batch["projection"], batch["gradients"])

    def decoder(code, maps):
        encoding = {"global_code": code, "maps": maps, "features": features}
        return tf.reduce_sum(model.decode(encoding, batch["points"], batch["projection"], batch["gradients"])["sdf"])

    def laplacian(maps):
        mask = tf.ones_like(outputs["depth"])  # every point: the most the loss can cost
        return losses.laplacian_loss(maps[..., :1], batch["normal_map"], outputs["uv"], outputs["depth"],
                                     mask[:, 0], model.focal, mask, model.sdf_scale)

    return {
        "encoder (ResNet18)": forward_backward(encoder, model.encoder.trainable_weights, batch["image"]),
        "detail decoder": forward_backward(lambda *f: tf.reduce_sum(model.detail_decoder(list(f))),
                                           model.detail_decoder.trainable_weights, *features),
        "SDF decoder + map lookup": forward_backward(decoder, model.base_decoder.trainable_weights,
                                                     encoding["global_code"], encoding["maps"]),
        "Laplacian loss": forward_backward(laplacian, [], encoding["maps"]),
    }


def _train_row(config, data, steps: int, stock_batch_norm: bool = False) -> dict:
    """One setting: the built model, its seconds per ``fit`` step, and a batch of its stream.

    ``stock_batch_norm``: build the encoder with Keras' ``BatchNormalization`` instead of the fused one."""
    import keras

    from d2im_tf.models import encoder
    from d2im_tf.training.run import build_model

    fused = encoder.BatchNormalization
    if stock_batch_norm:  # the encoder as it was built before the fused kernel (d2im_tf.models.batch_norm)
        encoder.BatchNormalization = keras.layers.BatchNormalization
    try:
        model = build_model(config, "sdf")  # under mixed precision if the config says so
    finally:
        encoder.BatchNormalization = fused
    stream = data.dataset(config.train.batch_size)
    seconds = _seconds_per_step(model, stream, steps)
    return {"model": model, "seconds_per_step": seconds, "batch": next(iter(stream))}


def bench_train(args) -> dict:
    """Training speed at the authors' setting (224², 2048 points, full network) on this machine."""
    import tensorflow as tf

    from d2im_tf.cli import main as d2im
    from d2im_tf.config import load_config
    from d2im_tf.data.pipeline import ShapeDataset

    root = Path(tempfile.mkdtemp(prefix="bench_train_"))  # removed at the end
    d2im(["make-data", "--out", str(root), "--categories", "03001627", "--shapes-per-category", "3",
          "--views", "2", "--image-size", "224", "--seed", "0", "--test-fraction", "0"])
    first = args.batches[0]
    settings = [{"batch": first, "precision": precision} for precision in args.precisions]
    settings += [{"batch": batch, "precision": args.precisions[0]} for batch in args.batches[1:]]
    settings.append({"batch": first, "precision": "float32", "stock_batch_norm": True})  # the same-run baseline
    if args.xla:
        settings.append({"batch": first, "precision": "float32", "xla": True})
    peak = {precision: matmul_gflops(precision) for precision in ("float32", "mixed_bfloat16")}
    rows, breakdowns = [], {}
    for setting in settings:
        batch, jit, precision = setting["batch"], setting.get("xla", False), setting["precision"]
        config = load_config("configs/default.yaml", [
            f"data.root={root}", "data.categories=['03001627']", "data.views=2", f"train.batch_size={batch}",
            f"train.jit_compile={str(jit).lower()}", f"train.precision={precision}"])
        data = ShapeDataset(config)
        run = _train_row(config, data, args.steps, setting.get("stock_batch_norm", False))
        flops = graph_flops(tf.function(run["model"].train_step), run["batch"])
        seconds = run["seconds_per_step"]
        row = {"batch": batch, "xla": jit, "precision": precision,
               "batch_norm": "keras" if setting.get("stock_batch_norm") else "fused",
               "seconds_per_step": seconds, "points_per_second": batch * config.data.num_points / seconds,
               "gflop_per_step": flops / 1e9, "gflop_per_second": flops / 1e9 / seconds,
               "pipeline_batches_per_second": _pipeline_batches_per_second(data, batch, args.pipeline_batches)}
        row["pipeline_over_training"] = row["pipeline_batches_per_second"] * seconds
        plain = batch == first and not jit and not setting.get("stock_batch_norm")
        if args.breakdown and plain and precision not in breakdowns:
            breakdowns[precision] = _step_breakdown(run["model"], run["batch"])
        rows.append(row)
        del run
    shutil.rmtree(root, ignore_errors=True)
    base = rows[0]["seconds_per_step"]
    for row in rows:
        row["time_vs_first"] = row["seconds_per_step"] / base
        if row["batch"] == 4:  # the setting the reference was timed at
            row["time_vs_reference"] = [row["seconds_per_step"] / r for r in REFERENCE_SECONDS_PER_STEP]
    return {"image_size": 224, "points": 2048, "variant": "full", "matmul_gflop_per_second": peak,
            "reference_seconds_per_step": list(REFERENCE_SECONDS_PER_STEP), "rows": rows, "breakdown": breakdowns}


def print_train(result: dict) -> None:
    print(f"training speed: D²IM-Net {result['variant']}, {result['image_size']}² input, {result['points']} points "
          "per shape (configs/default.yaml; untrained weights, speed only)")
    peak = result["matmul_gflop_per_second"]
    print(f"  this machine: a 2048² matmul runs at {peak['float32']:.0f} GFLOP/s in float32, "
          f"{peak['mixed_bfloat16']:.0f} GFLOP/s in bfloat16")
    print(f"  {'batch':>5} {'precision':>15} {'BN':>6} {'XLA':>5} {'s/step':>7} {'points/s':>9} {'GFLOP/step':>11} "
          f"{'GFLOP/s':>8} {'pipe/train':>11} {'time×':>6} {'× reference':>12}")
    for r in result["rows"]:
        reference = "–".join(f"{x:.2f}" for x in reversed(r["time_vs_reference"])) if "time_vs_reference" in r else ""
        print(f"  {r['batch']:>5} {r['precision']:>15} {r['batch_norm']:>6} {str(r['xla']):>5} "
              f"{r['seconds_per_step']:7.2f} {r['points_per_second']:9.0f} {r['gflop_per_step']:11.1f} "
              f"{r['gflop_per_second']:8.1f} {r['pipeline_over_training']:11.1f} {r['time_vs_first']:6.2f} "
              f"{reference:>12}")
    print("  GFLOP/step: TensorFlow's profiler on the traced train_step (convolutions with their gradients, matmuls,")
    print("  element-wise ops); pipe/train: input-pipeline batches per training step (≥ 5: the data keeps up);")
    print("  time×: seconds per step relative to the first row, measured in the same run")
    if any("time_vs_reference" in r for r in result["rows"]):
        low, high = result["reference_seconds_per_step"]
        print(f"  × reference: seconds per step over the authors' PyTorch release's, same setting and machine "
              f"({low}–{high} s/step, float32; issue #15, not re-measured here)")
    for precision, parts in result["breakdown"].items():
        print(f"  where the step's time goes, {precision} (each part forward + backward on its own, batch "
              f"{result['rows'][0]['batch']}):")
        for name, seconds in parts.items():
            print(f"    {name:<26} {seconds:6.3f} s")


FIT_CATEGORIES = list(SYNTHETIC_CATEGORIES)


def _fit_dataset(root: Path) -> None:
    """The memorisation set of the learning issue: 4 training shapes (one per category), 6 views, 128 px."""
    from d2im_tf.cli import main as d2im

    code = d2im(["make-data", "--out", str(root), "--categories", *FIT_CATEGORIES, "--shapes-per-category", "2",
                 "--views", "6", "--image-size", "128", "--seed", "11"])
    if code:
        raise SystemExit(code)


def bench_fit(args) -> dict:
    """Memorisation: train on 4 shapes and measure how well the network fits them as it goes."""
    import keras

    from d2im_tf.config import load_config
    from d2im_tf.data.pipeline import ShapeDataset
    from d2im_tf.training.averaging import WeightAverage
    from d2im_tf.training.fit_probe import fit_report, probe_shapes
    from d2im_tf.training.run import build_model

    root = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="bench_fit_"))
    if not (root / "splits").exists():
        _fit_dataset(root)
    overrides = [f"data.root={root}", f"data.categories={FIT_CATEGORIES}", "data.views=6", "train.batch_size=4",
                 *args.overrides]
    config = load_config(args.config, overrides)
    keras.utils.set_random_seed(config.data.seed)
    data = ShapeDataset(config, "train")
    shapes = probe_shapes(config, "train", resolution=args.resolution)
    model = build_model(config, "sdf", args.steps)
    # With train.ema_decay the run's result is the weight average, so that is what is probed.
    average = WeightAverage(model, config.train.ema_decay) if config.train.ema_decay else None
    probed = average.applied if average else contextlib.nullcontext
    batch = config.train.batch_size
    rows, step = [], 0
    start = time.perf_counter()
    while step < args.steps:
        chunk = min(args.every, args.steps - step)
        history = model.fit(data.dataset(batch, start=step * batch), steps_per_epoch=chunk, epochs=1, verbose=0,
                            callbacks=[average] if average else None)
        step += chunk
        with probed():
            report = fit_report(model, shapes, args.resolution)
        rows.append({"step": step, "seconds": time.perf_counter() - start,
                     "loss": {k: float(v[-1]) for k, v in history.history.items()}, "shapes": report})
        if args.progress:
            print(_fit_line(rows[-1]), flush=True)
    if args.preview:
        from d2im_tf.training.previews import PreviewCallback

        previews = PreviewCallback(data, args.preview, 1, count=len(data), resolution=64)
        previews.set_model(model)
        with probed():
            previews.on_epoch_end(0)  # → PREVIEW/previews/epoch_0001.png
    if not args.data:
        shutil.rmtree(root, ignore_errors=True)
    return {"config": args.config, "overrides": list(args.overrides), "variant": config.model.variant,
            "resolution": args.resolution, "rows": rows}


def _fit_line(row: dict) -> str:
    shapes = row["shapes"]
    ious = " ".join(f"{s['iou']:.3f}" for s in shapes)
    decided = " ".join(f"{s['iou_decided']:.3f}" for s in shapes)
    base = " ".join(f"{s['iou_base']:.3f}" for s in shapes) if "iou_base" in shapes[0] else "-"
    signs = " ".join(f"{s['sign_accuracy']:.3f}" for s in shapes)
    return (f"  step {row['step']:>5} {row['seconds']:7.0f}s  loss {row['loss'].get('loss', float('nan')):.4f}  "
            f"IoU {ious}  decided {decided}  base {base}  sign {signs}  min IoU {min(s['iou'] for s in shapes):.3f}  "
            f"min sign {min(s['sign_accuracy'] for s in shapes):.3f}")


def print_fit(result: dict) -> None:
    print(f"memorisation: {result['variant']}, {result['config']} {' '.join(result['overrides'])}; "
          f"IoU at {result['resolution']}³ voxel centres and sign accuracy at each training shape's samples "
          f"(|sdf| > 0.005), GT camera of its evaluation view; 'decided': IoU over the voxel centres farther "
          f"than 0.005 from the GT surface; 'base': IoU of the base field f_B alone, without the maps")
    print("  shapes: " + ", ".join(s["name"] for s in result["rows"][0]["shapes"]))
    for row in result["rows"]:
        print(_fit_line(row))
    print("  target: every shape IoU ≥ 0.85 and sign accuracy ≥ 0.95 within 1,500 steps")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    stages = parser.add_subparsers(dest="stage", required=True)
    data = stages.add_parser("data", help="synthetic data generation, one shape")
    data.add_argument("--category", default="03001627")
    data.add_argument("--views", type=int, default=36)
    data.add_argument("--image-size", type=int, default=224)
    data.add_argument("--samples", type=int, default=32768)
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--baseline-subset", type=int, default=1000,
                      help="samples on which the baseline is timed (then extrapolated)")
    data.add_argument("--json", action="store_true", help="print the result as JSON")
    data.set_defaults(bench=bench_data, show=print_data)
    reconstruct = stages.add_parser("reconstruct", help="image → mesh, dense vs coarse-to-fine")
    reconstruct.add_argument("--model", default=None,
                             help="SavedModel folder (default: export an untrained default-size model)")
    reconstruct.add_argument("--resolution", type=int, default=128)
    reconstruct.add_argument("--repeats", type=int, default=3,
                             help="timed runs per mode, the modes interleaved (median reported)")
    reconstruct.add_argument("--image", type=Path, default=None,
                             help="input image, seen through the model's camera network (default: a rendered "
                                  "sphere with its known camera)")
    reconstruct.add_argument("--baseline-batch-points", type=int, default=65536,
                             help="points per SDF call of the baseline coarse-to-fine run")
    reconstruct.add_argument("--json", action="store_true", help="print the result as JSON")
    reconstruct.set_defaults(bench=bench_reconstruct, show=print_reconstruct)
    convert = stages.add_parser("convert",
                                help="SavedModel vs TFLite float32/float16 vs TF.js: sizes, per-image seconds")
    convert.add_argument("--model", default=None, help="SavedModel folder (default: the bundled model)")
    convert.add_argument("--resolution", type=int, default=128)
    convert.add_argument("--json", action="store_true", help="print the result as JSON")
    convert.set_defaults(bench=bench_convert, show=print_convert)
    train = stages.add_parser("train", help="seconds per training step at the authors' setting, FLOPs, where it goes")
    train.add_argument("--batches", type=int, nargs="+", default=[4],
                       help="batch sizes (the first runs every precision, the baseline and XLA)")
    train.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"], choices=PRECISIONS,
                       help="train.precision settings to time")
    train.add_argument("--xla", action="store_true", help="also time the float32 step compiled with XLA")
    train.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                       help="skip timing the step's parts")
    train.add_argument("--steps", type=int, default=3, help="timed training steps per setting")
    train.add_argument("--pipeline-batches", type=int, default=20, help="timed input-pipeline batches per setting")
    train.add_argument("--json", action="store_true", help="print the result as JSON")
    train.set_defaults(bench=bench_train, show=print_train)
    fit = stages.add_parser("fit", help="memorisation of 4 training shapes: IoU and sign accuracy every 250 steps")
    fit.add_argument("--data", default=None, help="dataset root (made with the issue's command if it has no splits)")
    add_config_arguments(fit, "default: the repository's configs/study.yaml",
                         default=str(REPOSITORY / "configs" / "study.yaml"))
    fit.add_argument("--steps", type=int, default=1500)
    fit.add_argument("--every", type=int, default=250, help="steps between measurements")
    fit.add_argument("--resolution", type=int, default=32, help="voxel grid of the IoU")
    fit.add_argument("--progress", action="store_true", help="print each measurement as it is made")
    fit.add_argument("--preview", default=None, metavar="DIR",
                     help="also write DIR/previews/epoch_0001.png: the training shapes reconstructed at the end")
    fit.add_argument("--json", action="store_true", help="print the result as JSON")
    fit.set_defaults(bench=bench_fit, show=print_fit)
    from benchmarks import app as app_benchmark  # benchmarks/app.py

    app = stages.add_parser("app", help="load test of d2im app on localhost: req/s, p50/p95, statuses, memory")
    app_benchmark.add_arguments(app)
    app.add_argument("--json", action="store_true", help="print the result as JSON")
    app.set_defaults(bench=app_benchmark.bench_app, show=app_benchmark.print_app)
    args = parser.parse_args(argv)
    try:
        result = args.bench(args)
    except UserError as error:  # an unreadable image, model or dataset: one line, not a traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        args.show(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
