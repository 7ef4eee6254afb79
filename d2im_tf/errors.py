"""The base class of errors a user can fix: the CLI prints them as one line and exits with 2; and the
helpers that word such lines (a byte count; a failed write naming its path)."""

import contextlib
import errno
import os
import re

_WRAPPED = re.compile(r"\b(?:DataError|ConfigError|UserError): (.+)")


class UserError(Exception):
    """Bad input from the user: a missing or corrupt file, a bad config key, a bad argument."""


class WriteError(UserError):
    """A file or folder that could not be written: the disk is full, a quota, a read-only file system."""


# Errors of writing that the user can fix; TensorFlow's own writers report them only in their message.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


def write_problem(error: BaseException) -> str | None:
    """The reason of a failed write (``No space left on device``), from an ``OSError`` or a TensorFlow
    error; None if ``error`` is not one of :data:`WRITE_ERRNOS`."""
    if isinstance(error, OSError):
        return (error.strerror or str(error)) if error.errno in WRITE_ERRNOS else None
    if type(error).__module__.startswith("tensorflow"):
        text = str(error)
        return next((os.strerror(code) for code in WRITE_ERRNOS if os.strerror(code) in text), None)
    return None


def full_disk(error: BaseException) -> str | None:
    """The one line for an ``OSError`` of a full disk (or quota, file size limit, read-only file system)
    that no :func:`writing` block caught, naming its file; else None."""
    if isinstance(error, OSError) and error.errno in WRITE_ERRNOS[:4]:
        return f"{error.filename or 'a file'}: cannot write ({error.strerror})"
    return None


@contextlib.contextmanager
def writing(path, cleanup=None):
    """Run a block that writes ``path``; a failed write becomes a one-line :class:`WriteError` naming
    ``path``, after ``cleanup()`` (if given) has removed what the block left. The one handler of every
    writer, so a full disk reads the same everywhere."""
    try:
        yield
    except Exception as error:
        problem = None if isinstance(error, UserError) else write_problem(error)
        if problem is None:
            raise
        if cleanup is not None:
            cleanup()
        raise WriteError(f"{path}: cannot write ({problem})") from None


def wrapped_user_error(error: BaseException) -> str | None:
    """The one-line message of a :class:`UserError` that TensorFlow re-raised as its own error type
    (a ``DataError`` inside a ``tf.numpy_function`` of an input pipeline), else None."""
    if not type(error).__module__.startswith("tensorflow"):
        return None
    match = _WRAPPED.search(str(error))
    return match.group(1).strip() if match else None


def size_text(nbytes: float) -> str:
    """A byte count for a message: ``512 bytes``, ``406.9 MB``, ``4.0 TB`` (decimal units)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB", "EB"):
        if abs(nbytes) < 1000 or unit == "EB":
            return f"{int(nbytes):,} bytes" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    raise AssertionError
