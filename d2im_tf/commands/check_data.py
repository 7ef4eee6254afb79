"""``d2im check-data ROOT``: validate a DISN-layout dataset and print a summary."""
from __future__ import annotations

import sys

from d2im_tf.data.check import check_dataset
from d2im_tf.data.disn_format import DatasetLayout


def configure(parser) -> None:
    parser.add_argument("root", help="dataset root (holds image/, normal_processed/, SDF_v1/, splits/)")
    parser.add_argument("--split-dir", default=None, help="folder of the .lst split lists (default ROOT/splits)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args) -> int:
    report = check_dataset(DatasetLayout(args.root, args.split_dir), progress=not args.no_progress)
    print(report.summary())
    if not report.ok:
        print(f"error: {len(report.problems)} problem(s) in {args.root}", file=sys.stderr)
        return 2
    return 0
