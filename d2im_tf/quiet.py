"""Quiet TensorFlow start-up for the command line: TF's own log lines are hidden unless asked for.

TF 2.16+ logs through absl, and the lines it writes while its libraries load (CUDA probing,
oneDNN notices) come before absl reads ``TF_CPP_MIN_LOG_LEVEL``, so that variable alone does not
hide them. :func:`quiet_tensorflow` therefore sets the level (unless the user set it) and captures
file descriptor 2 while ``tensorflow`` is first imported; afterwards the captured lines are written
out again, except TF's log lines below the level. Anything else written meanwhile — a Python
warning, an import error — still reaches the user. :func:`quiet_litert` does the same for the one
INFO line LiteRT's interpreter prints when it applies its default (XNNPACK) delegate.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile

DEFAULT_LEVEL = "3"  # TF_CPP_MIN_LOG_LEVEL: 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR (FATAL stays)
ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_LOG_LINE = re.compile(r"^([IWEF])\d{4} \S+\s+\d+ \S+:\d+\] ")  # absl/glog: I0000 00:00:12.3  42 file.cc:7]
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}


def shown(line: str, level: int) -> bool:
    """Whether a line written to stderr during TF's import passes ``TF_CPP_MIN_LOG_LEVEL=level``."""
    if line.strip() == ABSL_PREAMBLE:
        return level == 0
    match = _LOG_LINE.match(line)
    return match is None or _SEVERITY[match.group(1)] >= level


@contextlib.contextmanager
def _filtered_stderr(level: int, keep=None):
    """Capture fd 2 (C++ and Python writes alike) and replay the lines :func:`shown` keeps (or
    ``keep(line)``, if given)."""
    keep = keep or (lambda line: shown(line, level))
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode(errors="replace")
            sys.stderr.write("".join(line for line in text.splitlines(keepends=True) if keep(line)))
            sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """Wraps tensorflow's own loader: executes the package with fd 2 filtered, then steps aside."""

    def __init__(self, loader, level: int):
        self.loader, self.level = loader, level

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader  # leave no trace of the wrapper
        with _filtered_stderr(self.level):
            self.loader.exec_module(module)
        logging.getLogger("tensorflow").setLevel(logging.ERROR)  # TF's Python-side warnings too


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, through the other finders, and hands it a :class:`_QuietLoader`."""

    def __init__(self, level: int):
        self.level = level

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self.level)
        return spec


def quiet_tensorflow(verbose: bool = False) -> None:
    """Hide TF's log lines from here on: the user's ``TF_CPP_MIN_LOG_LEVEL`` if set, else level 3.

    With ``verbose`` nothing is hidden (TF's defaults). Call before the first ``import tensorflow``;
    once TF is loaded only the level of later messages can still be set.
    """
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", DEFAULT_LEVEL)
    try:
        level = int(os.environ["TF_CPP_MIN_LOG_LEVEL"])
    except ValueError:
        level = 0
    if "tensorflow" in sys.modules:
        return
    if not any(isinstance(finder, _QuietFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder(level))


LITERT_XNNPACK_LINE = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


def quiet_litert():
    """A context that hides LiteRT's "Created … XNNPACK delegate" INFO line (printed by C++ to fd 2
    when an interpreter prepares its graph) unless ``TF_CPP_MIN_LOG_LEVEL`` is 0; everything else
    written meanwhile is replayed."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", DEFAULT_LEVEL).strip() == "0":
        return contextlib.nullcontext()
    return _filtered_stderr(0, keep=lambda line: line.strip() != LITERT_XNNPACK_LINE)
