"""The base class of errors a user can fix: the CLI prints them as one line and exits with 2."""
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
