"""The ``train`` benchmark: seconds per training step at the authors' setting (``configs/default.yaml``: full network,
224² input, 2048 points per shape; batch 4 by default) in float32 and in ``mixed_bfloat16``
(``train.precision``), with
an independent check of each figure — the step's FLOPs (TensorFlow's profiler on the traced
``train_step``) and the GFLOP/s they imply, beside what a large matrix product reaches on this machine
in each type — and a baseline in the same run: the float32 step with Keras' stock batch normalisation
instead of :mod:`d2im_tf.models.batch_norm`'s fused kernel. Then the step's parts (encoder, detail
decoder, SDF decoder and map lookup, Laplacian loss), each timed forward + backward on its own; the
input pipeline's rate; optionally XLA.

With ``--reference DIR`` (a checkout of the authors' D²IM-Net release) the authors' PyTorch training
step is timed at the same setting in the same run, first, in a subprocess of ``--reference-python``
(:mod:`benchmarks.torch_reference`, with as many threads as this process has cores), and every row
of a batch size it was timed at gets its ratio ``× reference`` (our seconds per step over theirs).
Without it, no ratio is printed: a figure measured elsewhere is not comparable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks import REPOSITORY
from d2im_tf.config import PRECISIONS
from d2im_tf.errors import UserError

HELP = "seconds per training step at the authors' setting, FLOPs, where it goes"


def configure(parser) -> None:
    parser.add_argument(
        "--batches",
        type=int,
        nargs="+",
        default=[4],
        help="batch sizes (the first runs every precision, the baseline and XLA)",
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["float32", "mixed_bfloat16"],
        choices=PRECISIONS,
        help="train.precision settings to time",
    )
    parser.add_argument("--xla", action="store_true", help="also time the float32 step compiled with XLA")
    parser.add_argument("--no-breakdown", dest="breakdown", action="store_false", help="skip timing the step's parts")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per setting")
    parser.add_argument("--pipeline-batches", type=int, default=20, help="timed input-pipeline batches per setting")
    parser.add_argument(
        "--reference",
        default=None,
        metavar="DIR",
        help="a checkout of the authors' D²IM-Net release: time their PyTorch training step at the "
        "same setting in this run and print our time over theirs",
    )
    parser.add_argument(
        "--reference-python",
        default="python3",
        metavar="PYTHON",
        help="the Python (with PyTorch, NumPy and torchvision) that runs --reference (default: python3)",
    )


REFERENCE_SCRIPT = Path(__file__).resolve().with_name("torch_reference.py")
IMAGE_SIZE, POINTS = 224, 2048  # configs/default.yaml: the authors' setting


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def measure_reference(checkout, python: str, batch: int, steps: int, threads: int | None = None) -> dict:
    """The authors' training step timed by :mod:`benchmarks.torch_reference` under ``python`` on
    ``checkout`` at ``batch`` shapes of :data:`POINTS` points and :data:`IMAGE_SIZE`² images: its JSON
    result plus ``mean_seconds_per_step``. :class:`UserError` (one line) if it cannot run."""
    checkout = Path(checkout)
    if not (checkout / "models" / "D2IM.py").is_file():
        raise UserError(f"{checkout}: not a checkout of the authors' D²IM-Net release (no models/D2IM.py)")
    threads = threads or _cores()
    command = [
        python,
        str(REFERENCE_SCRIPT),
        str(checkout.resolve()),
        "--batch",
        str(batch),
        "--points",
        str(POINTS),
        "--image-size",
        str(IMAGE_SIZE),
        "--steps",
        str(steps),
        "--threads",
        str(threads),
    ]
    env = {
        **os.environ,
        **{name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
    }
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=env)
    except OSError as error:
        raise UserError(f"--reference-python {python}: cannot run it ({error.strerror or error})") from None
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"{checkout}: the authors' training step failed under {python} ({reason})")
    try:
        measured = json.loads(lines[-1])
        seconds = [float(value) for value in measured["seconds_per_step"]]
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{checkout}: unreadable result of the reference step ({error}): {lines[-1][:200]}") from None
    if len(seconds) != steps or min(seconds) <= 0:
        raise UserError(f"{checkout}: the reference step reported {seconds}, expected {steps} positive times")
    return {**measured, "mean_seconds_per_step": sum(seconds) / len(seconds)}


def reference_ratios(rows: list[dict], reference: dict) -> None:
    """Set ``time_vs_reference`` (our seconds per step over the reference's) on every row whose batch
    size the reference was timed at; ``reference``: batch → :func:`measure_reference`'s result."""
    for row in rows:
        if row["batch"] in reference:
            row["time_vs_reference"] = row["seconds_per_step"] / reference[row["batch"]]["mean_seconds_per_step"]


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
        return losses.laplacian_loss(
            maps[..., :1],
            batch["normal_map"],
            outputs["uv"],
            outputs["depth"],
            mask[:, 0],
            model.focal,
            mask,
            model.sdf_scale,
        )

    return {
        "encoder (ResNet18)": forward_backward(encoder, model.encoder.trainable_weights, batch["image"]),
        "detail decoder": forward_backward(
            lambda *f: tf.reduce_sum(model.detail_decoder(list(f))), model.detail_decoder.trainable_weights, *features
        ),
        "SDF decoder + map lookup": forward_backward(
            decoder, model.base_decoder.trainable_weights, encoding["global_code"], encoding["maps"]
        ),
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


def run(args) -> dict:
    """Training speed at the authors' setting (224², 2048 points, full network) on this machine."""
    reference = {}
    if args.reference:  # first: a checkout that does not run fails before TensorFlow loads
        for batch in dict.fromkeys(args.batches):
            reference[batch] = measure_reference(args.reference, args.reference_python, batch, args.steps)
    import tensorflow as tf

    from d2im_tf.cli import main as d2im
    from d2im_tf.config import load_config
    from d2im_tf.data.pipeline import ShapeDataset

    root = Path(tempfile.mkdtemp(prefix="bench_train_"))  # removed at the end
    d2im(
        [
            "make-data",
            "--out",
            str(root),
            "--categories",
            "03001627",
            "--shapes-per-category",
            "3",
            "--views",
            "2",
            "--image-size",
            "224",
            "--seed",
            "0",
            "--test-fraction",
            "0",
        ]
    )
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
        config = load_config(
            REPOSITORY / "configs" / "default.yaml",
            [
                f"data.root={root}",
                "data.categories=['03001627']",
                "data.views=2",
                f"train.batch_size={batch}",
                f"train.jit_compile={str(jit).lower()}",
                f"train.precision={precision}",
            ],
        )
        data = ShapeDataset(config)
        run = _train_row(config, data, args.steps, setting.get("stock_batch_norm", False))
        flops = graph_flops(tf.function(run["model"].train_step), run["batch"])
        seconds = run["seconds_per_step"]
        row = {
            "batch": batch,
            "xla": jit,
            "precision": precision,
            "batch_norm": "keras" if setting.get("stock_batch_norm") else "fused",
            "seconds_per_step": seconds,
            "points_per_second": batch * config.data.num_points / seconds,
            "gflop_per_step": flops / 1e9,
            "gflop_per_second": flops / 1e9 / seconds,
            "pipeline_batches_per_second": _pipeline_batches_per_second(data, batch, args.pipeline_batches),
        }
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
    reference_ratios(rows, reference)
    result = {
        "image_size": IMAGE_SIZE,
        "points": POINTS,
        "variant": "full",
        "matmul_gflop_per_second": peak,
        "rows": rows,
        "breakdown": breakdowns,
    }
    if args.reference:
        result["reference"] = {
            "checkout": str(Path(args.reference).resolve()),
            "python": args.reference_python,
            "by_batch": {str(batch): measured for batch, measured in reference.items()},
        }
    return result


def show(result: dict) -> None:
    print(
        f"training speed: D²IM-Net {result['variant']}, {result['image_size']}² input, {result['points']} points "
        "per shape (configs/default.yaml; untrained weights, speed only)"
    )
    peak = result["matmul_gflop_per_second"]
    print(
        f"  this machine: a 2048² matmul runs at {peak['float32']:.0f} GFLOP/s in float32, "
        f"{peak['mixed_bfloat16']:.0f} GFLOP/s in bfloat16"
    )
    compared = "reference" in result
    print(
        f"  {'batch':>5} {'precision':>15} {'BN':>6} {'XLA':>5} {'s/step':>7} {'points/s':>9} {'GFLOP/step':>11} "
        f"{'GFLOP/s':>8} {'pipe/train':>11} {'time×':>6}" + (f" {'× reference':>12}" if compared else "")
    )
    for r in result["rows"]:
        reference = f"{r['time_vs_reference']:.2f}" if "time_vs_reference" in r else ""
        print(
            f"  {r['batch']:>5} {r['precision']:>15} {r['batch_norm']:>6} {str(r['xla']):>5} "
            f"{r['seconds_per_step']:7.2f} {r['points_per_second']:9.0f} {r['gflop_per_step']:11.1f} "
            f"{r['gflop_per_second']:8.1f} {r['pipeline_over_training']:11.1f} {r['time_vs_first']:6.2f}"
            + (f" {reference:>12}" if compared else "")
        )
    print("  GFLOP/step: TensorFlow's profiler on the traced train_step (convolutions with their gradients, matmuls,")
    print("  element-wise ops); pipe/train: input-pipeline batches per training step (≥ 5: the data keeps up);")
    print("  time×: seconds per step relative to the first row, measured in the same run")
    if compared:
        print(
            f"  × reference: seconds per step over the authors' PyTorch step, measured first in this run "
            f"({result['reference']['checkout']}):"
        )
        for batch, measured in result["reference"]["by_batch"].items():
            print(
                f"    batch {batch}: {measured['mean_seconds_per_step']:.2f} s/step (float32, torch "
                f"{measured['torch']}, {measured['threads']} threads, mean of {len(measured['seconds_per_step'])} "
                "steps after a warm-up)"
            )
    for precision, parts in result["breakdown"].items():
        print(
            f"  where the step's time goes, {precision} (each part forward + backward on its own, batch "
            f"{result['rows'][0]['batch']}):"
        )
        for name, seconds in parts.items():
            print(f"    {name:<26} {seconds:6.3f} s")
