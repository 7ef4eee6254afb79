"""Output files and folders every writer shares: atomic writes and checks of an output folder.

:func:`atomic_path` writes a temporary file beside the target and renames it onto the target, so a
killed process never leaves a half-written file; :func:`check_output_dir` refuses an output folder
that cannot be created or written before any work is done, and creates nothing.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from d2im_tf.errors import UserError


class OutputError(UserError):
    """An output path that cannot be used. ``str()`` is one line naming the path."""

    def __init__(self, path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def current_umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the file the permissions open() would
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_output_dir(path, what: str = "output folder") -> Path:
    """``path`` if it is, or can be created as, a writable folder, else :class:`OutputError`; creates
    nothing (a probe folder is made in the nearest existing ancestor and removed at once)."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is under the file {existing}"
        raise OutputError(path, f"cannot be used as the {what}: it {where}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".d2im-probe-", dir=existing))
    except OSError as error:
        raise OutputError(path, f"cannot be used as the {what}: {existing} is not writable "
                                f"({error.strerror or error})") from None
    return path
