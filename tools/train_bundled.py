"""Rebuild the bundled model from scratch: ``python tools/train_bundled.py [--recipe R] [--runs DIR]``.

Runs the recipe (default ``configs/bundled.yaml``: make the data, train the camera and SDF networks,
export ``d2im_tf/bundled/d2im_synthetic``) stage by stage; run the same command again after an
interruption and it continues where it stopped (:mod:`d2im_tf.training.recipe`). ``make model`` runs it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from d2im_tf.errors import UserError  # noqa: E402
from d2im_tf.training.recipe import run_recipe  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="configs/bundled.yaml")
    parser.add_argument("--runs", default="runs/bundled", help="run folders and the record of finished stages")
    args = parser.parse_args(argv)
    try:
        print(f"model in {run_recipe(args.recipe, args.runs)}")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
