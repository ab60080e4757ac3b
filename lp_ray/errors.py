"""The one error type users see: the CLI prints its message on one line and exits non-zero."""


class LpRayError(Exception):
    """A problem the user can fix (bad input, missing file, unreachable service)."""
