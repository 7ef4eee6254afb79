"""Benchmarks of the project's pipelines (not tests): ``python tools/benchmark.py <stage> [--json]``.

One subcommand per module of :mod:`benchmarks` (each module's docstring says what it measures and
against which same-run baseline):

``data``         synthetic data generation of one shape (:mod:`benchmarks.data`)
``reconstruct``  image → mesh, dense vs coarse-to-fine (:mod:`benchmarks.reconstruct`)
``convert``      SavedModel vs TFLite vs TF.js: sizes and per-image seconds (:mod:`benchmarks.convert`)
``train``        seconds per training step at the authors' setting (:mod:`benchmarks.train`)
``fit``          memorisation of 4 training shapes (:mod:`benchmarks.fit`)
``transfer``     detail transfer vs the target's own reconstruction (:mod:`benchmarks.transfer`)
``app``          a bounded load test of ``d2im app`` on localhost (:mod:`benchmarks.app`)

Wall-clock seconds: on a shared machine only the ratios within one run mean much.
"""

from __future__ import annotations

import os

# One core, one thread: set before NumPy/SciPy/embree load their thread pools.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TBB_NUM_THREADS"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from benchmarks import NAMES  # noqa: E402
from d2im_tf.errors import UserError  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    stages = parser.add_subparsers(dest="stage", required=True)
    for name in NAMES:
        module = importlib.import_module(f"benchmarks.{name}")
        stage = stages.add_parser(name, help=module.HELP)
        module.configure(stage)
        stage.add_argument("--json", action="store_true", help="print the result as JSON")
        stage.set_defaults(bench=module.run, show=module.show)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
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
