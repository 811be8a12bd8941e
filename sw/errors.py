"""The one error type users see: a single line naming the problem and the fix."""


class SparsynError(Exception):
    """A user-facing error. ``str(err)`` is one line: what is wrong, and what to do.

    The CLI prints it as ``sparsyn: error: <message>`` and exits with status 2.
    """

    def __init__(self, message: str):
        message = " ".join(str(message).split())  # always one line
        super().__init__(message)
