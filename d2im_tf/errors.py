"""The base class of errors a user can fix: the CLI prints them as one line and exits with 2."""


class UserError(Exception):
    """Bad input from the user: a missing or corrupt file, a bad config key, a bad argument."""
