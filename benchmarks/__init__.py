"""Benchmarks of the project's pipelines (not tests), one module per ``tools/benchmark.py`` subcommand.

Each module has ``HELP`` (one line), ``configure(parser)`` (its options), ``run(args) -> dict`` (the
measurement, JSON-serialisable) and ``show(result)`` (the printed report). Not installed with the
package: run them from a checkout with ``python tools/benchmark.py <name>``.
"""

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
NAMES = ("data", "reconstruct", "convert", "train", "fit", "transfer", "app")
