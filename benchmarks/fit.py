"""The ``fit`` benchmark: memorisation — the study config trained on 4 shapes (batch 4), IoU per shape and sign
accuracy at the training samples every 250 steps up to 1,500 (:mod:`benchmarks.fit_probe`);
with ``train.ema_decay`` set, of the weight average, the run's result."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks import REPOSITORY
from d2im_tf.config import add_config_arguments
from d2im_tf.data.categories import SYNTHETIC_CATEGORIES

HELP = "memorisation of 4 training shapes: IoU and sign accuracy every 250 steps"


def configure(parser) -> None:
    parser.add_argument(
        "--data", default=None, help="dataset root (made with the benchmark's command if it has no splits)"
    )
    add_config_arguments(
        parser, "default: the repository's configs/study.yaml", default=str(REPOSITORY / "configs" / "study.yaml")
    )
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--every", type=int, default=250, help="steps between measurements")
    parser.add_argument("--resolution", type=int, default=32, help="voxel grid of the IoU")
    parser.add_argument("--progress", action="store_true", help="print each measurement as it is made")
    parser.add_argument(
        "--preview",
        default=None,
        metavar="DIR",
        help="also write DIR/previews/epoch_0001.png: the training shapes reconstructed at the end",
    )


FIT_CATEGORIES = list(SYNTHETIC_CATEGORIES)


def _fit_dataset(root: Path) -> None:
    """The memorisation set: 4 training shapes (one per category), 6 views, 128 px."""
    from d2im_tf.cli import main as d2im

    code = d2im(
        [
            "make-data",
            "--out",
            str(root),
            "--categories",
            *FIT_CATEGORIES,
            "--shapes-per-category",
            "2",
            "--views",
            "6",
            "--image-size",
            "128",
            "--seed",
            "11",
        ]
    )
    if code:
        raise SystemExit(code)


def run(args) -> dict:
    """Memorisation: train on 4 shapes and measure how well the network fits them as it goes."""
    import keras

    from benchmarks.fit_probe import fit_report, probe_shapes
    from d2im_tf.config import load_config
    from d2im_tf.data.pipeline import ShapeDataset
    from d2im_tf.training.averaging import WeightAverage
    from d2im_tf.training.run import build_model

    root = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="bench_fit_"))
    if not (root / "splits").exists():
        _fit_dataset(root)
    overrides = [
        f"data.root={root}",
        f"data.categories={FIT_CATEGORIES}",
        "data.views=6",
        "train.batch_size=4",
        *args.overrides,
    ]
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
        history = model.fit(
            data.dataset(batch, start=step * batch),
            steps_per_epoch=chunk,
            epochs=1,
            verbose=0,
            callbacks=[average] if average else None,
        )
        step += chunk
        with probed():
            report = fit_report(model, shapes, args.resolution)
        rows.append(
            {
                "step": step,
                "seconds": time.perf_counter() - start,
                "loss": {k: float(v[-1]) for k, v in history.history.items()},
                "shapes": report,
            }
        )
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
    return {
        "config": args.config,
        "overrides": list(args.overrides),
        "variant": config.model.variant,
        "resolution": args.resolution,
        "rows": rows,
    }


def _fit_line(row: dict) -> str:
    shapes = row["shapes"]
    ious = " ".join(f"{s['iou']:.3f}" for s in shapes)
    decided = " ".join(f"{s['iou_decided']:.3f}" for s in shapes)
    base = " ".join(f"{s['iou_base']:.3f}" for s in shapes) if "iou_base" in shapes[0] else "-"
    signs = " ".join(f"{s['sign_accuracy']:.3f}" for s in shapes)
    return (
        f"  step {row['step']:>5} {row['seconds']:7.0f}s  loss {row['loss'].get('loss', float('nan')):.4f}  "
        f"IoU {ious}  decided {decided}  base {base}  sign {signs}  min IoU {min(s['iou'] for s in shapes):.3f}  "
        f"min sign {min(s['sign_accuracy'] for s in shapes):.3f}"
    )


def show(result: dict) -> None:
    print(
        f"memorisation: {result['variant']}, {result['config']} {' '.join(result['overrides'])}; "
        f"IoU at {result['resolution']}³ voxel centres and sign accuracy at each training shape's samples "
        f"(|sdf| > 0.005), GT camera of its evaluation view; 'decided': IoU over the voxel centres farther "
        f"than 0.005 from the GT surface; 'base': IoU of the base field f_B alone, without the maps"
    )
    print("  shapes: " + ", ".join(s["name"] for s in result["rows"][0]["shapes"]))
    for row in result["rows"]:
        print(_fit_line(row))
    print("  target: every shape IoU ≥ 0.85 and sign accuracy ≥ 0.95 within 1,500 steps")
