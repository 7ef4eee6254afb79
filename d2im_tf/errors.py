"""The base class of errors a user can fix: the CLI prints them as one line and exits with 2; and the
helpers that word such lines (a byte count; a failed write naming its path)."""
import re

_WRAPPED = re.compile(r"\b(?:DataError|ConfigError|UserError): (.+)")


class UserError(Exception):
    """Bad input from the user: a missing or corrupt file, a bad config key, a bad argument."""


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
