"""How much of the Laplacian loss's target a training run's front maps explain, on a split of its data.

    python tools/laplacian_fit.py runs/ablation/full --split test
    python tools/laplacian_fit.py runs/study_full --batches 20 --set data.root=data/other

Prints L_lap of the run's front displacement maps, L_lap of maps of zeros, and the share explained,
1 − L_lap / L_lap(zeros) (:mod:`d2im_tf.evaluation.laplacian_fit`): near 1 when the maps carry the
surface detail the ground-truth normal maps show, 0 when they carry none, below 0 when they carry
noise. The batches are the training pipeline's (its sampling of points and views, seeded as the run
was), from the run's latest checkpoint (its weight average, if it kept one).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from d2im_tf.errors import UserError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="training run folder of the SDF network (config.yaml, checkpoints/)")
    parser.add_argument("--split", default="train", help="split of the run's dataset (default train)")
    parser.add_argument("--batches", type=int, default=10, help="batches to average over (default 10)")
    parser.add_argument("--batch-size", type=int, default=4, help="shapes per batch (default 4)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    args = parser.parse_args(argv)
    if args.batches < 1 or args.batch_size < 1:
        parser.error("--batches and --batch-size must be at least 1")
    try:
        result = measure(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"{args.run} ({args.split}, {result['batches']} batches of {args.batch_size}): L_lap {result['loss_lap']:.4f}, "
        f"with zero maps {result['loss_lap_zero']:.4f}; the front maps explain {result['explained']:.1%} of the target"
    )
    return 0


def measure(args) -> dict:
    from d2im_tf.data.pipeline import ShapeDataset
    from d2im_tf.evaluation.laplacian_fit import laplacian_fit
    from d2im_tf.models.d2im import VARIANT_SPECS
    from d2im_tf.training.loop import load_run_config
    from d2im_tf.training.run import load_model

    config = load_run_config(args.run, args.overrides)
    if not VARIANT_SPECS[config.model.variant].maps:
        raise UserError(f"{args.run}: variant {config.model.variant!r} has no displacement maps")
    model = load_model(args.run, "sdf", config)
    dataset = ShapeDataset(config, args.split).dataset(args.batch_size)
    return laplacian_fit(model, dataset, args.batches)


if __name__ == "__main__":
    sys.exit(main())
