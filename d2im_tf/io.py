"""Output files and folders every writer shares: atomic writes and checks of an output folder.

:func:`atomic_path` writes a temporary file beside the target and renames it onto the target, so a
killed process never leaves a half-written file; :func:`check_output_dir` refuses an output folder
that cannot be created or written before any work is done, and creates nothing; :func:`folder_lock`
keeps a folder to one process (a lock file naming its PID; a killed holder's lock is taken over);
:func:`new_folders` removes the folders a failed block created.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from d2im_tf.errors import UserError, writing


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
    with writing(path):  # a full disk: one line naming the path, no temporary file left
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
        raise OutputError(
            path, f"cannot be used as the {what}: {existing} is not writable ({error.strerror or error})"
        ) from None
    return path


def process_alive(pid: int) -> bool:
    """Whether the process ``pid`` exists (on this machine)."""
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    return True


LOCK_FILE = ".d2im.lock"


def lock_holder(folder) -> int | None:
    """The PID of the live process holding ``folder``'s lock (:func:`folder_lock`), else None."""
    try:
        holder = int((Path(folder) / LOCK_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):  # no lock, or one being written or damaged
        return None
    return holder if holder != os.getpid() and process_alive(holder) else None


def check_unlocked(folder, what: str = "folder") -> None:
    """A :class:`OutputError` naming the holder if another live process holds ``folder``'s lock."""
    holder = lock_holder(folder)
    if holder is not None:
        raise OutputError(
            folder,
            f"the {what} is in use by process {holder} (its lock {Path(folder) / LOCK_FILE}); "
            f"wait for it to finish or choose another {what}",
        )


@contextlib.contextmanager
def folder_lock(folder, what: str = "folder"):
    """Hold ``folder/.d2im.lock`` (holding this process's PID) while the block runs: one process per
    folder. A lock held by a live process is a :class:`OutputError` naming its PID (:func:`check_unlocked`);
    one left by a process that is gone (killed) is taken over."""
    folder = Path(folder)
    lock = folder / LOCK_FILE
    with writing(lock):
        folder.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            check_unlocked(folder, what)
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # left by a killed process: take it over
    else:
        raise OutputError(folder, f"cannot take the lock {lock} of the {what}")
    with writing(lock):
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
    try:
        yield folder
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()


@contextlib.contextmanager
def new_folders(path):
    """Run a block that writes into the folder ``path``; if it fails, the folders it created for
    ``path`` (``path`` and missing parents) are removed again when left empty."""
    path = Path(path).absolute()
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    try:
        yield path
    except BaseException:
        for folder in missing:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
