"""``d2im check-data ROOT``: validate a DISN-layout dataset and print a summary.

The same validation ``d2im train`` runs before its first step (:mod:`d2im_tf.data.check`). With
``--config`` it also checks what that config needs: its categories, ``data.views`` views per shape,
``data.num_points`` samples and ``camera.points`` surface points.
"""

from __future__ import annotations

import sys

from d2im_tf.config import add_config_arguments, load_config
from d2im_tf.data.check import Requirements, check_dataset
from d2im_tf.data.disn_format import DatasetLayout
from d2im_tf.errors import UserError


def configure(parser) -> None:
    parser.add_argument("root", help="dataset root (holds image/, normal_processed/, SDF_v1/, splits/)")
    parser.add_argument("--split-dir", default=None, help="folder of the .lst split lists (default ROOT/splits)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_config_arguments(parser, default_help="also check what this config needs (categories, views, points)")


def run(args) -> int:
    layout = DatasetLayout(args.root, args.split_dir)
    if not layout.root.is_dir():
        raise UserError(f"{layout.root}: dataset folder not found")
    needs, categories = Requirements(), None
    if args.config is not None or args.overrides:
        config = load_config(args.config, args.overrides)
        needs, categories = Requirements.for_training(config), config.data.categories
    report = check_dataset(layout, progress=not args.no_progress, needs=needs, categories=categories)
    print(report.summary())
    if not report.ok:
        print(f"error: {len(report.problems)} problem(s) in {args.root}", file=sys.stderr)
        return 2
    return 0
