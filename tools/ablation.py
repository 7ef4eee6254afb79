"""The paper's Table 1 ablation on a generated dataset: train, evaluate, tabulate and picture six variants.

    python tools/ablation.py train     # d2im train per variant, identical budgets; resumes
    python tools/ablation.py evaluate  # d2im evaluate per variant (ground-truth cameras)
    python tools/ablation.py table     # Markdown table: ours next to the paper's (OUT/table_eval.md)
    python tools/ablation.py figure    # the same test inputs reconstructed by every variant (PNG)
    python tools/ablation.py all       # the four in turn

Every stage skips what is already done (a variant with an export is not retrained, one with an
evaluation not re-evaluated), so an interrupted study is continued by running the same command.
Training and evaluation run as ``d2im`` subprocesses: each variant gets a fresh TensorFlow, and the
command lines printed are the ones to rerun by hand. Folder layout: :mod:`d2im_tf.evaluation.ablation`.
Meshes are extracted as the paper does, enclosed cavities kept (``--keep-cavities``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from d2im_tf.config import VARIANTS, add_config_arguments  # noqa: E402
from d2im_tf.evaluation import ablation  # noqa: E402


def d2im(arguments: list[str], log: Path) -> None:
    """Run ``d2im <arguments>`` with output to ``log``; exit with its code if it fails."""
    print("d2im " + " ".join(arguments) + f"  > {log}", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        code = subprocess.call([sys.executable, "-m", "d2im_tf.cli", *arguments], stdout=handle, stderr=handle)
    if code:
        sys.exit(f"error: d2im {arguments[0]} failed (exit {code}); see {log}")


def train(args) -> None:
    for variant in args.variants:
        if any(ablation.export_dir(args.out, variant).glob("*/saved_model.pb")):
            continue
        d2im(
            [
                "train",
                "--config",
                args.config,
                "--set",
                f"model.variant={variant}",
                "--set",
                f"train.epochs={args.epochs}",
                "--set",
                f"train.out_dir={ablation.run_dir(args.out, variant)}",
                "--export",
                str(ablation.export_dir(args.out, variant)),
                "--no-progress",
                "--resume",
                *[part for override in args.overrides for part in ("--set", override)],
            ],
            Path(args.out) / f"{variant}.train.log",
        )


def evaluate(args) -> None:
    for variant in args.variants:
        out = ablation.eval_dir(args.out, variant, args.eval_name)
        if (out / "per_shape.csv").exists():
            continue
        d2im(
            [
                "evaluate",
                "--model",
                str(ablation.export_dir(args.out, variant)),
                "--data",
                str(args.data),
                "--resolution",
                str(args.resolution),
                "-o",
                str(out),
                "--no-progress",
                "--keep-cavities",
            ]
            + (["--max-shapes", str(args.max_shapes)] if args.max_shapes else [])
            + (["--categories", *args.categories] if args.categories else []),
            Path(args.out) / f"{variant}.{args.eval_name}.log",
        )


def table(args) -> None:
    extra = dict(item.split("=", 1) for item in args.extra_eval)
    text = ablation.comparison_table(args.out, args.variants, args.eval_name, extra)
    relief = ablation.relief_table(args.out, args.variants, args.eval_name, extra)
    if relief:
        text += (
            "\nRelief error (degrees between the normal maps on the ground truth's relief pixels; lower is better):\n\n"
        )
        text += relief
    path = Path(args.out) / f"table_{args.eval_name}.md"
    path.write_text(text)
    print(text + f"\nwrote {path}")


def figure(args) -> None:
    from d2im_tf.data.disn_format import DatasetLayout
    from d2im_tf.evaluation.evaluate import EvaluationCase, split_pairs
    from d2im_tf.geometry.frames import to_world
    from d2im_tf.inference.preview import labelled_grid, mesh_panel, side_view
    from d2im_tf.inference.reconstruct import Reconstructor, prepare_image

    layout = DatasetLayout(args.data)
    pairs = (
        [pair for pair in split_pairs(layout, "test") if pair[1] in args.shapes]
        if args.shapes
        else split_pairs(layout, "test", max_shapes=1)
    )
    if not pairs:
        sys.exit(f"error: --shapes {' '.join(args.shapes)}: none of them is in {args.data}'s test split")
    cases = [EvaluationCase.load(layout, category, shape) for category, shape in pairs]
    # two rows per input: the meshes seen from the input's view, then from azimuth +90° (what it hides)
    rows, views, titles = [], [], []
    blank = np.full((args.size, args.size, 3), 255, np.uint8)
    for (category, shape), case in zip(pairs, cases):
        image = np.round(prepare_image(case.pixels, args.size) * 255).astype(np.uint8)  # on white
        side = side_view(case.view_row)
        truth = to_world(case.truth, case.norm_params)
        for first, view, title in ((image, case.view_row, f"{category}/{shape}"), (blank, side, "azimuth +90°")):
            rows.append([first, mesh_panel(truth, view, args.size)])
            views.append(view)
            titles.append(title)
    for variant in args.variants:
        print(f"figure: reconstructing {len(cases)} inputs with {variant}", flush=True)
        reconstructor = Reconstructor(
            ablation.export_dir(args.out, variant),
            resolution=args.figure_resolution,
            fill_cavities=False,
            bridge_gaps=False,
            object_size=None,
        )  # the renders as the paper reads them, its extraction
        for index, case in enumerate(cases):
            mesh = reconstructor.reconstruct(case.pixels, case.view_row, case.norm_params).mesh  # world frame
            for row in (2 * index, 2 * index + 1):
                rows[row].append(mesh_panel(mesh, views[row], args.size))
    titles_ascii = [ablation.VARIANT_TITLES[variant].replace("²", "2") for variant in args.variants]  # font lacks ²
    columns = ["input", "ground truth", *titles_ascii]
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    labelled_grid(rows, columns, titles).save(args.figure, optimize=True)
    print(f"wrote {args.figure}")


STAGES = {"train": train, "evaluate": evaluate, "table": table, "figure": figure}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=[*STAGES, "all"])
    add_config_arguments(
        parser,
        "training config of every variant, default %(default)s; the --set overrides go to every variant's d2im train",
        default="configs/study.yaml",
    )
    parser.add_argument("--epochs", type=int, default=40, help="training budget of every variant")
    parser.add_argument("--data", type=Path, default=Path("data/study"), help="dataset with the test split")
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"), help="ablation folder")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--resolution", type=int, default=64, help="marching-cubes grid of the evaluation")
    parser.add_argument("--max-shapes", type=int, default=None, help="evaluate at most N shapes per category")
    parser.add_argument("--categories", nargs="+", default=None, help="evaluate these categories (default all)")
    parser.add_argument(
        "--eval-name",
        default="eval",
        help="evaluation folder under each variant's run, and table_<name>.md (default eval)",
    )
    parser.add_argument(
        "--extra-eval",
        action="append",
        default=[],
        metavar="TITLE=DIR",
        help="table: another model's d2im evaluate folder as a row of its own (repeatable)",
    )
    parser.add_argument("--figure", type=Path, default=Path("docs/images/ablation.png"), help="figure path")
    parser.add_argument(
        "--shapes", nargs="+", default=None, help="test shape ids for the figure (default: the first of each category)"
    )
    parser.add_argument("--size", type=int, default=160, help="figure panel size in pixels")
    parser.add_argument("--figure-resolution", type=int, default=128, help="marching-cubes grid of the figure")
    args = parser.parse_args(argv)
    for item in args.extra_eval:
        if "=" not in item:
            parser.error(f"--extra-eval {item!r}: expected TITLE=DIR")
    for name, stage in STAGES.items():
        if args.stage in (name, "all"):
            stage(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
